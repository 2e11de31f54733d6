"""`GroupCommit`, the stores' batching: what goes out together, and what each caller hears."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from spakky_saga.stores.group_commit import FlushOutcomes, GroupCommit


class Database:
    """Records each flush's batch; a flush waits for `release` when `hold` is set."""

    def __init__(self) -> None:
        self.flushes: list[list[str]] = []
        self.hold = False
        self.release = asyncio.Event()
        self.refuse: set[str] = set()
        self.fail: BaseException | None = None

    async def flush(self, writes: Sequence[str]) -> FlushOutcomes:
        self.flushes.append(list(writes))
        if self.hold:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(w) if w in self.refuse else None for w in writes]


def _saga_of(write: str) -> str:
    return write.split(":", maxsplit=1)[0]


async def test_a_write_to_an_idle_store_goes_out_at_once_alone() -> None:
    db = Database()
    group = GroupCommit(db.flush, _saga_of)

    await group.write("a:1")

    assert db.flushes == [["a:1"]]
    assert group.idle


async def test_writes_made_during_a_flush_go_out_together_in_the_next() -> None:
    db = Database()
    db.hold = True
    group = GroupCommit(db.flush, _saga_of, concurrency=1)
    first = asyncio.ensure_future(group.write("a:1"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(group.write(f"{saga}:1")) for saga in "bcd"]
    await asyncio.sleep(0)
    db.release.set()

    await asyncio.gather(first, *others)

    assert db.flushes == [["a:1"], ["b:1", "c:1", "d:1"]]


async def test_two_writes_of_one_saga_never_share_a_flush() -> None:
    db = Database()
    group = GroupCommit(db.flush, _saga_of, concurrency=1)

    await asyncio.gather(group.write("a:1"), group.write("b:1"), group.write("a:2"))

    assert db.flushes == [["a:1", "b:1"], ["a:2"]]


async def test_a_batch_holds_at_most_max_batch_writes() -> None:
    db = Database()
    group = GroupCommit(db.flush, _saga_of, concurrency=1, max_batch=2)

    await asyncio.gather(*(group.write(f"{saga}:1") for saga in "abcde"))

    assert db.flushes == [["a:1", "b:1"], ["c:1", "d:1"], ["e:1"]]


async def test_each_caller_hears_its_own_write_s_outcome() -> None:
    db = Database()
    db.refuse = {"b:1"}
    group = GroupCommit(db.flush, _saga_of)

    outcomes = await asyncio.gather(
        *(group.write(f"{saga}:1") for saga in "abc"), return_exceptions=True
    )

    assert [type(o).__name__ for o in outcomes] == ["NoneType", "ValueError", "NoneType"]


async def test_a_flush_that_fails_as_a_whole_fails_every_write_of_its_batch() -> None:
    db = Database()
    db.fail = ConnectionError("server gone")
    group = GroupCommit(db.flush, _saga_of)

    outcomes = await asyncio.gather(
        *(group.write(f"{saga}:1") for saga in "ab"), return_exceptions=True
    )

    assert [str(o) for o in outcomes] == ["server gone", "server gone"]
    assert group.idle


async def test_a_cancelled_caller_s_write_still_goes_out_with_its_batch() -> None:
    db = Database()
    db.hold = True
    group = GroupCommit(db.flush, _saga_of)
    caller = asyncio.ensure_future(group.write("a:1"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    db.release.set()
    await group.write("b:1")

    assert db.flushes[0] == ["a:1"]  # written: the journal had let go of those entries
    assert group.idle


async def test_a_flush_cancelled_by_a_stopping_loop_stops_its_callers_waiting() -> None:
    db = Database()
    db.hold = True
    group = GroupCommit(db.flush, _saga_of, concurrency=1)
    callers = [asyncio.ensure_future(group.write(f"{saga}:1")) for saga in "ab"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(group.write("c:1"))
    await asyncio.sleep(0)

    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__ == "GroupCommit._drain":  # type: ignore[union-attr] # a coroutine
            task.cancel()
    outcomes = await asyncio.gather(*callers, queued, return_exceptions=True)

    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert group.idle


def test_a_group_commit_needs_one_flush_and_one_write_at_least() -> None:
    db = Database()
    with pytest.raises(ValueError, match="must be at least 1"):
        GroupCommit(db.flush, _saga_of, concurrency=0)
    with pytest.raises(ValueError, match="must be at least 1"):
        GroupCommit(db.flush, _saga_of, max_batch=0)
