"""Running parallel groups: concurrency, failures, and what compensations see.

Members run concurrently on the same input and the group waits for all of them. A failing
member fails the group after its siblings finish; every error is kept. Committed members
(and earlier steps) are compensated exactly once, and compensations see the latest data.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from spakky_saga import (
    AbstractSaga,
    SagaCompensationFailedError,
    SagaEngine,
    SagaFlow,
    SagaFlowDefinitionError,
    SagaResult,
    SagaStatus,
    StepStatus,
    parallel,
    run_saga_flow,
    saga_flow,
    saga_step,
)
from tests.parallel_support import Boom, Fanout, Trace, within_guard


async def run(flow: SagaFlow[Fanout], data: Fanout | None = None) -> SagaResult[Fanout]:
    return await within_guard(run_saga_flow(flow, data or Fanout()))


def records(result: SagaResult[Fanout], name: str) -> list[tuple[StepStatus, int, bool]]:
    """(status, attempt, compensation) of every history record about `name`."""
    return [(r.status, r.attempt, r.compensation) for r in result.history if r.name == name]


# --- running ------------------------------------------------------------------------------


async def test_members_run_concurrently_on_the_same_input() -> None:
    trace = Trace()
    third_started = asyncio.Event()
    flow = saga_flow(
        trace.sets("first", after=third_started, stock="reserved")
        & trace.sets("second", payment="charged")
        & trace.sets("third", done=third_started, shipping="booked")
    )
    data = Fanout()

    result = await run(flow, data)

    assert trace.events == ["first waiting", "second", "third", "first"]
    assert all(seen == [data] for seen in trace.seen.values())
    assert result.succeeded


async def test_group_output_is_the_input_of_the_next_step() -> None:
    trace = Trace()
    flow = saga_flow(
        trace.sets("reserve", stock="reserved") & trace.sets("charge", payment="charged"),
        trace.sets("ship", shipping="booked"),
    )

    result = await run(flow)

    [seen_by_ship] = trace.seen["ship"]
    assert (seen_by_ship.stock, seen_by_ship.payment) == ("reserved", "charged")
    assert result.data.shipping == "booked"


async def test_plain_async_functions_are_group_members() -> None:
    async def reserve(data: Fanout) -> Fanout | None:
        return Fanout(order_id=data.order_id, saga_id=data.saga_id, stock="reserved")

    async def log_only(data: Fanout) -> Fanout | None:
        return None

    result = await run(saga_flow(parallel(reserve, log_only)))

    assert result.data.stock == "reserved"
    assert [r.name for r in result.history] == ["reserve", "log_only"]


async def test_saga_class_composes_a_group_of_its_steps() -> None:
    class Checkout(AbstractSaga[Fanout]):
        @saga_step
        async def reserve(self, data: Fanout) -> Fanout | None:
            return Fanout(saga_id=data.saga_id, stock="reserved", payment=data.payment)

        @saga_step
        async def charge(self, data: Fanout) -> Fanout | None:
            return Fanout(saga_id=data.saga_id, stock=data.stock, payment="charged")

        def flow(self) -> SagaFlow[Fanout]:
            return saga_flow(self.reserve & self.charge)

    result = await within_guard(Checkout().execute(Fanout()))

    assert (result.data.stock, result.data.payment) == ("reserved", "charged")


# --- nested groups ------------------------------------------------------------------------


def test_nested_groups_flatten_into_one_group() -> None:
    trace = Trace()
    a, b, c = trace.sets("a"), trace.sets("b"), trace.sets("c")

    shapes = [(a & b) & c, a & (b & c), parallel(a & b, c), parallel(a, parallel(b, c))]

    for group in shapes:
        assert group.members == (a, b, c)
        assert group.name == "a & b & c"


async def test_flattened_group_merges_every_members_result() -> None:
    trace = Trace()
    inner = trace.sets("a", stock="reserved") & trace.sets("b", payment="charged")
    flow = saga_flow(parallel(inner, trace.sets("c", shipping="booked")))

    result = await run(flow)

    assert (result.data.stock, result.data.payment, result.data.shipping) == (
        "reserved",
        "charged",
        "booked",
    )


def test_nested_group_with_its_own_merge_cannot_be_flattened() -> None:
    trace = Trace()
    inner = parallel(trace.sets("a"), trace.sets("b"), merge=lambda data, results: data)

    with pytest.raises(SagaFlowDefinitionError, match=r"nested group with its own merge="):
        parallel(inner, trace.sets("c"))


# --- failing members ----------------------------------------------------------------------


async def test_failing_member_lets_its_siblings_finish_then_compensates_the_committed() -> None:
    trace = Trace()
    charge_failed = asyncio.Event()
    flow = saga_flow(
        (trace.sets("reserve", after=charge_failed, stock="reserved") >> trace.undo("reserve"))
        & trace.fails("charge", done=charge_failed)
        & (trace.sets("notify") >> trace.undo("notify"))
    )

    result = await run(flow)

    assert trace.events == [
        "reserve waiting",
        "charge#1 failed",
        "notify",
        "reserve",  # not cancelled by its sibling's failure
        "undo notify",
        "undo reserve",
    ]
    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "charge"
    assert isinstance(result.error, Boom)
    assert records(result, "charge") == [(StepStatus.FAILED, 1, False)]


async def test_of_several_failing_members_the_first_declared_is_the_failed_step() -> None:
    trace = Trace()
    c_failed = asyncio.Event()
    flow = saga_flow(
        trace.fails("a", after=c_failed)
        & (trace.sets("b", stock="reserved") >> trace.undo("b"))
        & trace.fails("c", done=c_failed)
    )

    result = await run(flow)

    assert trace.events.index("c#1 failed") < trace.events.index("a#1 failed")
    assert result.failed_step == "a"  # declared first, though c failed first
    assert str(result.error) == "a failed (attempt 1)"
    failed = [(r.name, str(r.error)) for r in result.history if r.status is StepStatus.FAILED]
    assert failed == [("c", "c failed (attempt 1)"), ("a", "a failed (attempt 1)")]
    assert trace.undo_counts() == {"b": 1}


async def test_compensations_see_the_changes_of_members_that_committed_before_a_failure() -> None:
    trace = Trace()
    flow = saga_flow(
        (trace.sets("reserve", stock="R-1") >> trace.undo("reserve"))
        & (trace.sets("book", shipping="S-1") >> trace.undo("book"))
        & trace.fails("charge", payment="never")
    )

    result = await run(flow, Fanout(total=4))

    [seen] = trace.undone["reserve"]
    assert (seen.stock, seen.shipping, seen.payment, seen.total) == ("R-1", "S-1", None, 4)
    assert trace.undone["book"] == [seen]
    assert result.data == seen


async def test_custom_merge_gives_compensations_the_committed_results_with_none_for_failures() -> (
    None
):
    given: list[tuple[Fanout | None, ...]] = []

    def remember(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        given.append(results)
        ids = [r.stock for r in results if r is not None and r.stock]
        return Fanout(saga_id=data.saga_id, stock=",".join(ids))

    trace = Trace()
    flow = saga_flow(
        parallel(
            trace.sets("a", stock="A") >> trace.undo("a"),
            trace.fails("b", stock="B"),
            trace.sets("c", stock="C") >> trace.undo("c"),
            merge=remember,
        )
    )

    result = await run(flow)

    assert [[r.stock if r else None for r in results] for results in given] == [["A", None, "C"]]
    assert [d.stock for d in trace.undone["a"] + trace.undone["c"]] == ["A,C", "A,C"]
    assert result.data.stock == "A,C"


async def test_compensations_see_the_input_when_the_custom_merge_fails_after_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def strict(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        if None in results:
            raise ValueError("a result is missing")
        return data  # pragma: no cover - a member always fails in this test

    trace = Trace()
    data = Fanout(total=1)
    flow = saga_flow(
        parallel(trace.sets("a", stock="A") >> trace.undo("a"), trace.fails("b"), merge=strict)
    )

    result = await run(flow, data)

    assert trace.undone["a"] == [data]
    assert result.failed_step == "b"
    assert any("a result is missing" in r.getMessage() for r in caplog.records)


# --- compensation order -------------------------------------------------------------------


async def test_group_members_are_compensated_in_reverse_declaration_order_by_default() -> None:
    trace = Trace()
    c_done = asyncio.Event()
    undo_c_started, undo_b_started = asyncio.Event(), asyncio.Event()
    flow = saga_flow(
        trace.sets("open") >> trace.undo("open"),
        (trace.sets("a", after=c_done) >> trace.undo("a"))
        & (trace.sets("b") >> trace.undo("b", started=undo_b_started))
        & (trace.sets("c", done=c_done) >> trace.undo("c", started=undo_c_started)),
        trace.fails("ship"),
    )

    await run(flow)

    undo_order = [e for e in trace.events if e.startswith("undo")]
    assert undo_order == ["undo c", "undo b", "undo a", "undo open"]
    assert trace.events.index("c") < trace.events.index("a")  # completion order is not used


async def test_concurrent_compensation_runs_the_members_compensations_together() -> None:
    trace = Trace()
    a_undoing, b_undoing = asyncio.Event(), asyncio.Event()
    flow = saga_flow(
        parallel(
            trace.sets("a") >> trace.undo("a", started=a_undoing, wait_for=b_undoing),
            trace.sets("b") >> trace.undo("b", started=b_undoing, wait_for=a_undoing),
            compensate="concurrent",
        ),
        trace.fails("ship"),
    )

    result = await run(flow)  # one at a time, each would wait for the other forever

    assert trace.events[-4:] == ["undoing a", "undoing b", "undo b", "undo a"]
    compensated = [r.name for r in result.history if r.status is StepStatus.COMPENSATED]
    assert sorted(compensated) == ["a", "b"]


async def test_concurrent_group_keeps_its_place_in_the_saga_s_reverse_order() -> None:
    trace = Trace()
    flow = saga_flow(
        trace.sets("open") >> trace.undo("open"),
        parallel(
            trace.sets("a") >> trace.undo("a"),
            trace.sets("b") >> trace.undo("b"),
            compensate="concurrent",
        ),
        trace.sets("pack") >> trace.undo("pack"),
        trace.fails("ship"),
    )

    await run(flow)

    undo_order = [e for e in trace.events if e.startswith("undo")]
    assert undo_order[0] == "undo pack"
    assert sorted(undo_order[1:3]) == ["undo a", "undo b"]
    assert undo_order[3] == "undo open"


@pytest.mark.parametrize("order", ["reverse", "concurrent"])
@pytest.mark.parametrize("failure", ["member fails", "merge conflict", "later step fails"])
async def test_each_committed_member_is_compensated_exactly_once(order: str, failure: str) -> None:
    trace = Trace()
    third = (
        trace.fails("c")
        if failure == "member fails"
        else trace.sets("c", total=2 if failure == "merge conflict" else 1)
    )
    group = (
        parallel(
            trace.sets("a", total=1) >> trace.undo("a"),
            trace.sets("b", stock="B") >> trace.undo("b"),
            third,
            compensate="concurrent",
        )
        if order == "concurrent"
        else parallel(
            trace.sets("a", total=1) >> trace.undo("a"),
            trace.sets("b", stock="B") >> trace.undo("b"),
            third,
        )
    )
    flow = saga_flow(trace.sets("open") >> trace.undo("open"), group, trace.fails("ship"))

    result = await run(flow)

    assert result.status is SagaStatus.FAILED
    assert trace.undo_counts() == {"open": 1, "a": 1, "b": 1}
    for name in ("a", "b", "open"):
        assert records(result, name)[-1:] == [(StepStatus.COMPENSATED, 1, True)]


async def test_failed_compensation_in_a_concurrent_group_does_not_stop_the_others() -> None:
    trace = Trace()
    flow = saga_flow(
        trace.sets("open") >> trace.undo("open"),
        parallel(
            trace.sets("a") >> trace.undo("a", fails=True),
            trace.sets("b") >> trace.undo("b"),
            compensate="concurrent",
        ),
        trace.fails("ship"),
    )

    with pytest.raises(SagaCompensationFailedError) as raised:
        await run(flow)

    assert trace.undo_counts() == {"a": 1, "b": 1, "open": 1}
    assert set(raised.value.failures) == {"a"}
    assert raised.value.result is not None
    assert [r.name for r in raised.value.result.compensation_failures] == ["a"]


async def test_compensations_of_a_group_see_the_merged_data() -> None:
    trace = Trace()
    flow = saga_flow(
        (trace.sets("reserve", stock="R-1") >> trace.undo("reserve"))
        & (trace.sets("charge", payment="P-1") >> trace.undo("charge")),
        trace.fails("ship"),
    )

    await run(flow)

    for name in ("reserve", "charge"):
        [seen] = trace.undone[name]
        assert (seen.stock, seen.payment) == ("R-1", "P-1")


async def test_members_without_a_compensation_are_not_compensated() -> None:
    trace = Trace()
    flow = saga_flow(
        (trace.sets("a") >> trace.undo("a")) & trace.sets("b"),
        trace.fails("ship"),
    )

    result = await run(flow)

    assert trace.undo_counts() == {"a": 1}
    assert [r.name for r in result.history if r.compensation] == ["a"]


# --- cancellation and timeouts while a group runs -----------------------------------------


async def test_saga_timeout_during_a_group_compensates_its_committed_members() -> None:
    trace = Trace()
    never = asyncio.Event()
    flow = saga_flow(
        trace.sets("open") >> trace.undo("open"),
        (trace.sets("a", stock="reserved") >> trace.undo("a"))
        & (trace.sets("b", after=never, payment="charged") >> trace.undo("b")),
    ).timeout(timedelta(milliseconds=2))

    result = await run(flow)

    assert result.status is SagaStatus.TIMED_OUT
    assert trace.undo_counts() == {"a": 1, "open": 1}
    # What the committed member changed is merged in: its compensation can undo it.
    assert [d.stock for d in trace.undone["a"]] == ["reserved"]
    assert result.data.stock == "reserved"
    assert result.data.payment is None


async def test_cancelling_the_saga_during_a_group_compensates_its_committed_members() -> None:
    trace = Trace()
    c_done, never = asyncio.Event(), asyncio.Event()
    flow = saga_flow(
        (trace.sets("a", stock="reserved") >> trace.undo("a"))
        & (trace.sets("b", after=never) >> trace.undo("b"))
        & trace.sets("c", done=c_done)
    )
    task = asyncio.create_task(SagaEngine().run(flow, Fanout()))
    await within_guard(c_done.wait())

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within_guard(task)

    assert trace.undo_counts() == {"a": 1}
    assert trace.events[-1] == "undo a"
    assert [d.stock for d in trace.undone["a"]] == ["reserved"]
