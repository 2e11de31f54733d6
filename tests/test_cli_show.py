"""What `show` and `list` say about a saga: its own error rather than recovery's wrapper, an
attempt of a finished saga whose outcome the log lacks "in doubt" (not running), offsets in
readable units, and `list` with failed-step and error columns and name and time filters. Run
as a subprocess on SQLite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spakky_saga.cli import OK
from spakky_saga.store import SagaRecord, SagaUpdate, StoredEvent, StoredStatus
from spakky_saga.timeline import format_duration
from tests import cli_app
from tests.cli_app import spakky_saga, store_options

RECOVERING = ("--app", "tests.cli_app:recovering_engine")


@pytest.fixture(autouse=True)
async def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with cli_app.environment_store("sqlite", tmp_path, monkeypatch):
        yield


def timeline(out: str) -> list[list[str]]:
    """The timeline table's rows (after its header and rule), split into columns."""
    return [line.split() for line in out.split("\n\n", 1)[1].splitlines()[2:]]


async def test_show_after_retry_compensation_gives_the_step_error_not_an_interruption() -> None:
    broken = await cli_app.run_with_broken_refund()
    retried = spakky_saga("retry-compensation", broken, *RECOVERING)
    assert (retried.returncode, retried.stdout.strip()) == (OK, f"{broken} (checkout): compensated")

    shown = spakky_saga("show", broken, *store_options())

    assert shown.returncode == OK
    lines = shown.stdout.splitlines()
    assert lines[0] == f"saga {broken} (checkout): FAILED"
    assert '  failed step "pay": ValueError: card declined' in lines
    assert "interrupted" not in shown.stdout
    assert any(
        line.endswith(" retried: its failed compensations ran again (retry-compensation)")
        for line in lines
    )
    as_json = json.loads(spakky_saga("show", broken, *store_options(), "--json").stdout)
    assert as_json["original_error"] == "ValueError: card declined"
    assert [r["what"] for r in as_json["recoveries"]] == ["retried"]


async def test_show_of_a_crashed_saga_says_its_engine_stopped_and_the_attempt_is_in_doubt() -> None:
    crashed = await cli_app.crash_one()
    assert spakky_saga("recover", *RECOVERING).returncode == OK
    shown = spakky_saga("show", crashed, *store_options())

    assert shown.stdout.splitlines()[0] == f"saga {crashed} (checkout): FAILED"
    assert "recovered: its engine had stopped before the saga finished" in shown.stdout
    rows = timeline(shown.stdout)
    assert [row[:4] for row in rows] == [
        ["1", "reserve", "committed", "1"],
        ["2", "pay", "in", "doubt"],
        ["3", "undo", "reserve", "compensated"],
    ]
    assert "running" not in shown.stdout


async def test_show_of_an_unfinished_saga_has_a_running_row_for_the_attempt_in_progress() -> None:
    crashed = await cli_app.crash_one(timedelta(seconds=60))

    running = spakky_saga("show", crashed, *store_options())

    assert running.stdout.splitlines()[0] == f"saga {crashed} (checkout): RUNNING"
    assert timeline(running.stdout)[1][:4] == ["2", "pay", "running", "1"]


async def write_saga(saga_id: str, offsets: list[float], *, started: float) -> None:
    """A saga's log as an engine would have written it, events `offsets` seconds apart from
    its start: begun, one step attempted, then committed (or still running)."""
    store = cli_app.store()
    await store.open()
    data = json.dumps({"saga_id": saga_id, "order_id": 9})
    record = SagaRecord(
        saga_id=saga_id,
        saga_name="slow",
        status=StoredStatus.RUNNING,
        fingerprint="f",
        structure="[]",
        policy="compensate",
        data=data,
        data_type="tests.cli_app.CheckoutData",
        codec="1",
        created=started,
        updated=started,
        owner="writer",
    )
    kinds = [("step_started", "wait"), ("step_committed", "wait"), ("step_started", "call")]
    events = [StoredEvent(1, "saga_started", started, data=data)] + [
        StoredEvent(
            seq,
            kind,
            started + offset,
            step_key=step,
            step=step,
            elapsed=offset if kind == "step_committed" else 0.0,  # "wait" started at 0
        )
        for seq, ((kind, step), offset) in enumerate(zip(kinds, offsets, strict=True), start=2)
    ]
    try:
        await store.begin(record, events[:1], 60)
        await store.append(saga_id, "writer", events[1:], SagaUpdate(), 60)
    finally:
        await store.close()


async def test_show_prints_offsets_in_readable_units() -> None:
    await write_saga("slow-saga", [0.0, 46.75, 123.4], started=datetime.now(UTC).timestamp())

    shown = spakky_saga("show", "slow-saga", *store_options())

    assert shown.returncode == OK, shown.stderr
    rows = timeline(shown.stdout)
    assert rows == [
        ["1", "wait", "committed", "1", "+0.00ms", "46.75s"],
        ["2", "call", "running", "1", "+2min", "3s", "0.00ms"],
    ]
    assert [format_duration(s) for s in (0.01234, 46.752, 123.4, 3725.0)] == [
        "12.34ms",
        "46.75s",
        "2min 3s",
        "1h 2min",
    ]


async def test_list_shows_the_failed_step_and_error_and_filters_by_name_and_time() -> None:
    failed = await cli_app.run_one(fail=True)
    other = await cli_app.run_one(fail=False, saga_name="refund")

    listed = spakky_saga("list", *store_options())
    header, *rows = listed.stdout.splitlines()
    assert header.split()[-3:] == ["failed", "step", "error"]
    [row] = [r for r in rows if r.startswith(failed)]
    assert row.split()[-3:] == ["pay", "card", "declined"]

    by_name = spakky_saga("list", *store_options(), "--name", "refund", "--json")
    assert [r["saga_id"] for r in json.loads(by_name.stdout)] == [other]

    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    recent = spakky_saga("list", *store_options(), "--since", an_hour_ago, "--json")
    assert {r["saga_id"] for r in json.loads(recent.stdout)} == {failed, other}
    older = spakky_saga("list", *store_options(), "--until", an_hour_ago)
    assert (older.returncode, older.stdout) == (OK, "no sagas\n")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert spakky_saga("list", *store_options(), "--since", tomorrow).stdout == "no sagas\n"
    limited = spakky_saga("list", *store_options(), "--until", tomorrow, "--limit", "1", "--json")
    assert len(json.loads(limited.stdout)) == 1
