"""An operator's cancel request (`SagaStore.request_cancel`, what `spakky-saga cancel`
records): the owner's heartbeat notices it within a lease and cancels the run, which
compensates and ends CANCELLED; a saga whose owner died is compensated by the engine that
recovers it, whatever its recovery policy. Each committed step is compensated once, and the
log says who asked."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from spakky_saga import (
    InMemorySagaStore,
    RecoveryPolicy,
    SagaEngine,
    StoredStatus,
    saga_flow,
)
from spakky_saga.store import CANCEL_REQUESTED
from spakky_saga.testing import VirtualClock
from tests.durable_support import Crash, Ledger, StoreClock, Ticket

LEASE = timedelta(seconds=30)


async def test_a_live_owner_notices_a_cancel_request_within_a_lease_and_compensates(
    saga_clock: VirtualClock,
) -> None:
    # Virtual loop time (saga_clock) is the store's clock too: the heartbeat's sleeps and the
    # leases move together, and the wait below takes no real time.
    store = InMemorySagaStore(clock=saga_clock)
    ledger = Ledger()
    gate = asyncio.Event()
    waiting = asyncio.Event()

    async def await_payment(data: Ticket) -> None:
        waiting.set()
        await gate.wait()  # never set: only the cancellation ends it

    flow = saga_flow(ledger.transaction("reserve"), await_payment, ledger.transaction("ship"))
    engine = SagaEngine(store=store, lease=LEASE, log=False)
    data = Ticket(order_id=1)
    running = asyncio.create_task(engine.run(flow, data, saga_name="order"))
    await waiting.wait()
    loop = asyncio.get_running_loop()
    asked_at = loop.time()

    asked = await store.request_cancel(str(data.saga_id), "ops@box")

    assert asked is not None
    assert asked.status is StoredStatus.RUNNING
    with pytest.raises(asyncio.CancelledError):
        await running
    assert loop.time() - asked_at <= LEASE.total_seconds()
    assert ledger.names() == ["reserve", "undo reserve"]
    saved = await store.load(str(data.saga_id))
    assert saved is not None
    assert saved.status is StoredStatus.CANCELLED
    assert saved.owner is None
    assert saved.error == f"saga {data.saga_id}: cancelled at the request of ops@box"
    [note] = [e for e in saved.events if e.kind == CANCEL_REQUESTED]
    assert note.owner == "ops@box"
    assert asked.cancel_request is not None
    assert note.at == asked.cancel_request.at
    await engine.aclose()


async def test_a_saga_whose_engine_died_is_cancelled_by_recovery_even_under_resume() -> None:
    clock = StoreClock()
    store = InMemorySagaStore(clock=clock)
    ledger = Ledger()
    flow = saga_flow(
        ledger.transaction("reserve"), ledger.transaction("pay"), ledger.transaction("ship")
    )
    crashed = SagaEngine(store=store, log=False)
    recovering = SagaEngine(store=store, log=False)
    for engine in (crashed, recovering):
        engine.register("order", flow, recovery=RecoveryPolicy.RESUME)
    data = Ticket(order_id=2)
    ledger.crash_at = "ship"
    with pytest.raises(Crash):
        await crashed.run(flow, data, saga_name="order")
    clock.expire()
    await store.request_cancel(str(data.saga_id), "ops@box")

    report = await recovering.recover(saga_ids=[str(data.saga_id)])

    assert [s.outcome for s in report.sagas] == ["cancelled"]
    # Not resumed: compensated as under COMPENSATE, the "ship" attempt in doubt included.
    assert ledger.names() == ["reserve", "pay", "undo ship", "undo pay", "undo reserve"]
    saved = await store.load(str(data.saga_id))
    assert saved is not None
    assert saved.status is StoredStatus.CANCELLED
    notes = [e for e in saved.events if e.kind == CANCEL_REQUESTED]
    assert [n.owner for n in notes] == ["ops@box"]
    assert len(await recovering.recover()) == 0  # nothing left: compensated once
    assert ledger.names().count("undo pay") == 1
