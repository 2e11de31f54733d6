"""An application for `spakky-saga resolve` tests: a shipment whose `ship` step fails once
and escalates (`Escalate()`); the store is in $ESCALATE_APP_STORE (a SQLite path)."""

from __future__ import annotations

import os

from spakky_saga import (
    AbstractSagaData,
    Escalate,
    SagaEngine,
    SagaFlow,
    SqliteSagaStore,
    saga_flow,
    step,
)


class Parcel(AbstractSagaData):
    order_id: int = 1


SHIPPED: list[int] = []


async def ship(data: Parcel) -> None:
    if not SHIPPED:
        SHIPPED.append(0)
        raise ConnectionError("warehouse API down")
    SHIPPED.append(data.order_id)


FLOW: SagaFlow[Parcel] = saga_flow(step(ship) | Escalate())


def engine() -> SagaEngine:
    engine = SagaEngine(store=SqliteSagaStore(os.environ["ESCALATE_APP_STORE"]), log=False)
    engine.register("shipment", FLOW)
    return engine
