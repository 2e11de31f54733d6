"""An application for the CLI tests: a checkout saga on the SQLite store the environment
names, engines for `--app`, and ways to leave sagas finished, failed or crashed."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

from spakky_saga import (
    AbstractSagaData,
    SagaCompensationFailedError,
    SagaEngine,
    SagaFlow,
    SqliteSagaStore,
    saga_flow,
    step,
)

STORE_VARIABLE = "SPAKKY_SAGA_TEST_CLI_STORE"
LEDGER: list[str] = []
REFUND_WORKS = {"value": True}
LEASE = timedelta(milliseconds=1)


class Crash(BaseException):
    """The process dies here."""


class CheckoutData(AbstractSagaData):
    order_id: int


def checkout_flow(*, fail: bool = False, crash: bool = False) -> SagaFlow[CheckoutData]:
    async def reserve(data: CheckoutData) -> None:
        LEDGER.append("reserve")

    async def undo_reserve(data: CheckoutData) -> None:
        if not REFUND_WORKS["value"]:
            raise ConnectionError("stock service down")
        LEDGER.append("undo reserve")

    async def pay(data: CheckoutData) -> None:
        if crash:
            raise Crash
        if fail:
            raise ValueError("card declined")
        LEDGER.append("pay")

    return saga_flow(step(reserve, compensate=undo_reserve), pay)


def _engine() -> SagaEngine:
    return SagaEngine(store=SqliteSagaStore(os.environ[STORE_VARIABLE]), lease=LEASE, log=False)


def recovering_engine() -> SagaEngine:
    """What `--app tests.cli_app:recovering_engine` loads: the flow registered."""
    engine = _engine()
    engine.register("checkout", checkout_flow())
    return engine


def engine_without_flows() -> SagaEngine:
    return _engine()


async def run_one(*, fail: bool) -> str:
    engine = _engine()
    result = await engine.run(
        checkout_flow(fail=fail), CheckoutData(order_id=1), saga_name="checkout"
    )
    await engine.aclose()
    return str(result.data.saga_id)


async def crash_one() -> str:
    engine = _engine()
    data = CheckoutData(order_id=2)
    with contextlib.suppress(Crash):
        await engine.run(checkout_flow(crash=True), data, saga_name="checkout")
    await engine.aclose()
    return str(data.saga_id)


async def run_with_broken_refund() -> str:
    REFUND_WORKS["value"] = False
    engine = _engine()
    data = CheckoutData(order_id=3)
    with contextlib.suppress(SagaCompensationFailedError):
        await engine.run(checkout_flow(fail=True), data, saga_name="checkout")
    await engine.aclose()
    return str(data.saga_id)
