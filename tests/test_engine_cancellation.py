"""Cancelling the task that runs a saga compensates the committed steps, shielded from the
cancellation, logs it, and then re-raises CancelledError."""

from __future__ import annotations

import asyncio

import pytest

from spakky_saga import SagaEngine, parallel, saga_flow, step
from tests.support import Journal, OrderData, capture_saga_logs, saga_messages


async def test_cancelling_the_caller_compensates_committed_steps_then_reraises(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"),
        journal.ok("plain"),
        journal.transaction("b"),
        step(journal.hang("slow"), compensate=journal.undo("slow")),
        journal.transaction("never"),
    )
    task = asyncio.create_task(engine.run(flow, order))
    await journal.reached("slow")

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events == ["a", "plain", "b", "slow", "undo b", "undo a"]


async def test_cancelling_again_during_rollback_does_not_interrupt_it(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    gate = asyncio.Event()
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.ok("b"), compensate=journal.undo("b", gate=gate)),
        journal.hang("slow"),
    )
    task = asyncio.create_task(engine.run(flow, order))
    await journal.reached("slow")
    task.cancel()
    await journal.reached("undoing b")

    task.cancel()
    await asyncio.sleep(0)
    gate.set()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.events == ["a", "b", "slow", "undoing b", "undo b", "undo a"]


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
        "[saga=S step=slow status=cancelled elapsed=0.000ms]",
        "[saga=S step=a status=compensating elapsed=0.000ms]",
        "[saga=S step=a status=compensated elapsed=0.000ms]",
    ]
