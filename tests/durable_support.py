"""Durable-engine test doubles: a crash inside a step, a store clock to expire leases, and
steps whose side effects go to a ledger (what a participant would have done).

`Crash` is a BaseException: it leaves `run()` at once, writing nothing more, exactly as a
killed process would (tests/crash kills real processes too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from spakky_saga import (
    AbstractSagaData,
    InMemorySagaStore,
    SagaEngine,
    SagaFlow,
    Transaction,
    current_step,
    step,
)


class Crash(BaseException):
    """The process dies here."""


class Ticket(AbstractSagaData):
    order_id: int
    stock: int = 0
    charged: int = 0
    shipped: bool = False


class StoreClock:
    """Wall clock of an InMemorySagaStore: `expire()` makes every lease run out."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def expire(self) -> None:
        self.now += 3600.0


class Ledger:
    """What the participants did: actions and compensations, with idempotency keys."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self.crash_at: str | None = None

    def names(self) -> list[str]:
        return [name for name, _ in self.entries]

    def action(
        self, name: str, change: Callable[[Ticket], Ticket] | None = None
    ) -> Callable[[Ticket], Awaitable[Ticket | None]]:
        async def act(data: Ticket) -> Ticket | None:
            if self.crash_at == name:
                self.crash_at = None
                raise Crash(name)
            self.entries.append((name, current_step().idempotency_key))
            return change(data) if change is not None else None

        act.__name__ = name
        return act

    def undo(self, name: str) -> Callable[[Ticket], Awaitable[None]]:
        async def compensate(data: Ticket) -> None:
            if self.crash_at == f"undo {name}":
                self.crash_at = None
                raise Crash(f"undo {name}")
            self.entries.append((f"undo {name}", current_step().idempotency_key))

        compensate.__name__ = f"undo_{name}"
        return compensate

    def transaction(
        self, name: str, change: Callable[[Ticket], Ticket] | None = None
    ) -> Transaction[Ticket]:
        return step(self.action(name, change), compensate=self.undo(name))


def bump(field: str, by: int = 1) -> Callable[[Ticket], Ticket]:
    return lambda data: dataclasses.replace(data, **{field: getattr(data, field) + by})


def engines(
    store: InMemorySagaStore, flow: SagaFlow[Ticket], name: str = "order", **options: Any
) -> tuple[SagaEngine, SagaEngine]:
    """The engine that crashes, and the one that recovers (both with `flow` registered)."""
    first = SagaEngine(store=store, **options)
    second = SagaEngine(store=store, **options)
    for engine in (first, second):
        engine.register(name, flow)
    return first, second
