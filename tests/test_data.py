"""AbstractSagaData: immutable keyword dataclasses, spakky domain models, a fresh saga_id each."""

from __future__ import annotations

import dataclasses
from uuid import UUID, uuid4

import pytest
from spakky.core.common.mutability import immutable
from spakky.domain.models.base import AbstractDomainModel

from spakky_saga import AbstractSagaData, SagaEngine, SagaStatus, saga_flow
from tests.support import Journal, OrderData, with_ticket


@immutable
class DecoratedData(AbstractSagaData):
    """The spakky idiom: `@immutable` written above the class."""

    order_id: int
    note: str = ""


class PriorityOrderData(OrderData):
    priority: int = 0


def test_plain_subclass_is_a_keyword_dataclass_with_its_fields() -> None:
    data = OrderData(order_id=7, ticket_id=3)

    assert (data.order_id, data.ticket_id, data.paid) == (7, 3, False)
    assert [f.name for f in dataclasses.fields(data)] == [
        "saga_id",
        "order_id",
        "customer_id",
        "ticket_id",
        "paid",
    ]
    with pytest.raises(TypeError):
        OrderData(7)  # type: ignore[call-arg, arg-type] # keyword-only: positional must fail


def test_plain_subclass_is_immutable() -> None:
    data = OrderData(order_id=7)

    with pytest.raises(dataclasses.FrozenInstanceError, match="saga data is immutable"):
        data.order_id = 8  # type: ignore[misc] # the point of the test: frozen fields
    with pytest.raises(dataclasses.FrozenInstanceError, match='cannot delete field "order_id"'):
        del data.order_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.extra = 1  # type: ignore[attr-defined] # not even new attributes
    assert data.order_id == 7


def test_saga_data_is_a_spakky_domain_model() -> None:
    assert isinstance(OrderData(order_id=1), AbstractDomainModel)
    assert isinstance(DecoratedData(order_id=1), AbstractDomainModel)


def test_each_instance_gets_a_fresh_uuid_saga_id() -> None:
    first, second = OrderData(order_id=1), OrderData(order_id=1)

    assert isinstance(first.saga_id, UUID)
    assert first.saga_id != second.saga_id


def test_an_explicit_saga_id_is_kept() -> None:
    saga_id = uuid4()

    assert OrderData(order_id=1, saga_id=saga_id).saga_id == saga_id


def test_replace_changes_fields_and_keeps_the_saga_id() -> None:
    data = OrderData(order_id=1)

    changed = dataclasses.replace(data, ticket_id=9)

    assert changed.ticket_id == 9
    assert changed.saga_id == data.saga_id
    assert data.ticket_id is None


def test_immutable_decorator_spelling_also_works() -> None:
    data = DecoratedData(order_id=5, note="rush")

    assert (data.order_id, data.note) == (5, "rush")
    assert isinstance(data.saga_id, UUID)
    assert data.saga_id != DecoratedData(order_id=5).saga_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.note = "slow"  # type: ignore[misc] # the point of the test: frozen fields
    with pytest.raises(TypeError):
        DecoratedData(5)  # type: ignore[call-arg, arg-type] # keyword-only: positional fails


def test_subclass_of_saga_data_inherits_fields_and_stays_frozen() -> None:
    data = PriorityOrderData(order_id=2, priority=9)

    assert (data.order_id, data.priority) == (2, 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.priority = 1  # type: ignore[misc] # the point of the test: frozen fields


async def test_immutable_decorated_data_runs_through_a_saga(engine: SagaEngine) -> None:
    async def annotate(data: DecoratedData) -> DecoratedData:
        return dataclasses.replace(data, note="done")

    start = DecoratedData(order_id=1)
    result = await engine.run(saga_flow(annotate), start)

    assert result.status is SagaStatus.COMPLETED
    assert result.data.note == "done"
    assert result.data.saga_id == start.saga_id


async def test_saga_id_follows_the_run_through_replaced_data(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    result = await engine.run(saga_flow(journal.ok("issue", with_ticket(4))), order)

    assert result.data.ticket_id == 4
    assert result.data.saga_id == order.saga_id
