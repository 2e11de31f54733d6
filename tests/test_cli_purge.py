"""`spakky-saga purge`: deletes the sagas that finished before a time (never an unfinished or
COMPENSATION_FAILED one), `--dry-run` deletes nothing, and a missing store is not created;
run as a subprocess on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spakky_saga.cli import OK, STORE_FAILED, USAGE
from tests import cli_app
from tests.cli_app import spakky_saga, store_options
from tests.postgres_support import postgres_schema


@pytest.fixture(params=["sqlite", "postgresql"], autouse=True)
async def environment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    async with cli_app.environment_store(request.param, tmp_path, monkeypatch):
        yield


async def _stored_ids() -> list[str]:
    store = cli_app.store()
    await store.open()
    try:
        return sorted(r.saga_id for r in await store.list())
    finally:
        await store.close()


async def _cutoff() -> str:
    """An ISO time between the sagas made before and after it."""
    await asyncio.sleep(0.01)
    moment = datetime.fromtimestamp(time.time(), UTC).isoformat()
    await asyncio.sleep(0.01)
    return moment


async def test_purge_deletes_only_finished_sagas_older_than_the_time() -> None:
    completed = await cli_app.run_one(fail=False)
    failed = await cli_app.run_one(fail=True)
    running = await cli_app.crash_one()
    broken = await cli_app.run_with_broken_refund()
    cutoff = await _cutoff()
    recent = await cli_app.run_one(fail=False)

    done = await asyncio.to_thread(
        spakky_saga, "purge", *store_options(), "--finished-before", cutoff
    )

    assert done.returncode == OK, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("purged 2 saga(s) finished (COMPLETED, FAILED, TIMED_OUT, ")
    assert await _stored_ids() == sorted([running, broken, recent])
    shown = await asyncio.to_thread(spakky_saga, "show", completed, *store_options())
    assert shown.returncode == 3  # its log went with it
    assert failed not in (await asyncio.to_thread(spakky_saga, "list", *store_options())).stdout


async def test_a_dry_run_says_which_would_go_and_deletes_nothing() -> None:
    completed = await cli_app.run_one(fail=False)
    failed = await cli_app.run_one(fail=True)
    await cli_app.crash_one()
    before = await _stored_ids()
    cutoff = await _cutoff()

    text = await asyncio.to_thread(
        spakky_saga, "purge", *store_options(), "--finished-before", cutoff, "--dry-run"
    )
    as_json = await asyncio.to_thread(
        spakky_saga, "purge", *store_options(), "--finished-before", cutoff, "--dry-run", "--json"
    )

    assert text.returncode == OK, text.stderr
    assert text.stdout.startswith("would purge 2 saga(s) finished")
    assert "run the same command without --dry-run" in text.stdout
    assert as_json.returncode == OK, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["dry_run"] is True
    assert report["count"] == 2
    assert report["saga_ids"] == sorted([completed, failed])
    assert await _stored_ids() == before


async def test_purge_before_a_date_in_the_past_deletes_nothing() -> None:
    await cli_app.run_one(fail=False)
    before = await _stored_ids()

    done = await asyncio.to_thread(
        spakky_saga, "purge", *store_options(), "--finished-before", "2000-01-01", "--json"
    )

    assert done.returncode == OK, done.stderr
    assert json.loads(done.stdout)["count"] == 0
    assert await _stored_ids() == before


def test_purge_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"

    done = spakky_saga("purge", "--store", str(missing), "--finished-before", "2024-05-01")

    assert done.returncode == STORE_FAILED
    assert f"no saga store at {missing}: the file does not exist" in done.stderr
    assert not missing.exists()


async def test_purge_of_a_schema_without_a_store_creates_nothing() -> None:
    async with postgres_schema() as (dsn, schema):
        done = await asyncio.to_thread(
            spakky_saga,
            "purge",
            "--store",
            dsn,
            "--schema",
            schema,
            "--finished-before",
            "2024-05-01",
        )

        assert done.returncode == STORE_FAILED
        assert f'no saga store in schema "{schema}"' in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--finished-before", "last week"], "--finished-before last week: not an ISO date"),
        ([], "the following arguments are required: --finished-before"),
    ],
)
def test_purge_with_a_wrong_time_is_a_usage_error(args: list[str], message: str) -> None:
    done = spakky_saga("purge", "--store", "x.db", *args)

    assert done.returncode == USAGE
    assert message in done.stderr
    assert "Traceback" not in done.stderr
