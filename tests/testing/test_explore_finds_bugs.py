"""The harness's checks, tested: an engine with a planted bug is caught by the right check.

`ToyEngine` is written independently of SagaEngine: without bugs it keeps every promise and
the harness reports nothing, so a violation below is the bug's, not a disagreement between
two engines.
"""

from __future__ import annotations

import asyncio

import pytest

from spakky_saga import Retry, SagaFlow, Skip, parallel, saga_flow, step
from spakky_saga.testing import Check, ExplorationReport, explore_failures
from tests.testing.flows import Order, Services, order_flow
from tests.testing.toy_engine import Bug, ToyEngine


async def explore_with(*bugs: Bug, flow: SagaFlow[Order] | None = None) -> ExplorationReport[Order]:
    return await explore_failures(
        flow if flow is not None else order_flow(Services()),
        Order(),
        engine=ToyEngine(*bugs),
        cancellation=True,
    )


def checks(report: ExplorationReport[Order]) -> set[Check]:
    return {violation.check for violation in report.violations}


async def test_an_engine_without_bugs_keeps_every_promise() -> None:
    report = await explore_with()

    assert report.ok, str(report)
    assert len(report.scenarios) > 10


@pytest.mark.parametrize(
    ("bug", "check"),
    [
        (Bug.COMPENSATE_IN_FORWARD_ORDER, Check.COMPENSATION_ORDER),
        (Bug.COMPENSATE_CONCURRENTLY, Check.COMPENSATION_ORDER),
        (Bug.COMPENSATE_TWICE, Check.COMPENSATED_ONCE),
        (Bug.FORGET_LAST_COMMIT, Check.COMPENSATED_ONCE),
        (Bug.COMPENSATE_THE_FAILED_STEP, Check.UNCOMMITTED_COMPENSATED),
        (Bug.COMPENSATE_ON_SUCCESS, Check.UNCOMMITTED_COMPENSATED),
        (Bug.STALE_DATA, Check.COMPENSATION_DATA),
        (Bug.SWALLOW_COMPENSATION_FAILURE, Check.FAILURE_REPORTED),
        (Bug.CALL_HANDLER_TWICE, Check.FAILURE_HANDLER),
        (Bug.REPORT_COMPLETED, Check.STATUS),
        (Bug.WRONG_FAILED_STEP, Check.STATUS),
        (Bug.DROP_RETURNED_DATA, Check.STATUS),
        (Bug.NO_HISTORY, Check.HISTORY),
        (Bug.NO_FAILED_ATTEMPT_RECORDS, Check.HISTORY),
        (Bug.SWALLOW_CANCELLATION, Check.OUTCOME),
        (Bug.DO_NOT_WAIT_FOR_SIBLINGS, Check.COMPENSATED_ONCE),
        (Bug.UNSHIELDED_ROLLBACK, Check.COMPENSATED_ONCE),
    ],
    ids=lambda value: value.name.lower() if isinstance(value, Bug) else str(value),
)
async def test_a_planted_bug_is_reported_by_its_check(bug: Bug, check: Check) -> None:
    report = await explore_with(bug)

    assert not report.ok
    assert check in checks(report), str(report)


async def test_compensating_in_forward_order_is_explained_with_both_orders() -> None:
    report = await explore_with(Bug.COMPENSATE_IN_FORWARD_ORDER)

    violation = next(
        v
        for v in report.violations
        if v.check is Check.COMPENSATION_ORDER and v.scenario.description == "ship fails"
    )
    assert violation.message == (
        "compensations ran as undo reserve -> undo charge -> undo ticket; expected "
        "undo ticket -> undo charge -> undo reserve (reverse commit order)"
    )


async def test_stale_compensation_data_names_the_data_it_should_have_been() -> None:
    report = await explore_with(Bug.STALE_DATA)

    messages = [v.message for v in report.violations if v.scenario.description == "ship fails"]
    assert (
        "undo reserve got the input data, not the latest data (the data charge returned)"
        in messages
    )


async def test_a_forgotten_compensation_names_the_step() -> None:
    report = await explore_with(Bug.FORGET_LAST_COMMIT)

    messages = {str(v) for v in report.violations}
    assert (
        "[ship fails] compensated-once: ticket committed and was compensated never, not once"
        in messages
    )


async def test_a_swallowed_cancellation_is_reported_at_the_await_point() -> None:
    report = await explore_with(Bug.SWALLOW_CANCELLATION)

    first = next(v for v in report.violations if v.check is Check.OUTCOME)
    assert first.scenario.cancelled_at == 1
    assert first.message == (
        "the caller cancelled at await 1 but got a result instead of CancelledError"
    )


async def test_a_lost_retry_record_names_the_attempt() -> None:
    attempts = {"n": 0}

    async def flaky(data: Order) -> None:
        attempts["n"] += 1
        if attempts["n"] % 2:
            raise ConnectionError("try again")

    flow = saga_flow(step(flaky) | Retry(2), step(Services().ship))

    report = await explore_with(Bug.NO_FAILED_ATTEMPT_RECORDS, flow=flow)

    assert any(
        v.message == "flaky attempt 1 failed once without a FAILED record"
        for v in report.violations
    ), str(report)


async def test_a_group_member_still_running_when_the_saga_returns_is_reported() -> None:
    services = Services()

    async def slow(data: Order) -> None:
        await asyncio.sleep(0.005)

    flow = saga_flow(parallel(step(services.charge, compensate=services.refund), slow))

    report = await explore_with(Bug.DO_NOT_WAIT_FOR_SIBLINGS, flow=flow)

    assert "slow (attempt 1) was still running when the caller got the saga's outcome" in {
        v.message for v in report.violations if v.check is Check.LEFT_RUNNING
    }, str(report)


async def test_skipped_steps_are_checked_against_the_result() -> None:
    services = Services()
    flow = saga_flow(
        step(services.notify) | Skip(), step(services.ship, compensate=services.unship)
    )

    assert (await explore_with(flow=flow)).ok
