"""docs/spakky.md's complete application must run exactly as written and print what the page
says it prints."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres_support import postgres_schema

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


def durable_blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## A durable application, on SQLite or PostgreSQL", 1)[1]
    section = section.split("\n### ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def run_durable(cwd: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (program,) = durable_blocks("python")
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, **environment},
    )


@pytest.mark.parametrize("recover_on_start", ["0", "1"])
def test_the_durable_application_runs_and_stops_cleanly_on_sqlite(
    tmp_path: Path, recover_on_start: str
) -> None:
    (expected,) = durable_blocks("text")

    for _ in range(2):  # the second start finds the first one's store (and recovers nothing)
        done = run_durable(tmp_path, {"RECOVER_ON_START": recover_on_start})

        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert done.stdout == expected
    assert (tmp_path / "sagas.db").exists()


@pytest.mark.parametrize("recover_on_start", ["0", "1"])
async def test_the_durable_application_runs_and_stops_cleanly_on_postgresql(
    tmp_path: Path, recover_on_start: str
) -> None:
    (expected,) = durable_blocks("text")
    async with postgres_schema() as (dsn, schema):
        environment = {
            "SAGA_STORE": dsn,
            "SAGA_SCHEMA": schema,
            "RECOVER_ON_START": recover_on_start,
        }
        for _ in range(2):
            done = await asyncio.to_thread(run_durable, tmp_path, environment)

            assert done.returncode == 0, done.stderr
            assert done.stderr == ""
            assert done.stdout == expected
