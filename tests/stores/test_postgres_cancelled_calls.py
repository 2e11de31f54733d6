"""A store call cancelled while its query runs, a read or a change (a claim, a lease renewal, a
cancel request): the caller stops waiting at once, the query finishes on its connection,
which goes back to the pool, and nothing is logged. (Cancelled twice mid-query, psycopg would
close the connection with warnings on stderr: what a web server shutting down, or a task
group, does to a request's read, and an engine's `aclose()` to its heartbeat's renewal.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg
import pytest

from spakky_saga import PostgresSagaStore
from tests.postgres_support import postgres_schema
from tests.stores.test_store_contract import a_record, an_event

_CALLS: dict[str, Callable[[PostgresSagaStore], Awaitable[object]]] = {
    "load": lambda store: store.load("s1"),
    "renew": lambda store: store.renew("engine-a", ["s1"], 30),
    "claim": lambda store: store.claim("engine-b", 30, 10),
    "request_cancel": lambda store: store.request_cancel("s1", "ops"),
}


@pytest.mark.parametrize("call", _CALLS)
async def test_a_call_cancelled_twice_mid_query_logs_nothing_and_keeps_its_connection(
    call: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(dsn, schema=schema, max_size=1, flushes=1)
        await store.open()
        try:
            await store.begin(a_record("s1"), [an_event(1, "saga_started")], 30)
            async with await psycopg.AsyncConnection.connect(dsn) as locker:
                # the call waits for this lock, so it is cancelled while its query runs
                await locker.execute(
                    f"LOCK TABLE {schema}.spakky_saga_sagas IN ACCESS EXCLUSIVE MODE"
                )
                read = asyncio.ensure_future(_CALLS[call](store))
                await _blocked_on_a_lock(dsn)  # the query is on the server, waiting
                with caplog.at_level(logging.WARNING):
                    read.cancel()
                    await asyncio.sleep(0)
                    read.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await read
                    await locker.commit()
                    # the pool's only connection came back: the next read gets it
                    record = await asyncio.wait_for(store.load("s1"), 10)
        finally:
            await store.close()

    assert record is not None
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


async def _blocked_on_a_lock(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher:
        for _ in range(2000):
            cursor = await watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.005)
    raise AssertionError("the call never reached the server")
