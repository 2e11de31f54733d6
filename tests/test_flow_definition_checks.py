"""Checks a flow makes when it is built, or, for lambdas, on their first call.

Names must be strings, checked when the step is built (not when its group first runs). A
lambda cannot be known to return an awaitable until it is called: one that does
(`lambda data: reserve(data)`) works like an async function; one that does not fails its first
call with a SagaFlowDefinitionError naming the step, whether run in a saga or called directly.
`async def` functions, async callable objects and `@saga_step` methods are used as given.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from spakky_saga import (
    AbstractSaga,
    ActionFn,
    CompensateFn,
    SagaCompensationFailedError,
    SagaEngine,
    SagaFlow,
    SagaFlowDefinitionError,
    SagaStatus,
    SagaStep,
    Transaction,
    parallel,
    saga_flow,
    saga_step,
    step,
)
from tests.support import Journal, OrderData, notify, release, reserve, wrong


def definition_error(build: Callable[[], object]) -> str:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        build()
    return str(raised.value)


# Names.


@pytest.mark.parametrize("name", [1, 0, None, b"reserve"])
def test_step_with_a_name_that_is_not_a_str_is_rejected_when_built(name: object) -> None:
    assert definition_error(lambda: step(reserve, name=wrong(name))) == (
        f'step "reserve": name must be a str (or "" for the function\'s name), got {name!r} '
        f"({type(name).__name__})"
    )


def test_a_group_with_a_badly_named_member_fails_when_built_not_when_it_runs() -> None:
    with pytest.raises(SagaFlowDefinitionError, match="name must be a str"):
        _ = step(reserve, name=wrong(1)) & notify


def test_step_with_an_empty_name_is_named_after_its_function() -> None:
    assert step(reserve, name="").name == "reserve"
    assert step(step(reserve, name="booking"), name="").name == "booking"


def test_a_blank_name_is_rejected() -> None:
    assert definition_error(lambda: step(reserve, name="  ")) == (
        "step \"reserve\": name '  ' is blank; give a name that shows in logs and history, "
        'or "" for the function\'s name'
    )


def test_constructors_check_name_and_compensation_name() -> None:
    assert 'step "reserve": name must be a str' in definition_error(
        lambda: SagaStep(action=reserve, name=wrong(1))
    )
    assert 'step "reserve": name must be a str' in definition_error(
        lambda: Transaction(action=reserve, compensate=release, name=wrong(2.5))
    )
    assert definition_error(
        lambda: Transaction(action=reserve, compensate=release, compensation_name=wrong(3))
    ) == (
        'transaction "reserve": compensation_name must be a str (or "" for the function\'s '
        "name), got 3 (int)"
    )


def test_a_transaction_with_an_empty_compensation_name_is_named_after_the_function() -> None:
    transaction = Transaction(action=reserve, compensate=release, compensation_name="")

    assert transaction.compensation_name == "release"


# Lambdas and other callables only a call can tell about.


async def test_a_lambda_returning_a_coroutine_runs_like_an_async_function(
    engine: SagaEngine, order: OrderData
) -> None:
    undone: list[int] = []

    async def pay(data: OrderData) -> OrderData:
        return dataclasses.replace(data, paid=True)

    async def refund(data: OrderData) -> None:
        undone.append(data.order_id)

    async def fail(data: OrderData) -> None:
        raise RuntimeError("out of stock")

    # The case under test: lambdas that return the coroutine of an async function.
    action: ActionFn[OrderData] = lambda data: pay(data)  # noqa: E731, PLW0108
    compensation: CompensateFn[OrderData] = lambda data: refund(data)  # noqa: E731, PLW0108

    completed = await engine.run(saga_flow(step(action)), order)
    rolled_back = await engine.run(saga_flow(step(action, compensate=compensation), fail), order)

    assert completed.status is SagaStatus.COMPLETED
    assert completed.data.paid
    assert rolled_back.status is SagaStatus.FAILED
    assert undone == [order.order_id]


async def test_a_lambda_step_returning_no_awaitable_fails_its_first_run_naming_the_step(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(journal.transaction("a"), step(wrong(lambda data: None), name="notify"))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "notify"
    assert isinstance(result.error, SagaFlowDefinitionError)
    assert str(result.error) == (
        'step "notify" returned None (NoneType) instead of an awaitable; it must return one, '
        "e.g. `lambda data: do_it(data)` with an `async def do_it`, or be declared with "
        "`async def` itself"
    )
    assert journal.events == ["a", "undo a"]


async def test_a_lambda_compensation_returning_no_awaitable_fails_naming_it_and_its_step(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    flow = saga_flow(
        step(journal.ok("reserve"), compensate=wrong(lambda data: None)), journal.fail("pay")
    )

    with pytest.raises(SagaCompensationFailedError) as raised:
        await engine.run(flow, order)

    error = raised.value.failures["reserve"]
    assert isinstance(error, SagaFlowDefinitionError)
    assert str(error).startswith(
        'compensation "<lambda>" of transaction "reserve" returned None (NoneType) instead of '
        "an awaitable"
    )


async def test_a_lambda_compensation_bound_with_rshift_is_checked_under_its_step_name(
    order: OrderData,
) -> None:
    transaction = step(reserve) >> wrong(step(wrong(lambda data: 5), name="undo"))

    with pytest.raises(SagaFlowDefinitionError) as raised:
        await transaction.compensate(order)

    assert str(raised.value).startswith(
        'compensation "undo" of transaction "reserve" returned 5 (int) instead of an awaitable'
    )


def test_calling_a_lambda_step_directly_fails_on_its_first_call(order: OrderData) -> None:
    lazy = step(wrong(lambda data: data))

    with pytest.raises(SagaFlowDefinitionError, match=r'^step "<lambda>" returned OrderData\('):
        lazy(order)


def test_a_renamed_step_reports_its_new_name(order: OrderData) -> None:
    renamed = step(step(wrong(lambda data: None)), name="audit")

    with pytest.raises(SagaFlowDefinitionError, match=r'^step "audit" returned None'):
        renamed(order)


def test_a_result_whose_repr_raises_is_still_reported(order: OrderData) -> None:
    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    lazy = step(wrong(lambda data: Opaque()))

    with pytest.raises(SagaFlowDefinitionError) as raised:
        lazy(order)

    assert str(raised.value).startswith(
        'step "<lambda>" returned <Opaque object (repr raised RuntimeError)> (Opaque) instead '
        "of an awaitable"
    )


async def test_a_partial_of_a_lambda_and_a_plain_decorator_over_async_def_are_accepted(
    engine: SagaEngine, order: OrderData
) -> None:
    calls: list[str] = []

    def logged(fn: Callable[[OrderData], Awaitable[OrderData | None]]) -> Any:
        @functools.wraps(fn)
        def wrapper(data: OrderData) -> Awaitable[OrderData | None]:
            calls.append(fn.__name__)
            return fn(data)

        return wrapper

    def twice(label: str, data: OrderData) -> Awaitable[OrderData | None]:
        calls.append(label)
        return reserve(data)

    forward = lambda label, data: twice(label, data)  # noqa: E731, PLW0108 - a lambda to wrap
    partial_of_lambda = functools.partial(forward, "partial")
    flow = saga_flow(step(logged(reserve)), step(wrong(partial_of_lambda), name="via partial"))

    result = await engine.run(flow, order)

    assert result.status is SagaStatus.COMPLETED
    assert calls == ["reserve", "partial"]


def test_a_plain_decorator_returning_no_awaitable_fails_its_first_call(order: OrderData) -> None:
    def broken(fn: Callable[[OrderData], Awaitable[OrderData | None]]) -> Any:
        @functools.wraps(fn)
        def wrapper(data: OrderData) -> None:
            return None

        return wrapper

    with pytest.raises(SagaFlowDefinitionError, match=r'^step "reserve" returned None'):
        step(broken(reserve))(order)


class AsyncAction:
    async def __call__(self, data: OrderData) -> OrderData | None:
        return None


class Booking(AbstractSaga[OrderData]):
    @saga_step
    async def book(self, data: OrderData) -> OrderData | None:
        return None

    def flow(self) -> SagaFlow[OrderData]:
        return saga_flow(self.book)


def test_async_functions_objects_and_saga_steps_are_used_as_given() -> None:
    action = AsyncAction()
    booking = Booking()
    bound = functools.partial(reserve)

    assert step(reserve).action is reserve
    assert step(action).action is action
    assert step(bound).action is bound
    assert (step(reserve) >> release).compensate is release
    assert isinstance(booking.book.action, functools.partial)
    assert parallel(reserve, action).items[1].action is action


def test_a_regular_function_is_still_rejected_when_built() -> None:
    def regular(data: OrderData) -> None:
        return None

    assert definition_error(lambda: step(wrong(regular))) == (
        'step "regular": action "regular" is a regular function; declare it with `async def` '
        "so the engine can await it"
    )


# Messages survive the user's objects.


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_flow_item_whose_repr_raises_still_gets_its_definition_error() -> None:
    assert definition_error(lambda: saga_flow(reserve, wrong(Unprintable()))) == (
        "SagaFlow item 2: expected a step, transaction, parallel group or async function, got "
        "<Unprintable object (repr raised RuntimeError)>"
    )


def test_a_negative_timeout_is_shown_as_its_repr() -> None:
    assert definition_error(lambda: step(reserve, timeout=timedelta(seconds=-1))) == (  # type: ignore[saga-definition] # the mistake under test
        'step "reserve": timeout must be positive, got datetime.timedelta(days=-1, seconds=86399)'
    )
    assert definition_error(lambda: saga_flow(reserve).timeout(-timedelta(hours=1))) == (
        "SagaFlow: timeout must be positive, got datetime.timedelta(days=-1, seconds=82800)"
    )
