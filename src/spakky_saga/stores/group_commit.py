"""`GroupCommit`: the writes of concurrent sagas on one event loop share round trips.

A database round trip and a commit cost the same for one saga's write as for a hundred. So a
store hands each write to a `GroupCommit`, which sends it at once when the store is idle (one
saga at a time waits for nothing) and, while `concurrency` flushes are in flight, queues it:
everything queued goes out in the next flush, as one statement and one commit. Each write
still gets its own outcome (one saga's lost lease refuses its write, not its neighbours').

Two writes of one saga never share a flush (a second one waits for the next): a flush applies
each saga's write as a unit, and a saga's writes must reach the store in order. A journal
never has two in flight anyway (it writes one batch at a time).

A caller that is cancelled while its write is queued or in flight stops waiting, but the
write still goes out with its batch: the journal took those entries off its buffer, and
writing them keeps the saga's log without a gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Final

type FlushOutcomes = Sequence[BaseException | None]
"""A flush's outcome for each of its writes, in order: None (written) or why not."""

DEFAULT_CONCURRENCY: Final = 2
"""Flushes in flight at once: two keep the connection busy (one batch is written while the
next one gathers) without taking the pool from reads and leases."""

DEFAULT_MAX_BATCH: Final = 256
"""Writes per flush at most: bounds a statement's size and the event-loop time a flush
spends on its outcomes."""


class GroupCommit[W]:
    """Sends writes of type `W` through `flush` (which writes a batch and returns an outcome
    per write), batching those that arrive while earlier flushes are in flight. Belongs to one
    event loop (the one that first calls `write`)."""

    __slots__ = ("_concurrency", "_flush", "_flushing", "_key", "_max_batch", "_pending", "_tasks")

    def __init__(
        self,
        flush: Callable[[Sequence[W]], Awaitable[FlushOutcomes]],
        key: Callable[[W], Hashable],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if concurrency < 1 or max_batch < 1:
            raise ValueError(
                f"GroupCommit(concurrency={concurrency}, max_batch={max_batch}): both must be "
                "at least 1"
            )
        self._flush = flush
        self._key = key
        self._concurrency = concurrency
        self._max_batch = max_batch
        self._pending: list[tuple[W, asyncio.Future[None]]] = []
        self._flushing = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self._pending and self._flushing == 0

    async def write(self, item: W) -> None:
        """Write `item` with the next flush; raise what the flush says about it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing < self._concurrency:
            self._flushing += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await future

    async def _drain(self) -> None:
        """Flush batches until nothing is queued."""
        batch: list[tuple[W, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch = self._take()
                try:
                    outcomes = await self._flush([item for item, _ in batch])
                except asyncio.CancelledError:
                    raise
                except BaseException as error:  # the flush as a whole failed: every write did
                    outcomes = [error] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller stopped waiting
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
                batch = []
        except asyncio.CancelledError:
            # The loop is shutting down: nobody will flush what is left; its callers stop
            # waiting (their sagas stay unfinished in the store, for recovery).
            for _, future in (*batch, *self._pending):
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._flushing -= 1

    def _take(self) -> list[tuple[W, asyncio.Future[None]]]:
        """The next batch: queued writes in order, at most `max_batch`, one per key."""
        batch: list[tuple[W, asyncio.Future[None]]] = []
        later: list[tuple[W, asyncio.Future[None]]] = []
        keys: set[Hashable] = set()
        for entry in self._pending:
            key = self._key(entry[0])
            if len(batch) >= self._max_batch or key in keys:
                later.append(entry)
            else:
                keys.add(key)
                batch.append(entry)
        self._pending = later
        return batch
