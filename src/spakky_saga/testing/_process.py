"""A saga store as one simulated process sees it: its writes counted, and killed at one.

`explore_crashes` gives every engine its own `ProcessStore` over one shared store. The
crashing engine's store dies at its `kill_at`th write (`begin` or `append`): after the write
reached the shared store, or just before (the write lost). From then on it refuses every
call: the write that killed it and every later one raise `ProcessKilled`, a `SagaStoreError`,
so the engine stops where a killed process would have (its journal refuses to write, and it
acts only after a write), and nothing it does afterwards reaches the store. What it did
before stays there, for a new engine to recover.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from spakky_saga.errors import SagaStoreError
from spakky_saga.store import (
    Renewal,
    SagaRecord,
    SagaStore,
    SagaUpdate,
    StoredEvent,
    StoredSignal,
    StoredStatus,
    WaitingStore,
)


class ProcessKilled(SagaStoreError):
    """The simulated process was killed: this engine can no longer reach the store."""

    message = "the process was killed (explore_crashes): nothing it does reaches the store"


class ProcessStore:
    """`store` as one process sees it: counts its writes and describes each; with
    `kill_at`, dies at that write (after it, or before it when `lose_write`), calling
    `on_kill` once."""

    def __init__(
        self,
        store: SagaStore,
        *,
        kill_at: int | None = None,
        lose_write: bool = False,
        on_kill: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._kill_at = kill_at
        self._lose_write = lose_write
        self._on_kill = on_kill
        self.writes: list[str] = []
        """What each write held, in order (see `describe`)."""
        self.killed = False

    def __repr__(self) -> str:
        state = "killed" if self.killed else f"{len(self.writes)} writes"
        return f"ProcessStore({self._store!r}, {state})"

    def _alive(self) -> None:
        if self.killed:
            raise ProcessKilled

    def _kill(self) -> None:
        self.killed = True
        self._on_kill()

    async def _write(self, description: str, write: Callable[[], Awaitable[None]]) -> None:
        self._alive()
        self.writes.append(description)
        dies = len(self.writes) == self._kill_at
        if dies and self._lose_write:
            self._kill()
            raise ProcessKilled
        await write()
        if dies:
            self._kill()
            raise ProcessKilled

    async def open(self) -> None:
        self._alive()
        await self._store.open()

    async def close(self) -> None:
        """Closing a connection: never refused, never passed on (the shared store stays open
        for the other processes)."""

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        await self._write(
            describe("begin", events, record.status),
            lambda: self._store.begin(record, events, lease_seconds),
        )

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        await self._write(
            describe("append", events, update.status),
            lambda: self._store.append(saga_id, owner, events, update, lease_seconds),
        )

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        self._alive()
        return await self._store.claim(owner, lease_seconds, limit, saga_ids)

    async def reopen(self, saga_id: str, owner: str, lease_seconds: float) -> SagaRecord:
        self._alive()
        return await self._store.reopen(saga_id, owner, lease_seconds)

    async def renew(self, owner: str, saga_ids: Sequence[str], lease_seconds: float) -> Renewal:
        self._alive()
        return await self._store.renew(owner, saga_ids, lease_seconds)

    async def request_cancel(self, saga_id: str, by: str) -> SagaRecord | None:
        self._alive()
        return await self._store.request_cancel(saga_id, by)

    async def load(self, saga_id: str) -> SagaRecord | None:
        self._alive()
        return await self._store.load(saga_id)

    async def list(
        self, statuses: Sequence[StoredStatus] = (), limit: int = 100
    ) -> list[SagaRecord]:
        self._alive()
        return await self._store.list(statuses, limit)

    async def purge(self, finished_before: float, *, dry_run: bool = False) -> tuple[str, ...]:
        self._alive()
        return await self._store.purge(finished_before, dry_run=dry_run)


def describe(
    operation: str, events: Sequence[StoredEvent], status: StoredStatus | None = None
) -> str:
    """A write as the report shows it: `append: step_committed reserve#1, step_started
    charge#1 -> COMPENSATING` (`#n` the attempt, shown for steps)."""
    entries = []
    for event in events:
        if event.step is None:
            entries.append(event.kind)
        elif event.kind.startswith("step_"):
            entries.append(f"{event.kind} {event.step}#{event.attempt}")
        else:
            entries.append(f"{event.kind} {event.step}")
    text = f"{operation}: {', '.join(entries) or 'row only'}"
    if status is not None and operation == "append":
        text += f" -> {status.value}"
    return text


@dataclass(slots=True)
class Wakes:
    """When the saga last suspended to wake (epoch seconds on the store's clock; None: only a
    signal wakes it), as any process's store saw it: where the explorer moves time to."""

    at: float | None = None
    suspended: bool = False


class WaitingProcessStore(ProcessStore):
    """A `ProcessStore` over a `WaitingStore`, for a flow with waits: it keeps signals and
    suspends sagas like the store it wraps (a suspension is a write, so a crash point), notes
    each suspension's wake-up time in `wakes`, and awaits `on_look` before the saga looks for
    its signals (the explorer's signals, sent when a wait started, arrive before it looks), or
    `on_suspend` before it suspends (they arrive late: after the wait looked and found none);
    `on_suspend` returns when one arrived (the store's clock), None if none did, and a saga a
    signal arrived for is due at once (the store's `seen` check)."""

    def __init__(
        self,
        store: WaitingStore,
        wakes: Wakes,
        *,
        on_look: Callable[[], Awaitable[object]] | None = None,
        on_suspend: Callable[[], Awaitable[float | None]] | None = None,
        kill_at: int | None = None,
        lose_write: bool = False,
        on_kill: Callable[[], None] = lambda: None,
    ) -> None:
        assert isinstance(store, SagaStore)
        super().__init__(store, kill_at=kill_at, lose_write=lose_write, on_kill=on_kill)
        self._waiting = store
        self._wakes = wakes
        self._on_look = on_look
        self._on_suspend = on_suspend

    async def send_signal(self, signal: StoredSignal) -> bool:
        self._alive()
        return await self._waiting.send_signal(signal)

    async def signals(self, saga_id: str) -> list[StoredSignal]:
        self._alive()
        if self._on_look is not None:
            await self._on_look()
        return await self._waiting.signals(saga_id)

    async def suspend(self, saga_id: str, owner: str, wake_at: float | None, seen: int) -> None:
        self._alive()
        arrived = await self._on_suspend() if self._on_suspend is not None else None

        async def suspend() -> None:
            await self._waiting.suspend(saga_id, owner, wake_at, seen)
            due = arrived is not None and (wake_at is None or arrived < wake_at)
            self._wakes.at = arrived if due else wake_at
            self._wakes.suspended = True

        when = "a signal" if wake_at is None else f"{wake_at:.0f}"
        await self._write(f"suspend: -> WAITING until {when}", suspend)
