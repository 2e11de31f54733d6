"""Cancelling the task that runs a saga compensates the committed steps, shielded from the
cancellation, logs it, and then re-raises CancelledError."""

from __future__ import annotations

import asyncio

import pytest

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaCompensationFailedError,
    SagaEngine,
    SagaStatus,
    SagaStepCancelledError,
    StepStatus,
    parallel,
    saga_flow,
    step,
)
from tests.support import Journal, OrderData, around, capture_saga_logs, saga_messages


async def test_cancelling_the_caller_compensates_committed_steps_then_reraises(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = around(journal, step(journal.hang("slow"), compensate=journal.undo("slow")))
    task = asyncio.create_task(engine.run(flow, order))
    await journal.reached("slow")

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events == ["a", "plain", "b", "slow", "undo b", "undo a"]


@pytest.mark.parametrize("rollback_after", ["cancellation", "failure"])
async def test_cancelling_during_a_rollback_lets_it_finish_then_reraises(
    engine: SagaEngine, journal: Journal, order: OrderData, rollback_after: str
) -> None:
    gate = asyncio.Event()
    last = journal.hang("c") if rollback_after == "cancellation" else journal.fail("c")
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.ok("b"), compensate=journal.undo("b", gate=gate)),
        last,
    )
    task = asyncio.create_task(engine.run(flow, order))
    if rollback_after == "cancellation":
        await journal.reached("c")
        task.cancel()
    await journal.reached("undoing b")

    task.cancel()
    await asyncio.sleep(0)
    gate.set()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events == ["a", "b", "c", "undoing b", "undo b", "undo a"]


async def test_cancelling_before_anything_committed_just_reraises(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    task = asyncio.create_task(engine.run(saga_flow(journal.hang("slow")), order))
    await journal.reached("slow")

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events == ["slow"]


async def test_cancelling_during_a_parallel_group_compensates_committed_members(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"),
        parallel(journal.transaction("fast"), journal.hang("slow")),
    )
    task = asyncio.create_task(engine.run(flow, order))
    await journal.reached("slow")
    await journal.reached("fast")
    await asyncio.sleep(0)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events[-2:] == ["undo fast", "undo a"]


async def test_a_callers_own_timeout_still_gets_the_compensation(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.transaction("a"), journal.hang("slow"))

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await engine.run(flow, order)

    assert journal.events == ["a", "slow", "undo a"]


async def test_cancellation_and_its_rollback_are_logged(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    capture_saga_logs(caplog)
    task = asyncio.create_task(
        engine.run(saga_flow(journal.transaction("a"), journal.hang("slow")), order, saga_name="S")
    )
    await journal.reached("slow")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert saga_messages(caplog)[-3:] == [
        "[saga=S step=a status=compensating]",
        "[saga=S step=a status=compensated elapsed=0ms]",
        "[saga=S status=aborted error=CancelledError elapsed=0ms]",
    ]


async def cancelled_elsewhere() -> None:
    """Await a future someone else cancelled: raises CancelledError in a task nobody cancels."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def test_a_step_raising_cancelled_error_on_its_own_is_that_steps_failure(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def fetch(data: OrderData) -> None:
        journal.record("fetch")
        await cancelled_elsewhere()

    result = await engine.run(saga_flow(journal.transaction("a"), fetch), order)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "fetch"
    assert isinstance(result.error, SagaStepCancelledError)
    assert isinstance(result.error.__cause__, asyncio.CancelledError)
    assert result.error.step_name == "fetch"
    assert str(result.error) == (
        'step "fetch" raised CancelledError, but the saga was not cancelled (the step awaited '
        "something that was cancelled elsewhere); counted as the step's failure"
    )
    assert journal.events == ["a", "fetch", "undo a"]


async def test_a_step_cancelled_on_its_own_goes_through_its_strategy(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def fetch(data: OrderData) -> None:
        journal.record("fetch")
        if journal.events.count("fetch") == 1:
            await cancelled_elsewhere()

    result = await engine.run(saga_flow(step(fetch, on_error=Retry(2))), order)

    assert result.status is SagaStatus.COMPLETED
    assert [(r.attempt, r.status) for r in result.history] == [
        (1, StepStatus.FAILED),
        (2, StepStatus.COMMITTED),
    ]


async def test_a_group_member_cancelled_on_its_own_fails_the_group(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def fetch(data: OrderData) -> None:
        await cancelled_elsewhere()

    flow = saga_flow(parallel(journal.transaction("a"), fetch), journal.ok("never"))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "fetch"
    assert isinstance(result.error, SagaStepCancelledError)
    assert journal.events == ["a", "undo a"]


async def test_a_compensation_cancelled_on_its_own_does_not_stop_the_rollback(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def undo_b(data: OrderData) -> None:
        await cancelled_elsewhere()

    flow = saga_flow(
        journal.transaction("a"), step(journal.ok("b"), compensate=undo_b), journal.fail("c")
    )

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, order)

    assert journal.events == ["a", "b", "c", "undo a"]
    assert isinstance(raised.value.failures["b"], SagaStepCancelledError)


async def test_cancelling_during_a_retry_backoff_compensates_committed_steps(
    journal: Journal, order: OrderData
) -> None:
    async def endless_sleep(seconds: float) -> None:
        journal.record(f"sleep {seconds:g}")
        await journal.never.wait()

    engine = SagaEngine(sleep=endless_sleep)
    retry = Retry(3, ExponentialBackoff(2.0))
    task = asyncio.create_task(
        engine.run(
            saga_flow(journal.transaction("a"), step(journal.fail("b"), on_error=retry)), order
        )
    )
    await journal.reached("sleep 2")

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events == ["a", "b", "sleep 2", "undo a"]


async def test_a_failed_compensation_after_cancellation_reaches_the_handler_then_reraises(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    handled: list[OrderData] = []
    flow = saga_flow(
        step(journal.ok("a"), compensate=journal.undo_fail("a")),
        step(journal.ok("b"), compensate=journal.undo("b")),
        journal.hang("slow"),
    ).on_compensation_failure(handled.append)
    task = asyncio.create_task(engine.run(flow, order))
    await journal.reached("slow")

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert handled == [order]
    assert journal.events == ["a", "b", "slow", "undo b", "undo a failed"]
