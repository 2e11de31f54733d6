"""An application for the CLI tests: a checkout saga on the store the environment names
(a SQLite file, or a PostgreSQL DSN with its schema), engines for `--app`, and ways to leave
sagas finished, failed or crashed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import (
    AbstractSagaData,
    ExponentialBackoff,
    Retry,
    SagaCompensationFailedError,
    SagaEngine,
    SagaFlow,
    SagaStore,
    SqliteSagaStore,
    pivot,
    saga_flow,
    step,
)
from spakky_saga.store import SagaRecord
from tests.postgres_support import postgres_schema

STORE_VARIABLE = "SPAKKY_SAGA_TEST_CLI_STORE"
SCHEMA_VARIABLE = "SPAKKY_SAGA_TEST_CLI_SCHEMA"
LEDGER: list[str] = []
BROKEN_REFUND_VARIABLE = "SPAKKY_SAGA_TEST_CLI_BROKEN_REFUND"
REFUND_WORKS = {"value": os.environ.get(BROKEN_REFUND_VARIABLE) != "1"}
"""The stock service that undoes a reservation: down in a command run with the variable set."""
ROOT = Path(__file__).resolve().parents[1]
LEASE = timedelta(milliseconds=1)


class Crash(BaseException):
    """The process dies here."""


class CheckoutData(AbstractSagaData):
    order_id: int


def checkout_flow(
    *, fail: bool = False, crash: bool = False, changed: bool = False
) -> SagaFlow[CheckoutData]:
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

    async def notify(data: CheckoutData) -> None:
        LEDGER.append("notify")

    if changed:  # a later release of the application: a step added
        return saga_flow(step(reserve, compensate=undo_reserve), notify, pay)
    return saga_flow(step(reserve, compensate=undo_reserve), pay)


def delivery_flow(*, crash: bool = False) -> SagaFlow[CheckoutData]:
    """A flow with a pivot: `pay` is the point of no return; `ship` (retried) always fails,
    or "dies" with `crash`."""

    async def reserve(data: CheckoutData) -> None:
        LEDGER.append("reserve")

    async def undo_reserve(data: CheckoutData) -> None:
        LEDGER.append("undo reserve")

    async def pay(data: CheckoutData) -> None:
        LEDGER.append("pay")

    async def ship(data: CheckoutData) -> None:
        if crash:
            raise Crash
        raise ConnectionError("the carrier's API is down")

    return saga_flow(
        step(reserve, compensate=undo_reserve),
        pivot(pay),
        step(ship, on_error=Retry(2, ExponentialBackoff(base=0.0))),
    )


def delivery_engine() -> SagaEngine:
    """What `--app tests.cli_app:delivery_engine` loads: the pivot flow registered."""
    engine = _engine()
    engine.register("delivery", delivery_flow())
    return engine


async def run_stuck(*, crash: bool = False) -> str:
    """A delivery saga stuck past its pivot (or, with `crash`, one whose process "died" in
    the step after it)."""
    engine = _engine()
    data = CheckoutData(order_id=4)
    with contextlib.suppress(Crash):
        await engine.run(delivery_flow(crash=crash), data, saga_name="delivery")
    await engine.aclose()
    return str(data.saga_id)


def store() -> SagaStore:
    """The store the environment names: a SQLite path, or a PostgreSQL DSN (and schema)."""
    where = os.environ[STORE_VARIABLE]
    if where.startswith("postgresql://"):
        from spakky_saga import PostgresSagaStore  # noqa: PLC0415 - the optional driver

        return PostgresSagaStore(where, schema=os.environ.get(SCHEMA_VARIABLE, "public"))
    return SqliteSagaStore(where)


def _engine(lease: timedelta = LEASE) -> SagaEngine:
    return SagaEngine(store=store(), lease=lease, log=False)


async def create_store() -> None:
    """An empty saga store where the environment says (read-only commands create none)."""
    created = store()
    await created.open()
    await created.close()


def recovering_engine() -> SagaEngine:
    """What `--app tests.cli_app:recovering_engine` loads: the flow registered."""
    engine = _engine()
    engine.register("checkout", checkout_flow())
    return engine


def engine_without_flows() -> SagaEngine:
    return _engine()


def changed_engine() -> SagaEngine:
    """The next release: "checkout" registered with a flow that has one more step."""
    engine = _engine()
    engine.register("checkout", checkout_flow(changed=True))
    return engine


async def run_one(*, fail: bool, saga_name: str = "checkout") -> str:
    engine = _engine()
    result = await engine.run(
        checkout_flow(fail=fail), CheckoutData(order_id=1), saga_name=saga_name
    )
    await engine.aclose()
    return str(result.data.saga_id)


async def crash_one(lease: timedelta = LEASE) -> str:
    """A saga whose process "died" in its second step, its lease left to expire after
    `lease`."""
    return (await crash_owned(lease))[0]


async def crash_owned(lease: timedelta) -> tuple[str, str]:
    """`crash_one`, with the owner of the lease it leaves (to renew it, as a live engine
    would)."""
    engine = _engine(lease)
    data = CheckoutData(order_id=2)
    with contextlib.suppress(Crash):
        await engine.run(checkout_flow(crash=True), data, saga_name="checkout")
    await engine.aclose()
    return str(data.saga_id), engine.owner


async def run_with_broken_refund() -> str:
    REFUND_WORKS["value"] = False
    engine = _engine()
    data = CheckoutData(order_id=3)
    with contextlib.suppress(SagaCompensationFailedError):
        await engine.run(checkout_flow(fail=True), data, saga_name="checkout")
    await engine.aclose()
    return str(data.saga_id)


def spakky_saga(*args: str, broken_refund: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m spakky_saga ARGS` from the project's root, as an operator runs it, with this
    process's environment (where the store is)."""
    env = dict(os.environ)
    if broken_refund:
        env[BROKEN_REFUND_VARIABLE] = "1"
    return subprocess.run(
        [sys.executable, "-m", "spakky_saga", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


def store_options() -> list[str]:
    """`--store` (and `--schema`) naming the store the environment names."""
    where = os.environ[STORE_VARIABLE]
    schema = os.environ.get(SCHEMA_VARIABLE)
    return ["--store", where, *(["--schema", schema] if schema else [])]


@contextlib.asynccontextmanager
async def environment_store(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """Point this process and the commands it runs at a fresh store: a SQLite file in
    `tmp_path`, or a schema of its own on the machine's PostgreSQL (`kind` "postgresql")."""
    LEDGER.clear()
    REFUND_WORKS["value"] = True
    if kind == "sqlite":
        monkeypatch.setenv(STORE_VARIABLE, str(tmp_path / "sagas.db"))
        monkeypatch.delenv(SCHEMA_VARIABLE, raising=False)
        yield
        return
    async with postgres_schema() as (dsn, schema):
        monkeypatch.setenv(STORE_VARIABLE, dsn)
        monkeypatch.setenv(SCHEMA_VARIABLE, schema)
        yield


async def load_saga(saga_id: str) -> SagaRecord:
    """The saga as the test's store has it now (it must be there)."""
    store_ = store()
    await store_.open()
    try:
        record = await store_.load(saga_id)
    finally:
        await store_.close()
    assert record is not None, f"saga {saga_id} is not in the store"
    return record
