"""The merge rule of parallel groups, as a saga's result shows it.

Every member gets the same input; a member contributes the fields it changed; equal writes
agree, different writes conflict (and the group fails, compensating what committed); members
may return a subclass of the data; `merge=` replaces the rule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import warnings
from dataclasses import field
from typing import Any, cast

import pytest

from spakky_saga import (
    AbstractSagaData,
    MergeFn,
    SagaFlow,
    SagaFlowDefinitionError,
    SagaMergeResultError,
    SagaParallelMergeConflictError,
    SagaResult,
    SagaStatus,
    SagaStepResultError,
    StepStatus,
    parallel,
    run_saga_flow,
    saga_flow,
    step,
)
from tests.parallel_support import Fanout, Trace, within_guard


class TrackedFanout(Fanout):
    """A subclass a member may return, with a field the input's class lacks."""

    tracking: str = ""


class InvoicedFanout(Fanout):
    """Another subclass, unrelated to TrackedFanout."""

    invoice: str = ""


class ExpressFanout(TrackedFanout):
    """A subclass of a subclass."""

    priority: int = 0


class PricedLine(AbstractSagaData):
    """Data with a derived field and a validating `__post_init__`."""

    price: int = 1
    quantity: int = 1
    amount: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.price * self.quantity > 100:
            raise ValueError(f"amount {self.price * self.quantity} is over the limit of 100")
        object.__setattr__(self, "amount", self.price * self.quantity)


class LabelledFanout(Fanout):
    """Data with a cached property, stored in the instance's __dict__ once read."""

    @functools.cached_property
    def label(self) -> str:
        return f"{self.stock}/{self.payment}"


async def run(flow: SagaFlow[Fanout], data: Fanout | None = None) -> SagaResult[Fanout]:
    return await within_guard(run_saga_flow(flow, data or Fanout()))


def conflict_of(result: SagaResult[Fanout]) -> SagaParallelMergeConflictError:
    assert isinstance(result.error, SagaParallelMergeConflictError), result.error
    return result.error


# --- the default merge ------------------------------------------------------------------


async def test_members_changing_different_fields_are_merged_into_one_data() -> None:
    trace = Trace()
    flow = saga_flow(
        step(trace.sets("reserve", stock="reserved"))
        & step(trace.sets("charge", payment="charged"))
        & step(trace.sets("book", shipping="booked"))
    )

    result = await run(flow, Fanout(order_id=7))

    assert result.status is SagaStatus.COMPLETED
    assert dataclasses.astuple(result.data)[1:] == (7, "reserved", "charged", "booked", 0)


async def test_merged_data_keeps_the_saga_id_of_the_input() -> None:
    trace = Trace()
    data = Fanout()
    flow = saga_flow(trace.sets("a", stock="s") & trace.sets("b", payment="p"))

    result = await run(flow, data)

    assert result.data.saga_id == data.saga_id


async def test_members_returning_none_or_their_input_contribute_nothing() -> None:
    async def returns_input(data: Fanout) -> Fanout:
        return data

    async def returns_equal_copy(data: Fanout) -> Fanout:
        return dataclasses.replace(data)

    trace = Trace()
    data = Fanout(total=5)
    flow = saga_flow(
        step(trace.sets("noop"))
        & step(returns_input)
        & step(returns_equal_copy)
        & step(trace.sets("charge", payment="charged"))
    )

    result = await run(flow, data)

    assert result.succeeded
    assert (result.data.total, result.data.payment, result.data.stock) == (5, "charged", None)


async def test_group_whose_members_change_nothing_passes_its_input_on_unchanged() -> None:
    trace = Trace()
    data = Fanout()
    flow = saga_flow(trace.sets("a") & trace.sets("b"))

    result = await run(flow, data)

    assert result.data is data


async def test_members_writing_equal_values_to_one_field_merge_without_conflict() -> None:
    trace = Trace()
    flow = saga_flow(
        trace.sets("a", total=10, stock="reserved")
        & trace.sets("b", total=10, payment="charged")
        & trace.sets("c", total=10)
    )

    result = await run(flow)

    assert result.status is SagaStatus.COMPLETED
    assert (result.data.total, result.data.stock, result.data.payment) == (
        10,
        "reserved",
        "charged",
    )


async def test_a_member_setting_a_field_back_to_its_input_value_does_not_write_it() -> None:
    trace = Trace()
    flow = saga_flow(trace.sets("a", total=3) & trace.sets("b", total=0))

    result = await run(flow, Fanout(total=0))

    assert result.succeeded
    assert result.data.total == 3


