"""The point of no return: a flow's pivot (`pivot(capture)`), read-only steps, and the rules
`saga_flow()` checks when a flow has a pivot; before the pivot commits a failure compensates,
after it nothing is compensated and a step that gives up ends the saga STUCK."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from spakky_saga import (
    AbstractSaga,
    ActionFn,
    Retry,
    SagaEngine,
    SagaFlow,
    SagaFlowDefinitionError,
    SagaNotRetriableAfterPivotError,
    SagaPivotError,
    SagaPivotMemberError,
    SagaSecondPivotError,
    SagaStatus,
    SagaUncompensatedBeforePivotError,
    Skip,
    parallel,
    pivot,
    saga_flow,
    saga_step,
    step,
)
from tests.support import Journal, OrderData, capture_saga_logs, saga_messages


def order_flow(journal: Journal, *, ship: ActionFn[OrderData] | None = None) -> SagaFlow[OrderData]:
    """reserve >> release, check (read-only), pivot(capture), ship | Retry(3)."""
    return saga_flow(
        journal.transaction("reserve"),
        step(journal.ok("check"), read_only=True),
        pivot(journal.transaction("capture")),
        step(ship or journal.ok("ship"), on_error=Retry(3)),
    )


async def test_a_flow_with_a_pivot_completes_like_any_other(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(order_flow(journal), order)

    assert result.status is SagaStatus.COMPLETED
    assert journal.events == ["reserve", "check", "capture", "ship"]


async def test_a_failure_before_the_pivot_commits_compensates_as_usual(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("reserve"),
        pivot(step(journal.fail("capture"), compensate=journal.undo("capture"))),
        step(journal.ok("ship")) | Retry(3),
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "capture"
    assert journal.events == ["reserve", "capture", "undo reserve"]


async def test_a_step_that_gives_up_after_the_pivot_ends_stuck_without_compensating(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(order_flow(journal, ship=journal.fail("ship")), order)

    assert result.status is SagaStatus.STUCK
    assert result.failed_step == "ship"
    assert journal.events == ["reserve", "check", "capture", "ship", "ship", "ship"]
    assert not any(record.compensation for record in result.history)


async def test_a_retried_step_after_the_pivot_that_recovers_completes(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(order_flow(journal, ship=journal.fail("ship", times=2)), order)

    assert result.status is SagaStatus.COMPLETED
    assert journal.events.count("ship") == 3


async def test_a_group_after_the_pivot_does_not_compensate_its_committed_members(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("reserve"),
        pivot(journal.transaction("capture")),
        parallel(
            journal.transaction("ship") | Retry(2),
            step(journal.fail("notify"), on_error=Retry(2)),
        ),
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.STUCK
    assert result.failed_step == "notify"
    assert not [event for event in journal.events if event.startswith("undo")]


async def test_a_group_pivot_that_fails_compensates_its_committed_members(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("reserve"),
        pivot(journal.transaction("capture") & step(journal.fail("confirm"), read_only=True)),
        step(journal.ok("ship")) | Retry(3),
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert journal.events[-2:] == ["undo capture", "undo reserve"]


async def test_a_skipped_step_after_the_pivot_lets_the_saga_complete(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("reserve"),
        pivot(journal.transaction("capture")),
        step(journal.fail("notify"), on_error=Skip()),
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert result.skipped == ("notify",)


async def test_a_saga_timeout_after_the_pivot_ends_stuck_without_compensating(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("reserve"),
        pivot(journal.transaction("capture")),
        step(journal.hang("ship"), on_error=Retry(3)),
    ).timeout(timedelta(seconds=1))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.STUCK
    assert not [event for event in journal.events if event.startswith("undo")]


async def test_a_stuck_saga_is_logged_as_an_error_naming_the_step(
    engine: SagaEngine,
    journal: Journal,
    order: OrderData,
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_saga_logs(caplog)

    await engine.run(order_flow(journal, ship=journal.fail("ship")), order)

    stuck = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(stuck) == 1
    assert "status=STUCK step=ship" in stuck[0].getMessage()
    assert any("status=STUCK" in message for message in saga_messages(caplog))


async def test_flows_without_a_pivot_compensate_after_any_step(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.transaction("reserve"),
        journal.transaction("capture"),
        step(journal.fail("ship"), on_error=Retry(2)),
    )

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert journal.events[-2:] == ["undo capture", "undo reserve"]


# Build-time checks ------------------------------------------------------------------------


async def _noop(data: OrderData) -> None:
    return None


async def charge(data: OrderData) -> None:
    return None


async def refund(data: OrderData) -> None:
    return None


async def capture(data: OrderData) -> None:
    return None


async def ship(data: OrderData) -> None:
    return None


def test_a_step_before_the_pivot_without_compensation_is_rejected_naming_it() -> None:
    with pytest.raises(SagaUncompensatedBeforePivotError) as caught:
        saga_flow(charge, pivot(capture), step(ship) | Retry(3))  # type: ignore[saga-pivot-uncompensated] # the runtime's check

    (problem,) = caught.value.problems
    assert problem.startswith('step "charge" (item 1) comes before the pivot "capture"')
    assert "`charge >> undo`" in problem
    assert "read_only=True" in problem


def test_read_only_and_compensated_steps_before_the_pivot_pass() -> None:
    flow = saga_flow(
        step(charge) >> refund,
        step(_noop, read_only=True),
        pivot(capture),
        step(ship) | Retry(3),
    )

    assert flow.pivot is flow.items[2]


def test_a_group_before_the_pivot_is_checked_member_by_member() -> None:
    with pytest.raises(SagaUncompensatedBeforePivotError, match='step "ship" \\(item 1\\)'):
        saga_flow((step(charge) >> refund) & step(ship), pivot(capture))  # type: ignore[saga-pivot-uncompensated] # the runtime's check


def test_a_step_after_the_pivot_that_fails_at_once_is_rejected_naming_it() -> None:
    with pytest.raises(SagaNotRetriableAfterPivotError) as caught:
        saga_flow(step(charge) >> refund, pivot(capture), ship)  # type: ignore[saga-pivot-not-retriable] # the runtime's check

    (problem,) = caught.value.problems
    assert problem.startswith('step "ship" (item 3) comes after the pivot "capture"')
    assert "Retry(10)" in problem
    assert "Skip()" in problem


def test_a_retry_that_ends_in_skip_or_a_skip_after_the_pivot_passes() -> None:
    saga_flow(
        pivot(capture),
        step(ship) | Retry(3, then=Skip()),
        step(_noop) | Skip(),
    )


def test_two_pivots_are_rejected_naming_both() -> None:
    with pytest.raises(SagaSecondPivotError) as caught:
        saga_flow(pivot(capture), pivot(step(ship) | Retry(2)))  # type: ignore[saga-pivot-twice] # the runtime's check

    assert caught.value.problems == (
        'item 2 "ship" is marked as the pivot, but "capture" (item 1) is the pivot already; a '
        "saga has one point of no return: keep one `pivot(...)`",
    )


def test_mistakes_of_several_kinds_are_reported_together() -> None:
    with pytest.raises(SagaPivotError) as caught:
        saga_flow(charge, pivot(capture), ship)  # type: ignore[saga-pivot-not-retriable, saga-pivot-uncompensated] # the runtime's check

    assert type(caught.value) is SagaPivotError
    assert len(caught.value.problems) == 2
    assert isinstance(caught.value, SagaFlowDefinitionError)


def test_a_group_member_cannot_be_the_pivot() -> None:
    with pytest.raises(SagaPivotMemberError, match='member "capture" is marked as the pivot'):
        pivot(capture) & step(ship)  # type: ignore[saga-pivot-member] # the runtime's check


def test_a_pivot_group_cannot_be_extended() -> None:
    with pytest.raises(SagaPivotMemberError, match="cannot be extended"):
        pivot(step(capture) & ship) & charge  # type: ignore[saga-pivot-member] # the runtime's check


def test_a_whole_group_can_be_the_pivot() -> None:
    flow = saga_flow(step(charge) >> refund, pivot(step(capture) & ship), step(_noop) | Skip())

    assert repr(flow) == "SagaFlow(charge >> refund, pivot(capture & ship), _noop | Skip())"


def test_pivot_rejects_what_is_not_a_step() -> None:
    with pytest.raises(SagaFlowDefinitionError, match="the pivot must be a step"):
        pivot(42)  # type: ignore[call-overload] # the runtime check of a mistyped call


def test_read_only_must_be_a_bool() -> None:
    with pytest.raises(SagaFlowDefinitionError, match="read_only must be True or False"):
        step(charge, read_only="yes")  # type: ignore[call-overload] # the runtime check


def test_the_pivot_and_read_only_markers_show_in_reprs_and_survive_operators() -> None:
    item = pivot(step(charge, read_only=True)) | Retry(2)

    assert repr(item) == "SagaStep(pivot(step(charge, read_only=True) | Retry(2)))"
    assert (step(charge) >> refund).pivot is False
    assert (pivot(charge) >> refund).pivot is True
    assert step(pivot(charge), name="c").pivot is True


def test_a_flow_without_a_pivot_has_none() -> None:
    assert saga_flow(charge, ship).pivot is None


# Seen: the diagram and the timeline ------------------------------------------------------


def test_the_diagram_draws_the_pivot_with_a_thick_border_and_read_only_steps() -> None:
    flow = saga_flow(step(charge) >> refund, step(_noop, read_only=True), pivot(capture))

    chart = flow.to_mermaid().splitlines()

    assert '    s2["_noop<br/>read-only"]' in chart
    assert '    s3["capture<br/>pivot (point of no return)"]' in chart
    assert chart[-2:] == ["    classDef pivot stroke-width:4px", "    class s3 pivot"]


def test_the_diagram_marks_the_join_of_a_group_pivot() -> None:
    flow = saga_flow(pivot(step(capture) & ship), step(_noop) | Skip())

    chart = flow.to_mermaid()

    assert 'join1[\\"join<br/>pivot (point of no return)"/]' in chart
    assert chart.endswith("class join1 pivot")


async def test_the_timeline_marks_the_attempts_of_the_pivot(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = order_flow(journal)
    result = await engine.run(flow, order)

    timeline = result.format_timeline(pivot=flow.pivot_steps)

    steps = [line.split()[1:3] for line in timeline.splitlines()[2:]]
    assert steps == [
        ["reserve", "committed"],
        ["check", "committed"],
        ["capture", "(pivot)"],
        ["ship", "committed"],
    ]
    assert "(pivot)" not in result.format_timeline()


def test_pivot_steps_names_the_pivot_or_its_group_members() -> None:
    assert saga_flow(pivot(capture), step(ship) | Retry(2)).pivot_steps == ("capture",)
    assert saga_flow(pivot(step(capture) & ship)).pivot_steps == ("capture", "ship")
    assert saga_flow(charge).pivot_steps == ()


# @saga_step(read_only=True) -------------------------------------------------------------


class CheckoutSaga(AbstractSaga[OrderData]):
    @saga_step(read_only=True)
    async def check_stock(self, data: OrderData) -> None:
        return None

    @saga_step
    async def capture(self, data: OrderData) -> None:
        return None

    @saga_step
    async def ship(self, data: OrderData) -> None:
        return None

    def flow(self) -> SagaFlow[OrderData]:
        return saga_flow(self.check_stock, pivot(self.capture), self.ship | Retry(5))


def test_a_saga_step_declared_read_only_needs_no_compensation_before_the_pivot() -> None:
    saga = CheckoutSaga()

    assert saga.check_stock.read_only is True
    assert saga.capture.read_only is False
    assert repr(saga.flow()) == (
        "SagaFlow(step(check_stock, read_only=True), pivot(capture), ship | Retry(5))"
    )


def test_saga_step_read_only_must_be_a_bool() -> None:
    with pytest.raises(SagaFlowDefinitionError, match=r"@saga_step\(read_only=1\)"):
        saga_step(read_only=1)  # type: ignore[call-overload] # the runtime check of a mistyped call
