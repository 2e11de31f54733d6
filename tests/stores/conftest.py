"""Store fixtures: the same contract tests run against every store, each on the real thing
(a SQLite file in a temporary directory, the machine's PostgreSQL in a schema of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from spakky_saga import InMemorySagaStore, PostgresSagaStore, SagaStore, SqliteSagaStore
from tests.postgres_support import postgres_schema


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[SagaStore]:
    kind = request.param
    if kind == "memory":
        yield InMemorySagaStore()
        return
    if kind == "sqlite":
        sqlite = SqliteSagaStore(f"{tmp_path}/sagas.db", synchronous="NORMAL")
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    async with postgres_schema() as (dsn, schema):
        postgres = PostgresSagaStore(dsn, schema=schema, max_size=4)
        await postgres.open()
        yield postgres
        await postgres.close()