async def test_a_value_equal_to_the_input_s_is_no_change_even_as_another_object() -> None:
    async def rewrite_stock(data: Fanout) -> Fanout:
        same_text = "".join(["reser", "ved"])
        assert same_text is not data.stock
        return dataclasses.replace(data, stock=same_text, total=1)

    trace = Trace()
    flow = saga_flow(step(rewrite_stock) & trace.sets("b", stock="other"))

    result = await run(flow, Fanout(stock="reserved"))

    assert result.succeeded, result.error
    assert (result.data.stock, result.data.total) == ("other", 1)


# --- conflicts ----------------------------------------------------------------------------


async def test_conflict_names_the_field_and_every_member_that_wrote_it() -> None:
    trace = Trace()
    flow = saga_flow(
        trace.sets("a", total=1)
        & trace.sets("bystander", stock="reserved")
        & trace.sets("b", total=2)
        & trace.sets("c", total=2)
    )

    result = await run(flow)

    error = conflict_of(result)
    assert (error.field, error.members, error.values) == ("total", ("a", "b", "c"), (1, 2, 2))
    message = str(error)
    assert 'field "total"' in message
    for write in ('"a" wrote 1', '"b" wrote 2', '"c" wrote 2'):
        assert write in message
    assert "bystander" not in message
    assert "merge=" in message  # says how to fix it


async def test_conflict_fails_the_group_and_compensates_its_members_and_earlier_steps() -> None:
    trace = Trace()
    flow = saga_flow(
        step(trace.sets("open"), compensate=trace.undo("open")),
        step(trace.sets("a", total=1), compensate=trace.undo("a"))
        & step(trace.sets("b", total=2), compensate=trace.undo("b")),
        step(trace.sets("never")),
    )

    result = await run(flow)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "a & b"
    assert isinstance(result.error, SagaParallelMergeConflictError)
    assert trace.events == ["open", "a", "b", "undo b", "undo a", "undo open"]
    group_record = [r for r in result.history if r.name == "a & b"]
    assert [(r.status, r.error) for r in group_record] == [(StepStatus.FAILED, result.error)]


async def test_conflict_keeps_agreed_changes_and_the_input_value_of_the_field() -> None:
    trace = Trace()
    flow = saga_flow(
        step(trace.sets("a", total=1, stock="reserved"), compensate=trace.undo("a"))
        & step(trace.sets("b", total=2, payment="charged"), compensate=trace.undo("b"))
    )

    result = await run(flow, Fanout(total=0))

    expected = (0, "reserved", "charged")
    assert (result.data.total, result.data.stock, result.data.payment) == expected
    seen_by_undo = trace.undone["a"][0]
    assert (seen_by_undo.total, seen_by_undo.stock, seen_by_undo.payment) == expected


async def test_several_conflicting_fields_are_all_reported_together() -> None:
    trace = Trace()
    flow = saga_flow(
        trace.sets("a", total=1, stock="x") & trace.sets("b", total=2, stock="y"),
    )

    result = await run(flow)

    assert isinstance(result.error, ExceptionGroup)
    conflicts = [
        c for c in result.error.exceptions if isinstance(c, SagaParallelMergeConflictError)
    ]
    assert len(conflicts) == len(result.error.exceptions)
    assert [(c.field, c.members, c.values) for c in conflicts] == [
        ("stock", ("a", "b"), ("x", "y")),
        ("total", ("a", "b"), (1, 2)),
    ]


# --- subclasses of the data ---------------------------------------------------------------


async def test_member_returning_a_subclass_keeps_its_extra_fields_in_the_merged_data() -> None:
    async def track(data: Fanout) -> Fanout:
        return TrackedFanout(**vars(data), tracking="TRK-1")

    trace = Trace()
    flow = saga_flow(step(track) & trace.sets("charge", payment="charged"))

    result = await run(flow)

    assert result.succeeded
    assert isinstance(result.data, TrackedFanout)
    assert (result.data.tracking, result.data.payment) == ("TRK-1", "charged")


async def test_subclass_output_conflicts_with_a_sibling_writing_its_field() -> None:
    async def track(data: Fanout) -> Fanout:
        return TrackedFanout(**vars(data) | {"total": 9}, tracking="TRK-1")

    trace = Trace()
    flow = saga_flow(step(track) & trace.sets("charge", total=3))

    result = await run(flow)

    error = conflict_of(result)
    assert (error.field, error.members, error.values) == ("total", ("track", "charge"), (9, 3))
    assert result.data.total == 0


async def test_members_returning_unrelated_subclasses_conflict_on_the_class() -> None:
    async def track(data: Fanout) -> Fanout:
        return TrackedFanout(**vars(data), tracking="TRK-1")

    async def invoice(data: Fanout) -> Fanout:
        return InvoicedFanout(**vars(data), invoice="INV-1")

    flow = saga_flow(step(track) & step(invoice))

    result = await run(flow)

    error = conflict_of(result)
    assert (error.field, error.members) == ("__class__", ("track", "invoice"))
    assert error.values == ("TrackedFanout", "InvoicedFanout")
    assert type(result.data) is Fanout


