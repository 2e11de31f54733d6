"""What the CLI says of a saga stuck past its pivot: `list` shows it STUCK, `show` says what
an operator must do, and `recover` counts it as needing attention (exit code 1). Run as a
subprocess on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spakky_saga.cli import ATTENTION, OK, USAGE
from tests import cli_app
from tests.cli_app import spakky_saga, store_options

STUCK_ADVICE = (
    "  stuck past its pivot (the point of no return): a step after it failed for good and "
    "nothing was compensated; finish the saga's remaining steps by hand"
)


@pytest.fixture(autouse=True)
async def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with cli_app.environment_store("sqlite", tmp_path, monkeypatch):
        yield


async def test_list_shows_a_saga_stuck_past_its_pivot_with_its_failed_step() -> None:
    stuck = await cli_app.run_stuck()
    await cli_app.run_one(fail=False)

    listed = spakky_saga("list", *store_options(), "--status", "STUCK")

    assert listed.returncode == OK
    [row] = [line.split()[:3] for line in listed.stdout.splitlines()[1:]]
    assert row == [stuck, "delivery", "STUCK"]
    assert "ship" in listed.stdout.splitlines()[1]


async def test_show_of_a_stuck_saga_says_nothing_was_compensated_and_what_to_do() -> None:
    stuck = await cli_app.run_stuck()

    shown = spakky_saga("show", stuck, *store_options())

    lines = shown.stdout.splitlines()
    assert lines[0] == f"saga {stuck} (delivery): STUCK"
    assert STUCK_ADVICE in lines
    assert "undo" not in shown.stdout


async def test_recover_of_a_saga_that_gets_stuck_past_its_pivot_needs_attention() -> None:
    crashed = await cli_app.run_stuck(crash=True)

    recovered = spakky_saga("recover", "--app", "tests.cli_app:delivery_engine")

    assert recovered.returncode == ATTENTION
    assert recovered.stdout.splitlines() == [f"{crashed} (delivery): stuck", STUCK_ADVICE]
    assert (await cli_app.load_saga(crashed)).status.value == "STUCK"


async def test_show_marks_the_attempts_of_the_pivot_in_the_timeline() -> None:
    stuck = await cli_app.run_stuck()

    shown = spakky_saga("show", stuck, *store_options())

    rows = [line.split()[1:3] for line in shown.stdout.split("\n\n", 1)[1].splitlines()[2:]]
    assert rows[:2] == [["reserve", "committed"], ["pay", "(pivot)"]]


async def test_cancel_of_a_dead_engines_saga_past_its_pivot_takes_it_forward_instead() -> None:
    crashed = await cli_app.run_stuck(crash=True)

    cancelled = spakky_saga("cancel", crashed, "--app", "tests.cli_app:delivery_engine")

    assert cancelled.returncode == ATTENTION
    assert cancelled.stdout.splitlines() == [
        f"{crashed} (delivery): stuck",
        "  past its pivot (the point of no return) a saga cannot be cancelled: recovery took "
        "it forward instead",
    ]
    assert (await cli_app.load_saga(crashed)).status.value == "STUCK"


async def test_cancel_of_a_stuck_saga_is_refused_saying_why() -> None:
    stuck = await cli_app.run_stuck()

    refused = spakky_saga("cancel", stuck, "--app", "tests.cli_app:delivery_engine")

    assert refused.returncode == USAGE
    assert (
        "only RUNNING and WAITING sagas can be cancelled; it is stuck past its pivot"
        in refused.stderr
    )
