"""Waits on an engine without a store: `wait_for` takes a signal sent with `engine.signal` and
merges it; its timeout goes to `on_timeout`; `sleep` waits in virtual time; a signal sent
before the wait is kept; a repeated signal id is delivered once; signals to sagas the engine
does not run, or of a type no wait accepts, are refused. On virtual loop time (saga_clock):
a 48-hour timeout fires at once, in order with everything else."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from spakky_saga import (
    AbstractSagaData,
    Compensate,
    ErrorStrategy,
    ExponentialBackoff,
    Retry,
    SagaEngine,
    SagaEventKind,
    SagaFlow,
    SagaListener,
    SagaResult,
    SagaSignalConflictError,
    SagaSignalTargetError,
    SagaSignalTypeError,
    SagaStatus,
    SagaTimeoutError,
    SagaWaitTimeoutError,
    Skip,
    StepStatus,
    saga_flow,
    sleep,
    sleep_until,
    step,
    wait_for,
)
from spakky_saga.events import SagaEvent
from spakky_saga.testing import VirtualClock


class Payment(AbstractSagaData):
    amount: int
    confirmation: str = ""
    captured: bool = False


@dataclass(frozen=True)
class PaymentConfirmed:
    reference: str


@dataclass(frozen=True)
class PaymentRefused:
    reason: str


def confirm(data: Payment, signal: PaymentConfirmed) -> Payment:
    return dataclasses.replace(data, confirmation=signal.reference)


class Ledger:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def reserve(self, data: Payment) -> None:
        self.calls.append("reserve")

    async def release(self, data: Payment) -> None:
        self.calls.append("release")

    async def capture(self, data: Payment) -> Payment:
        self.calls.append(f"capture {data.confirmation}")
        return dataclasses.replace(data, captured=True)


COMPENSATE = Compensate()


def payment_flow(
    ledger: Ledger, timeout: timedelta | None = None, on_timeout: ErrorStrategy = COMPENSATE
) -> SagaFlow[Payment]:
    return saga_flow(
        step(ledger.reserve, compensate=ledger.release),
        wait_for(PaymentConfirmed, merge=confirm, timeout=timeout, on_timeout=on_timeout),
        ledger.capture,
    )


async def _started(
    engine: SagaEngine, flow: SagaFlow[Payment], data: Payment
) -> asyncio.Task[SagaResult[Payment]]:
    task = asyncio.get_running_loop().create_task(engine.run(flow, data))
    for _ in range(5):
        await asyncio.sleep(0)
    return task


async def test_a_signal_resumes_the_waiting_saga_and_is_merged_into_its_data(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    ledger = Ledger()
    data = Payment(amount=5)
    task = await _started(engine, payment_flow(ledger, timeout=timedelta(hours=48)), data)
    assert ledger.calls == ["reserve"]
    assert not task.done()

    receipt = await engine.signal(data.saga_id, PaymentConfirmed("ref-1"))
    result = await task

    assert result.status is SagaStatus.COMPLETED
    assert result.data.confirmation == "ref-1"
    assert ledger.calls == ["reserve", "capture ref-1"]
    assert receipt.duplicate is False
    assert [r.name for r in result.history] == [
        "reserve",
        "wait_for(PaymentConfirmed)",
        "capture",
    ]


async def test_a_signal_sent_before_the_saga_reaches_its_wait_is_kept_for_it(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    ledger = Ledger()
    data = Payment(amount=5)
    gate = asyncio.Event()

    async def slow(data: Payment) -> None:
        await gate.wait()

    flow = saga_flow(slow, wait_for(PaymentConfirmed, merge=confirm), ledger.capture)
    task = await _started(engine, flow, data)
    await engine.signal(data.saga_id, PaymentConfirmed("early"))
    gate.set()

    result = await task

    assert result.data.confirmation == "early"


async def test_a_wait_that_times_out_compensates_by_default(saga_clock: VirtualClock) -> None:
    engine = saga_clock.engine()
    ledger = Ledger()

    result = await engine.run(
        payment_flow(ledger, timeout=timedelta(hours=48)),
        Payment(amount=5),
    )

    assert result.status is SagaStatus.FAILED
    assert isinstance(result.error, SagaWaitTimeoutError)
    assert str(result.error) == (
        'wait "wait_for(PaymentConfirmed)" received no PaymentConfirmed signal within 172800s'
    )
    assert ledger.calls == ["reserve", "release"]
    assert saga_clock.now == pytest.approx(48 * 3600)


async def test_a_wait_timing_out_with_skip_goes_on_without_the_signal(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    ledger = Ledger()
    flow = payment_flow(ledger, timeout=timedelta(minutes=5), on_timeout=Skip())

    result = await engine.run(flow, Payment(amount=5))

    assert result.status is SagaStatus.COMPLETED
    assert result.skipped == ("wait_for(PaymentConfirmed)",)
    assert ledger.calls == ["reserve", "capture "]


async def test_a_wait_retried_on_timeout_waits_again_and_takes_a_later_signal(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    ledger = Ledger()
    data = Payment(amount=5)
    flow = payment_flow(
        ledger, timeout=timedelta(minutes=5), on_timeout=Retry(3, ExponentialBackoff(0))
    )
    task = await _started(engine, flow, data)
    await asyncio.sleep(400)  # virtual: past the first attempt's timeout
    await engine.signal(data.saga_id, PaymentConfirmed("late"))

    result = await task

    assert result.status is SagaStatus.COMPLETED
    waits = [r for r in result.history if r.name.startswith("wait_for")]
    assert [(r.status, r.attempt) for r in waits] == [
        (StepStatus.FAILED, 1),
        (StepStatus.COMMITTED, 2),
    ]


async def test_a_saga_timeout_expiring_during_a_wait_ends_it_timed_out(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    ledger = Ledger()
    flow = payment_flow(ledger).timeout(timedelta(hours=1))

    result = await engine.run(flow, Payment(amount=5))

    assert result.status is SagaStatus.TIMED_OUT
    assert isinstance(result.error, SagaTimeoutError)
    assert result.error.running_step == "wait_for(PaymentConfirmed)"
    assert ledger.calls == ["reserve", "release"]


async def test_a_repeated_signal_id_is_delivered_once(saga_clock: VirtualClock) -> None:
    engine = saga_clock.engine()
    data = Payment(amount=5)
    seen: list[str] = []

    def collect(data: Payment, signal: PaymentConfirmed) -> Payment:
        seen.append(signal.reference)
        return data

    flow = saga_flow(
        wait_for(PaymentConfirmed, merge=collect),
        wait_for(PaymentConfirmed, merge=collect, timeout=timedelta(minutes=1), on_timeout=Skip()),
    )
    task = await _started(engine, flow, data)
    first = await engine.signal(data.saga_id, PaymentConfirmed("a"), signal_id="s-1")
    again = await engine.signal(data.saga_id, PaymentConfirmed("a"), signal_id="s-1")

    result = await task

    assert (first.duplicate, again.duplicate) == (False, True)
    assert first.signal_id == "s-1"
    assert seen == ["a"]
    assert result.skipped == ("wait_for(PaymentConfirmed)",)


async def test_a_signal_id_reused_for_another_type_is_a_conflict(saga_clock: VirtualClock) -> None:
    engine = saga_clock.engine()
    data = Payment(amount=5)

    def refused(data: Payment, signal: PaymentRefused) -> Payment:
        return data

    flow = saga_flow(
        wait_for(PaymentConfirmed, merge=confirm), wait_for(PaymentRefused, merge=refused)
    )
    task = await _started(engine, flow, data)
    await engine.signal(data.saga_id, PaymentConfirmed("a"), signal_id="s-1")

    with pytest.raises(SagaSignalConflictError, match="signal id 's-1' was used"):
        await engine.signal(data.saga_id, PaymentRefused("no"), signal_id="s-1")
    await engine.signal(data.saga_id, PaymentRefused("no"))
    await task


async def test_signals_to_a_saga_the_engine_does_not_run_are_refused(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    ledger = Ledger()
    data = Payment(amount=5)
    flow = saga_flow(ledger.reserve, wait_for(PaymentConfirmed, merge=confirm))
    task = await _started(engine, flow, data)
    await engine.signal(data.saga_id, PaymentConfirmed("x"))
    await task

    with pytest.raises(SagaSignalTargetError, match="running in this engine") as finished:
        await engine.signal(data.saga_id, PaymentConfirmed("x"))
    assert finished.value.status is None


async def test_a_signal_of_a_type_no_wait_accepts_is_refused_naming_the_accepted_types(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    data = Payment(amount=5)
    task = await _started(engine, saga_flow(wait_for(PaymentConfirmed, merge=confirm)), data)

    with pytest.raises(
        SagaSignalTypeError, match=r"accept: tests\.test_engine_waits:PaymentConfirmed"
    ):
        await engine.signal(data.saga_id, PaymentRefused("no"))
    with pytest.raises(SagaSignalTypeError, match="cannot be stored as JSON"):
        await engine.signal(data.saga_id, object())
    await engine.signal(data.saga_id, PaymentConfirmed("ok"))
    await task


async def test_sleep_and_sleep_until_wait_in_virtual_time(saga_clock: VirtualClock) -> None:
    engine = saga_clock.engine()
    at = datetime.now(UTC) + timedelta(days=2)
    flow = saga_flow(sleep(timedelta(minutes=10)), sleep_until(at), step(_noop))

    result = await engine.run(flow, Payment(amount=1))

    assert result.status is SagaStatus.COMPLETED
    assert saga_clock.sleeps[0] == pytest.approx(600)
    assert saga_clock.sleeps[1] == pytest.approx(2 * 86400, abs=5)
    assert [r.name for r in result.history][:1] == ["sleep(10min)"]


async def test_a_sleep_until_a_time_past_does_not_wait(saga_clock: VirtualClock) -> None:
    engine = saga_clock.engine()
    flow = saga_flow(sleep_until(datetime(2000, 1, 1, tzinfo=UTC)), step(_noop))

    result = await engine.run(flow, Payment(amount=1))

    assert result.status is SagaStatus.COMPLETED
    assert saga_clock.sleeps == ()


async def test_listeners_see_the_signal_received_before_the_waits_commit(
    saga_clock: VirtualClock,
) -> None:
    events: list[tuple[SagaEventKind, str | None]] = []

    class Watch(SagaListener):
        def signal_received(self, event: SagaEvent) -> None:
            events.append((event.kind, event.signal_id))

        def step_committed(self, event: SagaEvent) -> None:
            events.append((event.kind, event.step))

    engine = saga_clock.engine(listeners=[Watch()])
    data = Payment(amount=1)
    task = await _started(engine, saga_flow(wait_for(PaymentConfirmed, merge=confirm)), data)
    await engine.signal(data.saga_id, PaymentConfirmed("x"), signal_id="sig")
    await task

    assert events == [
        (SagaEventKind.SIGNAL_RECEIVED, "sig"),
        (SagaEventKind.STEP_COMMITTED, "wait_for(PaymentConfirmed)"),
    ]


async def _noop(data: Payment) -> None:
    return None
