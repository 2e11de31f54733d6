"""Sequential execution: items run in order; returned data replaces the data, None keeps it,
and anything else is the step's failure."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from spakky_saga import (
    SagaEngine,
    SagaStatus,
    SagaStepResultError,
    Skip,
    StepRecord,
    StepStatus,
    run_saga_flow,
    saga_flow,
    step,
)
from tests.support import Journal, OrderData, with_ticket, wrong


class PriorityOrderData(OrderData):
    priority: int = 0


async def test_items_run_in_order_and_the_saga_completes(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.ok("a"), journal.ok("b"), journal.ok("c"))

    result = await engine.run(flow, order, saga_name="Order")

    assert journal.events == ["a", "b", "c"]
    assert result.status is SagaStatus.COMPLETED
    assert result.succeeded
    assert result.saga_name == "Order"
    assert result.failed_step is None
    assert result.error is None
    assert result.history == (
        StepRecord("a", StepStatus.COMMITTED, timedelta(0)),
        StepRecord("b", StepStatus.COMMITTED, timedelta(0)),
        StepRecord("c", StepStatus.COMMITTED, timedelta(0)),
    )


async def test_returned_data_replaces_the_data_for_later_steps(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        journal.ok("issue", with_ticket(9)),
        journal.ok("pay", lambda data: dataclasses.replace(data, paid=True)),
        journal.ok("check"),
    )

    result = await engine.run(flow, order)

    seen = [(data.ticket_id, data.paid) for data in journal.seen]
    assert seen == [(None, False), (9, False), (9, True)]
    assert (result.data.ticket_id, result.data.paid) == (9, True)


async def test_returning_none_keeps_the_same_data(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(saga_flow(journal.ok("a"), journal.ok("b")), order)

    assert journal.seen == [order, order]
    assert result.data is order


async def test_a_step_may_return_a_subclass_of_the_data(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def upgrade(data: OrderData) -> OrderData:
        return PriorityOrderData(order_id=data.order_id, saga_id=data.saga_id, priority=2)

    result = await engine.run(saga_flow(upgrade, journal.ok("after")), order)

    assert result.status is SagaStatus.COMPLETED
    assert isinstance(result.data, PriorityOrderData)
    assert result.data.priority == 2
    assert isinstance(journal.seen[0], PriorityOrderData)


async def test_returning_the_wrong_type_fails_the_step_and_compensates(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def sloppy(data: OrderData) -> OrderData:
        return {"order_id": 1}  # type: ignore[return-value] # the point of the test

    flow = saga_flow(journal.transaction("a"), sloppy, journal.ok("never"))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "sloppy"
    assert isinstance(result.error, SagaStepResultError)
    assert result.error.step_name == "sloppy"
    assert str(result.error).startswith(
        "step \"sloppy\" returned {'order_id': 1} (dict), but the saga data is OrderData"
    )
    assert journal.events == ["a", "undo a"]
    assert result.data is order


async def test_a_wrong_type_return_goes_through_the_steps_strategy(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    async def sloppy(data: OrderData) -> OrderData:
        return 42  # type: ignore[return-value] # the point of the test

    result = await engine.run(saga_flow(step(sloppy, on_error=Skip()), journal.ok("b")), order)

    assert result.status is SagaStatus.COMPLETED
    assert journal.events == ["b"]
    assert isinstance(result.history[0].error, SagaStepResultError)
    assert result.data is order


async def test_step_and_saga_elapsed_come_from_the_engine_clock(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.ok("a", takes=0.25), journal.ok("b", takes=1.5))

    result = await engine.run(flow, order)

    assert [record.elapsed for record in result.history] == [
        timedelta(seconds=0.25),
        timedelta(seconds=1.5),
    ]
    assert [record.offset for record in result.history] == [
        timedelta(0),
        timedelta(seconds=0.25),
    ]
    assert result.elapsed == timedelta(seconds=1.75)


async def test_a_flow_can_be_run_many_times_and_concurrently(
    engine: SagaEngine, journal: Journal
) -> None:
    flow = saga_flow(journal.ok("a", with_ticket(1)), journal.ok("b"))
    orders = [OrderData(order_id=n) for n in range(5)]

    results = await asyncio.gather(*(engine.run(flow, data) for data in orders))

    assert [r.data.order_id for r in results] == [0, 1, 2, 3, 4]
    assert all(r.data.ticket_id == 1 for r in results)
    assert all(len(r.history) == 2 for r in results)
    assert journal.events.count("a") == 5


async def test_run_rejects_something_that_is_not_a_flow(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    with pytest.raises(TypeError, match=r"expected a SagaFlow, got \[<function a at"):
        await engine.run(wrong([journal.ok("a")]), order)
    assert journal.events == []


async def test_run_saga_flow_uses_the_default_engine(journal: Journal, order: OrderData) -> None:
    result = await run_saga_flow(saga_flow(journal.ok("a")), order)

    assert result.status is SagaStatus.COMPLETED
    assert result.saga_name == "<anonymous>"
    assert result.elapsed >= timedelta(0)


async def test_a_failed_saga_is_a_result_not_an_exception(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(saga_flow(journal.ok("a"), journal.fail("b")), order)

    assert result.status is SagaStatus.FAILED
    assert not result.succeeded


@pytest.mark.parametrize("strategy", [None, Skip()])
async def test_the_data_at_the_failure_point_is_in_the_result(
    engine: SagaEngine, journal: Journal, order: OrderData, strategy: Skip | None
) -> None:
    last = journal.fail("last")
    flow = saga_flow(
        journal.ok("issue", with_ticket(3)),
        last if strategy is None else step(last, on_error=strategy),
    )

    result = await engine.run(flow, order)

    assert result.data.ticket_id == 3
