"""A store refuses what it cannot safely use, with a clear error, and leaves it untouched:
a file that is not a SQLite database, a damaged one, another application's database, a
schema from a newer version, a server that is not there. A durable engine on such a store
runs no step."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest

from spakky_saga import (
    PostgresSagaStore,
    SagaEngine,
    SagaSchemaVersionError,
    SagaStore,
    SagaStoreDamagedError,
    SagaStoreError,
    SqliteSagaStore,
    saga_flow,
)
from tests.durable_support import Ticket
from tests.postgres_support import postgres_schema


async def _open_and_list(store: SagaStore) -> None:
    try:
        await store.open()
        await store.list()
    finally:
        await store.close()


async def _a_saga_store_with_sagas(path: Path) -> None:
    async def reserve(data: Ticket) -> None:
        return None

    engine = SagaEngine(store=SqliteSagaStore(path, synchronous="NORMAL"), log=False)
    for order in range(40):
        await engine.run(saga_flow(reserve), Ticket(order_id=order), saga_name="order")
    await engine.aclose()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    db.close()


async def test_a_file_of_random_bytes_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    content = random.Random(7).randbytes(8192)
    path.write_bytes(content)

    with pytest.raises(SagaStoreError, match="is it a SQLite database") as refused:
        await _open_and_list(SqliteSagaStore(path))

    assert str(path) in str(refused.value)
    assert path.read_bytes() == content


async def test_a_damaged_sqlite_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    await _a_saga_store_with_sagas(path)
    with path.open("r+b") as file:
        file.write(b"\0" * 100)  # the 100-byte header: SQLite no longer recognises the file

    with pytest.raises(SagaStoreError, match="cannot be opened as a saga store") as refused:
        await _open_and_list(SqliteSagaStore(path))

    assert str(path) in str(refused.value)


async def test_a_truncated_saga_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    await _a_saga_store_with_sagas(path)
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)

    with pytest.raises(SagaStoreDamagedError, match=r"is damaged .*cut short") as refused:
        await _open_and_list(SqliteSagaStore(path))

    assert str(path) in str(refused.value)


async def test_a_saga_store_with_damaged_pages_fails_with_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    await _a_saga_store_with_sagas(path)
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4096)  # keep the first page (header and schema), damage the tables
        file.write(random.Random(3).randbytes(size - 4096))

    with pytest.raises(SagaStoreError, match="malformed"):
        await _open_and_list(SqliteSagaStore(path))


async def test_a_damaged_saga_store_s_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    await _a_saga_store_with_sagas(path)
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(random.Random(3).randbytes(size - 4096))

    with pytest.raises(SagaStoreError) as refused:
        await _open_and_list(SqliteSagaStore(path))

    assert str(path) in str(refused.value)


async def test_another_application_s_database_is_refused_and_not_changed(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER)")
    db.execute("INSERT INTO customers (name) VALUES ('Ada')")
    db.commit()
    db.close()

    with pytest.raises(SagaStoreError, match=r"holds other tables \(customers, orders\)"):
        await _open_and_list(SqliteSagaStore(path))

    db = sqlite3.connect(path)
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = db.execute("SELECT name FROM customers").fetchall()
    db.close()
    assert sorted(tables) == ["customers", "orders"]  # no saga table was created in it
    assert rows == [("Ada",)]


async def test_a_sqlite_store_from_a_newer_version_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    await _a_saga_store_with_sagas(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE spakky_saga_schema SET version = 99")
    db.commit()
    db.close()

    with pytest.raises(SagaSchemaVersionError, match="schema version 99") as refused:
        await _open_and_list(SqliteSagaStore(path))

    assert "upgrade the library" in str(refused.value)
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM spakky_saga_schema").fetchall() == [(99,)]
    assert db.execute("SELECT count(*) FROM spakky_saga_sagas").fetchone() == (40,)
    db.close()


async def test_a_durable_engine_on_a_refused_store_runs_no_step(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    path.write_bytes(random.Random(11).randbytes(4096))
    ran: list[str] = []

    async def reserve(data: Ticket) -> None:
        ran.append("reserve")

    engine = SagaEngine(store=SqliteSagaStore(path), log=False)

    with pytest.raises(SagaStoreError):
        await engine.run(saga_flow(reserve), Ticket(order_id=1), saga_name="order")

    assert ran == []
    await engine.aclose()


async def test_a_postgres_schema_from_a_newer_version_is_refused_and_kept() -> None:
    import psycopg  # noqa: PLC0415 - the optional driver, only for PostgreSQL tests

    async with postgres_schema() as (dsn, schema):
        await _open_and_list(PostgresSagaStore(dsn, schema=schema))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await admin.execute(f'UPDATE "{schema}".spakky_saga_schema SET version = 99')

            with pytest.raises(SagaSchemaVersionError, match="schema version 99") as refused:
                await _open_and_list(PostgresSagaStore(dsn, schema=schema))

            assert schema in str(refused.value)
            cursor = await admin.execute(f'SELECT version FROM "{schema}".spakky_saga_schema')
            assert await cursor.fetchall() == [(99,)]


async def test_an_unreachable_postgresql_server_is_reported_within_the_open_timeout() -> None:
    store = PostgresSagaStore(
        "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", open_timeout=0.5
    )
    started = time.monotonic()

    with pytest.raises(SagaStoreError, match="cannot open the PostgreSQL saga store"):
        await store.open()

    assert time.monotonic() - started < 5
