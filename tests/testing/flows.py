"""Flows the harness tests explore: an order saga with a group, and its services' log."""

from __future__ import annotations

import dataclasses

from spakky_saga import AbstractSagaData, SagaFlow, parallel, saga_flow, step


class Order(AbstractSagaData):
    order_id: int = 1
    reserved: bool = False
    charged: bool = False
    shipped: bool = False


class Services:
    """What the steps did and undid, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.handled: list[Order] = []

    async def reserve(self, data: Order) -> Order:
        self.log.append("reserve")
        return dataclasses.replace(data, reserved=True)

    async def release(self, data: Order) -> None:
        self.log.append("release")

    async def charge(self, data: Order) -> Order:
        self.log.append("charge")
        return dataclasses.replace(data, charged=True)

    async def refund(self, data: Order) -> None:
        self.log.append("refund")

    async def notify(self, data: Order) -> None:
        self.log.append("notify")

    async def ticket(self, data: Order) -> None:
        self.log.append("ticket")

    async def cancel_ticket(self, data: Order) -> None:
        self.log.append("cancel_ticket")

    async def ship(self, data: Order) -> Order:
        self.log.append("ship")
        return dataclasses.replace(data, shipped=True)

    async def unship(self, data: Order) -> None:
        self.log.append("unship")

    async def handle(self, data: Order) -> None:
        self.handled.append(data)


def order_flow(services: Services) -> SagaFlow[Order]:
    """reserve, then charge & ticket & notify together, then ship."""
    return saga_flow(
        step(services.reserve, compensate=services.release),
        parallel(
            step(services.charge, compensate=services.refund),
            step(services.ticket, compensate=services.cancel_ticket),
            services.notify,
        ),
        step(services.ship, compensate=services.unship),
    ).on_compensation_failure(services.handle)
