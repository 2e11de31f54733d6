"""A durable saga class, the ledger its participant writes to, and a durable engine pod.

`SETTINGS` is set by the test before the application starts: where the SQLite store lives,
which step should "crash" (raise a BaseException, as a killed process would stop), and the
store's clock (a test moves it past the lease instead of sleeping until the lease runs out).
"""

# No `from __future__ import annotations`: spakky reads a Pod function's return annotation
# as a type, and a string would not do.
import dataclasses
import time
from datetime import timedelta
from typing import Any, ClassVar

from spakky.core.pod.annotations.pod import Pod

from spakky_saga import (
    AbstractSaga,
    AbstractSagaData,
    Saga,
    SagaEngine,
    SagaFlow,
    SqliteSagaStore,
    saga_step,
)

SETTINGS: dict[str, Any] = {"path": None, "crash_at": None, "clock": time.time}
LEDGER: list[str] = []


class Crash(BaseException):
    """The process dies here."""


class ShipmentData(AbstractSagaData):
    order_id: int
    parcel: str | None = None


@Pod()
def durable_engine() -> SagaEngine:
    return SagaEngine(
        store=SqliteSagaStore(SETTINGS["path"], synchronous="NORMAL", clock=SETTINGS["clock"]),
        lease=timedelta(seconds=30),
        recover_on_start=True,
    )


@Saga()
class ShipOrderSaga(AbstractSaga[ShipmentData]):
    durable: ClassVar[bool] = True

    def _act(self, name: str) -> None:
        if SETTINGS["crash_at"] == name:
            SETTINGS["crash_at"] = None
            raise Crash(name)
        LEDGER.append(name)

    @saga_step
    async def pack(self, data: ShipmentData) -> ShipmentData:
        self._act("pack")
        return dataclasses.replace(data, parcel=f"parcel-{data.order_id}")

    @saga_step
    async def unpack(self, data: ShipmentData) -> None:
        self._act("unpack")

    @saga_step
    async def hand_over(self, data: ShipmentData) -> None:
        self._act("hand_over")

    def flow(self) -> SagaFlow[ShipmentData]:
        return SagaFlow(items=(self.pack >> self.unpack, self.hand_over))
