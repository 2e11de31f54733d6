"""Run the YAML cases as pytest-mypy-plugins tests, with our mypy config and a private cache.

pytest-mypy-plugins only collects `test_*.yml`; our files are named by concern
(`operators.yml`, ...), so this collects every `*.yml` here. Unless given on the command
line, the config is `typing_tests/mypy.ini` and mypy's cache lives in a fresh directory per
run (pytest-mypy-plugins adds a subdirectory per xdist worker), so concurrent runs and
other projects' caches never mix with ours.

pytest-mypy-plugins gives its mypy subprocess no environment but MYPYPATH unless told to
pass PYTHONPATH on: without that, mypy would load the plugin and the library from wherever
the venv's editable install points (another checkout, in a git worktree). So this puts this
checkout's `src/` on PYTHONPATH (after anything already there) and passes it on.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest
from pytest_mypy_plugins.collect import YamlTestFile

_HERE = Path(__file__).parent
_SRC = _HERE.parent / "src"


def pytest_configure(config: pytest.Config) -> None:
    # Cases run `mypy` from PATH: make it this interpreter's, even without an activated venv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    # `sagafixtures`, the data types and async functions cases share.
    os.environ["MYPYPATH"] = str(_HERE / "fixtures")
    options = config.option
    paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    if str(_SRC) not in paths:
        paths.append(str(_SRC))
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    if not options.mypy_same_process:
        options.mypy_modify_pythonpath = True
    if not options.mypy_ini_file and not options.mypy_pyproject_toml_file:
        options.mypy_ini_file = str(_HERE / "mypy.ini")
    if options.mypy_testing_base == tempfile.gettempdir():
        options.mypy_testing_base = tempfile.mkdtemp(prefix="spakky-saga-typing-")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> YamlTestFile | None:
    if file_path.suffix == ".yml" and not file_path.name.startswith(("test_", "test-")):
        return YamlTestFile.from_parent(parent, path=file_path)
    return None