async def test_members_returning_one_subclass_with_different_extra_fields_conflict() -> None:
    def tracker(name: str, number: str) -> Any:
        async def track(data: Fanout) -> Fanout:
            return TrackedFanout(**vars(data), tracking=number)

        track.__name__ = name
        return track

    flow = saga_flow(step(tracker("ups", "1Z")) & step(tracker("dhl", "JD")))
    agreeing = saga_flow(step(tracker("ups", "1Z")) & step(tracker("dhl", "1Z")))

    result = await run(flow)
    agreed = await run(agreeing)

    error = conflict_of(result)
    assert (error.field, error.members, error.values) == ("tracking", ("ups", "dhl"), ("1Z", "JD"))
    assert isinstance(agreed.data, TrackedFanout)
    assert agreed.data.tracking == "1Z"


async def test_a_chain_of_subclasses_merges_into_the_most_specific() -> None:
    async def express(data: Fanout) -> Fanout:
        return ExpressFanout(**vars(data) | {"total": 5}, tracking="T", priority=1)

    async def track(data: Fanout) -> Fanout:
        return TrackedFanout(**vars(data) | {"total": 5}, tracking="T")

    trace = Trace()
    flow = saga_flow(step(express) & trace.sets("silent") & step(track))

    result = await run(flow)

    assert isinstance(result.data, ExpressFanout)
    assert (result.data.tracking, result.data.priority, result.data.total) == ("T", 1, 5)


# --- data classes with more to them -------------------------------------------------------


def set_price(price: int) -> Any:
    async def reprice(data: PricedLine) -> PricedLine:
        return dataclasses.replace(data, price=price)

    return reprice


def set_quantity(quantity: int) -> Any:
    async def requantify(data: PricedLine) -> PricedLine:
        return dataclasses.replace(data, quantity=quantity)

    return requantify


async def test_derived_fields_are_recomputed_by_post_init_not_merged_as_conflicts() -> None:
    flow = saga_flow(step(set_price(3)) & step(set_quantity(4)))

    result = await within_guard(run_saga_flow(flow, PricedLine(price=2, quantity=2)))

    assert result.succeeded, result.error
    assert (result.data.price, result.data.quantity, result.data.amount) == (3, 4, 12)


async def test_merged_data_rejected_by_post_init_fails_the_group() -> None:
    undone: list[PricedLine] = []

    async def undo(data: PricedLine) -> None:
        undone.append(data)

    flow = saga_flow(step(set_price(20)) & step(set_quantity(10), compensate=undo))
    data = PricedLine(price=2, quantity=2)

    result = await within_guard(run_saga_flow(flow, data))

    assert result.failed_step == "reprice & requantify"
    assert isinstance(result.error, ValueError)
    assert "over the limit" in str(result.error)
    assert undone == [data]  # no valid merged data exists: compensations see the input


async def test_cached_values_of_the_input_do_not_leak_into_the_merged_data() -> None:
    async def reserve(data: Fanout) -> Fanout:
        assert isinstance(data, LabelledFanout)
        assert data.label == "None/None"  # cached on the member's copy too
        return dataclasses.replace(data, stock="S")

    trace = Trace()
    data = LabelledFanout()
    assert data.label == "None/None"
    flow = saga_flow(step(reserve) & trace.sets("charge", payment="P"))

    result = await run(flow, data)

    assert isinstance(result.data, LabelledFanout)
    assert result.data.label == "S/P"


async def test_a_member_output_with_a_cached_value_merges_correctly() -> None:
    async def reserve(data: Fanout) -> Fanout:
        out = dataclasses.replace(data, stock="S")
        assert isinstance(out, LabelledFanout)
        assert out.label == "S/None"  # now cached on the output, not on the input
        return out

    trace = Trace()
    flow = saga_flow(step(reserve) & trace.sets("charge", payment="P"))

    result = await run(flow, LabelledFanout())

    assert isinstance(result.data, LabelledFanout)
    assert (result.data.stock, result.data.payment, result.data.label) == ("S", "P", "S/P")


# --- a custom merge -----------------------------------------------------------------------


