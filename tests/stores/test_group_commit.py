"""Concurrent sagas' writes share a store's batches (group commit), each keeping its own
outcome: a refused write (a lost lease, a saga id taken, a value the database refuses) fails
alone, and its neighbours in the batch are written."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from spakky_saga import (
    InMemorySagaStore,
    PostgresSagaStore,
    SagaAlreadyStartedError,
    SagaLeaseLostError,
    SagaStore,
    SagaStoreError,
    SqliteSagaStore,
)
from spakky_saga.store import SagaUpdate, StoredStatus
from tests.postgres_support import postgres_schema
from tests.stores.test_store_contract import a_record, an_event

SAGAS = 40


@pytest.fixture(params=["memory", "sqlite-full", "sqlite-normal", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SagaStore]:
    """Stores whose concurrent writes share batches (SQLite's worker, PostgreSQL's group
    commit), and the in-memory one, which keeps the same contract without batches."""
    kind = request.param
    if kind == "memory":
        yield InMemorySagaStore()
        return
    if kind.startswith("sqlite"):
        sqlite = SqliteSagaStore(
            tmp_path / "sagas.db", synchronous="FULL" if kind == "sqlite-full" else "NORMAL"
        )
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    async with postgres_schema() as (dsn, schema):
        postgres = PostgresSagaStore(dsn, schema=schema, max_size=4)
        await postgres.open()
        yield postgres
        await postgres.close()


async def _begin_all(store: SagaStore) -> list[str]:
    ids = [f"s{index:02}" for index in range(SAGAS)]
    await asyncio.gather(
        *(store.begin(a_record(i), [an_event(1, "saga_started")], 30) for i in ids)
    )
    return ids


async def test_concurrent_writes_with_lost_leases_refuse_only_those_sagas(
    store: SagaStore,
) -> None:
    ids = await _begin_all(store)
    lost = set(ids[::7])
    outcomes = await asyncio.gather(
        *(
            store.append(
                i,
                "engine-b" if i in lost else "engine-a",
                [an_event(2, "step_started"), an_event(3, data='{"order_id": 3}')],
                SagaUpdate(data='{"order_id": 3}', data_type="tests.support:OrderData"),
                30,
            )
            for i in ids
        ),
        return_exceptions=True,
    )

    refused = {i for i, outcome in zip(ids, outcomes, strict=True) if outcome is not None}
    assert refused == lost
    assert all(isinstance(o, SagaLeaseLostError) for o in outcomes if o is not None)
    for saga_id in ids:
        record = await store.load(saga_id)
        assert record is not None
        assert [e.seq for e in record.events] == ([1] if saga_id in lost else [1, 2, 3])
        assert (record.data.replace(" ", "") == '{"order_id":3}') is (saga_id not in lost)


async def test_a_saga_id_taken_among_concurrent_begins_is_refused_alone(store: SagaStore) -> None:
    await store.begin(a_record("s07", owner="engine-z"), [an_event(1, "saga_started")], 30)

    outcomes = await asyncio.gather(
        *(
            store.begin(a_record(f"s{index:02}"), [an_event(1, "saga_started")], 30)
            for index in range(SAGAS)
        ),
        return_exceptions=True,
    )

    assert [type(o).__name__ for o in outcomes if o is not None] == ["SagaAlreadyStartedError"]
    assert isinstance(outcomes[7], SagaAlreadyStartedError)
    taken = await store.load("s07")
    assert taken is not None
    assert taken.owner == "engine-z"  # untouched
    assert [record.saga_id for record in await store.list(limit=100)].count("s07") == 1
    assert len(await store.list(limit=100)) == SAGAS


async def test_finishing_writes_in_one_batch_each_release_their_own_saga(
    store: SagaStore,
) -> None:
    ids = await _begin_all(store)
    await asyncio.gather(
        *(
            store.append(
                i,
                "engine-a",
                [an_event(2, "saga_finished")],
                SagaUpdate(status=StoredStatus.COMPLETED, release=True),
                30,
            )
            for i in ids[::2]
        )
    )

    records = {i: await store.load(i) for i in ids}
    for index, saga_id in enumerate(ids):
        record = records[saga_id]
        assert record is not None
        finished = index % 2 == 0
        assert record.status is (StoredStatus.COMPLETED if finished else StoredStatus.RUNNING)
        assert (record.owner is None) is finished
        assert (record.lease_expires is None) is finished


async def test_a_value_postgresql_cannot_store_fails_only_its_own_write(tmp_path: Path) -> None:
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(dsn, schema=schema, max_size=4)
        await store.open()
        try:
            ids = await _begin_all(store)
            poisoned = ids[5]
            outcomes = await asyncio.gather(
                *(
                    store.append(
                        i,
                        "engine-a",
                        [an_event(2, "step_failed")],
                        SagaUpdate(error="refused\x00" if i == poisoned else "refused"),
                        30,
                    )
                    for i in ids
                ),
                return_exceptions=True,
            )
            records = {i: await store.load(i) for i in ids}
        finally:
            await store.close()

    failed = [i for i, o in zip(ids, outcomes, strict=True) if o is not None]
    assert failed == [poisoned]
    assert isinstance(outcomes[5], SagaStoreError)
    for saga_id, record in records.items():
        assert record is not None
        assert len(record.events) == (1 if saga_id == poisoned else 2)


def test_postgres_store_refuses_a_number_of_concurrent_flushes_its_pool_cannot_hold() -> None:
    with pytest.raises(ValueError, match=r"flushes=0\): use 1 to max_size \(4\)"):
        PostgresSagaStore("postgresql://localhost/x", max_size=4, flushes=0)
    with pytest.raises(ValueError, match=r"flushes=5\)"):
        PostgresSagaStore("postgresql://localhost/x", max_size=4, flushes=5)


async def test_a_batch_the_sqlite_database_refuses_as_a_whole_fails_each_write_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    store = SqliteSagaStore(path, synchronous="FULL", busy_timeout=0.01)
    await store.open()
    try:
        ids = await _begin_all(store)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
        try:
            outcomes = await asyncio.gather(
                *(store.append(i, "engine-a", [an_event(2)], SagaUpdate(), 30) for i in ids[:5]),
                return_exceptions=True,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        records = [await store.load(i) for i in ids[:5]]
    finally:
        await store.close()

    assert all(isinstance(o, SagaStoreError) and "locked" in str(o) for o in outcomes), outcomes
    assert all(r is not None and [e.seq for e in r.events] == [1] for r in records)


async def test_an_inline_write_that_finds_the_database_busy_waits_for_it_at_the_worker(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    store = SqliteSagaStore(path, synchronous="NORMAL")
    await store.open()
    try:
        await store.begin(a_record("s1"), [an_event(1, "saga_started")], 30)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process is writing
        write = asyncio.ensure_future(
            store.append("s1", "engine-a", [an_event(2)], SagaUpdate(), 30)
        )
        await asyncio.sleep(0)  # the write tried inline, found the lock, went to the worker
        assert not write.done()
        holder.execute("COMMIT")
        holder.close()
        await write
        record = await store.load("s1")
    finally:
        await store.close()

    assert record is not None
    assert [e.seq for e in record.events] == [1, 2]


async def test_a_postgresql_read_the_server_refuses_is_a_store_error(tmp_path: Path) -> None:
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(dsn, schema=schema, max_size=2)
        await store.open()
        try:
            await store.begin(a_record("s1"), [an_event(1, "saga_started")], 30)
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                await admin.execute(f'DROP TABLE "{schema}".spakky_saga_events')
            with pytest.raises(SagaStoreError, match="spakky_saga_events"):
                await store.load("s1")
        finally:
            await store.close()


async def _logged_seqs(store: SagaStore, ids: list[str]) -> list[list[int]]:
    """Each saga's log, as its entries' sequence numbers."""
    records = [await store.load(i) for i in ids]
    return [[e.seq for e in r.events] if r is not None else [] for r in records]


async def _joined_turn_batch(store: SqliteSagaStore, ids: list[str]) -> list[asyncio.Task[None]]:
    """Appends of `ids` started in one turn of the loop: the first commits inline at once, the
    others wait in the turn's batch, committed at the start of the next turn."""
    writes = [
        asyncio.ensure_future(store.append(i, "engine-a", [an_event(2)], SagaUpdate(), 30))
        for i in ids
    ]
    await asyncio.sleep(0)  # they ran: one inline, the rest joined the batch
    return writes


