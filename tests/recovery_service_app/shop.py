"""A spakky application whose engine recovers continuously (`recover_every=`), run as a
process by the test: `python -m tests.recovery_service_app.shop STORE [SCHEMA] MODE LEDGER`.

MODE `place` places order 1 and is killed (SIGKILL, by itself) inside the `ship` step, after
`reserve` committed. MODE `serve` starts the application and waits (60 s at most) until order
1's saga is finished in the store, nobody calling `recover()`: the recovery service of its
engine finds it once the dead process's lease expired, and compensates it. MODE `restart`
starts an application whose engine recovers once at start (`recover_on_start=True`), prints
order 1's stored status, places order 2 (which completes) and stops. Participants append
to the LEDGER file, which survives the kill.
"""

# No `from __future__ import annotations`: spakky reads a Pod function's return annotation.
import asyncio
import os
import signal
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.pod.annotations.pod import Pod

from spakky_saga import (
    PLUGIN_NAME,
    AbstractSaga,
    AbstractSagaData,
    PostgresSagaStore,
    Saga,
    SagaEngine,
    SagaFlow,
    SagaStore,
    SqliteSagaStore,
    current_step,
    saga_flow,
    saga_step,
)

STORE, *REST = sys.argv[1:]
SCHEMA = REST.pop(0) if STORE.startswith("postgresql://") else "public"
MODE, LEDGER = REST
ORDER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def make_store() -> SagaStore:
    if STORE.startswith("postgresql://"):
        return PostgresSagaStore(STORE, schema=SCHEMA)
    return SqliteSagaStore(STORE)


class Order(AbstractSagaData):
    order_id: int


def note(what: str) -> None:
    with Path(LEDGER).open("a") as ledger:
        ledger.write(f"{what} {os.getpid()} {current_step().idempotency_key.split('/', 1)[1]}\n")


@Pod()
def saga_engine() -> SagaEngine:
    if MODE == "restart":
        return SagaEngine(store=make_store(), lease=timedelta(seconds=30), recover_on_start=True)
    return SagaEngine(
        store=make_store(),
        lease=timedelta(seconds=1),
        recover_every=timedelta(milliseconds=200),
    )


@Saga()
class ShopSaga(AbstractSaga[Order]):
    durable: ClassVar[bool] = True

    @saga_step
    async def reserve(self, data: Order) -> None:
        note("reserve")

    @saga_step
    async def release(self, data: Order) -> None:
        note("release")

    @saga_step
    async def ship(self, data: Order) -> None:
        note("ship")
        if data.order_id == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # the process dies while shipping

    def flow(self) -> SagaFlow[Order]:
        return saga_flow(self.reserve >> self.release, self.ship)


async def place(saga: ShopSaga) -> None:
    await saga.execute(Order(saga_id=ORDER_ID, order_id=1))


async def finished(store: SagaStore) -> str:
    await store.open()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = await store.load(str(ORDER_ID))
            if record is not None and not record.status.unfinished:
                return record.status.value
            await asyncio.sleep(0.1)
        return "still unfinished after 60 s"
    finally:
        await store.close()


async def status(store: SagaStore) -> str:
    await store.open()
    try:
        record = await store.load(str(ORDER_ID))
        return "-" if record is None else record.status.value
    finally:
        await store.close()


app = (
    SpakkyApplication(ApplicationContext())
    .load_plugins(include={PLUGIN_NAME})
    .add(ShopSaga)
    .add(saga_engine)
    .start()
)
try:
    if MODE == "place":
        asyncio.run(place(app.container.get(ShopSaga)))
    elif MODE == "restart":  # then order 2, on this thread's loop (the heartbeat moves)
        print(asyncio.run(status(make_store())), flush=True)
        asyncio.run(app.container.get(ShopSaga).execute(Order(order_id=2)))
    else:
        print("serving", flush=True)
        print(asyncio.run(finished(make_store())), flush=True)
finally:
    app.stop()
