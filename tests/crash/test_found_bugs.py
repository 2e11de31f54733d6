"""Bugs the crash tests found, each kept as the smallest test that showed it (in one process,
on the in-memory store, so they run in milliseconds): an unserialised journal, a heartbeat
ahead of the first write, a retried compensation replay forgot, a stale failed_step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest

from spakky_saga import (
    ExponentialBackoff,
    InMemorySagaStore,
    Retry,
    SagaCompensationFailedError,
    SagaEngine,
    SagaStatus,
    current_step,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.store import SagaRecord, SagaUpdate, StoredEvent
from tests.durable_support import Crash, StoreClock, Ticket


class SlowFirstWrite(InMemorySagaStore):
    """A store whose `begin` takes longer than a third of the lease (a busy connection pool,
    a slow disk, a loaded database server)."""

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        await asyncio.sleep(lease_seconds * 0.6)
        await super().begin(record, events, lease_seconds)


async def test_a_slow_first_write_does_not_make_the_heartbeat_declare_the_saga_lost() -> None:
    async def reserve(data: Ticket) -> None:
        return None

    async def ship(data: Ticket) -> None:
        return None

    engine = SagaEngine(store=SlowFirstWrite(), lease=timedelta(milliseconds=60))

    result = await engine.run(saga_flow(reserve, ship), Ticket(order_id=1), saga_name="order")

    assert result.status is SagaStatus.COMPLETED


async def test_a_step_that_committed_on_retry_is_not_reported_as_the_failed_step() -> None:
    async def reserve(data: Ticket) -> None:
        return None

    async def undo(data: Ticket) -> None:
        return None

    async def charge(data: Ticket) -> None:
        if current_step().attempt == 1:
            raise ConnectionError("payment API timed out")

    async def ship(data: Ticket) -> None:
        raise Crash  # the process dies here, after charge committed on its second attempt

    flow = saga_flow(
        step(reserve, compensate=undo),
        step(charge, compensate=undo, on_error=Retry(2, ExponentialBackoff(0.0))),
        ship,
    )
    clock = StoreClock()
    store = InMemorySagaStore(clock=clock)
    crashed, recovering = SagaEngine(store=store), SagaEngine(store=store)
    recovering.register("order", flow)
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    assert saga.result is not None
    assert saga.result.failed_step is None  # charge succeeded; the saga was cut in ship
    record = await store.load(saga.saga_id)
    assert record is not None
    assert record.failed_step is None


class SlowBegin(InMemorySagaStore):
    """`begin` takes a moment (as an INSERT on PostgreSQL does), well within the lease."""

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        await asyncio.sleep(0.01)
        await super().begin(record, events, lease_seconds)


async def test_a_flow_that_starts_with_a_parallel_group_runs_durably() -> None:
    # On PostgreSQL, with no slow store needed, 48 runs in 50 of such a flow failed this way.
    async def email(data: Ticket) -> None:
        return None

    async def invoice(data: Ticket) -> None:
        return None

    engine = SagaEngine(store=SlowBegin())

    result = await engine.run(
        saga_flow(parallel(email, invoice)), Ticket(order_id=1), saga_name="order"
    )

    assert result.status is SagaStatus.COMPLETED


class SlowWriteOf(InMemorySagaStore):
    """The write that carries `step`'s attempt is slow (a row lock, a busy connection)."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.slow_step = step

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        if any(e.step == self.slow_step and e.kind == "step_started" for e in events):
            await asyncio.sleep(0.05)
        await super().append(saga_id, owner, events, update, lease_seconds)


async def test_a_crash_while_a_group_member_s_write_is_in_flight_leaves_no_gap_in_the_log() -> None:
    async def reserve(data: Ticket) -> None:
        return None

    async def slow(data: Ticket) -> None:
        return None

    async def fast(data: Ticket) -> None:
        if current_step().attempt == 1:
            raise ConnectionError("retry me")
        raise Crash  # attempt 2, after its write; `slow`'s first write is still in flight

    store = SlowWriteOf("slow")
    engine = SagaEngine(store=store)
    flow = saga_flow(
        reserve, parallel(slow, step(fast, on_error=Retry(2, ExponentialBackoff(0.0))))
    )

    with pytest.raises(BaseExceptionGroup):
        await engine.run(flow, Ticket(order_id=1), saga_name="order")

    [listed] = await store.list()
    record = await store.load(listed.saga_id)
    assert record is not None
    seqs = [event.seq for event in record.events]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_crash_inside_retry_compensation_leaves_the_compensation_to_recovery() -> None:
    refunds: list[str] = []
    refund_api = {"state": "down"}

    async def charge(data: Ticket) -> None:
        return None

    async def refund(data: Ticket) -> None:
        if refund_api["state"] == "down":
            raise ConnectionError("payment API down")
        if refund_api["state"] == "crash":
            raise Crash  # the process retrying the compensation dies in it
        refunds.append(current_step().idempotency_key)

    async def decline(data: Ticket) -> None:
        raise ValueError("card declined")

    flow = saga_flow(step(charge, compensate=refund), decline)
    clock = StoreClock()
    store = InMemorySagaStore(clock=clock)
    crashed, recovering = SagaEngine(store=store), SagaEngine(store=store)
    recovering.register("order", flow)
    with pytest.raises(SagaCompensationFailedError):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    [failed] = await store.list()
    refund_api["state"] = "crash"
    with pytest.raises(Crash):
        await crashed.retry_compensation(failed.saga_id)
    refund_api["state"] = "up"
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    assert refunds  # the refund the crash cut runs again (at least once)
    assert saga.outcome == "compensated"
