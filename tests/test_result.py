"""`SagaResult` and `StepRecord`: what a run returns, and its history as a table."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from spakky_saga import SagaEngine, SagaResult, SagaStatus, StepRecord, StepStatus, saga_flow
from tests.support import Boom, Journal, OrderData


def test_statuses_are_the_documented_ones_then_stuck() -> None:
    assert [s.name for s in SagaStatus] == [
        "STARTED",
        "RUNNING",
        "COMPENSATING",
        "COMPLETED",
        "FAILED",
        "TIMED_OUT",
        "STUCK",  # past a flow's pivot (issue 19): docs/compatibility.md, 16
        "WAITING",  # a durable run suspended in a wait (issue 16): docs/compatibility.md, 17
    ]
    assert [s.name for s in StepStatus] == ["COMMITTED", "FAILED", "COMPENSATED"]


def test_status_values_are_their_upper_case_names_as_documented() -> None:
    assert [s.value for s in SagaStatus] == [s.name for s in SagaStatus]
    assert [s.value for s in StepStatus] == [s.name for s in StepStatus]
    assert SagaStatus("COMPLETED") is SagaStatus.COMPLETED


def test_step_record_defaults_to_a_first_attempt_of_an_action() -> None:
    record = StepRecord("issue", StepStatus.COMMITTED, timedelta(milliseconds=500))

    assert (record.name, record.status) == ("issue", StepStatus.COMMITTED)
    assert record.elapsed == timedelta(milliseconds=500)
    assert record.elapsed_seconds == 0.5
    assert (record.attempt, record.compensation, record.error) == (1, False, None)
    assert record.offset == timedelta(0)


def test_step_record_constructs_with_keywords_as_documented() -> None:
    record = StepRecord(name="issue", status=StepStatus.FAILED, elapsed=timedelta(0))

    assert record == StepRecord("issue", StepStatus.FAILED, timedelta(0))
    assert record.elapsed.total_seconds() == 0.0


def test_step_record_refuses_an_elapsed_that_is_not_a_duration() -> None:
    with pytest.raises(TypeError, match=r"StepRecord\(elapsed='1s'\): expected"):
        StepRecord("issue", StepStatus.FAILED, "1s")  # type: ignore[arg-type] # the point


def test_result_constructs_with_status_and_data_only(order: OrderData) -> None:
    result = SagaResult(status=SagaStatus.COMPLETED, data=order)

    assert (result.failed_step, result.error, result.history) == (None, None, ())
    assert result.elapsed == timedelta(0)
    assert (result.saga_name, result.skipped) == ("<anonymous>", ())


def test_result_is_immutable_and_knows_if_it_succeeded(order: OrderData) -> None:
    done = SagaResult(SagaStatus.COMPLETED, order, elapsed=timedelta(seconds=0.1))
    timed_out = SagaResult(SagaStatus.TIMED_OUT, order, "b", TimeoutError())

    assert done.succeeded
    assert not timed_out.succeeded
    assert (done.failed_step, done.error) == (None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.status = SagaStatus.FAILED  # type: ignore[misc] # the point of the test


def test_compensation_failures_lists_only_failed_compensations(order: OrderData) -> None:
    refused = Boom("refused")
    zero = timedelta(0)
    history = (
        StepRecord("a", StepStatus.COMMITTED, zero),
        StepRecord("b", StepStatus.FAILED, zero, 1, False, Boom()),
        StepRecord("a", StepStatus.FAILED, zero, 1, True, refused),
        StepRecord("c", StepStatus.COMPENSATED, zero, 1, True),
    )

    result = SagaResult(SagaStatus.FAILED, order, "b", history=history)

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
