"""`spakky-saga cancel`: a RUNNING saga whose engine died is claimed and compensated by the
command (once, ending CANCELLED); one whose engine is alive gets a cancel request, which that
engine's heartbeat acts on within a lease; a saga in any other status exits 2 saying it, an
unknown one 3. Run as a subprocess on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import StoredStatus
from spakky_saga.cli import NOT_FOUND, OK, USAGE
from spakky_saga.store import CANCEL_REQUESTED, SagaUpdate
from tests import cli_app
from tests.cli_app import spakky_saga, store_options

APP = ("--app", "tests.cli_app:recovering_engine")
OPERATOR = f"{getpass.getuser()}@{socket.gethostname()}"


@pytest.fixture(params=["sqlite", "postgresql"], autouse=True)
async def environment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    async with cli_app.environment_store(request.param, tmp_path, monkeypatch):
        yield


async def test_cancel_of_a_saga_whose_engine_died_compensates_it_once_and_ends_cancelled() -> None:
    crashed = await cli_app.crash_one()  # its 1 ms lease has expired

    done = await asyncio.to_thread(spakky_saga, "cancel", crashed, *APP)

    assert done.returncode == OK, done.stderr
    assert done.stderr == ""
    assert done.stdout == (
        f"{crashed} (checkout): cancelled: its engine had stopped; its committed steps were "
        "compensated and it is CANCELLED\n"
    )
    saved = await cli_app.load_saga(crashed)
    assert saved.status is StoredStatus.CANCELLED
    assert saved.owner is None
    kinds = [(e.kind, e.step) for e in saved.events]
    assert kinds.count(("compensation_done", "reserve")) == 1
    [note] = [e for e in saved.events if e.kind == CANCEL_REQUESTED]
    assert note.owner == OPERATOR
    shown = await asyncio.to_thread(spakky_saga, "show", crashed, *store_options())
    assert f"cancel requested by {OPERATOR} (spakky-saga cancel)" in shown.stdout
    again = await asyncio.to_thread(spakky_saga, "cancel", crashed, *APP)
    assert again.returncode == USAGE
    assert again.stderr == (
        f"spakky-saga: saga {crashed} (checkout) is CANCELLED: only RUNNING and WAITING sagas "
        "can be "
        "cancelled; it was cancelled already\n"
    )
    assert [
        (e.kind, e.step) for e in (await cli_app.load_saga(crashed)).events
    ] == kinds  # nothing twice


async def test_cancel_of_a_saga_whose_engine_is_alive_records_the_request_for_it() -> None:
    running, owner = await cli_app.crash_owned(timedelta(seconds=120))  # a live lease

    done = await asyncio.to_thread(spakky_saga, "cancel", running, *APP, "--json")

    assert done.returncode == OK, done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "requested"
    assert report["owner"] == owner
    assert report["requested_by"] == OPERATOR
    saved = await cli_app.load_saga(running)
    assert saved.status is StoredStatus.RUNNING  # its engine acts on it, not the command
    assert saved.owner == owner
    assert saved.cancel_request is not None
    assert saved.cancel_request.by == OPERATOR
    text = await asyncio.to_thread(spakky_saga, "cancel", running, *APP)
    assert text.returncode == OK, text.stderr
    assert f"{running} (checkout): cancel requested by {OPERATOR} at " in text.stdout
    assert f"engine {owner} runs it and cancels it within a lease" in text.stdout
    assert f"`spakky-saga show {running} --store STORE`" in text.stdout


async def test_exit_2_for_cancel_of_a_completed_saga() -> None:
    completed = await cli_app.run_one(fail=False)

    done = await asyncio.to_thread(spakky_saga, "cancel", completed, *APP)

    assert done.returncode == USAGE
    assert done.stderr == (
        f"spakky-saga: saga {completed} (checkout) is COMPLETED: only RUNNING and WAITING sagas "
        "can be "
        "cancelled; it completed, so there is nothing to stop; undo its effects with a saga "
        "of their own\n"
    )
    assert (await cli_app.load_saga(completed)).cancel_request is None


async def test_exit_2_for_cancel_of_a_compensating_saga() -> None:
    saga_id, owner = await cli_app.crash_owned(timedelta(seconds=120))
    store = cli_app.store()
    await store.open()
    try:
        await store.append(saga_id, owner, [], SagaUpdate(status=StoredStatus.COMPENSATING), 120)
    finally:
        await store.close()

    done = await asyncio.to_thread(spakky_saga, "cancel", saga_id, *APP)

    assert done.returncode == USAGE
    assert (
        f"saga {saga_id} (checkout) is COMPENSATING: only RUNNING and WAITING sagas" in done.stderr
    )
    assert "it is being rolled back already" in done.stderr
    assert (await cli_app.load_saga(saga_id)).cancel_request is None


async def test_exit_2_for_cancel_of_a_saga_whose_compensation_failed_pointing_at_retry() -> None:
    broken = await cli_app.run_with_broken_refund()

    done = await asyncio.to_thread(spakky_saga, "cancel", broken, *APP)

    assert done.returncode == USAGE
    assert "is COMPENSATION_FAILED: only RUNNING and WAITING sagas can be cancelled" in done.stderr
    assert f"`spakky-saga retry-compensation {broken} --app tests.cli_app:recovering_engine`" in (
        done.stderr
    )


async def test_exit_3_for_cancel_of_an_unknown_saga() -> None:
    await cli_app.create_store()

    done = await asyncio.to_thread(spakky_saga, "cancel", "no-such-id", *APP)

    assert done.returncode == NOT_FOUND
    assert done.stderr == "spakky-saga: no saga no-such-id in the store\n"
