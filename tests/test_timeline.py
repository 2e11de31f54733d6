"""Timelines: a run's history or a durable saga's log as rows, as text and as a gantt chart."""

from __future__ import annotations

import time
from datetime import timedelta

from spakky_saga import SagaEngine, SagaResult, SagaStatus, StepRecord, StepStatus, saga_flow
from spakky_saga.store import StoredEvent
from spakky_saga.timeline import (
    TimelineRow,
    format_timeline,
    mermaid_gantt,
    rows_from_events,
    rows_from_history,
)
from tests.support import Boom, Journal, OrderData


async def test_a_result_renders_as_a_timeline_of_start_offsets_and_durations(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.transaction("issue", takes=0.0125), journal.fail("charge"))

    result = await engine.run(flow, order)

    assert result.format_timeline().splitlines() == [
        "#  step        status       attempt  start     elapsed  error",
        "-  ----------  -----------  -------  --------  -------  -------------------",
        "1  issue       committed    1        +0.00ms   12.50ms",
        "2  charge      failed       1        +12.50ms  0.00ms   Boom: charge failed",
        "3  undo issue  compensated  1        +12.50ms  0.00ms",
    ]


def test_a_gantt_chart_has_a_section_for_the_forward_pass_and_one_for_compensation() -> None:
    zero = timedelta(0)
    result = SagaResult(
        SagaStatus.FAILED,
        OrderData(order_id=1),
        "b: pay",
        history=(
            StepRecord("a", StepStatus.COMMITTED, timedelta(milliseconds=5), offset=zero),
            StepRecord(
                "b: pay",
                StepStatus.FAILED,
                timedelta(milliseconds=2),
                2,
                False,
                Boom(),
                timedelta(milliseconds=5),
            ),
            StepRecord(
                "a",
                StepStatus.COMPENSATED,
                timedelta(milliseconds=1),
                1,
                True,
                offset=timedelta(milliseconds=7),
            ),
        ),
        saga_name="Order#1",
    )

    assert result.to_mermaid_gantt().splitlines() == [
        "gantt",
        "    title Order 1",
        "    dateFormat x",
        "    axisFormat %L ms",
        "    section forward",
        "    a (committed) :r1, 0, 5",
        "    b  pay attempt 2 (failed) :crit, r2, 5, 7",
        "    section compensation",
        "    undo a (compensated) :r3, 7, 8",
    ]


def test_a_log_becomes_rows_with_a_running_row_for_an_attempt_without_outcome() -> None:
    t0 = time.time()

    def event(seq: int, kind: str, at: float, **fields: object) -> StoredEvent:
        return StoredEvent(seq=seq, kind=kind, at=t0 + at, **fields)  # type: ignore[arg-type]

    events = [
        event(1, "saga_started", 0.0),
        event(2, "step_started", 0.001, step_key="1", step="reserve"),
        event(3, "step_committed", 0.004, step_key="1", step="reserve", elapsed=0.003),
        event(4, "step_started", 0.005, step_key="2", step="charge"),
        event(
            5,
            "step_failed",
            0.006,
            step_key="2",
            step="charge",
            elapsed=0.001,
            error_type="Boom",
            error="declined",
        ),
        event(6, "compensation_started", 0.007, step_key="1", step="reserve"),
    ]

    rows = rows_from_events(events)

    assert [(r.step, r.status, r.compensation, r.error) for r in rows] == [
        ("reserve", "COMMITTED", False, ""),
        ("charge", "FAILED", False, "Boom: declined"),
        ("reserve", "RUNNING", True, ""),
    ]
    assert round(rows[0].start, 3) == 0.001
    assert rows_from_events([]) == []


def test_rows_from_history_keep_every_record() -> None:
    history = [StepRecord("a", StepStatus.COMMITTED, timedelta(seconds=1))]

    assert rows_from_history(history) == [TimelineRow("a", "COMMITTED", 1, 0.0, 1.0)]
    assert format_timeline([]).splitlines()[0].split() == [
        "#",
        "step",
        "status",
        "attempt",
        "start",
        "elapsed",
        "error",
    ]
    assert mermaid_gantt([]).splitlines()[:2] == ["gantt", "    title saga"]
