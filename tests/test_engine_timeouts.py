"""Timeouts, with tiny real deadlines and steps that wait on an event never set (and, where a
test measures how long a step ran, on virtual loop time: a busy machine stretches real time).

A step's `timeout=` raises SagaStepTimeoutError into the step's own strategy. The flow's
`timeout()` ends the saga TIMED_OUT, names the running step and compensates what committed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaEngine,
    SagaStatus,
    SagaStepTimeoutError,
    SagaTimeoutError,
    Skip,
    StepStatus,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.testing import VirtualClock
from tests.support import Journal, OrderData, around

TINY = timedelta(milliseconds=10)
ROOMY = timedelta(seconds=30)


async def test_a_step_overrunning_its_timeout_fails_with_a_step_timeout_error(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.transaction("a"), step(journal.hang("slow"), timeout=TINY))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "slow"
    assert isinstance(result.error, SagaStepTimeoutError)
    assert result.error.step_name == "slow"
    assert result.error.timeout == TINY
    assert str(result.error) == 'step "slow" did not finish within 0.01s'
    assert journal.events == ["a", "slow", "undo a"]


async def test_a_step_timeout_goes_through_skip(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(step(journal.hang("slow"), timeout=TINY, on_error=Skip()), journal.ok("b"))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert journal.events == ["slow", "b"]
    assert result.history[0].status is StepStatus.FAILED
    assert isinstance(result.history[0].error, SagaStepTimeoutError)


async def test_a_step_timeout_goes_through_retry(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    slow_once = step(
        journal.hang("flaky", times=1), timeout=TINY, on_error=Retry(2, ExponentialBackoff(1.0))
    )

    result = await engine.run(saga_flow(slow_once), order)

    assert result.status is SagaStatus.COMPLETED
    assert [(r.attempt, r.status) for r in result.history] == [
        (1, StepStatus.FAILED),
        (2, StepStatus.COMMITTED),
    ]
    assert isinstance(result.history[0].error, SagaStepTimeoutError)


async def test_a_step_finishing_within_its_timeout_commits(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(saga_flow(step(journal.ok("quick"), timeout=ROOMY)), order)

    assert result.status is SagaStatus.COMPLETED
    assert result.history[0].status is StepStatus.COMMITTED


async def test_a_steps_own_timeout_error_is_not_mistaken_for_an_overrun(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    upstream = TimeoutError("upstream gateway timed out")
    flow = saga_flow(step(journal.fail("call", upstream), timeout=ROOMY))

    result = await engine.run(flow, order)

    assert result.error is upstream


async def test_saga_timeout_ends_timed_out_naming_the_running_step(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = around(journal, step(journal.hang("slow"), compensate=journal.undo("slow")))
    flow = flow.timeout(TINY)

    result = await engine.run(flow, order, saga_name="Order")

    assert result.status is SagaStatus.TIMED_OUT
    assert not result.succeeded
    assert result.failed_step == "slow"
    assert isinstance(result.error, SagaTimeoutError)
    assert result.error.running_step == "slow"
    assert result.error.saga_name == "Order"
    assert result.error.timeout == TINY
    assert str(result.error) == (
        'saga "Order" exceeded its timeout of 0.01s while step "slow" was running'
    )
    assert journal.events == ["a", "plain", "b", "slow", "undo b", "undo a"]
    assert [(r.name, r.status, r.compensation) for r in result.history] == [
        ("a", StepStatus.COMMITTED, False),
        ("plain", StepStatus.COMMITTED, False),
        ("b", StepStatus.COMMITTED, False),
        ("slow", StepStatus.FAILED, False),
        ("b", StepStatus.COMPENSATED, True),
        ("a", StepStatus.COMPENSATED, True),
    ]
    assert result.history[3].error is result.error


async def test_saga_timeout_interrupts_a_step_with_its_own_longer_timeout(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"), step(journal.hang("slow"), timeout=ROOMY, on_error=Retry(3))
    ).timeout(TINY)

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.TIMED_OUT
    assert result.failed_step == "slow"
    assert journal.events == ["a", "slow", "undo a"]


async def test_saga_timeout_during_a_retry_backoff_names_the_retried_step(
    journal: Journal, order: OrderData
) -> None:
    retry = Retry(3, ExponentialBackoff(60.0))
    flow = saga_flow(journal.transaction("a"), step(journal.fail("b"), on_error=retry))

    result = await SagaEngine().run(flow.timeout(TINY), order)  # really sleeps: cut at 10 ms

    assert result.status is SagaStatus.TIMED_OUT
    assert result.failed_step == "b"
    assert journal.events == ["a", "b", "undo a"]


async def test_saga_timeout_during_a_parallel_group_compensates_committed_members(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"),
        parallel(journal.transaction("fast"), journal.hang("slow")),
    ).timeout(TINY)

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.TIMED_OUT
    assert result.failed_step == "fast & slow"
    assert journal.events[-2:] == ["undo fast", "undo a"]


async def test_a_saga_finishing_within_its_timeout_completes(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(saga_flow(journal.ok("a")).timeout(ROOMY), order)

    assert result.status is SagaStatus.COMPLETED


async def test_the_timed_out_attempt_of_a_retried_step_has_its_attempt_number(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def flaky_then_slow(data: OrderData) -> None:
        journal.record("try")
        if journal.events.count("try") < 3:
            raise TimeoutError("upstream busy")
        await journal.never.wait()

    flow = saga_flow(journal.ok("plain"), step(flaky_then_slow, on_error=Retry(5))).timeout(TINY)

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.TIMED_OUT
    assert [(r.name, r.attempt, r.status) for r in result.history] == [
        ("plain", 1, StepStatus.COMMITTED),
        ("flaky_then_slow", 1, StepStatus.FAILED),
        ("flaky_then_slow", 2, StepStatus.FAILED),
        ("flaky_then_slow", 3, StepStatus.FAILED),
    ]
    assert isinstance(result.history[-1].error, SagaTimeoutError)


async def test_the_timed_out_step_records_how_long_it_had_been_running(
    saga_clock: VirtualClock, order: OrderData
) -> None:
    async def takes_10_seconds(data: OrderData) -> None:
        await asyncio.sleep(10)

    async def hangs(data: OrderData) -> None:
        await asyncio.sleep(3600)

    flow = saga_flow(takes_10_seconds, hangs).timeout(ROOMY)

    # virtual loop time (saga_clock): the overrun is measured exactly, however busy the machine
    result = await saga_clock.engine().run(flow, order)

    timed_out = result.history[-1]
    assert (timed_out.name, timed_out.status) == ("hangs", StepStatus.FAILED)
    assert timed_out.elapsed.total_seconds() == pytest.approx(20)  # its own time, not the saga's
    assert result.elapsed.total_seconds() == pytest.approx(30)
