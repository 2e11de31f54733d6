"""`@saga_step`: a method that becomes a `SagaStep` bound to the instance, composable with
`>>`, `&` and `|`; misuse is rejected when the class is defined."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from spakky_saga import (
    Parallel,
    Retry,
    SagaEngine,
    SagaFlowDefinitionError,
    SagaStatus,
    SagaStep,
    SagaStepMethod,
    Transaction,
    saga_flow,
    saga_step,
)
from tests.support import Boom, OrderData

unchecked_saga_step: Callable[[Any], SagaStepMethod[Any, OrderData]] = saga_step
"""`@saga_step` typed as Any, so type checkers (and the mypy plugin) let the mistakes that the
run-time checks are tested on through."""


class Ticketing:
    """Steps on a plain class: the descriptor does not need a saga class."""

    def __init__(self, ticket_id: int) -> None:
        self.ticket_id = ticket_id
        self.calls: list[str] = []

    @saga_step
    async def issue_ticket(self, data: OrderData) -> OrderData:
        """Issue a ticket for the order."""
        self.calls.append(f"issue {self.ticket_id}")
        return dataclasses.replace(data, ticket_id=self.ticket_id)

    @saga_step
    async def cancel_ticket(self, data: OrderData) -> None:
        self.calls.append(f"cancel {data.ticket_id}")

    @saga_step
    async def reserve_stock(self, data: OrderData) -> None:
        self.calls.append("reserve")
        raise Boom("out of stock")


class SlottedTicketing:
    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[str] = []

    @saga_step
    async def issue_ticket(self, data: OrderData) -> None:
        self.calls.append("issue")


def test_class_access_gives_the_descriptor_with_the_functions_metadata() -> None:
    method = Ticketing.issue_ticket

    assert isinstance(method, SagaStepMethod)
    assert method.__name__ == "issue_ticket"
    assert method.__qualname__ == "Ticketing.issue_ticket"
    assert method.__doc__ == "Issue a ticket for the order."
    assert method.__wrapped__ is method.function
    assert repr(method) == "<saga step Ticketing.issue_ticket>"


async def test_instance_access_gives_a_step_bound_to_that_instance() -> None:
    first, second = Ticketing(1), Ticketing(2)

    step = first.issue_ticket
    out = await step(OrderData(order_id=1))

    assert isinstance(step, SagaStep)
    assert step.name == "issue_ticket"
    assert out is not None
    assert out.ticket_id == 1
    assert first.calls == ["issue 1"]
    assert second.calls == []
    assert second.issue_ticket is not first.issue_ticket


def test_instance_access_returns_the_same_step_each_time() -> None:
    saga = Ticketing(1)

    assert saga.issue_ticket is saga.issue_ticket


async def test_steps_on_a_class_with_slots_still_work() -> None:
    saga = SlottedTicketing()

    await saga.issue_ticket(OrderData(order_id=1))
    await saga.issue_ticket(OrderData(order_id=1))

    assert saga.calls == ["issue", "issue"]


def test_bound_steps_compose_with_operators() -> None:
    saga = Ticketing(1)

    transaction = saga.issue_ticket >> saga.cancel_ticket
    group = saga.issue_ticket & saga.reserve_stock
    retried = saga.reserve_stock | Retry(2)

    assert isinstance(transaction, Transaction)
    assert transaction.compensation_name == "cancel_ticket"
    assert isinstance(group, Parallel)
    assert group.name == "issue_ticket & reserve_stock"
    assert retried.on_error == Retry(2)


async def test_bound_steps_run_on_their_instance_in_a_saga(engine: SagaEngine) -> None:
    saga = Ticketing(7)

    result = await engine.run(
        saga_flow(saga.issue_ticket >> saga.cancel_ticket, saga.reserve_stock),
        OrderData(order_id=1),
    )

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "reserve_stock"
    assert saga.calls == ["issue 7", "reserve", "cancel 7"]


def test_a_regular_method_is_rejected_when_the_class_is_defined() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:

        class Broken:
            @unchecked_saga_step
            def issue(self, data: OrderData) -> None:
                return None

    assert str(raised.value).startswith(
        '@saga_step "test_a_regular_method_is_rejected_when_the_class_is_defined.<locals>.'
        'Broken.issue": saga step "issue" is a regular function; declare it with `async def`'
    )


def test_a_method_with_the_wrong_arity_is_rejected_when_the_class_is_defined() -> None:
    with pytest.raises(SagaFlowDefinitionError, match="self and the saga data"):

        class Broken:
            @unchecked_saga_step
            async def issue(self, data: OrderData, extra: int) -> None:
                return None


def test_applying_saga_step_twice_or_to_a_staticmethod_is_rejected() -> None:
    with pytest.raises(SagaFlowDefinitionError, match="apply it once, directly above"):

        class Twice:
            @unchecked_saga_step
            @saga_step
            async def issue(self, data: OrderData) -> None:
                return None

    with pytest.raises(SagaFlowDefinitionError, match="plain async instance method"):

        class Static:
            @unchecked_saga_step
            @staticmethod
            async def issue(data: OrderData) -> None:
                return None
