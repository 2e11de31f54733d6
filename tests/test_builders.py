"""Builders: `step`, `parallel`, `saga_flow` make the same flows as the operators, promote
plain async callables, and reject malformed input when the flow is built, naming the item,
what was given and what was expected."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from spakky_saga import (
    AbstractSpakkySagaError,
    Compensate,
    Parallel,
    Retry,
    SagaFlow,
    SagaFlowDefinitionError,
    SagaStep,
    Skip,
    Transaction,
    parallel,
    saga_flow,
    step,
)
from tests.support import (
    OrderData,
    charge,
    notify,
    refund,
    regular,
    release,
    reserve,
    wrong,
)


async def two_args(data: OrderData, extra: int) -> OrderData | None:
    return None


class AsyncCallable:
    async def __call__(self, data: OrderData) -> OrderData | None:
        return None


def definition_error(build: Any, *args: Any, **kwargs: Any) -> str:
    """Call `build`, expecting a SagaFlowDefinitionError; return its message."""
    with pytest.raises(SagaFlowDefinitionError) as raised:
        build(*args, **kwargs)
    return str(raised.value)


def test_step_of_an_async_function_is_a_step_named_after_it() -> None:
    built = step(reserve)

    assert type(built) is SagaStep
    assert built.action is reserve
    assert built.name == "reserve"
    assert built.on_error == Compensate()
    assert built.timeout is None


def test_step_with_compensate_is_a_transaction() -> None:
    built = step(reserve, compensate=release, on_error=Skip(), timeout=timedelta(seconds=2))

    assert isinstance(built, Transaction)
    assert built.compensate is release
    assert built.compensation_name == "release"
    assert built.on_error == Skip()
    assert built.timeout == timedelta(seconds=2)


def test_step_accepts_an_explicit_name() -> None:
    assert step(reserve, name="reserve_stock").name == "reserve_stock"


def test_step_of_a_step_keeps_its_name_strategy_and_timeout_unless_overridden() -> None:
    base = step(reserve, on_error=Retry(2), timeout=timedelta(seconds=1), name="r")

    copied = step(base, compensate=release)
    overridden = step(base, on_error=Skip(), timeout=timedelta(seconds=3), name="other")

    assert (copied.name, copied.on_error, copied.timeout) == ("r", Retry(2), timedelta(seconds=1))
    assert (overridden.name, overridden.on_error, overridden.timeout) == (
        "other",
        Skip(),
        timedelta(seconds=3),
    )


def test_step_promotes_async_callable_objects_and_partials() -> None:
    async def tagged(data: OrderData, tag: str) -> OrderData | None:
        return None

    assert step(AsyncCallable()).name == "AsyncCallable"
    assert step(functools.partial(tagged, tag="x")).name == "tagged"


async def test_step_of_a_bound_async_method_binds_the_instance() -> None:
    class Tickets:
        def __init__(self) -> None:
            self.issued: list[int] = []

        async def issue(self, data: OrderData) -> None:
            self.issued.append(data.order_id)

    tickets = Tickets()
    built = step(tickets.issue)

    await built(OrderData(order_id=4))

    assert built.name == "issue"
    assert tickets.issued == [4]


def test_a_transaction_built_directly_names_its_compensation() -> None:
    transaction = Transaction(action=reserve, compensate=release)

    assert (transaction.name, transaction.compensation_name) == ("reserve", "release")


def test_step_of_a_transaction_or_group_is_a_definition_error() -> None:
    message = definition_error(step, wrong(step(reserve) >> release))
    assert message.startswith('step(Transaction "reserve"): step() takes an action')

    assert 'step(Parallel "reserve & charge")' in definition_error(
        step, wrong(step(reserve) & step(charge))
    )


def test_step_of_a_regular_function_says_to_declare_it_async() -> None:
    assert definition_error(step, wrong(regular)) == (
        'step "regular": action "regular" is a regular function; declare it with `async def` '
        "so the engine can await it"
    )


def test_step_with_the_wrong_arity_shows_the_signature() -> None:
    assert definition_error(step, wrong(two_args)) == (
        'step "two_args": action "two_args" must take exactly one argument, the saga data, '
        "but its signature is (data: 'OrderData', extra: 'int') -> 'OrderData | None'"
    )


def test_step_of_a_non_callable_says_what_was_given() -> None:
    assert definition_error(step, wrong(5)) == (
        "step(5): action must be an async function taking the saga data, got 5"
    )


def test_step_with_a_non_callable_compensation_names_the_transaction() -> None:
    assert definition_error(step, reserve, compensate=wrong(5)) == (
        'transaction "reserve": compensate= must be an async function taking the saga data, '
        "or a @saga_step, got 5"
    )


def test_step_with_a_regular_compensation_names_the_transaction() -> None:
    assert definition_error(step, reserve, compensate=wrong(regular)).startswith(
        'transaction "reserve": compensation "regular" is a regular function'
    )


def test_step_with_an_invalid_strategy_names_the_step_and_the_value() -> None:
    assert definition_error(step, reserve, on_error=wrong("retry")) == (
        'step "reserve": on_error must be Compensate(), Skip(), Retry(...) or an '
        "ErrorStrategy subclass, got 'retry'"
    )


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (5, 'step "reserve": timeout must be a datetime.timedelta, got 5'),
        (timedelta(0), 'step "reserve": timeout must be positive, got datetime.timedelta(0)'),
        (
            timedelta(seconds=-1),
            'step "reserve": timeout must be positive, got '
            "datetime.timedelta(days=-1, seconds=86399)",
        ),
    ],
)
def test_step_with_an_invalid_timeout_names_the_step_and_the_value(
    timeout: object, expected: str
) -> None:
    assert definition_error(step, reserve, timeout=wrong(timeout)) == expected


def test_parallel_builds_a_group_of_promoted_functions() -> None:
    group = parallel(reserve, step(charge) >> release, notify)

    assert isinstance(group, Parallel)
    assert [member.name for member in group.items] == ["reserve", "charge", "notify"]
    assert isinstance(group.items[1], Transaction)


def test_parallel_flattens_nested_groups() -> None:
    group = parallel(reserve, parallel(charge, notify), step(refund) & release)

    assert [member.name for member in group.items] == [
        "reserve",
        "charge",
        "notify",
        "refund",
        "release",
    ]


def test_parallel_with_one_item_is_a_definition_error_at_run_time() -> None:
    one: Any = parallel  # the signature shows type checkers that two are needed

    assert definition_error(one, reserve) == (
        'parallel("reserve"): a parallel group needs at least two items, got 1; put a single '
        "step directly in the flow instead"
    )


def test_parallel_of_a_single_group_is_a_definition_error_as_upstream() -> None:
    one: Any = parallel

    assert "needs at least two items, got 1" in definition_error(one, step(reserve) & charge)


def test_parallel_with_no_items_is_a_definition_error_at_run_time() -> None:
    none: Any = parallel

    assert definition_error(none) == (
        "parallel(): a parallel group needs at least two items, got 0; pass the steps to run "
        "concurrently"
    )


def test_parallel_group_with_one_member_is_a_definition_error() -> None:
    assert definition_error(Parallel, items=(step(reserve),)) == (
        "parallel group with 1 member(s): a group needs at least two; put a single step "
        "directly in the flow instead"
    )
    assert "items must be a tuple of steps, got 5" in definition_error(Parallel, items=5)
    assert "items must be a tuple of steps, got 'ab'" in definition_error(Parallel, items="ab")


def test_parallel_class_takes_items_like_upstream_and_keeps_members_as_an_alias() -> None:
    group = Parallel(items=wrong((reserve, step(charge) >> release)))

    assert [member.name for member in group.items] == ["reserve", "charge"]
    assert isinstance(group.items, tuple)
    assert group.members is group.items  # the alias is the field itself, not a copy
    assert [member.name for member in group.members] == ["reserve", "charge"]


def test_parallel_lists_every_bad_member_by_position() -> None:
    error = definition_error(parallel, reserve, wrong(5), wrong("x"))

    assert error == (
        "2 problems in saga flow definition:\n"
        "  - parallel group, member 2: expected a step, transaction, parallel group or async "
        "function, got 5\n"
        "  - parallel group, member 3: expected a step, transaction, parallel group or async "
        "function, got 'x'"
    )


def test_parallel_rejects_invalid_merge_and_compensation_order() -> None:
    error = definition_error(parallel, reserve, charge, merge=wrong(5), compensate=wrong("side"))

    assert "merge must be a function, got 5" in error
    assert "compensation_order must be 'reverse' or 'concurrent', got 'side'" in error


def test_saga_flow_keeps_items_in_order_and_promotes_functions() -> None:
    flow = saga_flow(step(reserve) >> release, charge, parallel(notify, reserve))

    assert isinstance(flow, SagaFlow)
    kinds = [type(item) for item in flow.items]
    assert kinds == [Transaction, SagaStep, Parallel]
    assert flow.saga_timeout is None
    assert flow.compensation_failure_handler is None


def test_saga_flow_with_no_items_is_a_definition_error_at_run_time() -> None:
    empty: Any = saga_flow  # the signature shows type checkers that one is needed

    assert definition_error(empty) == (
        "saga_flow(): a saga needs at least one item; pass the steps to run in order"
    )


def test_builders_take_any_number_of_items_at_run_time_like_upstream() -> None:
    assert str(inspect.signature(saga_flow)).startswith("(*items")
    assert str(inspect.signature(parallel)).startswith("(*items")


def test_saga_flow_lists_every_bad_item_by_position() -> None:
    error = definition_error(saga_flow, reserve, wrong(Retry(3)), wrong(5))

    assert error.startswith("2 problems in saga flow definition:\n")
    assert "SagaFlow item 2: got the strategy Retry(3) on its own" in error
    assert "attach it to a step with `step | strategy`" in error
    assert (
        "SagaFlow item 3: expected a step, transaction, parallel group or async function, got 5"
        in error
    )


def test_saga_flow_definition_errors_are_raised_before_anything_runs() -> None:
    ran: list[str] = []

    async def first(data: OrderData) -> None:
        ran.append("first")

    with pytest.raises(SagaFlowDefinitionError, match=r"^SagaFlow item 2: step \"regular\""):
        saga_flow(first, wrong(regular))
    assert ran == []


def test_sagaflow_constructor_validates_its_fields() -> None:
    assert definition_error(SagaFlow, items=()) == (
        "SagaFlow(items=()): a saga needs at least one step"
    )
    assert definition_error(SagaFlow, items="ab") == (
        "SagaFlow(items=...): expected a tuple of flow items, got 'ab'"
    )
    error = definition_error(
        SagaFlow, items=(reserve,), saga_timeout=5, compensation_failure_handler=5
    )
    assert "SagaFlow: timeout must be a datetime.timedelta, got 5" in error
    assert (
        "SagaFlow: compensation_failure_handler must be a function taking the saga data, got 5"
        in error
    )


def test_sagaflow_accepts_a_list_of_items() -> None:
    flow = SagaFlow(items=wrong([reserve, step(charge)]))

    assert isinstance(flow.items, tuple)
    assert [item.name for item in flow.items] == ["reserve", "charge"]


def test_timeout_and_handler_return_new_flows() -> None:
    def handler(result: object) -> None:
        return None

    flow = saga_flow(reserve)

    timed = flow.timeout(timedelta(seconds=3))
    handled = timed.on_compensation_failure(handler)

    assert flow.saga_timeout is None
    assert timed.saga_timeout == timedelta(seconds=3)
    assert handled.saga_timeout == timedelta(seconds=3)
    assert handled.compensation_failure_handler is handler
    assert timed.compensation_failure_handler is None


def test_compensation_failure_handler_takes_the_saga_data_sync_or_async() -> None:
    async def page_on_call(data: OrderData) -> None:
        return None

    def log_it(data: OrderData) -> None:
        return None

    flow = saga_flow(reserve)

    assert flow.on_compensation_failure(page_on_call).compensation_failure_handler is page_on_call
    assert flow.on_compensation_failure(log_it).compensation_failure_handler is log_it


def test_a_compensation_failure_handler_with_the_wrong_arity_is_rejected_when_set() -> None:
    def page(data: OrderData, channel: str) -> None:
        return None

    assert definition_error(saga_flow(reserve).on_compensation_failure, wrong(page)) == (
        'SagaFlow: compensation failure handler "page" must take exactly one argument, the '
        "saga data, but its signature is (data: 'OrderData', channel: 'str') -> 'None'"
    )


def test_a_non_positive_saga_timeout_is_rejected_when_set() -> None:
    assert definition_error(saga_flow(reserve).timeout, timedelta(0)) == (
        "SagaFlow: timeout must be positive, got datetime.timedelta(0)"
    )


def test_definition_error_is_a_value_error_and_a_saga_error() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        saga_flow(wrong(5))

    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, AbstractSpakkySagaError)
    assert raised.value.problems == (
        "SagaFlow item 1: expected a step, transaction, parallel group or async function, got 5",
    )


def test_step_with_a_strategy_class_instead_of_an_instance_says_so() -> None:
    assert definition_error(step, reserve, on_error=wrong(Retry)).endswith(
        "got <class 'spakky_saga.strategy.Retry'> (the class itself; did you mean Retry(...)?)"
    )


def test_step_of_an_async_generator_says_to_return_instead_of_yield() -> None:
    async def stream(data: OrderData) -> AsyncIterator[OrderData]:
        yield data

    assert definition_error(step, wrong(stream)) == (
        'step "stream": action "stream" is an async generator (it contains `yield`); the '
        "engine awaits a step once, so return the result instead"
    )
