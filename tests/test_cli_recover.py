"""`spakky-saga recover` right after a crash: a saga whose lease is still live is listed as
skipped, with the time it becomes recoverable, and `--wait` waits for its lease to expire.
Also what recovery says in the command's own terms (a changed flow, a compensation that
failed). Run as an operator runs it, as a subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spakky_saga import StoredStatus
from spakky_saga.cli import ATTENTION, OK
from tests import cli_app
from tests.cli_app import spakky_saga, store_options

RECOVER = ("recover", "--app", "tests.cli_app:recovering_engine")


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_kind(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    async with cli_app.environment_store(request.param, tmp_path, monkeypatch):
        yield request.param


@pytest.fixture
async def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with cli_app.environment_store("sqlite", tmp_path, monkeypatch):
        yield


async def stored_status(saga_id: str) -> tuple[StoredStatus, float | None]:
    store = cli_app.store()
    await store.open()
    try:
        record = await store.load(saga_id)
    finally:
        await store.close()
    assert record is not None
    return record.status, record.lease_expires


async def test_recover_lists_a_saga_whose_lease_is_live_with_when_it_becomes_recoverable(
    store_kind: str,
) -> None:
    crashed = await cli_app.crash_one(timedelta(seconds=60))
    _, expires = await stored_status(crashed)
    assert expires is not None

    done = spakky_saga(*RECOVER)

    assert done.returncode == ATTENTION, done.stderr
    assert "nothing to recover" not in done.stdout
    until = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
    [line] = done.stdout.splitlines()
    assert line.startswith(f"{crashed} (checkout): skipped, RUNNING: engine ")
    assert f"holds its lease until {until} (recoverable in " in line
    assert "--wait" in done.stderr
    assert "Traceback" not in done.stderr
    listed = spakky_saga("list", *store_options())
    assert f"{crashed}  checkout  RUNNING" in listed.stdout
    assert (await stored_status(crashed))[0] is StoredStatus.RUNNING  # untouched

    as_json = spakky_saga(*RECOVER, "--json")
    [skipped] = json.loads(as_json.stdout)
    assert (skipped["saga_id"], skipped["outcome"], skipped["lease_expires"]) == (
        crashed,
        "skipped",
        expires,
    )


async def test_recover_wait_recovers_the_saga_once_its_lease_expires(store_kind: str) -> None:
    # The crashed engine's lease is kept alive (as if the engine were still stopping) until
    # the command says it waits: then it is left to expire, 1 s later.
    crashed, owner = await cli_app.crash_owned(timedelta(seconds=1))
    store = cli_app.store()
    await store.open()
    try:
        assert (await store.renew(owner, [crashed], 1.0)).kept == {crashed}
        command = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "spakky_saga", *RECOVER, "--wait", "60"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cli_app.ROOT,
        )

        async def keep_the_lease() -> None:
            while True:
                await store.renew(owner, [crashed], 1.0)
                await asyncio.sleep(0.1)

        renewing = asyncio.create_task(keep_the_lease())
        try:
            assert command.stderr is not None
            said = await asyncio.wait_for(command.stderr.readline(), timeout=60)
        finally:
            renewing.cancel()
        out, err = await asyncio.wait_for(command.communicate(), timeout=60)
    finally:
        await store.close()

    assert said.decode().startswith(f"waiting for {crashed} (checkout): engine {owner} ")
    assert command.returncode == OK, err.decode()
    assert out.decode().strip() == f"{crashed} (checkout): compensated"
    assert (await stored_status(crashed))[0] is StoredStatus.FAILED


async def test_recover_wait_gives_up_after_its_bound_on_a_lease_that_keeps_being_renewed(
    sqlite_store: None,
) -> None:
    crashed = await cli_app.crash_one(timedelta(seconds=60))

    done = spakky_saga(*RECOVER, "--wait", "0.3")

    assert done.returncode == ATTENTION
    assert f"{crashed} (checkout): skipped" in done.stdout
    assert "their leases are still live: wait longer" in done.stderr
    assert (await stored_status(crashed))[0] is StoredStatus.RUNNING


async def test_a_changed_flow_is_refused_naming_the_command_line_flag(sqlite_store: None) -> None:
    crashed = await cli_app.crash_one()

    refused = spakky_saga("recover", "--app", "tests.cli_app:changed_engine")

    assert refused.returncode == ATTENTION
    assert f"{crashed} (checkout): refused: " in refused.stdout
    assert (
        "run `spakky-saga recover --app tests.cli_app:changed_engine --compensate-by-name`"
        in refused.stdout
    )
    assert "compensate_by_name=True" not in refused.stdout
    by_name = spakky_saga(
        "recover", "--app", "tests.cli_app:changed_engine", "--compensate-by-name"
    )
    assert (by_name.returncode, by_name.stdout.strip()) == (
        OK,
        f"{crashed} (checkout): compensated",
    )


async def test_a_compensation_that_fails_again_names_the_retry_command(sqlite_store: None) -> None:
    broken = await cli_app.run_with_broken_refund()

    shown = spakky_saga("show", broken, *store_options())
    again = spakky_saga(
        "retry-compensation",
        broken,
        "--app",
        "tests.cli_app:recovering_engine",
        broken_refund=True,
    )

    assert f"run `spakky-saga retry-compensation {broken}`" in shown.stdout
    assert again.returncode == ATTENTION
    first, hint = again.stdout.splitlines()
    assert first.startswith(f"{broken} (checkout): compensation_failed: ")
    assert hint == (
        f"  repair the participant, then run: spakky-saga retry-compensation {broken} "
        "--app tests.cli_app:recovering_engine"
    )
