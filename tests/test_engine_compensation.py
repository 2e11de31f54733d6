"""Compensation: on failure, committed transactions are undone in reverse commit order; a
failing compensation does not stop the rest, and ends in SagaCompensationFailedError after
the flow's handler has run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from spakky_saga import (
    SagaCompensationFailedError,
    SagaEngine,
    SagaEngineConfigurationError,
    SagaFlow,
    SagaStatus,
    StepRecord,
    StepStatus,
    parallel,
    saga_flow,
    step,
)
from tests.support import Boom, Journal, ManualClock, OrderData, around, with_ticket, wrong


async def test_committed_transactions_are_compensated_in_reverse_commit_order(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(around(journal, step(journal.fail("c"))), order)

    assert journal.events == ["a", "plain", "b", "c", "undo b", "undo a"]
    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "c"
    assert isinstance(result.error, Boom)
    assert [(r.name, r.status, r.compensation) for r in result.history] == [
        ("a", StepStatus.COMMITTED, False),
        ("plain", StepStatus.COMMITTED, False),
        ("b", StepStatus.COMMITTED, False),
        ("c", StepStatus.FAILED, False),
        ("b", StepStatus.COMPENSATED, True),
        ("a", StepStatus.COMPENSATED, True),
    ]


async def test_the_failed_records_error_is_the_steps_exception(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    error = Boom("card declined")

    result = await engine.run(saga_flow(journal.fail("charge", error)), order)

    assert result.history == (
        StepRecord("charge", StepStatus.FAILED, timedelta(0), 1, False, error),
    )
    assert result.error is error


async def test_a_failing_first_step_has_nothing_to_compensate(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(saga_flow(journal.fail("a"), journal.transaction("b")), order)

    assert journal.events == ["a"]
    assert [r.name for r in result.history] == ["a"]
    assert result.status is SagaStatus.FAILED


async def test_a_failing_transactions_own_compensation_does_not_run(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"), step(journal.fail("b"), compensate=journal.undo("b"))
    )

    await engine.run(flow, order)

    assert journal.events == ["a", "b", "undo a"]


async def test_compensations_get_the_latest_data(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.transaction("issue", with_ticket(5)), journal.fail("charge"))

    result = await engine.run(flow, order)

    compensation_saw = journal.seen[-1]
    assert compensation_saw.ticket_id == 5
    assert result.data.ticket_id == 5


async def test_compensation_elapsed_comes_from_the_engine_clock(
    clock: ManualClock, journal: Journal, order: OrderData
) -> None:
    async def slow_undo(data: OrderData) -> None:
        clock.advance(0.5)

    flow = saga_flow(step(journal.ok("a"), compensate=slow_undo), journal.fail("b"))

    result = await SagaEngine(clock=clock).run(flow, order)

    assert result.history[-1] == StepRecord(
        "a", StepStatus.COMPENSATED, timedelta(seconds=0.5), 1, True, None
    )
    assert result.elapsed == timedelta(seconds=0.5)


async def test_failed_compensation_does_not_stop_remaining_compensations(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    refusal = Boom("refund refused")
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.ok("b"), compensate=journal.undo_fail("b", refusal)),
        journal.transaction("c"),
        journal.fail("d"),
    )

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, order)

    assert journal.events == ["a", "b", "c", "d", "undo c", "undo b failed", "undo a"]
    error = raised.value
    assert error.failures == {"b": refusal}
    result = error.result
    assert result is not None
    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "d"
    assert [(r.name, r.status) for r in result.history if r.compensation] == [
        ("c", StepStatus.COMPENSATED),
        ("b", StepStatus.FAILED),
        ("a", StepStatus.COMPENSATED),
    ]
    assert result.compensation_failures == (
        StepRecord("b", StepStatus.FAILED, timedelta(0), 1, True, refusal),
    )
    assert "compensation of \"b\" (Boom('refund refused')) failed" in str(error)


async def test_every_failed_compensation_is_reported(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        step(journal.ok("a"), compensate=journal.undo_fail("a")),
        step(journal.ok("b"), compensate=journal.undo_fail("b")),
        journal.fail("c"),
    )

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, order)

    assert list(raised.value.failures) == ["b", "a"]
    assert raised.value.result is not None
    assert [r.name for r in raised.value.result.compensation_failures] == ["b", "a"]


def failing_compensation_flow(
    journal: Journal, handler: Callable[[OrderData], Awaitable[None] | None]
) -> SagaFlow[OrderData]:
    """A flow whose only compensation fails, with `handler` for compensation failures."""
    return saga_flow(
        step(journal.ok("a"), compensate=journal.undo_fail("a")),
        journal.fail("b"),
    ).on_compensation_failure(handler)


async def test_sync_handler_gets_the_data_before_the_error_is_raised(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    seen: list[OrderData] = []

    def handler(data: OrderData) -> None:
        journal.record("handler")
        seen.append(data)

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(failing_compensation_flow(journal, handler), order)

    assert journal.events == ["a", "b", "undo a failed", "handler"]
    assert raised.value.result is not None
    assert seen == [raised.value.result.data]


async def test_async_handler_is_awaited_before_the_error_is_raised(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def handler(data: OrderData) -> None:
        await asyncio.sleep(0)
        journal.record(f"async handler {data.order_id}")

    with pytest.raises(SagaCompensationFailedError):
        await engine.run(failing_compensation_flow(journal, handler), order)

    assert journal.events[-1] == "async handler 1"


async def test_a_failing_handler_is_logged_and_chained_to_the_error(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    pager_down = Boom("pager down")

    def handler(data: OrderData) -> None:
        raise pager_down

    caplog.set_level(logging.ERROR, logger="spakky_saga")
    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(failing_compensation_flow(journal, handler), order)

    assert raised.value.__cause__ is pager_down
    assert any(
        r.getMessage() == "[saga=<anonymous> status=compensation_handler_failed error=Boom]"
        and r.exc_info is not None
        and r.exc_info[1] is pager_down
        for r in caplog.records
    )


async def test_without_a_handler_a_failed_compensation_still_raises(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(step(journal.ok("a"), compensate=journal.undo_fail("a")), journal.fail("b"))

    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, order)


async def test_a_hanging_compensation_fails_after_the_engines_compensation_timeout(
    journal: Journal, order: OrderData
) -> None:
    engine = SagaEngine(compensation_timeout=timedelta(milliseconds=10))
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.ok("b"), compensate=journal.undo("b", gate=journal.never)),
        journal.fail("c"),
    )

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, order)

    assert isinstance(raised.value.failures["b"], TimeoutError)
    assert journal.events == ["a", "b", "c", "undoing b", "undo a"]


async def test_failed_compensations_of_steps_sharing_a_name_are_all_reported(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    first, second = Boom("stock refused"), Boom("shipping refused")
    flow = saga_flow(
        step(journal.ok("reserve"), compensate=journal.undo_fail("stock", first)),
        step(journal.ok("reserve"), compensate=journal.undo_fail("shipping", second)),
        journal.fail("charge"),
    )

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, order)

    assert list(raised.value.failures.values()) == [second, first]
    assert list(raised.value.failures) == ["reserve", "reserve #2"]
    assert "shipping refused" in str(raised.value)
    assert "stock refused" in str(raised.value)


@pytest.mark.parametrize("bound", [timedelta(0), timedelta(seconds=-1), 5])
def test_a_compensation_timeout_must_be_a_positive_timedelta(bound: object) -> None:
    with pytest.raises(SagaEngineConfigurationError) as raised:
        SagaEngine(compensation_timeout=wrong(bound))

    assert str(raised.value) == (
        f"SagaEngine(compensation_timeout={bound!r}): must be a positive datetime.timedelta, "
        "or None to let compensations run to the end"
    )


async def test_a_failing_group_waits_for_siblings_then_compensates_them_and_earlier_steps(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    slow_started = asyncio.Event()
    release_slow = asyncio.Event()

    async def slow(data: OrderData) -> None:
        journal.record("slow started")
        slow_started.set()
        await release_slow.wait()
        journal.record("slow")

    async def fail_once_slow_runs(data: OrderData) -> None:
        await slow_started.wait()
        release_slow.set()
        raise Boom("charge declined")

    flow = saga_flow(
        journal.transaction("a"),
        parallel(step(slow, compensate=journal.undo("slow")), fail_once_slow_runs),
        journal.transaction("never"),
    )

    result = await engine.run(flow, order)

    assert journal.events == ["a", "slow started", "slow", "undo slow", "undo a"]
    assert result.failed_step == "fail_once_slow_runs"
