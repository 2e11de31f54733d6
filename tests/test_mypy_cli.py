"""`spakky-saga-mypy` / `python -m spakky_saga_mypy`: mypy plus our plugin, with mypy's
own output and exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from mypy.options import Options

from spakky_saga_mypy.cli import PLUGIN, missing_plugins, run, split_plugin_flags
from tests.mypy_support import write_module

MISTAKE = """
from spakky_saga import Retry

Retry(0)
"""

CLEAN = """
from spakky_saga import Retry

Retry(1)
"""


def test_plugin_flags_are_taken_out_of_mypys_arguments() -> None:
    plugins, rest = split_plugin_flags(
        ["--strict", "--plugin", PLUGIN, "--plugin=other.plugin", "src"]
    )

    assert plugins == [PLUGIN, "other.plugin"]
    assert rest == ["--strict", "src"]


def test_plugin_flag_without_a_name_is_an_error() -> None:
    with pytest.raises(SystemExit, match="--plugin needs a plugin name"):
        split_plugin_flags(["src", "--plugin"])


def _options(config_file: str | None, plugins: list[str]) -> Options:
    options = Options()
    options.config_file = config_file
    options.plugins = plugins
    return options


def test_our_plugin_is_added_once_unless_the_config_loads_it() -> None:
    assert missing_plugins(_options(None, []), [PLUGIN]) == [PLUGIN]
    assert missing_plugins(_options("mypy.ini", ["pydantic.mypy"]), []) == [PLUGIN]
    assert missing_plugins(_options("mypy.ini", [PLUGIN]), [PLUGIN, "x", "x"]) == ["x"]


def test_plugins_are_loaded_without_a_config_file() -> None:
    """mypy ignores `options.plugins` without a config file: the CLI loads them itself."""
    assert missing_plugins(_options(None, [PLUGIN]), []) == [PLUGIN]


def _run(tmp_path: Path, source: str, *arguments: str) -> tuple[int, str]:
    write_module(tmp_path, "module", source)
    stdout = io.StringIO()
    code = run(
        [
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--config-file",
            "",
            *arguments,
            str(tmp_path / "module.py"),
        ],
        stdout=stdout,
        stderr=io.StringIO(),
    )
    return code, stdout.getvalue().replace(str(tmp_path) + "/", "")


def test_mistake_gives_the_plugins_error_and_exit_code_1(tmp_path: Path) -> None:
    code, output = _run(tmp_path, MISTAKE)

    assert code == 1
    assert output.splitlines() == [
        "module.py:4: error: Retry(max_attempts=0): max_attempts counts every attempt, the "
        "first included, so it must be an int >= 1 (use Retry(1) for no retry)  "
        "[saga-strategy]",
        "Found 1 error in 1 file (checked 1 source file)",
    ]


def test_clean_code_exits_0_and_plugin_flag_is_harmless(tmp_path: Path) -> None:
    code, output = _run(tmp_path, CLEAN, "--strict", "--plugin", PLUGIN)

    assert code == 0
    assert output == "Success: no issues found in 1 source file\n"


def test_python_dash_m_runs_mypy_with_the_plugin(tmp_path: Path) -> None:
    write_module(tmp_path, "module", MISTAKE)

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "spakky_saga_mypy",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--config-file",
            "",
            "--no-error-summary",
            "module.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == 1
    assert "[saga-strategy]" in completed.stdout


def test_configured_plugin_is_not_loaded_twice(tmp_path: Path) -> None:
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nplugins = {PLUGIN}\n")
    write_module(tmp_path, "module", MISTAKE)
    stdout = io.StringIO()

    code = run(
        [
            *("--cache-dir", str(tmp_path / ".mypy_cache"), "--config-file", str(config)),
            *("--no-error-summary", str(tmp_path / "module.py")),
        ],
        stdout=stdout,
        stderr=io.StringIO(),
    )

    assert code == 1
    assert stdout.getvalue().count("[saga-strategy]") == 1
