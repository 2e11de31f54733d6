"""Skip records a failure and carries on; Retry runs a step up to `max_attempts` times in
total, waiting its backoff between attempts (on the injected sleep), then applies `then`."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from spakky_saga import (
    Compensate,
    ExponentialBackoff,
    Retry,
    SagaEngine,
    SagaStatus,
    Skip,
    StepRecord,
    StepStatus,
    saga_flow,
    step,
)
from tests.support import Boom, Journal, ManualClock, OrderData, RecordingSleep, with_ticket


def attempts(history: tuple[StepRecord, ...], name: str) -> list[tuple[int, StepStatus]]:
    """(attempt, status) of each run of the action `name`."""
    return [(r.attempt, r.status) for r in history if r.name == name and not r.compensation]


async def test_skip_records_the_failure_and_continues(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    error = Boom("newsletter down")
    flow = saga_flow(
        journal.ok("a", with_ticket(2)),
        step(journal.fail("notify", error), on_error=Skip()),
        journal.ok("c"),
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert result.failed_step is None
    assert result.error is None
    assert journal.events == ["a", "notify", "c"]
    assert [(r.name, r.status) for r in result.history] == [
        ("a", StepStatus.COMMITTED),
        ("notify", StepStatus.FAILED),
        ("c", StepStatus.COMMITTED),
    ]
    assert result.history[1].error is error
    assert journal.seen[-1].ticket_id == 2  # the skipped step did not change the data


async def test_a_skipped_transaction_is_not_compensated_later(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.fail("b"), compensate=journal.undo("b"), on_error=Skip()),
        journal.fail("c"),
    )

    result = await engine.run(flow, order)

    assert journal.events == ["a", "b", "c", "undo a"]
    assert result.failed_step == "c"


async def test_retry_runs_max_attempts_in_total_then_compensates(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.transaction("a"), step(journal.fail("b"), on_error=Retry(3)))

    result = await engine.run(flow, order)

    assert journal.events == ["a", "b", "b", "b", "undo a"]
    assert attempts(result.history, "b") == [
        (1, StepStatus.FAILED),
        (2, StepStatus.FAILED),
        (3, StepStatus.FAILED),
    ]
    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "b"
    assert isinstance(result.error, Boom)


async def test_retry_commits_on_the_first_successful_attempt(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(step(journal.fail("b", times=2), on_error=Retry(5)), journal.ok("c"))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert journal.events == ["b", "b", "b", "c"]
    assert attempts(result.history, "b") == [
        (1, StepStatus.FAILED),
        (2, StepStatus.FAILED),
        (3, StepStatus.COMMITTED),
    ]


async def test_data_returned_by_a_retried_step_replaces_the_data(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def issue(data: OrderData) -> OrderData:
        journal.record("issue")
        if journal.events.count("issue") < 2:
            raise Boom("ticketing busy")
        return dataclasses.replace(data, ticket_id=12)

    flow = saga_flow(step(issue, on_error=Retry(2)), journal.ok("after"))

    result = await engine.run(flow, order)

    assert result.data.ticket_id == 12
    assert journal.seen[-1].ticket_id == 12


async def test_retry_once_means_a_single_attempt(
    engine: SagaEngine, journal: Journal, order: OrderData, sleep: RecordingSleep
) -> None:
    result = await engine.run(saga_flow(step(journal.fail("b"), on_error=Retry(1))), order)

    assert journal.events == ["b"]
    assert sleep.delays == []
    assert result.status is SagaStatus.FAILED


async def test_retry_waits_exponential_backoff_between_attempts(
    engine: SagaEngine, journal: Journal, order: OrderData, sleep: RecordingSleep
) -> None:
    retry = Retry(4, ExponentialBackoff(1.0), Compensate())

    await engine.run(saga_flow(step(journal.fail("b"), on_error=retry)), order)

    assert sleep.delays == [1.0, 2.0, 4.0]


async def test_retry_backoff_respects_the_cap(
    engine: SagaEngine, journal: Journal, order: OrderData, sleep: RecordingSleep
) -> None:
    retry = Retry(6, ExponentialBackoff(0.5, max_delay=2.0))

    await engine.run(saga_flow(step(journal.fail("b"), on_error=retry)), order)

    assert sleep.delays == [0.5, 1.0, 2.0, 2.0, 2.0]


async def test_retry_with_jitter_sleeps_within_bounds(
    engine: SagaEngine, journal: Journal, order: OrderData, sleep: RecordingSleep
) -> None:
    retry = Retry(4, ExponentialBackoff(1.0, jitter=0.5))

    await engine.run(saga_flow(step(journal.fail("b"), on_error=retry)), order)

    assert len(sleep.delays) == 3
    for delay, full in zip(sleep.delays, [1.0, 2.0, 4.0], strict=True):
        assert full / 2 <= delay <= full


async def test_retry_without_backoff_does_not_sleep(
    engine: SagaEngine, journal: Journal, order: OrderData, sleep: RecordingSleep
) -> None:
    no_backoff = Retry(3, ExponentialBackoff(0.0))

    await engine.run(saga_flow(step(journal.fail("b"), on_error=no_backoff)), order)

    assert sleep.delays == []
    assert journal.events == ["b", "b", "b"]


async def test_backoff_time_counts_in_the_saga_elapsed_but_not_in_attempts(
    engine: SagaEngine, journal: Journal, order: OrderData, clock: ManualClock
) -> None:
    retry = Retry(3, ExponentialBackoff(1.0))

    result = await engine.run(saga_flow(step(journal.fail("b", times=2), on_error=retry)), order)

    assert [r.elapsed_seconds for r in result.history] == [0.0, 0.0, 0.0]
    assert result.elapsed == timedelta(seconds=3)
    assert clock.now == 3.0


async def test_retry_then_skip_continues_after_the_last_attempt(
    engine: SagaEngine, journal: Journal, order: OrderData, sleep: RecordingSleep
) -> None:
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.fail("b"), on_error=Retry(2, ExponentialBackoff(0.5), Skip())),
        journal.ok("c"),
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert journal.events == ["a", "b", "b", "c"]
    assert sleep.delays == [0.5]


async def test_retry_attached_with_the_or_operator(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(step(journal.fail("b", times=1)) | Retry(2))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert attempts(result.history, "b") == [(1, StepStatus.FAILED), (2, StepStatus.COMMITTED)]


@pytest.mark.parametrize("then", [Compensate(), Skip()])
async def test_a_retried_transaction_that_commits_is_compensated_once(
    engine: SagaEngine, journal: Journal, order: OrderData, then: Compensate | Skip
) -> None:
    flow = saga_flow(
        step(
            journal.fail("a", times=1), compensate=journal.undo("a"), on_error=Retry(2, then=then)
        ),
        journal.fail("b"),
    )

    await engine.run(flow, order)

    assert journal.events == ["a", "a", "b", "undo a"]
