"""Durable sagas with a pivot: STUCK is stored, and recovery honours the point of no return
(a saga past its pivot goes forward even under RecoveryPolicy.COMPENSATE)."""

from __future__ import annotations

import asyncio

import pytest

from spakky_saga import (
    ExponentialBackoff,
    InMemorySagaStore,
    RecoveryOutcome,
    RecoveryPolicy,
    Retry,
    SagaFlow,
    SagaStatus,
    StoredStatus,
    pivot,
    saga_flow,
    step,
)
from tests.durable_support import Crash, Ledger, StoreClock, Ticket, bump, engines

RETRY = Retry(2, ExponentialBackoff(base=0.0))


@pytest.fixture
def clock() -> StoreClock:
    return StoreClock()


@pytest.fixture
def store(clock: StoreClock) -> InMemorySagaStore:
    return InMemorySagaStore(clock=clock)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


def order(ledger: Ledger, *, ship_fails: bool = False) -> SagaFlow[Ticket]:
    """reserve >> undo, pivot(charge), ship | Retry(2)."""

    async def broken_ship(data: Ticket) -> Ticket:
        ledger.entries.append(("ship failed", ""))
        raise ConnectionError("the carrier's API is down")

    ship = broken_ship if ship_fails else ledger.action("ship")
    return saga_flow(
        ledger.transaction("reserve", bump("stock")),
        pivot(ledger.action("charge", bump("charged", 10))),
        step(ship, on_error=RETRY, name="ship"),
    )


async def test_a_durable_saga_that_gives_up_after_its_pivot_is_stored_stuck(
    store: InMemorySagaStore, ledger: Ledger
) -> None:
    engine, _ = engines(store, order(ledger, ship_fails=True))

    result = await engine.run(order(ledger, ship_fails=True), Ticket(order_id=1), saga_name="order")

    assert result.status is SagaStatus.STUCK
    assert ledger.names() == ["reserve", "charge", "ship failed", "ship failed"]
    record = await store.load(str(result.data.saga_id))
    assert record is not None
    assert record.status is StoredStatus.STUCK
    assert record.failed_step == "ship"
    assert record.owner is None
    assert [r.saga_id for r in await store.list([StoredStatus.STUCK])] == [record.saga_id]


@pytest.mark.parametrize("policy", [RecoveryPolicy.COMPENSATE, RecoveryPolicy.RESUME])
async def test_a_saga_killed_after_its_pivot_committed_goes_forward_under_any_policy(
    policy: RecoveryPolicy, store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = order(ledger)
    crashed, recovering = engines(store, flow, recovery=policy)
    ledger.crash_at = "ship"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    report = await recovering.recover()

    assert ledger.names() == ["reserve", "charge", "ship"]
    [saga] = report.sagas
    assert saga.outcome is RecoveryOutcome.COMPLETED
    assert saga.result is not None
    assert saga.result.data.charged == 10
    assert not report.needs_attention


async def test_a_saga_killed_in_its_pivot_is_compensated_under_compensate(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = order(ledger)
    crashed, recovering = engines(store, flow)
    ledger.crash_at = "charge"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    report = await recovering.recover()

    assert ledger.names() == ["reserve", "undo reserve"]
    assert report.sagas[0].outcome is RecoveryOutcome.COMPENSATED


async def test_a_recovered_saga_that_gives_up_after_its_pivot_is_stuck_and_needs_attention(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = order(ledger)
    crashed, _ = engines(store, flow)
    ledger.crash_at = "ship"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()
    _, recovering = engines(store, order(ledger, ship_fails=True))

    report = await recovering.recover()

    [saga] = report.sagas
    assert saga.outcome is RecoveryOutcome.STUCK
    assert report.needs_attention == (saga,)
    assert saga.result is not None
    assert saga.result.status is SagaStatus.STUCK
    assert "undo reserve" not in ledger.names()
    record = await store.load(saga.saga_id)
    assert record is not None
    assert record.status is StoredStatus.STUCK


async def test_a_durable_saga_cancelled_past_its_pivot_is_left_for_recovery_to_finish(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    started = asyncio.Event()

    async def ship(data: Ticket) -> None:
        if not started.is_set():
            started.set()
            await asyncio.Event().wait()  # the caller cancels the saga here
        ledger.entries.append(("ship", ""))

    flow = saga_flow(
        ledger.transaction("reserve", bump("stock")),
        pivot(ledger.action("charge", bump("charged", 10))),
        step(ship, on_error=RETRY, name="ship"),
    )
    crashed, recovering = engines(store, flow)
    data = Ticket(order_id=1)
    running = asyncio.create_task(crashed.run(flow, data, saga_name="order"))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    record = await store.load(str(data.saga_id))
    assert record is not None
    assert record.status is StoredStatus.RUNNING  # unfinished: past the pivot it must go on
    clock.expire()

    report = await recovering.recover()

    assert report.sagas[0].outcome is RecoveryOutcome.COMPLETED
    assert ledger.names() == ["reserve", "charge", "ship"]
