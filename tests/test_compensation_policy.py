"""Compensations with a policy of their own: `action >> (step(undo) | Retry(n))` retries a
compensation, `step(undo, timeout=...)` bounds each of its attempts. Every attempt is
recorded, announced, written ahead (durable) and keyed (`.../undo`, `.../undo/2`, ...)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from spakky_saga import (
    ExponentialBackoff,
    InMemorySagaStore,
    Retry,
    SagaCompensationFailedError,
    SagaEngine,
    SagaEvent,
    SagaEventKind,
    SagaListener,
    SagaStatus,
    StepStatus,
    current_step,
    saga_flow,
    step,
)
from tests.durable_support import Crash, StoreClock, Ticket
from tests.support import Boom, ManualClock, OrderData, RecordingSleep, capture_saga_logs


class Refunds:
    """A payment API whose refund fails its first `failures` calls; records the keys."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.keys: list[str] = []

    async def __call__(self, data: object) -> None:
        self.keys.append(current_step().idempotency_key.split(":", 1)[1])
        if len(self.keys) <= self.failures:
            raise Boom(f"refund refused ({len(self.keys)})")


class Kinds(SagaListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, float]] = []

    def wants_progress(self) -> bool:
        return True

    def compensation_started(self, event: SagaEvent) -> None:
        self.events.append(("started", event.attempt, 0.0))

    def compensation_failed(self, event: SagaEvent) -> None:
        self.events.append(("failed", event.attempt, 0.0))

    def compensation_retrying(self, event: SagaEvent) -> None:
        self.events.append(("retrying", event.attempt, event.delay_seconds))

    def compensation_done(self, event: SagaEvent) -> None:
        self.events.append(("done", event.attempt, 0.0))


async def charge(data: OrderData) -> OrderData:
    return data


async def decline(data: OrderData) -> None:
    raise Boom("card declined")


async def test_a_retried_compensation_is_recorded_announced_and_keyed_attempt_by_attempt(
    clock: ManualClock, sleep: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    capture_saga_logs(caplog)
    refunds = Refunds(failures=2)
    listener = Kinds()
    engine = SagaEngine(clock=clock, sleep=sleep, listeners=[listener])

    async def refund(data: OrderData) -> None:
        await refunds(data)

    flow = saga_flow(
        step(charge) >> (step(refund) | Retry(3, ExponentialBackoff(0.5))),
        decline,
    )

    result = await engine.run(flow, OrderData(order_id=1))

    assert result.status is SagaStatus.FAILED
    assert refunds.keys == ["charge/undo", "charge/undo/2", "charge/undo/3"]
    assert sleep.delays == [0.5, 1.0]
    assert [(r.attempt, r.status) for r in result.history if r.compensation] == [
        (1, StepStatus.FAILED),
        (2, StepStatus.FAILED),
        (3, StepStatus.COMPENSATED),
    ]
    assert listener.events == [
        ("started", 1, 0.0),
        ("failed", 1, 0.0),
        ("retrying", 2, 0.5),
        ("started", 2, 0.0),
        ("failed", 2, 0.0),
        ("retrying", 3, 1.0),
        ("started", 3, 0.0),
        ("done", 3, 0.0),
    ]
    retries = [r.getMessage() for r in caplog.records if "compensation_retry" in r.getMessage()]
    assert retries == [
        "[saga=<anonymous> step=charge status=compensation_retry attempt=2]",
        "[saga=<anonymous> step=charge status=compensation_retry attempt=3]",
    ]
    timeline = result.format_timeline().splitlines()
    assert [line.split()[1:5] for line in timeline if "undo charge" in line] == [
        ["undo", "charge", "failed", "1"],
        ["undo", "charge", "failed", "2"],
        ["undo", "charge", "compensated", "3"],
    ]


async def test_a_compensation_that_keeps_failing_is_reported_once_its_policy_gives_up(
    clock: ManualClock, sleep: RecordingSleep
) -> None:
    refunds = Refunds(failures=10)

    async def refund(data: OrderData) -> None:
        await refunds(data)

    engine = SagaEngine(clock=clock, sleep=sleep, log=False)
    flow = saga_flow(step(charge) >> (step(refund) | Retry(2, ExponentialBackoff(0.0))), decline)

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, OrderData(order_id=1))

    assert len(refunds.keys) == 2
    assert list(raised.value.failures) == ["charge"]
    assert str(raised.value.failures["charge"]) == "refund refused (2)"


async def test_a_compensation_timeout_bounds_each_attempt(
    clock: ManualClock, sleep: RecordingSleep
) -> None:
    calls = 0

    async def refund(data: OrderData) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # the payment API hangs the first time

    engine = SagaEngine(clock=clock, sleep=sleep, log=False)
    flow = saga_flow(
        step(charge)
        >> (step(refund, timeout=timedelta(milliseconds=20)) | Retry(2, ExponentialBackoff(0.0))),
        decline,
    )

    result = await engine.run(flow, OrderData(order_id=1))

    assert calls == 2
    undone = [(r.attempt, r.status, type(r.error)) for r in result.history if r.compensation]
    assert undone == [(1, StepStatus.FAILED, TimeoutError), (2, StepStatus.COMPENSATED, type(None))]


async def test_a_crash_during_a_retried_compensation_resumes_at_the_attempt_in_flight() -> None:
    store_clock = StoreClock()
    store = InMemorySagaStore(clock=store_clock)
    keys: list[str] = []

    async def act(data: Ticket) -> None:
        return None

    async def fail(data: Ticket) -> None:
        raise Boom("declined")

    async def undo(data: Ticket) -> None:
        key = current_step().idempotency_key.split(":", 1)[1]
        keys.append(key)
        if len(keys) == 1:
            raise Boom("refund refused")
        if len(keys) == 2:
            raise Crash("killed during attempt 2")

    async def no_wait(seconds: float) -> None:
        return None

    act.__name__, undo.__name__ = "charge", "refund"
    flow = saga_flow(step(act) >> (step(undo) | Retry(3, ExponentialBackoff(0.0))), fail)
    crashed = SagaEngine(store=store, sleep=no_wait, log=False)
    recovering = SagaEngine(store=store, sleep=no_wait, log=False)
    recovering.register("order", flow)
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    store_clock.expire()

    [saga] = (await recovering.recover()).sagas

    # Attempt 2 was written before it ran: the recovery runs it again, with the same key.
    assert keys == ["charge/undo", "charge/undo/2", "charge/undo/2"]
    assert saga.result is not None
    assert saga.result.status is SagaStatus.FAILED
    record = await store.load(saga.saga_id)
    assert record is not None
    kinds = [(e.kind, e.attempt) for e in record.events if e.kind.startswith("compensation")]
    assert kinds == [
        (SagaEventKind.COMPENSATION_STARTED.value, 1),
        (SagaEventKind.COMPENSATION_FAILED.value, 1),
        (SagaEventKind.COMPENSATION_RETRYING.value, 2),
        (SagaEventKind.COMPENSATION_STARTED.value, 2),
        (SagaEventKind.COMPENSATION_STARTED.value, 2),
        (SagaEventKind.COMPENSATION_DONE.value, 2),
    ]
