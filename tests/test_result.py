"""`SagaResult` and `StepRecord`: what a run returns, and its history as a table."""

from __future__ import annotations

import dataclasses

import pytest

from spakky_saga import SagaEngine, SagaResult, SagaStatus, StepRecord, StepStatus, saga_flow
from tests.support import Boom, Journal, OrderData


def test_statuses_are_the_documented_ones() -> None:
    assert [s.name for s in SagaStatus] == [
        "STARTED",
        "RUNNING",
        "COMPENSATING",
        "COMPLETED",
        "FAILED",
        "TIMED_OUT",
    ]
    assert [s.name for s in StepStatus] == ["COMMITTED", "FAILED", "COMPENSATED"]


def test_step_record_defaults_to_a_first_attempt_of_an_action() -> None:
    record = StepRecord("issue", StepStatus.COMMITTED, 0.5)

    assert (record.name, record.status, record.elapsed) == ("issue", StepStatus.COMMITTED, 0.5)
    assert (record.attempt, record.compensation, record.error) == (1, False, None)


def test_result_is_immutable_and_knows_if_it_succeeded(order: OrderData) -> None:
    done = SagaResult("S", SagaStatus.COMPLETED, order, (), 0.1)
    timed_out = SagaResult("S", SagaStatus.TIMED_OUT, order, (), 0.1, "b", TimeoutError())

    assert done.succeeded
    assert not timed_out.succeeded
    assert (done.failed_step, done.error) == (None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.status = SagaStatus.FAILED  # type: ignore[misc] # the point of the test


def test_compensation_failures_lists_only_failed_compensations(order: OrderData) -> None:
    refused = Boom("refused")
    history = (
        StepRecord("a", StepStatus.COMMITTED, 0.0),
        StepRecord("b", StepStatus.FAILED, 0.0, 1, False, Boom()),
        StepRecord("a", StepStatus.FAILED, 0.0, 1, True, refused),
        StepRecord("c", StepStatus.COMPENSATED, 0.0, 1, True),
    )

    result = SagaResult("S", SagaStatus.FAILED, order, history, 0.0, "b")

    assert result.compensation_failures == (history[2],)


async def test_format_history_renders_a_readable_table(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.transaction("issue", takes=0.0125), journal.fail("charge"))

    result = await engine.run(flow, order)

    assert result.format_history().splitlines() == [
        "#  step        status       attempt  elapsed  error",
        "-  ----------  -----------  -------  -------  -------------------",
        "1  issue       committed    1        12.50ms",
        "2  charge      failed       1        0.00ms   Boom: charge failed",
        "3  undo issue  compensated  1        0.00ms",
    ]
