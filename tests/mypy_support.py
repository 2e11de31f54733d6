"""Run mypy in-process on small modules, with or without the spakky_saga plugin."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from mypy import api

PLUGIN_CONFIG = "[mypy]\nplugins = spakky_saga_mypy\nstrict = True\n"


@dataclass(frozen=True)
class MypyRun:
    stdout: str
    stderr: str
    exit_code: int

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def run_mypy(project: Path, *targets: str, config: str = PLUGIN_CONFIG) -> MypyRun:
    """mypy on `targets` inside `project`, with a cache directory of its own there."""
    config_file = project / "mypy.ini"
    config_file.write_text(config)
    stdout, stderr, exit_code = api.run(
        [
            "--config-file",
            str(config_file),
            "--cache-dir",
            str(project / ".mypy_cache"),
            "--no-error-summary",
            *(str(project / target) for target in targets),
        ]
    )
    return MypyRun(stdout.replace(str(project) + "/", ""), stderr, exit_code)