async def test_custom_merge_gets_the_input_and_results_in_declaration_order() -> None:
    calls: list[tuple[Fanout, tuple[Fanout | None, ...]]] = []

    def keep_calls(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        calls.append((data, results))
        return data

    trace = Trace()
    first_may_finish = asyncio.Event()
    flow = saga_flow(
        parallel(
            trace.sets("slow", after=first_may_finish, total=1),
            trace.sets("silent"),
            trace.sets("fast", done=first_may_finish, total=2),
            merge=keep_calls,
        )
    )
    data = Fanout()

    await run(flow, data)

    assert trace.events == ["slow waiting", "silent", "fast", "slow"]  # fast finished first
    [(given, results)] = calls
    assert given is data
    assert [r.total if r is not None else None for r in results] == [1, None, 2]


async def test_custom_merge_replaces_the_default_rule_and_its_output_flows_on() -> None:
    def add_totals(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        added = sum(r.total - data.total for r in results if r is not None)
        return dataclasses.replace(data, total=data.total + added)

    trace = Trace()
    flow = saga_flow(
        parallel(
            trace.sets("a", total=11),
            trace.sets("b", total=12),
            trace.sets("c", total=13),
            merge=add_totals,
        ),
        trace.sets("after"),
    )

    result = await run(flow, Fanout(total=10))

    assert result.succeeded
    assert result.data.total == 16
    assert trace.seen["after"][0].total == 16


async def test_custom_merge_may_return_a_subclass_of_the_data() -> None:
    def to_tracked(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        return TrackedFanout(**vars(data), tracking="merged")

    trace = Trace()
    flow = saga_flow(parallel(trace.sets("a"), trace.sets("b"), merge=to_tracked))

    result = await run(flow)

    assert isinstance(result.data, TrackedFanout)


async def test_custom_merge_returning_the_wrong_type_fails_the_group_clearly() -> None:
    def sloppy_merge(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        return cast(Fanout, {"total": 3})

    trace = Trace()
    flow = saga_flow(
        step(trace.sets("open"), compensate=trace.undo("open")),
        parallel(
            step(trace.sets("a", total=1), compensate=trace.undo("a")),
            step(trace.sets("b"), compensate=trace.undo("b")),
            merge=sloppy_merge,
        ),
    )

    result = await run(flow)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "a & b"
    assert isinstance(result.error, SagaMergeResultError)
    assert isinstance(result.error, SagaStepResultError)  # caught like a step's bad result
    message = str(result.error)
    for part in ('merge function "sloppy_merge"', 'parallel group "a & b"', "{'total': 3}"):
        assert part in message
    assert "return the merged Fanout" in message
    assert trace.events[-3:] == ["undo b", "undo a", "undo open"]
    assert result.data.total == 0  # the merge failed: nothing of the group is kept


def test_async_merge_function_is_rejected_when_the_group_is_built() -> None:
    async def async_merge(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        return data  # pragma: no cover - rejected before it could run

    trace = Trace()
    merge = cast(MergeFn[Fanout], async_merge)

    with pytest.raises(SagaFlowDefinitionError) as raised:
        parallel(trace.sets("a"), trace.sets("b"), merge=merge)

    assert 'merge function "async_merge" is `async def`' in str(raised.value)
    assert "declare it with `def`" in str(raised.value)


async def test_merge_returning_a_coroutine_is_reported_without_a_never_awaited_warning() -> None:
    async def merge_later(data: Fanout) -> Fanout:
        return data  # pragma: no cover - never awaited, by design of the test

    trace = Trace()
    merge = cast(MergeFn[Fanout], lambda data, results: merge_later(data))
    flow = saga_flow(parallel(trace.sets("a"), trace.sets("b"), merge=merge))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await run(flow)
        gc.collect()

    assert isinstance(result.error, SagaMergeResultError)
    assert "not `async def`" in str(result.error)
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_custom_merge_raising_fails_the_group_with_its_error() -> None:
    class MergeRefused(Exception):
        pass

    def refuse(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        raise MergeRefused("cannot combine")

    trace = Trace()
    flow = saga_flow(
        parallel(
            step(trace.sets("a"), compensate=trace.undo("a")),
            step(trace.sets("b"), compensate=trace.undo("b")),
            merge=refuse,
        )
    )

    result = await run(flow)

    assert (result.failed_step, type(result.error)) == ("a & b", MergeRefused)
    assert trace.undo_counts() == {"a": 1, "b": 1}


@pytest.mark.parametrize("conflicting", [True, False])
async def test_custom_merge_is_never_given_a_conflict_to_resolve_by_the_default_rule(
    conflicting: bool,
) -> None:
    def last_wins(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        return [r for r in results if r is not None][-1]

    trace = Trace()
    flow = saga_flow(
        parallel(
            trace.sets("a", total=1),
            trace.sets("b", total=2 if conflicting else 1),
            merge=last_wins,
        )
    )

    result = await run(flow)

    assert result.succeeded
    assert result.data.total == (2 if conflicting else 1)
