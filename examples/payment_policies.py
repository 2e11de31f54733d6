"""Demo: a strategy of your own, and a compensation with a policy of its own, on a durable
engine (SQLite by default, or PostgreSQL).

    .venv/bin/python examples/payment_policies.py                       # a temporary SQLite file
    .venv/bin/python examples/payment_policies.py postgresql://root@127.0.0.1:5432/test [schema]

The payment step retries only while the payment API's circuit breaker is closed (a user-defined
`ErrorStrategy`); the refund, its compensation, is retried by its own `Retry(4)` with a timeout
on each attempt, because the payment API is flaky exactly when you need it. The first order
completes; the second fails at shipping, and its refund goes through on the third attempt,
each attempt written to the saga log before it runs and keyed for the payment API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from spakky_saga import (
    AbstractSagaData,
    Decision,
    ErrorStrategy,
    ExponentialBackoff,
    FailedAttempt,
    PostgresSagaStore,
    Retry,
    SagaEngine,
    SagaStore,
    SqliteSagaStore,
    current_step,
    saga_flow,
    step,
)


class Order(AbstractSagaData):
    order_id: int
    amount: int
    charge_id: str | None = None
    shipped: bool = False


@dataclass
class CircuitBreaker:
    """Opens after `threshold` failures in a row; a success closes it again."""

    threshold: int = 3
    failures: int = 0

    @property
    def closed(self) -> bool:
        return self.failures < self.threshold

    def failed(self) -> None:
        self.failures += 1

    def succeeded(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class RetryWhileClosed(ErrorStrategy):
    """Retry after `delay` seconds while the breaker is closed; fail at once when it is open
    (hammering a service that is down helps nobody)."""

    breaker: CircuitBreaker = field(repr=False)
    delay: float = 0.05

    def decide(self, failure: FailedAttempt, /) -> Decision:
        self.breaker.failed()
        return Decision.retry(self.delay) if self.breaker.closed else Decision.FAIL


@dataclass
class PaymentApi:
    """A payment API that refuses the first refund requests of each charge (it is flaky)."""

    breaker: CircuitBreaker
    log: list[str] = field(default_factory=list)
    refund_calls: dict[str, int] = field(default_factory=dict)

    async def charge(self, order: Order) -> Order:
        key = current_step().idempotency_key.split("/", 1)[1]
        if order.order_id == 2 and current_step().attempt == 1:
            self.log.append(f"charge {order.amount} refused: gateway timeout  [{key}]")
            raise ConnectionError("gateway timeout")
        self.breaker.succeeded()
        self.log.append(f"charge {order.amount}  [{key}]")
        return dataclasses.replace(order, charge_id=f"ch_{order.order_id}")

    async def refund(self, order: Order) -> None:
        key = current_step().idempotency_key.split("/", 1)[1]
        calls = self.refund_calls[order.charge_id or "-"] = (
            self.refund_calls.get(order.charge_id or "-", 0) + 1
        )
        if calls < 3:
            self.log.append(f"refund {order.charge_id} refused (try {calls})  [{key}]")
            raise ConnectionError("payment API busy")
        self.log.append(f"refund {order.charge_id}  [{key}]")


async def ship(order: Order) -> Order:
    if order.order_id == 2:
        raise RuntimeError("address not deliverable")
    return dataclasses.replace(order, shipped=True)


def store_from(argv: list[str], folder: Path) -> SagaStore:
    if argv and argv[0].startswith("postgresql://"):
        return PostgresSagaStore(argv[0], schema=argv[1] if len(argv) > 1 else "public")
    return SqliteSagaStore(folder / "sagas.db")


async def main(argv: list[str]) -> None:
    breaker = CircuitBreaker()
    api = PaymentApi(breaker)
    flow = saga_flow(
        step(api.charge, name="charge", on_error=RetryWhileClosed(breaker))
        >> (
            step(api.refund, name="refund", timeout=timedelta(seconds=5))
            | Retry(4, ExponentialBackoff(0.01))
        ),
        ship,
    )
    with tempfile.TemporaryDirectory() as folder:
        engine = SagaEngine(store=store_from(argv, Path(folder)), log=False)
        try:
            print(flow)
            for order_id in (1, 2):
                result = await engine.run(
                    flow, Order(order_id=order_id, amount=40 * order_id), saga_name="order"
                )
                print(f"\norder {order_id}: {result.status.value}")
                print(result.format_timeline())
        finally:
            await engine.aclose()
    print("\npayment API, in order:")
    for line in api.log:
        print(f"  {line.split('  [')[0]}  [{line.split('  [')[1].split(':', 1)[1]}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
