"""explore_failures on the real engine: which scenarios run, what the report says."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta

import pytest

from spakky_saga import (
    AbstractSaga,
    Parallel,
    Retry,
    SagaFlow,
    SagaStepTimeoutError,
    SagaTimeoutError,
    parallel,
    saga_flow,
    saga_step,
    step,
)
from spakky_saga.testing import Check, InjectedFault, Scenario, explore_failures
from tests.testing.flows import Order, Services, order_flow
from tests.testing.support import needs_looptime


async def test_each_action_and_each_compensation_fails_in_a_scenario_of_its_own() -> None:
    report = await explore_failures(order_flow(Services()), Order())

    assert [outcome.scenario.description for outcome in report.scenarios] == [
        "no fault",
        "reserve fails",
        "charge fails",
        "ticket fails",
        "notify fails",
        "ship fails",
        "undo reserve fails, ship fails",
        "undo charge fails, ship fails",
        "undo ticket fails, ship fails",
    ]
    assert report.ok, str(report)


async def test_each_scenario_records_what_ran_and_what_was_compensated() -> None:
    report = await explore_failures(order_flow(Services()), Order())

    charge_fails = report.scenario("charge fails")
    assert charge_fails.outcome == "FAILED"
    assert charge_fails.failed_step == "charge"
    assert charge_fails.ran == (
        "reserve",
        "charge",
        "ticket",
        "notify",
        "undo ticket",
        "undo reserve",
    )
    assert charge_fails.compensated == ("ticket", "reserve")
    assert isinstance(charge_fails.result and charge_fails.result.error, InjectedFault)
    undo_fails = report.scenario("undo charge fails, ship fails")
    assert undo_fails.outcome == "SagaCompensationFailedError"
    assert undo_fails.failed_compensations == ("charge",)


async def test_the_report_prints_a_table_of_scenarios_and_what_was_not_explored() -> None:
    services = Services()
    flow = saga_flow(
        step(services.reserve, compensate=services.release),
        step(services.ship, compensate=services.unship),
    )

    report = await explore_failures(flow, Order())

    lines = str(report).splitlines()
    assert lines[0].startswith("explore_failures(<anonymous>): 4 scenarios, 0 violations, ")
    assert lines[1:] == [
        "",
        "#  scenario                        outcome                      compensated       check",
        "-  ------------------------------  ---------------------------  ----------------  -----",
        "1  no fault                        COMPLETED                    -                 ok",
        "2  reserve fails                   FAILED at reserve            -                 ok",
        "3  ship fails                      FAILED at ship               reserve           ok",
        "4  undo reserve fails, ship fails  SagaCompensationFailedError  reserve (failed)  ok",
        "",
        "Not explored:",
        "- the compensation of ship never ran: no single failing step rolls it back (it is the "
        "last step that can fail, or every later one is skipped)",
    ]


async def test_a_scenario_is_found_by_its_description() -> None:
    report = await explore_failures(order_flow(Services()), Order())

    assert report.scenario("ship fails").scenario == Scenario(failing_step="ship")
    with pytest.raises(KeyError, match="no scenario 'ship hangs' was explored"):
        report.scenario("ship hangs")


async def test_a_compensation_that_fails_on_the_latest_data_is_a_violation() -> None:
    services = Services()

    async def release(data: Order) -> None:
        if data.charged:
            raise RuntimeError("cannot release a charged order")

    flow = saga_flow(
        step(services.reserve, compensate=release),
        step(services.charge, compensate=services.refund),
        step(services.ship),
    )

    report = await explore_failures(flow, Order())

    assert {v.check for v in report.violations} == {Check.COMPENSATION_RAISED}
    raised = [v for v in report.violations if v.check is Check.COMPENSATION_RAISED]
    assert [v.scenario.description for v in raised] == [
        "ship fails",
        "undo charge fails, ship fails",
    ]
    assert raised[0].message == (
        "undo reserve raised RuntimeError: cannot release a charged order, given the data "
        "charge returned; no fault was injected into it"
    )


async def test_report_assert_ok_raises_with_the_whole_report() -> None:
    async def broken(data: Order) -> None:
        raise ValueError("always")

    report = await explore_failures(saga_flow(step(broken)), Order())

    with pytest.raises(AssertionError) as raised:
        report.assert_ok()
    assert str(raised.value) == str(report)
    assert "[no fault] baseline: without any fault the saga ends FAILED at broken" in str(report)


async def test_a_saga_class_runs_its_bound_steps_under_its_class_name() -> None:
    class ShipOrder(AbstractSaga[Order]):
        def __init__(self) -> None:
            self.log: list[str] = []

        @saga_step
        async def reserve(self, data: Order) -> Order:
            self.log.append("reserve")
            return dataclasses.replace(data, reserved=True)

        @saga_step
        async def release(self, data: Order) -> None:
            self.log.append("release")

        @saga_step
        async def ship(self, data: Order) -> None:
            self.log.append("ship")

        def flow(self) -> SagaFlow[Order]:
            return saga_flow(self.reserve >> self.release, self.ship)

    saga = ShipOrder()

    report = await explore_failures(saga, Order())

    assert report.saga_name == "ShipOrder"
    assert report.ok, str(report)
    # no fault; reserve fails (before acting); ship fails; undo reserve fails (before acting)
    assert saga.log == ["reserve", "ship", "reserve", "release", "reserve"]
    assert report.scenarios[0].result is not None
    assert report.scenarios[0].result.saga_name == "ShipOrder"


async def test_a_factory_gives_every_run_fresh_services() -> None:
    built: list[Services] = []

    def build() -> SagaFlow[Order]:
        built.append(Services())
        return order_flow(built[-1])

    report = await explore_failures(build, Order())

    assert len(built) == len(report.scenarios) + 1  # once for the shape, then once per run
    assert built[1].log == ["reserve", "charge", "ticket", "notify", "ship"]  # no fault
    assert built[2].log == []  # reserve fails: the injected fault stops it before it acts


async def test_a_factory_that_builds_another_flow_is_refused() -> None:
    flows = iter([saga_flow(step(Services().reserve)), saga_flow(step(Services().ship))])

    with pytest.raises(ValueError, match="the factory built a flow with other steps"):
        await explore_failures(lambda: next(flows), Order())


async def test_something_that_is_not_a_saga_is_refused_with_what_to_pass() -> None:
    with pytest.raises(TypeError, match="pass a SagaFlow, an AbstractSaga instance, or a"):
        await explore_failures(42, Order())  # type: ignore[arg-type] # the error under test


async def test_an_injected_error_of_the_retried_kind_is_retried() -> None:
    services = Services()
    flow = saga_flow(
        step(services.reserve, compensate=services.release),
        step(services.ship) | Retry(3, retry_on=ConnectionError),
    )

    report = await explore_failures(flow, Order(), error=ConnectionError)

    assert report.ok, str(report)
    assert report.scenario("ship fails").ran == ("reserve", "ship", "ship", "ship", "undo reserve")


async def test_concurrent_compensation_of_a_group_is_accepted() -> None:
    services = Services()
    flow = saga_flow(
        Parallel(
            items=(
                step(services.charge, compensate=services.refund),
                step(services.ticket, compensate=services.cancel_ticket),
            ),
            compensation_order="concurrent",
        ),
        step(services.ship),
    )

    report = await explore_failures(flow, Order(), cancellation=True)

    assert report.ok, str(report)


async def test_steps_sharing_a_name_are_told_apart_by_position() -> None:
    services = Services()
    flow = saga_flow(
        step(services.notify, compensate=services.release),
        step(services.notify, compensate=services.release),
        step(services.ship),
    )

    report = await explore_failures(flow, Order())

    assert report.ok, str(report)
    assert report.scenario("notify@2 fails").compensated == ("notify@1",)


async def test_cancellation_is_explored_at_every_await_point_until_the_run_finishes() -> None:
    report = await explore_failures(order_flow(Services()), Order(), cancellation=True)

    assert report.ok, str(report)
    points = [
        o.scenario.cancelled_at
        for o in report.scenarios
        if o.scenario.cancelled_at is not None and o.scenario.failing_step is None
    ]
    assert points == list(range(1, len(points) + 1))
    assert len(points) >= 5
    cancelled = [o for o in report.scenarios if o.scenario.cancelled_at is not None]
    assert {o.outcome for o in cancelled} == {"CancelledError"}
    assert any(o.compensated == ("ticket", "charge", "reserve") for o in cancelled)


@needs_looptime
async def test_timeouts_explore_each_hang_on_virtual_time() -> None:
    services = Services()
    flow = saga_flow(
        step(services.reserve, compensate=services.release, timeout=timedelta(seconds=30))
        | Retry(2),
        step(services.ship),
    ).timeout(timedelta(minutes=10))
    started = time.perf_counter()

    report = await explore_failures(flow, Order(), timeouts=True)

    assert time.perf_counter() - started < 2.0
    assert report.ok, str(report)
    reserve_hangs = report.scenario("reserve hangs")
    assert reserve_hangs.result is not None
    assert isinstance(reserve_hangs.result.error, SagaStepTimeoutError)
    assert reserve_hangs.ran == ("reserve", "reserve")
    ship_hangs = report.scenario("ship hangs")
    assert ship_hangs.outcome == "TIMED_OUT"
    assert ship_hangs.result is not None
    assert isinstance(ship_hangs.result.error, SagaTimeoutError)
    assert ship_hangs.compensated == ("reserve",)


async def test_a_step_no_timeout_can_end_is_not_hung() -> None:
    report = await explore_failures(saga_flow(step(Services().ship)), Order(), timeouts=True)

    assert [o.scenario.description for o in report.scenarios] == ["no fault", "ship fails"]
    assert report.notes == (
        "ship hanging: it has no timeout, and the flow no saga timeout, so nothing would ever "
        "end the hang",
    )


async def test_the_explorer_cancelled_itself_stops() -> None:
    gate = asyncio.Event()

    async def wait(data: Order) -> None:
        await gate.wait()

    task = asyncio.create_task(explore_failures(saga_flow(step(wait)), Order()))
    await asyncio.sleep(0.001)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancellation_points_beyond_the_limit_are_noted() -> None:
    report = await explore_failures(
        order_flow(Services()), Order(), cancellation=True, max_cancellation_points=2
    )

    assert report.scenario("ship fails, cancelled at await 2").outcome == "CancelledError"
    assert (
        "cancellation during ship fails: stopped after 2 await points (max_cancellation_points)"
        in report.notes
    )


async def test_a_merge_conflict_and_a_wrongly_typed_result_are_failures_not_violations() -> None:
    services = Services()

    async def charge_again(data: Order) -> Order:
        return dataclasses.replace(data, order_id=data.order_id + 1)

    async def mark_differently(data: Order) -> Order:
        return dataclasses.replace(data, order_id=data.order_id + 2)

    async def wrong_type(data: Order) -> str:
        return "not an order"

    flow = saga_flow(
        step(services.reserve, compensate=services.release),
        parallel(charge_again, mark_differently),
    )

    report = await explore_failures(flow, Order())

    assert report.scenario("no fault").failed_step == "charge_again & mark_differently"
    assert {v.check for v in report.violations} == {Check.BASELINE}
    wrong = await explore_failures(saga_flow(step(wrong_type)), Order())  # type: ignore[saga-step-signature] # on purpose
    assert {v.check for v in wrong.violations} == {Check.BASELINE}
