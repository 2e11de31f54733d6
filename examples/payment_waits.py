"""Demo: an order saga waits for the payment provider's confirmation, costing no process
anything while it waits, and is finished by another process when the confirmation arrives.

Run with `make demo`, or `.venv/bin/python examples/payment_waits.py` (a temporary SQLite
file), or `.venv/bin/python examples/payment_waits.py postgresql://... [SCHEMA]`.

1. Process 1 starts two orders on a durable engine: each reserves stock, then reaches
   `wait_for(PaymentConfirmed, ...)` with no confirmation yet. The engine suspends it in the
   store (WAITING, owned by nobody) and `run()` returns; the process exits. Nothing of the
   sagas is in any process now.
2. Process 2, the payment provider's webhook, sends order 1 its confirmation
   (`engine.signal`): stored before `signal()` returns; it wakes the saga.
3. This process runs a recovery pass (what `engine.serve()` does continuously): order 1
   takes the confirmation, captures the payment and ships. Order 2's confirmation never
   comes: once its timeout passes (48 hours in production, 2 seconds here), the next pass
   compensates it (the stock is released).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from spakky_saga import (
    AbstractSagaData,
    PostgresSagaStore,
    SagaEngine,
    SagaStore,
    SqliteSagaStore,
    StoredStatus,
    saga_flow,
    step,
    wait_for,
)

CONFIRMATION_TIMEOUT = timedelta(seconds=2)
"""How long an order waits for its payment (48 hours in production)."""


class OrderData(AbstractSagaData):
    order_id: int
    amount: int
    payment: str = ""


@dataclass(frozen=True)
class PaymentConfirmed:
    """What the payment provider's webhook sends: a signal, validated by pydantic."""

    reference: str


def apply_confirmation(data: OrderData, signal: PaymentConfirmed) -> OrderData:
    return dataclasses.replace(data, payment=signal.reference)


async def reserve_stock(data: OrderData) -> None:
    print(f"  order {data.order_id}: stock reserved")


async def release_stock(data: OrderData) -> None:
    print(f"  order {data.order_id}: stock released (no payment)")


async def capture_payment(data: OrderData) -> None:
    print(f"  order {data.order_id}: payment {data.payment} captured")


async def ship(data: OrderData) -> None:
    print(f"  order {data.order_id}: shipped")


ORDER_FLOW = saga_flow(
    step(reserve_stock, compensate=release_stock),
    wait_for(PaymentConfirmed, merge=apply_confirmation, timeout=CONFIRMATION_TIMEOUT),
    capture_payment,
    ship,
)


def store_at(location: list[str]) -> SagaStore:
    if location[0].startswith("postgresql://"):
        return PostgresSagaStore(location[0], schema=location[1] if len(location) > 1 else "public")
    return SqliteSagaStore(location[0])


def engine_at(location: list[str]) -> SagaEngine:
    engine = SagaEngine(store=store_at(location), log=False)
    engine.register("order", ORDER_FLOW)
    return engine


def engine() -> SagaEngine:
    """The demo's engine, for `spakky-saga ... --app payment_waits:engine` (the store is in
    $PAYMENT_WAITS_STORE: a SQLite path, or a PostgreSQL URL and a schema)."""
    return engine_at(os.environ["PAYMENT_WAITS_STORE"].split())


async def start_orders(location: list[str]) -> None:
    """Process 1: start two orders; each is suspended in its wait, and the process exits."""
    orders = engine_at(location)
    for order_id in (1, 2):
        data = OrderData(order_id=order_id, amount=40 * order_id)
        result = await orders.run(ORDER_FLOW, data, saga_name="order")
        print(f"  order {order_id}: run() returned {result.status.value}  saga_id={data.saga_id}")
    await orders.aclose()


async def confirm(location: list[str], saga_id: str) -> None:
    """Process 2, the provider's webhook: send the confirmation to the saga."""
    webhook = engine_at(location)
    receipt = await webhook.signal(saga_id, PaymentConfirmed("pay-7781"), signal_id="pay-7781")
    print(f"  signal {receipt.signal_id} stored for {saga_id}")
    await webhook.aclose()


def child(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.stdout.splitlines()


async def finish(location: list[str]) -> None:
    """This process: recovery passes, as `engine.serve()` runs them."""
    worker = engine_at(location)
    store = worker.store
    assert store is not None
    await store.open()
    waiting = await store.list([StoredStatus.WAITING])
    print(f"  the store holds {len(waiting)} WAITING saga(s) and no process holds them")
    report = await worker.recover()
    for saga in report.sagas:
        print(f"  recovery pass: {saga.saga_id}: {saga.outcome}")
    await asyncio.sleep(CONFIRMATION_TIMEOUT.total_seconds() + 0.5)
    print("=== later: order 2's confirmation timed out")
    report = await worker.recover()
    for saga in report.sagas:
        assert saga.result is not None
        print(f"  recovery pass: {saga.saga_id}: {saga.outcome} ({saga.result.status.value})")
    statuses = sorted(record.status.value for record in await store.list())
    print(f"in the end: {', '.join(statuses)}")
    await worker.aclose()


def main(argv: list[str]) -> None:
    if argv[:1] == ["--start"]:
        asyncio.run(start_orders(argv[1:]))
        return
    if argv[:1] == ["--confirm"]:
        asyncio.run(confirm(argv[2:], argv[1]))
        return
    with tempfile.TemporaryDirectory() as folder:
        location = argv or [str(Path(folder) / "sagas.db")]
        print("=== process 1: starts two orders, which wait for their payment")
        lines = child("--start", *location)
        first = next(line for line in lines if "order 1: run()" in line).split("saga_id=")[1]
        print("=== process 2: the payment provider confirms order 1")
        child("--confirm", first, *location)
        print("=== process 3: an engine on the store finishes what woke")
        asyncio.run(finish(location))


if __name__ == "__main__":
    # Run as the module `payment_waits` (its folder is on sys.path), not as `__main__`: the
    # store names data and signal classes by module, and other processes (the CLI's --app
    # payment_waits:engine) must be able to import them.
    importlib.import_module("payment_waits").main(sys.argv[1:])
