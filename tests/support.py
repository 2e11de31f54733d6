"""Test doubles shared by the runtime tests.

`OrderData` is the saga data most tests use. `ManualClock` and `RecordingSleep` replace the
engine's clock and sleep, so elapsed times are exact and backoff never really waits. `Journal`
builds async steps and compensations that record, in order, what ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from spakky_saga import (
    AbstractSagaData,
    ActionFn,
    CompensateFn,
    FlowItem,
    SagaFlow,
    Transaction,
    saga_flow,
    step,
)


class OrderData(AbstractSagaData):
    order_id: int
    customer_id: int = 0
    ticket_id: int | None = None
    paid: bool = False


class ManualClock:
    """A clock that only moves when told to: `advance()` or a recorded sleep."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """An engine `sleep=` that records each delay and moves the clock instead of waiting."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


class Boom(Exception):
    """The error failing test steps raise."""


def _named[F: Callable[..., object]](fn: F, name: str) -> F:
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


class Journal:
    """Builds steps that append their name to `events` when they run.

    A step that `takes` seconds advances the manual clock by that much, so its elapsed time
    in the history (and in log lines) is exact.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.events: list[str] = []
        self.seen: list[OrderData] = []
        self.never = asyncio.Event()
        self._started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def record(self, event: str) -> None:
        self.events.append(event)
        self._started[event].set()

    def ok(
        self,
        name: str,
        update: Callable[[OrderData], OrderData] | None = None,
        *,
        takes: float = 0.0,
    ) -> ActionFn[OrderData]:
        """A step that succeeds, returning `update(data)` or, without `update`, None."""

        async def action(data: OrderData) -> OrderData | None:
            self.record(name)
            self.seen.append(data)
            self.clock.advance(takes)
            return update(data) if update is not None else None

        return _named(action, name)

    def transaction(
        self,
        name: str,
        update: Callable[[OrderData], OrderData] | None = None,
        *,
        takes: float = 0.0,
    ) -> Transaction[OrderData]:
        """`ok(name)` with `undo(name)` as its compensation."""
        return step(self.ok(name, update, takes=takes), compensate=self.undo(name))

    def fail(
        self, name: str, error: Exception | None = None, *, times: int | None = None
    ) -> ActionFn[OrderData]:
        """A step that raises `error` (a `Boom` by default): always, or its first `times` runs."""
        runs = 0

        async def action(data: OrderData) -> OrderData | None:
            nonlocal runs
            runs += 1
            self.record(name)
            self.seen.append(data)
            if times is None or runs <= times:
                raise error if error is not None else Boom(f"{name} failed")
            return None

        return _named(action, name)

    def hang(self, name: str, *, times: int | None = None) -> ActionFn[OrderData]:
        """A step that never finishes (always, or its first `times` runs)."""
        runs = 0

        async def action(data: OrderData) -> OrderData | None:
            nonlocal runs
            runs += 1
            self.record(name)
            if times is None or runs <= times:
                await self.never.wait()
            return None

        return _named(action, name)

    def undo(self, name: str, *, gate: asyncio.Event | None = None) -> CompensateFn[OrderData]:
        """A compensation recording "undo NAME" (after `gate` is set, when given)."""

        async def compensate(data: OrderData) -> None:
            self.seen.append(data)
            if gate is not None:
                self.record(f"undoing {name}")
                await gate.wait()
            self.record(f"undo {name}")

        return _named(compensate, f"undo_{name}")

    def undo_fail(self, name: str, error: Exception | None = None) -> CompensateFn[OrderData]:
        """A compensation that records "undo NAME failed" and raises."""

        async def compensate(data: OrderData) -> None:
            self.record(f"undo {name} failed")
            raise error if error is not None else Boom(f"undo {name} failed")

        return _named(compensate, f"undo_{name}")

    async def reached(self, event: str) -> None:
        """Wait until `event` (a step name, or "undoing NAME") has been recorded."""
        await self._started[event].wait()


def around(journal: Journal, item: FlowItem[OrderData]) -> SagaFlow[OrderData]:
    """`item` after transactions "a" and "b" (with a plain step between them) and before a
    transaction "never": when `item` fails, the rollback is "undo b", "undo a"."""
    return saga_flow(
        journal.transaction("a"),
        journal.ok("plain"),
        journal.transaction("b"),
        item,
        journal.transaction("never"),
    )


def with_ticket(ticket_id: int) -> Callable[[OrderData], OrderData]:
    """An `update` for `Journal.ok` that sets the ticket id."""
    return lambda data: dataclasses.replace(data, ticket_id=ticket_id)


def saga_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The formatted messages the saga loggers emitted, in order."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("spakky_saga")]


def capture_saga_logs(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> None:
    caplog.set_level(level, logger="spakky_saga")


def wrong(value: object) -> Any:
    """A value of the wrong type, let through the type checker to test the run-time check."""
    return value


# Step functions for tests that build flows without running them.


async def reserve(data: OrderData) -> OrderData | None:
    return None


async def release(data: OrderData) -> None:
    return None


async def charge(data: OrderData) -> OrderData | None:
    return None


async def refund(data: OrderData) -> None:
    return None


async def notify(data: OrderData) -> OrderData | None:
    return None


def regular(data: OrderData) -> None:
    """Not async: steps built from it are rejected."""
    return None
