"""A PostgreSQL store says what is wrong and touches nothing that is not its own: read-only
opening (`create=False`) creates nothing, a connection error the configuration causes is
raised at once with the server's reason (one that may pass is retried until `open_timeout`),
a schema of another application is refused before anything is created, and a write retried
after the server dropped every pooled connection really runs on a fresh one."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import psycopg
import pytest

from spakky_saga import (
    PostgresSagaStore,
    SagaStoreConnectionError,
    SagaStoreError,
    SagaStoreLocationError,
    SagaStoreNotFoundError,
)
from spakky_saga.store import SagaUpdate
from tests.postgres_support import postgres_dsn, postgres_schema, with_application_name
from tests.stores.test_store_contract import a_record, an_event


async def _relations(admin: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    cursor = await admin.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s ORDER BY c.relname",
        (schema,),
    )
    return [row[0] for row in await cursor.fetchall()]


async def _schema_exists(admin: psycopg.AsyncConnection[Any], schema: str) -> bool:
    cursor = await admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return await cursor.fetchone() is not None


def _with_database(dsn: str, database: str) -> str:
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415 - the optional driver

    return make_conninfo(dsn, dbname=database)


# --- read-only opening (create=False) --------------------------------------------------------


async def test_a_missing_schema_without_create_says_so_and_creates_nothing() -> None:
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(dsn, schema=schema, create=False)

        with pytest.raises(SagaStoreNotFoundError, match="did you mean --schema") as refused:
            await store.open()

        assert f'no saga store in schema "{schema}"' in str(refused.value)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            assert not await _schema_exists(admin, schema)


async def test_an_empty_schema_without_create_is_left_empty_and_names_the_stores_there() -> None:
    async with postgres_schema() as (dsn, schema), postgres_schema() as (_, other):
        await PostgresSagaStore(dsn, schema=other).open()  # a store in another schema
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await admin.execute(f'CREATE SCHEMA "{schema}"')  # like public: there, but empty
            store = PostgresSagaStore(dsn, schema=schema, create=False)

            with pytest.raises(SagaStoreNotFoundError) as refused:
                await store.open()
            with pytest.raises(SagaStoreError, match="opening it failed: no saga store"):
                await store.list()

            assert other in str(refused.value)  # "schemas of this database with a saga store"
            assert await _relations(admin, schema) == []


async def test_an_existing_store_opens_without_create_and_reads() -> None:
    async with postgres_schema() as (dsn, schema):
        writer = PostgresSagaStore(dsn, schema=schema)
        await writer.begin(a_record(), [an_event(1, "saga_started")], 30)
        await writer.close()
        reader = PostgresSagaStore(dsn, schema=schema, create=False)

        await reader.open()
        listed = await reader.list()
        await reader.close()

        assert [r.saga_id for r in listed] == ["s1"]


# --- another application's schema --------------------------------------------------------------


async def test_a_schema_holding_other_tables_is_refused_before_anything_is_created() -> None:
    async with (
        postgres_schema() as (dsn, schema),
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin,
    ):
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.execute(f'CREATE TABLE "{schema}".customers (id int PRIMARY KEY)')
        await admin.execute(f'CREATE TABLE "{schema}".orders (id int PRIMARY KEY)')
        store = PostgresSagaStore(dsn, schema=schema)

        with pytest.raises(
            SagaStoreLocationError, match=r"holds other tables \(customers, orders\)"
        ) as refused:
            await store.open()

        assert "schema of its own" in str(refused.value)
        assert await _relations(admin, schema) == [
            "customers",
            "customers_pkey",
            "orders",
            "orders_pkey",
        ]


def test_a_reserved_schema_name_is_refused_as_a_schema_name() -> None:
    with pytest.raises(SagaStoreLocationError, match="reserved for PostgreSQL") as refused:
        PostgresSagaStore(postgres_dsn(), schema="pg_sagas")

    assert "DSN" not in str(refused.value)


# --- connection errors say their cause ---------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        (_with_database(postgres_dsn(), "nosuchdb"), 'database "nosuchdb" does not exist'),
        ("postgresql://nobody_at_all@127.0.0.1:5432/test", 'role "nobody_at_all" does not exist'),
        ("junk", 'missing "=" after "junk"'),
        (postgres_dsn() + "?schema=shop", "schema is not a connection option"),
    ],
    ids=["missing-database", "unknown-role", "junk-dsn", "schema-in-dsn"],
)
async def test_a_connection_error_retrying_cannot_fix_is_raised_at_once_with_its_reason(
    dsn: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with postgres_schema():  # skips (or fails on CI) when the server is not there
        store = PostgresSagaStore(dsn, open_timeout=10)
        started = time.monotonic()

        with caplog.at_level(logging.DEBUG), pytest.raises(SagaStoreConnectionError) as refused:
            await store.open()

        assert time.monotonic() - started < 3  # not after open_timeout
        assert reason in str(refused.value)
        assert refused.value.transient is False
        assert "PoolTimeout" not in str(refused.value)
        assert [r for r in caplog.records if r.name.startswith("psycopg")] == []
        with pytest.raises(SagaStoreError, match="opening it failed") as listed:
            await store.list()
        assert reason in str(listed.value)


async def test_a_refused_connection_is_retried_within_the_open_timeout_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = PostgresSagaStore("postgresql://root@127.0.0.1:1/test", open_timeout=0.3)
    started = time.monotonic()

    with caplog.at_level(logging.DEBUG), pytest.raises(SagaStoreConnectionError) as refused:
        await store.open()

    assert 0.2 <= time.monotonic() - started < 3
    assert "Connection refused" in str(refused.value)
    assert "open_timeout=0.3" in str(refused.value)
    assert refused.value.transient is True
    assert [r for r in caplog.records if r.name.startswith("psycopg")] == []


# --- a retried write uses a fresh connection ---------------------------------------------------


async def _backends(admin: psycopg.AsyncConnection[Any], app: str) -> int:
    cursor = await admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _wait_for_backends(admin: psycopg.AsyncConnection[Any], app: str, count: int) -> None:
    async with asyncio.timeout(10):
        while True:  # the server's state, polled: there is no event to wait for
            if await _backends(admin, app) == count:
                return
            await asyncio.sleep(0.002)


async def _terminate(admin: psycopg.AsyncConnection[Any], app: str) -> int:
    """Terminate every backend of `app` and wait until they have exited."""
    cursor = await admin.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = %s",
        (app,),
    )
    row = await cursor.fetchone()
    assert row is not None
    await _wait_for_backends(admin, app, 0)
    return int(row[0])


async def test_a_write_after_the_server_dropped_every_pooled_connection_succeeds() -> None:
    app = f"spakky_stores_{uuid.uuid4().hex[:8]}"
    runs = 25
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(
            with_application_name(dsn, app), schema=schema, min_size=4, max_size=4
        )
        await store.begin(a_record(), [an_event(1, "saga_started")], 30)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            for run in range(runs):
                await _wait_for_backends(admin, app, 4)  # the pool is full again
                assert await _terminate(admin, app) == 4  # every pooled connection is dead

                await store.append("s1", "engine-a", [an_event(run + 2)], SagaUpdate(), 30)

        loaded = await store.load("s1")
        await store.close()

    assert loaded is not None
    assert [e.seq for e in loaded.events] == list(range(1, runs + 2))
