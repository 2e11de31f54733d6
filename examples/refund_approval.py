"""Demo: a refund above the limit waits for a manager's approval, and a transfer the bank keeps
refusing asks an operator instead of unwinding the refund.

Run with `make demo`, or `.venv/bin/python examples/refund_approval.py` (a temporary SQLite
file), or `.venv/bin/python examples/refund_approval.py postgresql://... [SCHEMA]`.

1. Two large refunds start on a durable engine. Each holds the amount, then waits for a
   manager's approval (`wait_for(RefundApproved, ...)`): suspended in the store (WAITING),
   `run()` returns.
2. The manager approves refund 1 (`engine.signal`). A recovery pass (what `engine.serve()`
   runs continuously) resumes it: the transfer fails (the bank is down), and its `Escalate()`
   strategy suspends the saga at the failed step, waiting for an operator's decision.
3. The operator answers "retry" (`engine.resolve`, or `spakky-saga resolve SAGA_ID retry`);
   the next pass transfers the money and notifies the customer. The decision and who made
   it are in the saga's log.
4. Nobody approves refund 2: once its approval window closes (3 business days in
   production, 3 seconds here), the next pass compensates it (the held amount is released).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from spakky_saga import (
    AbstractSagaData,
    Escalate,
    PostgresSagaStore,
    SagaEngine,
    SagaEventKind,
    SagaStore,
    SqliteSagaStore,
    saga_flow,
    step,
    wait_for,
)

APPROVAL_WINDOW = timedelta(seconds=3)
"""How long a refund waits for its approval (3 business days in production)."""


class RefundData(AbstractSagaData):
    refund_id: int
    amount: int
    approved_by: str = ""


@dataclass(frozen=True)
class RefundApproved:
    """A manager's approval: a signal, validated by pydantic like saga data."""

    manager: str


def record_approval(data: RefundData, signal: RefundApproved) -> RefundData:
    return dataclasses.replace(data, approved_by=signal.manager)


class Bank:
    """A bank whose first transfer fails: it is down until an operator looks at it."""

    def __init__(self) -> None:
        self.transfers: int = 0

    async def transfer(self, data: RefundData) -> None:
        self.transfers += 1
        if self.transfers == 1:
            raise ConnectionError("the bank's API is down (503)")
        print(
            f"  refund {data.refund_id}: {data.amount} transferred (approved by {data.approved_by})"
        )


BANK = Bank()


async def hold_amount(data: RefundData) -> None:
    print(f"  refund {data.refund_id}: {data.amount} held")


async def release_amount(data: RefundData) -> None:
    print(f"  refund {data.refund_id}: hold released (not approved)")


async def notify_customer(data: RefundData) -> None:
    print(f"  refund {data.refund_id}: customer notified")


REFUND_FLOW = saga_flow(
    step(hold_amount, compensate=release_amount),
    wait_for(RefundApproved, merge=record_approval, timeout=APPROVAL_WINDOW, name="approval"),
    step(BANK.transfer, name="transfer") | Escalate(),
    notify_customer,
)


def store_at(location: list[str]) -> SagaStore:
    if location[0].startswith("postgresql://"):
        return PostgresSagaStore(location[0], schema=location[1] if len(location) > 1 else "public")
    return SqliteSagaStore(location[0])


def engine_at(location: list[str]) -> SagaEngine:
    engine = SagaEngine(store=store_at(location), log=False)
    engine.register("refund", REFUND_FLOW)
    return engine


async def recovery_pass(engine: SagaEngine, when: str) -> None:
    report = await engine.recover()
    for saga in report.sagas:
        status = "" if saga.result is None else f" ({saga.result.status.value})"
        print(f"  {when}: refund saga {saga.saga_id}: {saga.outcome}{status}")


def described(entry: str) -> str:
    """A SIGNAL_RECEIVED log entry's data: the signal a wait took, or an operator's decision."""
    taken: dict[str, str] = json.loads(entry)
    if "resolution" in taken:
        return f"decision {taken['resolution']} by {taken['by']}"
    return f"signal {taken['signal_id']}"


async def demo(location: list[str]) -> None:
    engine = engine_at(location)
    print("=== two refunds above the limit start, and wait for a manager")
    refunds = [RefundData(refund_id=i, amount=amount) for i, amount in ((1, 900), (2, 750))]
    for data in refunds:
        result = await engine.run(REFUND_FLOW, data, saga_name="refund")
        print(f"  refund {data.refund_id}: run() returned {result.status.value}")
    waiting_since = time.monotonic()  # refund 2's approval window opened before this
    first, second = (str(data.saga_id) for data in refunds)

    print("=== the manager approves refund 1; a recovery pass resumes it")
    _ = await engine.signal(first, RefundApproved("maria@finance"), signal_id="approval-1")
    await recovery_pass(engine, "pass")
    store = engine.store
    assert store is not None
    record = await store.load(first)
    assert record is not None
    for entry in record.events:
        if entry.kind == SagaEventKind.STEP_ESCALATED.value:
            print(
                f"  refund 1: {entry.step} escalated to an operator "
                f"({entry.error_type}: {entry.error})"
            )

    print("=== the operator looked at the bank, and answers: retry the transfer")
    _ = await engine.resolve(first, "retry", by="omar@ops")
    await recovery_pass(engine, "pass")

    # until refund 2's approval window closed (on a slow machine, a pass above may have
    # compensated it already)
    await asyncio.sleep(
        max(0.0, waiting_since + APPROVAL_WINDOW.total_seconds() + 0.2 - time.monotonic())
    )
    print("=== later: refund 2 was never approved")
    await recovery_pass(engine, "pass")

    for saga_id in (first, second):
        record = await store.load(saga_id)
        assert record is not None
        print(f"refund saga {saga_id}: {record.status.value}")
    log = await store.load(first)
    assert log is not None
    shown = [
        described(entry.data)
        for entry in log.events
        if entry.kind == SagaEventKind.SIGNAL_RECEIVED.value and entry.data is not None
    ]
    print(f"refund 1's log records the approval and the decision: {'; '.join(shown)}")
    await engine.aclose()


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(demo(argv or [str(Path(folder) / "sagas.db")]))


if __name__ == "__main__":
    # Run as the module `refund_approval` (its folder is on sys.path), not as `__main__`: the
    # store names data and signal classes by module.
    importlib.import_module("refund_approval").main(sys.argv[1:])
