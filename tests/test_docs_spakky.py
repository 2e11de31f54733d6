"""docs/spakky.md's complete application must run exactly as written and print what the page
says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "spakky.md"


def section_blocks(language: str) -> list[str]:
    """The `language` code blocks of the page's "A complete application" section."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## A complete application", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_complete_application_runs_and_prints_what_the_page_shows() -> None:
    (program,) = section_blocks("python")
    (expected,) = section_blocks("text")

    completed = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == expected
