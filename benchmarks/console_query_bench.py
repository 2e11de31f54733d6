"""The console's list queries on 100,000 sagas: first page, counts per status, filters.

Fills a SQLite file and a PostgreSQL schema (created by the store, so at the current schema
version with its indexes) with `--sagas` saga rows (no logs: a list page reads rows only),
spread over statuses (mostly COMPLETED, some FAILED, a few COMPENSATION_FAILED and unfinished)
and over six saga names, created over 30 days. Then times each list query the console makes,
`--repeats` times each, and prints the median and the worst in milliseconds; the target
(issue 17) is a first page under 300 ms. Also the nodes view's query and a bulk action's dry
run (the first 500 sagas of a filter).

Run: `.venv/bin/python benchmarks/console_query_bench.py` (a minute or two); `--no-postgres`
without a server; `--dsn` (or `SPAKKY_SAGA_TEST_POSTGRES`) points at another one. The SQLite
file goes to a temporary directory, the PostgreSQL tables to a schema of their own; both are
removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from spakky_saga import (
    PostgresSagaStore,
    SagaConsoleStore,
    SagaQuery,
    SagaSort,
    SqliteSagaStore,
    StoredStatus,
)
from spakky_saga.store import SAGA_COLUMNS

_NAMES = ("Order", "Payment", "Shipment", "Refund", "Signup", "Invoice")
_STATUSES = (
    (StoredStatus.COMPLETED, 0.90),
    (StoredStatus.FAILED, 0.06),
    (StoredStatus.CANCELLED, 0.01),
    (StoredStatus.TIMED_OUT, 0.01),
    (StoredStatus.COMPENSATION_FAILED, 0.005),
    (StoredStatus.RUNNING, 0.015),
)


def _rows(count: int, now: float) -> list[tuple[object, ...]]:
    rng = random.Random(17)
    statuses = [s for s, _ in _STATUSES]
    weights = [w for _, w in _STATUSES]
    rows: list[tuple[object, ...]] = []
    for _ in range(count):
        created = now - rng.uniform(0, 30 * 86400)
        status = rng.choices(statuses, weights)[0]
        unfinished = status.unfinished
        rows.append(
            (
                str(uuid.UUID(int=rng.getrandbits(128))),
                rng.choice(_NAMES),
                status.value,
                "f" * 32,
                "[]",
                "compensate",
                '{"order_id": 1, "amount": "12.50", "items": ["a", "b"]}',
                "bench:Data",
                "pydantic-json/1",
                created,
                created + rng.uniform(0, 60),
                f"engine-{rng.randrange(4)}" if unfinished else None,
                created + 30 if unfinished else None,
                "charge" if status is StoredStatus.COMPENSATION_FAILED else None,
                "Declined: card expired" if status is StoredStatus.COMPENSATION_FAILED else None,
                None,
                None,
            )
        )
    return rows


_INSERT = (
    f"INSERT INTO {{table}} ({', '.join(SAGA_COLUMNS)}) "
    f"VALUES ({', '.join(['{mark}'] * len(SAGA_COLUMNS))})"
)


@contextlib.asynccontextmanager
async def _sqlite(rows: list[tuple[object, ...]]) -> AsyncIterator[SagaConsoleStore]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sagas.db"
        store = SqliteSagaStore(path)
        await store.open()
        await store.close()
        db = sqlite3.connect(path)
        db.executemany(_INSERT.format(table="spakky_saga_sagas", mark="?"), rows)
        db.commit()
        db.close()
        store = SqliteSagaStore(path, create=False)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def _postgres(dsn: str, rows: list[tuple[object, ...]]) -> AsyncIterator[SagaConsoleStore]:
    import psycopg  # noqa: PLC0415 - the optional driver

    schema = f"bench_console_{os.getpid()}"
    store = PostgresSagaStore(dsn, schema=schema)
    await store.open()
    await store.close()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        try:
            async with admin.cursor() as cursor:
                columns = ", ".join(SAGA_COLUMNS)
                async with cursor.copy(
                    f'COPY "{schema}".spakky_saga_sagas ({columns}) FROM STDIN'
                ) as copy:
                    for row in rows:
                        await copy.write_row(row)
            await admin.execute(f'ANALYZE "{schema}".spakky_saga_sagas')
            store = PostgresSagaStore(dsn, schema=schema, create=False)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        finally:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _cases(now: float) -> list[tuple[str, Callable[[SagaConsoleStore], Awaitable[object]]]]:
    def page(query: SagaQuery) -> Callable[[SagaConsoleStore], Awaitable[object]]:
        return lambda store: store.query(query)

    async def first_view(store: SagaConsoleStore) -> None:  # what the list view asks at once
        await store.query(SagaQuery())
        await store.count_by_status(SagaQuery())

    return [
        ("list view: first page + counts", first_view),
        ("first page, newest update first", page(SagaQuery())),
        ("first page, newest created first", page(SagaQuery(sort=SagaSort.CREATED))),
        ("counts per status", lambda store: store.count_by_status(SagaQuery())),
        ("status COMPLETED, first page", page(SagaQuery(statuses=(StoredStatus.COMPLETED,)))),
        (
            "status COMPENSATION_FAILED, first page",
            page(SagaQuery(statuses=(StoredStatus.COMPENSATION_FAILED,))),
        ),
        ("name Payment, first page", page(SagaQuery(names=("Payment",)))),
        ("id prefix 'ab', first page", page(SagaQuery(id_prefix="ab"))),
        (
            "created in the last day, by created",
            page(SagaQuery(sort=SagaSort.CREATED, created_from=now - 86400)),
        ),
        ("stale (needs attention)", page(SagaQuery(stale_at=now))),
        ("nodes: engines holding leases", lambda store: store.nodes()),
        (
            "bulk dry run: 500 FAILED sagas",
            page(SagaQuery(statuses=(StoredStatus.FAILED,), limit=500)),
        ),
    ]


async def _measure(
    store: SagaConsoleStore, repeats: int, now: float
) -> list[tuple[str, float, float]]:
    results = []
    for name, case in _cases(now):
        await case(store)  # warm the cache and the statement
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            await case(store)
            timings.append((time.perf_counter() - started) * 1000)
        results.append((name, statistics.median(timings), max(timings)))
    return results


async def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--sagas", type=int, default=100_000)
    options.add_argument("--repeats", type=int, default=15)
    options.add_argument("--no-postgres", action="store_true")
    options.add_argument(
        "--dsn",
        default=os.environ.get(
            "SPAKKY_SAGA_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test"
        ),
    )
    args = options.parse_args()
    now = time.time()
    rows = _rows(args.sagas, now)
    stores: list[tuple[str, Callable[[], contextlib.AbstractAsyncContextManager[SagaConsoleStore]]]]
    stores = [("SQLite", lambda: _sqlite(rows))]
    if not args.no_postgres:
        stores.append(("PostgreSQL", lambda: _postgres(args.dsn, rows)))
    print(f"{args.sagas:,} sagas, {args.repeats} runs per query; milliseconds (median / worst)")
    for label, opened in stores:
        async with opened() as store:
            print(f"\n{label}")
            for name, median, worst in await _measure(store, args.repeats, now):
                print(f"  {name:<42} {median:8.1f} / {worst:8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
