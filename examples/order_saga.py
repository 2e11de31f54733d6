"""Demo: an order saga that succeeds, one that fails and is compensated, and one that fails
past its point of no return.

Run with `make demo`. The services are in-memory stand-ins for remote systems, so the
compensations' effects can be printed next to each result. Confirming the order to the
customer is the saga's pivot: before it, a failure undoes everything; after it, nothing is
undone, the delivery is retried, and a delivery that cannot be booked leaves the saga STUCK
for an operator (see docs/runtime.md, "The point of no return").
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from spakky_saga import (
    AbstractSaga,
    AbstractSagaData,
    ExponentialBackoff,
    Retry,
    Saga,
    SagaFlow,
    SagaResult,
    pivot,
    saga_step,
)


class OrderSagaData(AbstractSagaData):
    order_id: int
    customer_id: int
    quantity: int
    ticket_id: int | None = None
    payment_id: str | None = None


class Kitchen:
    """Issues tickets; a cancelled ticket is removed."""

    def __init__(self) -> None:
        self.tickets: dict[int, int] = {}

    async def issue(self, order_id: int) -> int:
        ticket_id = 1000 + order_id
        self.tickets[ticket_id] = order_id
        return ticket_id

    async def cancel(self, ticket_id: int) -> None:
        self.tickets.pop(ticket_id, None)


class Inventory:
    """Reserves stock; the first call fails once to show a retry."""

    def __init__(self, stock: int) -> None:
        self.stock = stock
        self.calls = 0

    async def reserve(self, quantity: int) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("inventory service briefly unavailable")
        if quantity > self.stock:
            raise ValueError(f"only {self.stock} in stock, {quantity} requested")
        self.stock -= quantity

    async def release(self, quantity: int) -> None:
        self.stock += quantity


class Customers:
    """Sends order confirmations: once sent, the order cannot be taken back."""

    def __init__(self) -> None:
        self.confirmed: list[int] = []

    async def confirm(self, order_id: int) -> None:
        self.confirmed.append(order_id)


class Couriers:
    """Books deliveries; a courier that is down refuses every booking."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.booked: list[int] = []

    async def book(self, order_id: int) -> None:
        if self.down:
            raise ConnectionError("courier service unavailable")
        self.booked.append(order_id)


class Payments:
    """Charges customers; a refund is recorded."""

    def __init__(self) -> None:
        self.charged: dict[str, int] = {}
        self.refunded: list[str] = []

    async def charge(self, customer_id: int, order_id: int) -> str:
        payment_id = f"pay-{order_id}"
        self.charged[payment_id] = customer_id
        return payment_id

    async def refund(self, payment_id: str) -> None:
        self.refunded.append(payment_id)


@Saga()
class CreateOrderSaga(AbstractSaga[OrderSagaData]):
    """Issue a ticket and charge the customer (in parallel), reserve stock, confirm the order
    (the pivot: the point of no return), then book its delivery."""

    def __init__(
        self,
        kitchen: Kitchen,
        inventory: Inventory,
        payments: Payments,
        customers: Customers | None = None,
        couriers: Couriers | None = None,
    ) -> None:
        self.kitchen = kitchen
        self.inventory = inventory
        self.payments = payments
        self.customers = customers or Customers()
        self.couriers = couriers or Couriers()

    @saga_step
    async def issue_ticket(self, data: OrderSagaData) -> OrderSagaData:
        ticket_id = await self.kitchen.issue(data.order_id)
        return dataclasses.replace(data, ticket_id=ticket_id)

    @saga_step
    async def cancel_ticket(self, data: OrderSagaData) -> None:
        if data.ticket_id is not None:
            await self.kitchen.cancel(data.ticket_id)

    @saga_step
    async def charge_payment(self, data: OrderSagaData) -> OrderSagaData:
        payment_id = await self.payments.charge(data.customer_id, data.order_id)
        return dataclasses.replace(data, payment_id=payment_id)

    @saga_step
    async def refund_payment(self, data: OrderSagaData) -> None:
        if data.payment_id is not None:
            await self.payments.refund(data.payment_id)

    @saga_step
    async def reserve_stock(self, data: OrderSagaData) -> None:
        await self.inventory.reserve(data.quantity)

    @saga_step
    async def release_stock(self, data: OrderSagaData) -> None:
        await self.inventory.release(data.quantity)

    @saga_step
    async def confirm_order(self, data: OrderSagaData) -> None:
        await self.customers.confirm(data.order_id)

    @saga_step
    async def book_delivery(self, data: OrderSagaData) -> None:
        await self.couriers.book(data.order_id)

    def flow(self) -> SagaFlow[OrderSagaData]:
        return SagaFlow(
            items=(
                (self.issue_ticket >> self.cancel_ticket)
                & (self.charge_payment >> self.refund_payment),
                # Retry what may pass on the next try; a permanent error compensates at once.
                self.reserve_stock >> self.release_stock
                | Retry(3, ExponentialBackoff(0.01), retry_on=(ConnectionError,)),
                # The point of no return: once the customer is told, the order goes ahead.
                pivot(self.confirm_order),
                # After it nothing is compensated: retry; giving up leaves the saga STUCK.
                self.book_delivery | Retry(3, ExponentialBackoff(0.01)),
            )
        ).timeout(timedelta(seconds=5))


def show(title: str, result: SagaResult[OrderSagaData]) -> None:
    print(f"\n=== {title}")
    print(f"status      : {result.status.name}")
    print(f"failed_step : {result.failed_step}")
    print(f"error       : {result.error!r}")
    print(f"elapsed     : {result.elapsed.total_seconds() * 1000:.2f} ms")
    print(f"data        : ticket_id={result.data.ticket_id} payment_id={result.data.payment_id}")
    print(result.format_timeline(pivot=order_flow().pivot_steps))


def order_flow() -> SagaFlow[OrderSagaData]:
    """The saga's flow with stand-in services: `spakky-saga graph examples.order_saga:order_flow`
    draws it."""
    return CreateOrderSaga(Kitchen(), Inventory(stock=10), Payments()).flow()


async def main() -> None:
    print("=== the saga, as `spakky-saga graph examples.order_saga:order_flow` draws it")
    print(order_flow().to_mermaid())
    kitchen, payments = Kitchen(), Payments()

    ok_saga = CreateOrderSaga(kitchen, Inventory(stock=10), payments)
    ok = await ok_saga.execute(OrderSagaData(order_id=1, customer_id=42, quantity=3))
    show("order 1: succeeds (stock reserved on the second attempt)", ok)
    print(f"tickets={kitchen.tickets} charged={sorted(payments.charged)}")

    failing_saga = CreateOrderSaga(kitchen, Inventory(stock=2), payments)
    failed = await failing_saga.execute(OrderSagaData(order_id=2, customer_id=7, quantity=5))
    show("order 2: fails on stock and is compensated", failed)
    print(f"tickets={kitchen.tickets} refunded={payments.refunded}")

    customers, couriers = Customers(), Couriers(down=True)
    stuck_saga = CreateOrderSaga(kitchen, Inventory(stock=10), payments, customers, couriers)
    stuck = await stuck_saga.execute(OrderSagaData(order_id=3, customer_id=9, quantity=1))
    show("order 3: confirmed, then no courier: STUCK past the pivot, nothing undone", stuck)
    print(f"tickets={kitchen.tickets} refunded={payments.refunded} confirmed={customers.confirmed}")


if __name__ == "__main__":
    asyncio.run(main())
