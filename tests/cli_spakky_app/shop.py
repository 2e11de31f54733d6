"""An order saga class and the engine pod of the application, on the store the CLI tests'
environment names (see tests/cli_app.py).

`SETTINGS["crash"]` makes `ship` stop the process (a BaseException), as a kill would: set by
the test process only, never by the command it runs.
"""

# No `from __future__ import annotations`: spakky reads a Pod function's return annotation
# as a type, and a string would not do.
from datetime import timedelta
from typing import ClassVar

from spakky.core.pod.annotations.pod import Pod

from spakky_saga import AbstractSaga, AbstractSagaData, Saga, SagaEngine, SagaFlow, saga_step
from tests import cli_app

SETTINGS = {"crash": False}


class OrderData(AbstractSagaData):
    order_id: int


@Pod()
def saga_engine() -> SagaEngine:
    """The application's engine: its flows are registered by the container's @Saga() pods."""
    return SagaEngine(store=cli_app.store(), lease=timedelta(milliseconds=1), log=False)


@Saga()
class OrderSaga(AbstractSaga[OrderData]):
    durable: ClassVar[bool] = True

    @saga_step
    async def reserve(self, data: OrderData) -> None:
        cli_app.LEDGER.append("reserve")

    @saga_step
    async def release(self, data: OrderData) -> None:
        cli_app.LEDGER.append("release")

    @saga_step
    async def ship(self, data: OrderData) -> None:
        if SETTINGS["crash"]:
            raise cli_app.Crash

    def flow(self) -> SagaFlow[OrderData]:
        return SagaFlow(items=(self.reserve >> self.release, self.ship))