async def test_sqlite_normal_commits_a_turns_writes_together_when_the_database_is_free(
    tmp_path: Path,
) -> None:
    store = SqliteSagaStore(tmp_path / "sagas.db", synchronous="NORMAL")
    await store.open()
    try:
        ids = await _begin_all(store)
        writes = await _joined_turn_batch(store, ids)
        assert sum(w.done() for w in writes) == 1  # the first, inline; the others wait
        await asyncio.gather(*writes)
        logged = await _logged_seqs(store, ids)
    finally:
        await store.close()

    assert logged == [[1, 2]] * SAGAS


async def test_a_turn_batch_that_finds_the_database_busy_is_committed_by_the_worker(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    store = SqliteSagaStore(path, synchronous="NORMAL")
    await store.open()
    try:
        ids = await _begin_all(store)
        writes = await _joined_turn_batch(store, ids[:5])
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writes when the batch commits
        await asyncio.sleep(0)  # the batch found the lock and went to the worker
        assert [w.done() for w in writes] == [True, False, False, False, False]
        holder.execute("COMMIT")
        holder.close()
        await asyncio.gather(*writes)
        logged = await _logged_seqs(store, ids[:5])
    finally:
        await store.close()

    assert logged == [[1, 2]] * 5


async def test_a_write_waiting_in_a_turn_batch_is_written_even_if_its_caller_is_cancelled(
    tmp_path: Path,
) -> None:
    """A flush cancelled while its write waits must not leave a gap in its saga's log: the
    write goes out, and the saga's next write follows it."""
    store = SqliteSagaStore(tmp_path / "sagas.db", synchronous="NORMAL")
    await store.open()
    try:
        writes = await _joined_turn_batch(store, await _begin_all(store))
        cancelled = writes[3]
        cancelled.cancel()
        await asyncio.gather(*writes, return_exceptions=True)
        record = await store.load("s03")
    finally:
        await store.close()

    assert cancelled.cancelled()
    assert record is not None
    assert [e.seq for e in record.events] == [1, 2]


async def test_writes_waiting_in_a_turn_batch_when_the_store_closes_fail_with_a_store_error(
    tmp_path: Path,
) -> None:
    store = SqliteSagaStore(tmp_path / "sagas.db", synchronous="NORMAL")
    await store.open()
    ids = await _begin_all(store)
    writes = await _joined_turn_batch(store, ids[:3])
    await store.close()
    outcomes = await asyncio.gather(*writes, return_exceptions=True)

    assert outcomes[0] is None
    assert all(
        isinstance(o, SagaStoreError) and "closed before these writes" in str(o)
        for o in outcomes[1:]
    ), outcomes
