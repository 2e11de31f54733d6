"""The sagas of the test application and the ticket service they need.

The container creates `OrderSaga` and `CancelOrderSaga` (`@Saga()` sagas), `RefundSaga` (an
`AbstractSaga` registered with a plain `@Pod()`) and `OrderDesk` (a `@Saga()` orchestrator
that is not an `AbstractSaga`), injecting `TicketService` (another Pod) into each.
"""

from __future__ import annotations

import dataclasses

from spakky.core.pod.annotations.pod import Pod

from spakky_saga import (
    AbstractSaga,
    AbstractSagaData,
    Saga,
    SagaEngine,
    SagaFlow,
    SagaResult,
    run_saga_flow,
    saga_flow,
    saga_step,
)


class OrderSagaData(AbstractSagaData):
    order_id: int
    ticket_id: int | None = None
    fail_payment: bool = False


class PaymentDeclinedError(Exception):
    pass


@Pod()
class TicketService:
    """Issues and cancels tickets, keeping a log of what it did."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self._next = 100

    async def issue(self, order_id: int) -> int:
        self._next += 1
        self.log.append(f"issue {self._next} for order {order_id}")
        return self._next

    async def cancel(self, ticket_id: int) -> None:
        self.log.append(f"cancel {ticket_id}")


@Saga()
class OrderSaga(AbstractSaga[OrderSagaData]):
    def __init__(self, tickets: TicketService) -> None:
        self.tickets = tickets

    @saga_step
    async def issue_ticket(self, data: OrderSagaData) -> OrderSagaData:
        ticket_id = await self.tickets.issue(data.order_id)
        return dataclasses.replace(data, ticket_id=ticket_id)

    @saga_step
    async def cancel_ticket(self, data: OrderSagaData) -> None:
        assert data.ticket_id is not None
        await self.tickets.cancel(data.ticket_id)

    @saga_step
    async def charge(self, data: OrderSagaData) -> None:
        if data.fail_payment:
            raise PaymentDeclinedError(f"order {data.order_id}: card declined")

    def flow(self) -> SagaFlow[OrderSagaData]:
        return saga_flow(self.issue_ticket >> self.cancel_ticket, self.charge)


@Saga()
class CancelOrderSaga(AbstractSaga[OrderSagaData]):
    """A second saga sharing the dependency: every saga gets the container's engine."""

    def __init__(self, tickets: TicketService) -> None:
        self.tickets = tickets

    @saga_step
    async def cancel_ticket(self, data: OrderSagaData) -> None:
        assert data.ticket_id is not None
        await self.tickets.cancel(data.ticket_id)

    def flow(self) -> SagaFlow[OrderSagaData]:
        return saga_flow(self.cancel_ticket)


@Pod()
class RefundSaga(AbstractSaga[OrderSagaData]):
    """Registered with `@Pod()` rather than `@Saga()`: the plugin connects it to the engine."""

    def __init__(self, tickets: TicketService) -> None:
        self.tickets = tickets

    @saga_step
    async def refund(self, data: OrderSagaData) -> None:
        await self.tickets.cancel(data.order_id)

    def flow(self) -> SagaFlow[OrderSagaData]:
        return saga_flow(self.refund)


@Saga()
class OrderDesk:
    """A `@Saga()` orchestrator that does not derive from AbstractSaga: it takes the engine in
    its constructor, when the application has one, and runs its flow itself."""

    def __init__(self, tickets: TicketService, engine: SagaEngine | None = None) -> None:
        self.tickets = tickets
        self.engine = engine

    async def issue(self, data: OrderSagaData) -> OrderSagaData:
        ticket_id = await self.tickets.issue(data.order_id)
        return dataclasses.replace(data, ticket_id=ticket_id)

    async def place(self, order_id: int) -> SagaResult[OrderSagaData]:
        flow = saga_flow(self.issue)
        data = OrderSagaData(order_id=order_id)
        if self.engine is None:
            return await run_saga_flow(flow, data, saga_name="order-desk")
        return await self.engine.run(flow, data, saga_name="order-desk")
