"""Recovered runs go through the same driver as fresh ones: what the log says about each step
(attempts used, members finished or failed for good) is where the one loop starts.

Each test here failed on the engine that had a second, hand-copied loop for recovery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from spakky_saga import (
    ExponentialBackoff,
    InMemorySagaStore,
    RecoveryPolicy,
    Retry,
    SagaEngine,
    SagaStatus,
    SagaStoreError,
    StepStatus,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.codec import decode, resolve_type
from spakky_saga.store import SagaUpdate, StoredEvent
from tests.durable_support import Crash, Ledger, StoreClock, Ticket, bump, engines


@pytest.fixture
def clock() -> StoreClock:
    return StoreClock()


@pytest.fixture
def store(clock: StoreClock) -> InMemorySagaStore:
    return InMemorySagaStore(clock=clock)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


async def no_wait(seconds: float) -> None:
    """The engines' backoff sleep: retries follow at once."""


async def test_a_member_that_failed_for_good_before_the_crash_does_not_run_again(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    calls = {"flaky": 0, "sibling": 0}
    flaky_failed_twice = False

    async def flaky(data: Ticket) -> Ticket:
        nonlocal flaky_failed_twice
        calls["flaky"] += 1
        if calls["flaky"] <= 2:  # transient: a third attempt would succeed
            flaky_failed_twice = calls["flaky"] == 2
            raise ConnectionError(f"attempt {calls['flaky']}")
        return dataclasses.replace(data, charged=5)

    async def sibling(data: Ticket) -> Ticket:
        calls["sibling"] += 1
        if calls["sibling"] == 1:
            raise ConnectionError("first try")  # retried; its next start writes flaky's end
        if calls["sibling"] == 2:
            assert flaky_failed_twice
            raise Crash("sibling")  # the process dies with flaky's two failures in the log
        return dataclasses.replace(data, stock=2)

    async def undo(data: Ticket) -> None:
        ledger.entries.append(("undo", "-"))

    flow = saga_flow(
        parallel(
            step(flaky, compensate=undo) | Retry(2, ExponentialBackoff(0.0)),
            step(sibling, compensate=undo) | Retry(3, ExponentialBackoff(0.0)),
        )
    )
    crashed, recovering = engines(store, flow, recovery=RecoveryPolicy.RESUME, sleep=no_wait)
    with pytest.raises(BaseExceptionGroup):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    assert calls["flaky"] == 2  # Retry(2): two attempts in total, across the crash
    assert saga.result is not None
    assert saga.result.status is SagaStatus.FAILED
    assert saga.result.failed_step == "flaky"
    assert [(r.name, r.attempt, r.status) for r in saga.result.history if r.name == "flaky"] == [
        ("flaky", 1, StepStatus.FAILED),
        ("flaky", 2, StepStatus.FAILED),
    ]
    assert ledger.names() == ["undo"]  # the sibling committed on its re-run, then was undone


async def test_after_resuming_through_a_group_the_stored_data_is_the_returned_data(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = saga_flow(
        ledger.transaction("reserve", bump("stock")),
        parallel(
            ledger.transaction("charge", bump("charged", 5)),
            ledger.transaction("ship", lambda d: dataclasses.replace(d, shipped=True)),
        ),
    )
    crashed, recovering = engines(store, flow, recovery=RecoveryPolicy.RESUME)
    ledger.crash_at = "ship"
    with pytest.raises(BaseExceptionGroup):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    assert saga.result is not None
    assert saga.result.status is SagaStatus.COMPLETED
    expected = Ticket(order_id=1, stock=1, charged=5, shipped=True)
    assert (saga.result.data.stock, saga.result.data.charged, saga.result.data.shipped) == (
        expected.stock,
        expected.charged,
        expected.shipped,
    )
    record = await store.load(saga.saga_id)
    assert record is not None
    assert record.data_type is not None
    stored = decode(resolve_type(record.data_type), record.data)
    assert dataclasses.asdict(stored) == dataclasses.asdict(saga.result.data)


class FailingAppends(InMemorySagaStore):
    """A store whose every write after the saga's first one fails, as a store that went away."""

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        raise SagaStoreError("the database went away")


async def test_a_store_failure_inside_a_group_is_a_store_error_not_an_exception_group() -> None:
    attempts = 0

    async def flaky(data: Ticket) -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("timeout")  # its retry's backoff is written ahead: that fails

    async def steady(data: Ticket) -> None:
        return None

    flow = saga_flow(
        parallel(step(flaky) | Retry(3, ExponentialBackoff(0.5)), step(steady)),
    )
    engine = SagaEngine(store=FailingAppends(), sleep=no_wait, log=False)

    with pytest.raises(SagaStoreError, match="went away"):
        await engine.run(flow, Ticket(order_id=1), saga_name="order")

    assert attempts == 1  # nothing acted after the log failed
