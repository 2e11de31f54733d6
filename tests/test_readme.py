"""The README's quick start must run exactly as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the Quick start section has no python block"
    return match.group(1)


def test_readme_quick_start_runs_as_written_and_completes_the_saga() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", quick_start_code()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "order created, ticket 77" in completed.stdout
    assert "issue_ticket" in completed.stdout
    assert "reserve_stock" in completed.stdout
    assert "cancelled ticket" not in completed.stdout


def test_readme_diagram_is_what_the_demo_saga_draws() -> None:
    sys.path.insert(0, str(README.parent / "examples"))
    try:
        from order_saga import order_flow  # noqa: PLC0415 - examples/ is on the path only now
    finally:
        sys.path.pop(0)
    text = README.read_text(encoding="utf-8")
    match = re.search(r"```mermaid\n(.*?)```", text, re.DOTALL)
    assert match is not None, "the README shows no Mermaid chart"

    assert match.group(1).rstrip("\n") == order_flow().to_mermaid()
