"""Fixtures of the durable waits tests: every store, each engine on a connection of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from spakky_saga import InMemorySagaStore, PostgresSagaStore, SagaStore, SqliteSagaStore
from tests.postgres_support import postgres_schema

type StoreFactory = Callable[[], SagaStore]


@pytest.fixture(name="stores", params=["memory", "sqlite", "postgres"])
async def stores_fixture(
    request: pytest.FixtureRequest, tmp_path: object
) -> AsyncIterator[StoreFactory]:
    """Makes stores on one place (an in-memory store, a SQLite file, a PostgreSQL schema):
    each engine gets its own connection, as a process would."""
    kind = request.param
    if kind == "memory":
        shared = InMemorySagaStore()
        yield lambda: shared
    elif kind == "sqlite":
        yield lambda: SqliteSagaStore(f"{tmp_path}/sagas.db", synchronous="NORMAL")
    else:
        async with postgres_schema() as (dsn, schema):
            yield lambda: PostgresSagaStore(dsn, schema=schema, max_size=4)
