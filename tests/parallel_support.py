"""Test doubles for parallel groups: fan-out data and steps that record what they did.

`Fanout` is the data every parallel test uses: one field per branch of a typical fan-out
(stock, payment, shipping) and a `total` several branches may want to write. `Trace` builds
async steps and compensations that append to one ordered `events` list, remember the data
they were given, and can wait on `asyncio.Event`s, so tests order concurrent members without
sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from spakky_saga import AbstractSagaData, CompensateFn, SagaStep


class Fanout(AbstractSagaData):
    order_id: int = 1
    stock: str | None = None
    payment: str | None = None
    shipping: str | None = None
    total: int = 0


class Boom(Exception):
    """The error failing test steps raise."""


GUARD_SECONDS = 1.0
"""How long a test (or a step waiting on an event) waits for something that must happen, and
does in microseconds; only a broken engine, which would otherwise hang the test, ever waits
this long. Steps guard their own waits too: the rollback is shielded from cancellation, so
the outer guard alone could not stop compensations waiting on each other forever."""


async def within_guard[T](awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, failing the test instead of hanging when the engine deadlocks."""
    async with asyncio.timeout(GUARD_SECONDS):
        return await awaitable


def _named[F: Callable[..., object]](fn: F, name: str) -> F:
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


class Trace:
    """Builds recording steps (they compose with `&`, `>>`, `|`); `events` is the order
    in which things happened."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.seen: dict[str, list[Fanout]] = {}
        self.undone: dict[str, list[Fanout]] = {}

    def sets(
        self,
        name: str,
        *,
        after: asyncio.Event | None = None,
        done: asyncio.Event | None = None,
        **changes: Any,
    ) -> SagaStep[Fanout]:
        """A step that returns the data with `changes` applied (None when there are none).

        With `after`, it records "NAME waiting" and waits for that event first; with `done`,
        it sets that event when it finishes.
        """

        async def action(data: Fanout) -> Fanout | None:
            self.seen.setdefault(name, []).append(data)
            if after is not None:
                self.events.append(f"{name} waiting")
                await within_guard(after.wait())
            self.events.append(name)
            if done is not None:
                done.set()
            return dataclasses.replace(data, **changes) if changes else None

        return SagaStep(action=action, name=name)

    def fails(
        self,
        name: str,
        *,
        times: int | None = None,
        after: asyncio.Event | None = None,
        done: asyncio.Event | None = None,
        **changes: Any,
    ) -> SagaStep[Fanout]:
        """A step that raises Boom: always, or on its first `times` runs (then it succeeds,
        applying `changes`). Records "NAME#ATTEMPT failed" or "NAME#ATTEMPT"."""
        runs = 0

        async def action(data: Fanout) -> Fanout | None:
            nonlocal runs
            runs += 1
            self.seen.setdefault(name, []).append(data)
            if after is not None:
                await within_guard(after.wait())
            if done is not None:
                done.set()
            if times is None or runs <= times:
                self.events.append(f"{name}#{runs} failed")
                raise Boom(f"{name} failed (attempt {runs})")
            self.events.append(f"{name}#{runs}")
            return dataclasses.replace(data, **changes) if changes else None

        return SagaStep(action=action, name=name)

    def undo(
        self,
        name: str,
        *,
        started: asyncio.Event | None = None,
        wait_for: asyncio.Event | None = None,
        fails: bool = False,
    ) -> CompensateFn[Fanout]:
        """A compensation recording "undo NAME"; it can signal that it started, wait for
        another event before finishing, and raise Boom after recording."""

        async def compensate(data: Fanout) -> None:
            self.undone.setdefault(name, []).append(data)
            if started is not None:
                started.set()
            if wait_for is not None:
                self.events.append(f"undoing {name}")
                await within_guard(wait_for.wait())
            self.events.append(f"undo {name}")
            if fails:
                raise Boom(f"undo {name} failed")

        return _named(compensate, f"undo_{name}")

    def undo_counts(self) -> dict[str, int]:
        """How many times each compensation ran."""
        return {name: len(calls) for name, calls in self.undone.items()}
