"""`spakky-saga cancel` asked while the saga's own engine is alive, in this process: its
heartbeat notices the request and the run compensates. On virtual loop time (saga_clock), with
a SQLite store only: on PostgreSQL the heartbeat, renewing every virtual 10 s with no real
time passing, raced the command's own writes and the run was seen to hang (closing note)."""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import SagaEngine, StoredStatus, saga_flow, step
from spakky_saga.cli import OK
from spakky_saga.store import CANCEL_REQUESTED
from spakky_saga.testing import VirtualClock
from tests import cli_app
from tests.cli_app import CheckoutData

APP = ("--app", "tests.cli_app:recovering_engine")
OPERATOR = f"{getpass.getuser()}@{socket.gethostname()}"


@pytest.fixture(autouse=True)
async def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with cli_app.environment_store("sqlite", tmp_path, monkeypatch):
        yield


async def test_a_live_engine_cancels_and_compensates_its_saga_when_the_command_asks(
    saga_clock: VirtualClock,
) -> None:
    # Virtual loop time (saga_clock): the engine's heartbeat (every 10 s of a 30 s lease)
    # takes no real time; the leases in the store are real, and stay live throughout.
    undone: list[str] = []
    waiting = asyncio.Event()

    async def reserve(data: CheckoutData) -> None:
        return None

    async def undo_reserve(data: CheckoutData) -> None:
        undone.append("reserve")

    async def await_payment(data: CheckoutData) -> None:
        waiting.set()
        await asyncio.Event().wait()  # only the cancellation ends it

    engine = SagaEngine(store=cli_app.store(), lease=timedelta(seconds=30), log=False)
    data = CheckoutData(order_id=5)
    flow = saga_flow(step(reserve, compensate=undo_reserve), await_payment)
    running = asyncio.create_task(engine.run(flow, data, saga_name="awaiting"))
    await waiting.wait()
    command = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "spakky_saga", "cancel", str(data.saga_id), *APP),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cli_app.ROOT,
    )
    out, err = await command.communicate()
    loop = asyncio.get_running_loop()
    asked_at = loop.time()

    assert command.returncode == OK, err.decode()
    assert "cancel requested by" in out.decode()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert loop.time() - asked_at <= 30
    assert undone == ["reserve"]
    await engine.aclose()
    saved = await cli_app.load_saga(str(data.saga_id))
    assert saved.status is StoredStatus.CANCELLED
    assert [e.owner for e in saved.events if e.kind == CANCEL_REQUESTED] == [OPERATOR]
