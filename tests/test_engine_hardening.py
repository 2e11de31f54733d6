"""The compensation promise under attack (issue 8): each test is one way it used to break.

A saga that started ends completed, or with every committed step compensated exactly once, or
with a loud report of what could not be undone; observers, strategy code and hostile objects
can never change that.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import warnings
from datetime import timedelta
from typing import Any

import pytest

from spakky_saga import (
    Compensate,
    ExponentialBackoff,
    Retry,
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaEngine,
    SagaEvent,
    SagaListener,
    SagaListenerWarning,
    SagaRollbackInterruptedWarning,
    SagaStatus,
    SagaStepResultError,
    SagaTimeoutError,
    Skip,
    StepStatus,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.testing import VirtualClock
from tests.support import Boom, Journal, ManualClock, OrderData, capture_saga_logs

# Tests that race a timeout against a step take `saga_clock`: their event loop's time is then
# virtual (looptime), so which timer fires first is decided by the durations written in the
# test, never by how busy the machine is.

# --- 1. strategy code can never crash the engine ------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BrokenBackoffRetry(Retry):
    """A Retry whose delay computation raises, as an overflowing formula used to."""

    def delay_before(self, attempt: int) -> float:
        raise OverflowError("(34, 'Numerical result out of range')")


async def test_a_strategy_that_raises_fails_the_step_and_compensates(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"), step(journal.fail("b"), on_error=BrokenBackoffRetry(5))
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "b"
    assert isinstance(result.error, RuntimeError)
    assert "raised OverflowError" in str(result.error)
    assert isinstance(result.error.__cause__, OverflowError)
    assert journal.events == ["a", "b", "undo a"]


async def test_a_thousand_retries_with_a_zero_cap_never_overflow(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    retry = Retry(1100, ExponentialBackoff(0.0, max_delay=0.0))
    flow = saga_flow(journal.transaction("a"), step(journal.fail("b", times=1099), on_error=retry))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert result.history[-1].attempt == 1100


# --- 2. a rollback cut off by shutdown is recorded and reported ---------------------------


class Events(SagaListener):
    def __init__(self) -> None:
        self.events: list[SagaEvent] = []

    def compensation_failed(self, event: SagaEvent) -> None:
        self.events.append(event)

    def saga_aborted(self, event: SagaEvent) -> None:
        self.events.append(event)


def test_a_rollback_cut_off_by_loop_shutdown_reports_every_compensation_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_saga_logs(caplog)
    clock = ManualClock()
    journal = Journal(clock)
    listener = Events()
    handled: list[OrderData] = []
    stuck = asyncio.Event()

    async def main() -> None:
        flow = saga_flow(
            journal.transaction("a"),
            step(journal.ok("b"), compensate=journal.undo("b", gate=stuck)),
            journal.transaction("c"),
            journal.fail("d"),
        ).on_compensation_failure(handled.append)
        asyncio.get_running_loop().create_task(
            # No shutdown grace: the cut comes at once (tests/test_engine_shutdown.py has
            # the grace period, which finishes such a rollback instead).
            SagaEngine(listeners=[listener], shutdown_grace=timedelta(0)).run(
                flow, OrderData(order_id=1)
            )
        )
        await journal.reached("undoing b")  # then main returns: asyncio.run cancels the rest

    with pytest.warns(SagaRollbackInterruptedWarning, match=r"not finished: b, a"):
        asyncio.run(main())

    assert journal.events == ["a", "b", "c", "d", "undo c", "undoing b"]
    assert len(handled) == 1
    cut = [(e.step, type(e.error).__name__) for e in listener.events[:-1]]
    assert cut == [
        ("b", "SagaCompensationInterruptedError"),
        ("a", "SagaCompensationInterruptedError"),
    ]
    assert isinstance(listener.events[-1].error, asyncio.CancelledError)
    interrupted = [e.error for e in listener.events[:-1]]
    assert [(e.step_name, e.started) for e in interrupted] == [("b", True), ("a", False)]  # type: ignore[union-attr]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "[saga=<anonymous> step=b status=failed error=SagaCompensationInterruptedError]",
        "[saga=<anonymous> step=a status=failed error=SagaCompensationInterruptedError]",
    ]


async def test_a_cut_off_rollback_raises_compensation_failed_to_a_caller_still_waiting(
    journal: Journal, order: OrderData
) -> None:
    engine = SagaEngine(shutdown_grace=timedelta(0))
    stuck = asyncio.Event()
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.ok("b"), compensate=journal.undo("b", gate=stuck)),
        journal.fail("c"),
    )
    saga = asyncio.create_task(engine.run(flow, order))
    await journal.reached("undoing b")
    rollback = next(
        t for t in asyncio.all_tasks() if t is not saga and "_compensate_all" in repr(t)
    )

    rollback.cancel()  # e.g. something cancelling every task but this saga's caller

    with (
        pytest.raises(SagaCompensationFailedError) as raised,
        pytest.warns(SagaRollbackInterruptedWarning),
    ):
        await saga
    assert raised.value.result is not None
    failed = raised.value.result.compensation_failures
    assert [(r.name, type(r.error)) for r in failed] == [
        ("b", SagaCompensationInterruptedError),
        ("a", SagaCompensationInterruptedError),
    ]
    assert set(raised.value.failures) == {"a", "b"}


# --- 3. a cancel during rollback never loses the failure handler --------------------------


async def test_a_caller_timeout_during_rollback_still_calls_the_handler_then_times_out(
    saga_clock: VirtualClock, journal: Journal, order: OrderData
) -> None:
    handled: list[OrderData] = []

    async def slow_failing_undo(data: OrderData) -> None:
        await asyncio.sleep(30)
        raise Boom("refund refused")

    flow = saga_flow(
        step(journal.ok("a"), compensate=slow_failing_undo), journal.fail("b")
    ).on_compensation_failure(handled.append)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10):  # fires 10 s into the 30 s undo
            await saga_clock.engine().run(flow, order)

    assert journal.events == ["a", "b"]  # b failed first: the timeout came during the rollback
    assert handled == [order]


async def test_a_second_cancel_during_the_cancellation_rollback_keeps_the_handler(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    gate = asyncio.Event()
    handled: list[OrderData] = []
    flow = saga_flow(
        step(journal.ok("a"), compensate=journal.undo_fail("a")),
        step(journal.ok("b"), compensate=journal.undo("b", gate=gate)),
        journal.hang("slow"),
    ).on_compensation_failure(handled.append)
    task = asyncio.create_task(engine.run(flow, order))
    await journal.reached("slow")

    task.cancel()
    await journal.reached("undoing b")
    task.cancel()  # a second cancel while the rollback runs
    gate.set()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events[-2:] == ["undo b", "undo a failed"]
    assert handled == [order]


# --- 4. observers never change the run ----------------------------------------------------


class RaisingHandler(logging.Handler):
    def __init__(self, on: str) -> None:
        super().__init__()
        self.on = on

    def emit(self, record: logging.LogRecord) -> None:
        if self.on in record.getMessage():
            raise RuntimeError(f"log sink down on {self.on}")


@pytest.mark.parametrize("on", ["status=completed", "status=failed", "status=compensat", "saga="])
async def test_a_raising_log_handler_changes_nothing_and_is_reported_once(
    on: str, engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    engine_logger = logging.getLogger("spakky_saga.engine")
    handler = RaisingHandler(on)
    engine_logger.addHandler(handler)
    engine_logger.setLevel(logging.INFO)
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.ok("b"), compensate=journal.undo_fail("b")),
        journal.transaction("c"),
        journal.fail("d"),
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(SagaCompensationFailedError):
                await engine.run(flow, order)
            with pytest.raises(SagaCompensationFailedError):
                await engine.run(flow, order)
    finally:
        engine_logger.removeHandler(handler)
        engine_logger.setLevel(logging.NOTSET)

    assert journal.events.count("undo a") == 2
    assert journal.events.count("undo c") == 2
    reported = [w for w in caught if issubclass(w.category, SagaListenerWarning)]
    assert len(reported) == 1
    assert "log sink down" in str(reported[0].message)


async def test_a_raising_log_filter_on_cancellation_still_compensates(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    def refuse(record: logging.LogRecord) -> bool:
        raise RuntimeError("filter broke")

    engine_logger = logging.getLogger("spakky_saga.engine")
    engine_logger.addFilter(refuse)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SagaListenerWarning)
            task = asyncio.create_task(engine.run(around(journal), order))
            await journal.reached("slow")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        engine_logger.removeFilter(refuse)

    assert journal.events[-2:] == ["undo b", "undo a"]


def around(journal: Journal) -> Any:
    return saga_flow(journal.transaction("a"), journal.transaction("b"), journal.hang("slow"))


async def test_a_raising_listener_is_reported_once_and_ignored(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    class Broken(SagaListener):
        def step_committed(self, event: SagaEvent) -> None:
            raise ValueError("metrics backend down")

    flow = saga_flow(journal.transaction("a"), journal.transaction("b"), journal.fail("c"))
    with pytest.warns(SagaListenerWarning, match="metrics backend down") as caught:
        result = await engine.run(flow, order, listeners=[Broken()])

    assert result.status is SagaStatus.FAILED
    assert journal.events == ["a", "b", "c", "undo b", "undo a"]
    assert len(caught) == 1


# --- 5. a step that turns cancellation into its own error cannot defeat it ----------------


def swallowing(journal: Journal, name: str) -> Any:
    async def action(data: OrderData) -> None:
        journal.record(name)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("I don't do cancellation") from None

    action.__name__ = name
    return action


@pytest.mark.parametrize("strategy", [Retry(7, ExponentialBackoff(0.0)), Skip()])
async def test_a_step_turning_the_saga_timeout_into_its_error_is_not_retried_or_skipped(
    strategy: Retry | Skip, saga_clock: VirtualClock, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"), step(swallowing(journal, "stubborn"), on_error=strategy)
    ).timeout(timedelta(seconds=20))

    result = await saga_clock.engine().run(flow, order)

    assert result.status is SagaStatus.TIMED_OUT
    assert isinstance(result.error, SagaTimeoutError)
    assert journal.events == ["a", "stubborn", "undo a"]  # once: not retried, not skipped


@pytest.mark.parametrize("strategy", [Retry(7, ExponentialBackoff(0.0)), Skip(), Compensate()])
async def test_a_step_turning_the_callers_cancel_into_its_error_does_not_swallow_it(
    strategy: Retry | Skip | Compensate,
    saga_clock: VirtualClock,
    journal: Journal,
    order: OrderData,
) -> None:
    flow = saga_flow(
        journal.transaction("a"), step(swallowing(journal, "stubborn"), on_error=strategy)
    )
    task = asyncio.create_task(saga_clock.engine().run(flow, order))
    await journal.reached("stubborn")

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events == ["a", "stubborn", "undo a"]


# --- 6. hostile reprs and strs never replace the real error -------------------------------


class HostileError(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


async def test_a_compensation_error_with_a_broken_repr_still_reaches_handler_and_caller(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    handled: list[OrderData] = []
    flow = saga_flow(
        step(journal.ok("a"), compensate=journal.undo_fail("a", HostileError())),
        journal.fail("b"),
    ).on_compensation_failure(handled.append)

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, order)

    assert handled == [order]
    assert "repr raised RuntimeError" in str(raised.value)
    assert raised.value.result is not None
    assert "str raised RuntimeError" in raised.value.result.format_history()


async def test_after_a_cancel_a_broken_repr_does_not_replace_the_cancellation(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        step(journal.ok("a"), compensate=journal.undo_fail("a", HostileError())),
        journal.hang("slow"),
    )
    task = asyncio.create_task(engine.run(flow, order))
    await journal.reached("slow")

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_step_returning_an_object_with_a_broken_repr_fails_with_a_result_error(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    class Weird:
        def __repr__(self) -> str:
            raise RuntimeError("nope")

    async def weird(data: OrderData) -> Any:
        return Weird()

    result = await engine.run(saga_flow(journal.transaction("a"), weird), order)

    assert isinstance(result.error, SagaStepResultError)
    assert "repr raised RuntimeError" in str(result.error)
    assert journal.events == ["a", "undo a"]


# --- 7. the record of a step cut off by the saga timeout ----------------------------------


async def test_a_retried_step_cut_by_the_saga_timeout_records_its_own_attempt_and_time(
    saga_clock: VirtualClock, journal: Journal, order: OrderData
) -> None:
    async def slow_then_fail(data: OrderData) -> None:
        await asyncio.sleep(15)
        raise Boom("flaky")

    async def hang(data: OrderData) -> None:
        await asyncio.sleep(3600)

    tries = iter([slow_then_fail, slow_then_fail, hang])

    async def flaky(data: OrderData) -> None:
        await next(tries)(data)

    flow = saga_flow(
        step(journal.fail("flaky"), on_error=Skip()),  # an earlier, skipped step of that name
        step(flaky, on_error=Retry(5, ExponentialBackoff(0.0))),
    ).timeout(timedelta(seconds=60))

    result = await saga_clock.engine().run(flow, order)

    cut = result.history[-1]
    assert (cut.name, cut.status, cut.attempt) == ("flaky", StepStatus.FAILED, 3)
    assert isinstance(cut.error, SagaTimeoutError)
    assert result.elapsed.total_seconds() == pytest.approx(60)
    # its own attempt only (60 s less the two failed 15 s tries), not the saga's whole time
    assert cut.elapsed.total_seconds() == pytest.approx(30)


# --- decided: BaseException in a compensation, fresh data in a group ---------------------


def test_keyboard_interrupt_in_a_compensation_is_recorded_then_propagates() -> None:
    clock = ManualClock()
    journal = Journal(clock)
    listener = Events()

    async def interrupt(data: OrderData) -> None:
        raise KeyboardInterrupt

    async def main() -> None:
        flow = saga_flow(
            journal.transaction("a"),
            step(journal.ok("b"), compensate=interrupt),
            journal.fail("c"),
        )
        await SagaEngine(listeners=[listener]).run(flow, OrderData(order_id=1))

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())

    assert [(e.step, type(e.error).__name__) for e in listener.events] == [
        ("b", "KeyboardInterrupt"),
        ("a", "SagaCompensationInterruptedError"),
        (None, "KeyboardInterrupt"),
    ]
    assert "undo a" not in journal.events


async def test_members_building_fresh_data_keep_the_input_saga_id(
    engine: SagaEngine, order: OrderData
) -> None:
    async def fresh_ticket(data: OrderData) -> OrderData:
        return OrderData(order_id=data.order_id, ticket_id=7)

    async def fresh_paid(data: OrderData) -> OrderData:
        return OrderData(order_id=data.order_id, paid=True)

    result = await engine.run(saga_flow(parallel(fresh_ticket, fresh_paid)), order)

    assert result.status is SagaStatus.COMPLETED
    assert result.data.saga_id == order.saga_id
    assert (result.data.ticket_id, result.data.paid) == (7, True)


def test_no_thread_or_task_is_left_behind() -> None:
    before = threading.active_count()

    async def main() -> None:
        clock = ManualClock()
        journal = Journal(clock)
        flow = saga_flow(journal.transaction("a"), journal.fail("b"))
        await SagaEngine().run(flow, OrderData(order_id=1))
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
    assert threading.active_count() == before


async def test_a_cancellation_the_caller_swallowed_before_the_saga_is_not_the_sagas(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    with contextlib.suppress(asyncio.CancelledError):  # swallowed without uncancel()
        await asyncio.sleep(0)
    assert current.cancelling() == 1

    result = await engine.run(
        saga_flow(journal.transaction("a"), step(journal.fail("b", times=1), on_error=Retry(2))),
        order,
    )

    assert result.status is SagaStatus.COMPLETED
    assert journal.events == ["a", "b", "b"]
    current.uncancel()
