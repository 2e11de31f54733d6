"""Sagas as classes: `@Saga()` marks orchestrator classes (`AbstractSaga[D]` subclasses or
not); `execute(data)` runs `flow()` under the class name, on the connected engine or the
default one."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import logging
import weakref
from typing import Any

import pytest
from spakky.core.pod.annotations.pod import Pod

from spakky_saga import (
    AbstractSaga,
    Saga,
    SagaEngine,
    SagaEngineNotConnectedError,
    SagaFlow,
    SagaFlowDefinitionError,
    SagaStatus,
    StepStatus,
    run_saga_flow,
    saga_flow,
    saga_step,
)
from tests.support import Boom, OrderData, capture_saga_logs, saga_messages, wrong


@Saga()
class CreateOrderSaga(AbstractSaga[OrderData]):
    """The documented quick start, with a switch to make the last step fail."""

    def __init__(self, fail_stock: bool = False) -> None:
        self.fail_stock = fail_stock
        self.calls: list[str] = []

    @saga_step
    async def issue_ticket(self, data: OrderData) -> OrderData:
        self.calls.append("issue_ticket")
        return dataclasses.replace(data, ticket_id=100 + data.order_id)

    @saga_step
    async def cancel_ticket(self, data: OrderData) -> None:
        self.calls.append(f"cancel_ticket {data.ticket_id}")

    @saga_step
    async def reserve_stock(self, data: OrderData) -> OrderData:
        self.calls.append("reserve_stock")
        if self.fail_stock:
            raise Boom("no stock")
        return dataclasses.replace(data, paid=True)

    def flow(self) -> SagaFlow[OrderData]:
        return SagaFlow(
            items=(
                self.issue_ticket >> self.cancel_ticket,
                self.reserve_stock,
            )
        )


class NotASagaFlow(AbstractSaga[OrderData]):
    def flow(self) -> SagaFlow[OrderData]:
        not_a_flow: SagaFlow[OrderData] = wrong([self.flow])
        return not_a_flow


async def test_execute_runs_the_flow_and_names_the_saga_after_the_class() -> None:
    saga = CreateOrderSaga()

    result = await saga.execute(OrderData(order_id=1, customer_id=42))

    assert result.status is SagaStatus.COMPLETED
    assert result.saga_name == "CreateOrderSaga"
    assert (result.data.ticket_id, result.data.paid) == (101, True)
    assert [(r.name, r.status) for r in result.history] == [
        ("issue_ticket", StepStatus.COMMITTED),
        ("reserve_stock", StepStatus.COMMITTED),
    ]
    assert saga.calls == ["issue_ticket", "reserve_stock"]


async def test_a_saga_instance_can_execute_many_times() -> None:
    saga = CreateOrderSaga()

    first = await saga.execute(OrderData(order_id=1))
    second = await saga.execute(OrderData(order_id=2))

    assert (first.data.ticket_id, second.data.ticket_id) == (101, 102)
    assert saga.calls == ["issue_ticket", "reserve_stock"] * 2


async def test_a_saga_instance_is_released_after_it_executed() -> None:
    saga = CreateOrderSaga()
    await saga.execute(OrderData(order_id=1))
    released = weakref.ref(saga)

    del saga
    gc.collect()

    assert released() is None


async def test_a_failing_saga_class_compensates_and_returns_a_failed_result() -> None:
    saga = CreateOrderSaga(fail_stock=True)

    result = await saga.execute(OrderData(order_id=2))

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "reserve_stock"
    assert isinstance(result.error, Boom)
    assert saga.calls == ["issue_ticket", "reserve_stock", "cancel_ticket 102"]


async def test_saga_logs_carry_the_class_name(caplog: pytest.LogCaptureFixture) -> None:
    capture_saga_logs(caplog)

    await CreateOrderSaga().execute(OrderData(order_id=1))

    messages = saga_messages(caplog)
    assert messages
    assert all(message.startswith("[saga=CreateOrderSaga ") for message in messages)


async def test_run_saga_flow_runs_a_flow_without_a_class() -> None:
    saga = CreateOrderSaga()

    named = await run_saga_flow(saga.flow(), OrderData(order_id=3), saga_name="adhoc")
    default = await run_saga_flow(saga_flow(saga.reserve_stock), OrderData(order_id=3))

    assert named.saga_name == "adhoc"
    assert named.data.ticket_id == 103
    assert default.saga_name == "<anonymous>"


async def test_connect_engine_runs_the_saga_on_that_engine() -> None:
    ticks = itertools.count()
    saga = CreateOrderSaga()
    saga.connect_engine(SagaEngine(clock=lambda: float(next(ticks))))

    result = await saga.execute(OrderData(order_id=1))

    assert result.status is SagaStatus.COMPLETED
    assert [record.elapsed_seconds for record in result.history] == [1.0, 1.0]  # a tick a step


async def test_a_saga_on_a_closed_engine_refuses_to_execute() -> None:
    engine = SagaEngine()
    saga = CreateOrderSaga()
    saga.connect_engine(engine)

    engine.close()

    assert engine.closed
    with pytest.raises(SagaEngineNotConnectedError) as raised:
        await saga.execute(OrderData(order_id=1))
    assert str(raised.value) == (
        'cannot execute saga "CreateOrderSaga": its saga engine was closed '
        "(the application is shutting down)"
    )
    assert raised.value.saga_name == "CreateOrderSaga"
    assert saga.calls == []


async def test_flow_must_return_a_saga_flow() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        await NotASagaFlow().execute(OrderData(order_id=1))

    assert str(raised.value).startswith("NotASagaFlow.flow() returned [")
    assert "it must return a SagaFlow" in str(raised.value)


def test_a_saga_without_flow_cannot_be_instantiated() -> None:
    class NoFlow(AbstractSaga[OrderData]):
        pass

    with pytest.raises(TypeError, match="abstract method 'flow'"):
        NoFlow()  # type: ignore[abstract] # the point of the test


def test_saga_stereotype_is_a_spakky_pod() -> None:
    assert issubclass(Saga, Pod)
    assert Saga.exists(CreateOrderSaga)
    assert Pod.exists(CreateOrderSaga)


@Saga()
class PlainOrchestrator:
    """An orchestrator that is not an AbstractSaga: it runs its flow itself."""

    async def place(self, order_id: int) -> SagaStatus:
        result = await run_saga_flow(CreateOrderSaga().flow(), OrderData(order_id=order_id))
        return result.status


async def test_saga_stereotype_marks_a_class_that_does_not_derive_from_abstract_saga() -> None:
    assert Saga.exists(PlainOrchestrator)
    assert Pod.exists(PlainOrchestrator)
    assert await PlainOrchestrator().place(4) is SagaStatus.COMPLETED


def test_saga_stereotype_keeps_the_pod_options() -> None:
    @Saga(name="orders", scope=Pod.Scope.PROTOTYPE)
    class NamedSaga(NotASagaFlow):
        pass

    assert (Saga.get(NamedSaga).name, Saga.get(NamedSaga).scope) == (
        "orders",
        Pod.Scope.PROTOTYPE,
    )


def test_saga_without_parentheses_says_to_write_saga_with_parentheses() -> None:
    saga_stereotype: Any = Saga  # the mistake under test, which mypy reports too

    with pytest.raises(TypeError) as raised:

        @saga_stereotype
        class Forgotten(NotASagaFlow):
            pass

    assert str(raised.value) == (
        "@Saga applied without parentheses to test_saga_without_parentheses_says_to_write_saga_"
        "with_parentheses.<locals>.Forgotten: write @Saga() (a stereotype is an instance, like "
        "@Pod()), or @Saga(name=..., scope=...)"
    )


def test_saga_stereotype_rejects_what_is_neither_a_class_nor_a_function() -> None:
    with pytest.raises(TypeError) as raised:
        Saga()(wrong(42))

    assert str(raised.value) == (
        "@Saga() applied to 42 (int): it marks a saga orchestrator class (or a factory "
        "function returning one)"
    )


async def test_run_rejects_data_that_is_not_saga_data(engine: SagaEngine) -> None:
    with pytest.raises(TypeError, match=r'saga "<anonymous>" was given \{\} \(dict\) as data'):
        await engine.run(CreateOrderSaga().flow(), wrong({}))


def test_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("spakky_saga").handlers

    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)
