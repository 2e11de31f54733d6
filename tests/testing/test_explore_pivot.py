"""The explorers check the point of no return: once a flow's pivot committed nothing is
compensated, a saga that cannot go on ends STUCK, and recovery after a crash past the pivot
goes forward whatever its policy (`Check.PIVOT`)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaFlow,
    SagaResult,
    SagaStatus,
    Skip,
    SqliteSagaStore,
    parallel,
    pivot,
    saga_flow,
    step,
)
from spakky_saga.data import AbstractSagaData
from spakky_saga.store import SagaStore
from spakky_saga.testing import Check, explore_crashes, explore_failures
from spakky_saga.testing.virtual_time import VirtualClock
from tests.testing.flows import Order, Services

RETRY = Retry(3, ExponentialBackoff(base=1.0))


def pivot_flow(services: Services) -> SagaFlow[Order]:
    """reserve >> release, pivot(charge >> refund), ship & notify retried, ticket skippable."""
    return saga_flow(
        step(services.reserve, compensate=services.release),
        pivot(step(services.charge, compensate=services.refund)),
        parallel(step(services.ship, on_error=RETRY), step(services.notify, on_error=RETRY)),
        step(services.ticket, on_error=Skip()),
    )


async def test_every_failure_scenario_of_a_pivot_flow_keeps_the_point_of_no_return() -> None:
    report = await explore_failures(pivot_flow(Services()), Order(), cancellation=True)

    assert report.ok, str(report)
    assert report.scenario("reserve fails").outcome == "FAILED"
    assert report.scenario("charge fails").compensated == ("reserve",)
    stuck = report.scenario("ship fails")
    assert stuck.outcome == "STUCK"
    assert stuck.compensated == ()
    assert report.scenario("ticket fails").outcome == "COMPLETED"


class PlantedEngine:
    """The library's engine with a planted bug: it runs a pivot flow as if it had no pivot
    (so it compensates after it), or it reports STUCK for a saga that failed (and was
    compensated) before its pivot."""

    def __init__(self, *, ignore_pivot: bool = False, stuck_when_failed: bool = False) -> None:
        self.engine = VirtualClock().engine(log=False)
        self.ignore_pivot = ignore_pivot
        self.stuck_when_failed = stuck_when_failed

    async def run[D: AbstractSagaData](
        self,
        flow: SagaFlow[D],
        data: D,
        *,
        saga_name: str = "",
        listeners: Iterable[object] = (),
    ) -> SagaResult[D]:
        if self.ignore_pivot:
            items = tuple(dataclasses.replace(item, pivot=False) for item in flow.items)
            flow = dataclasses.replace(flow, items=items)
        result = await self.engine.run(flow, data, saga_name=saga_name, listeners=listeners)
        if self.stuck_when_failed and result.status is SagaStatus.FAILED:
            return dataclasses.replace(result, status=SagaStatus.STUCK)
        return result


async def test_an_engine_that_compensates_after_the_pivot_breaks_the_pivot_check() -> None:
    runner = PlantedEngine(ignore_pivot=True)

    report = await explore_failures(pivot_flow(Services()), Order(), engine=runner)

    violations = [v for v in report.violations if v.check is Check.PIVOT]
    assert violations
    assert any("undo charge ran after the pivot charge committed" in str(v) for v in violations)
    assert any("FAILED at ship after the pivot charge committed" in str(v) for v in violations)


async def test_a_pivot_flow_explored_on_sqlite_recovers_forward_past_its_pivot(
    tmp_path: Path,
) -> None:
    numbers = itertools.count()

    def sqlite(clock: Callable[[], float]) -> SagaStore:
        return SqliteSagaStore(tmp_path / f"{next(numbers)}.db", synchronous="NORMAL", clock=clock)

    report = await explore_crashes(
        pivot_flow(Services()), Order(), saga_name="pivot_order", store=sqlite
    )

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "COMPLETED"


async def test_a_pivot_flow_whose_retried_step_gives_up_recovers_stuck_after_every_crash() -> None:
    report = await explore_crashes(
        pivot_flow(Services()), Order(), saga_name="pivot_order", failing_step="ship"
    )

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "STUCK"


async def test_an_engine_that_ends_stuck_before_the_pivot_breaks_the_pivot_check() -> None:
    runner = PlantedEngine(stuck_when_failed=True)

    report = await explore_failures(pivot_flow(Services()), Order(), engine=runner)

    violations = [str(v) for v in report.violations if v.check is Check.PIVOT]
    assert any("STUCK at reserve, but the forward pass never got past" in v for v in violations)
    assert any("STUCK at charge, but the forward pass never got past" in v for v in violations)
    assert report.scenario("reserve fails").outcome == "STUCK"
