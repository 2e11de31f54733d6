"""Running a documented example the way a user does: a subprocess of its own, which must exit
0 with nothing on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script: str, *args: str, timeout: float = 120) -> str:
    """`examples/<script>` run with `args`: its standard output, once it exited 0 and wrote
    nothing on stderr."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout
