"""The machine's PostgreSQL for tests: one fresh schema per test, dropped afterwards.

`SPAKKY_SAGA_TEST_POSTGRES` is the DSN (default: the local server, trust auth, database
`test`). Under `CI=true` an unreachable server fails the test with a clear message; elsewhere
the test is skipped, saying what to set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

DEFAULT_DSN = "postgresql://root@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    return os.environ.get("SPAKKY_SAGA_TEST_POSTGRES", DEFAULT_DSN)


def with_application_name(dsn: str, name: str) -> str:
    """`dsn` with `application_name=name`: its connections can be found (and terminated) in
    pg_stat_activity."""
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415 - the optional driver

    return make_conninfo(dsn, application_name=name)


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[tuple[str, str]]:
    """(dsn, schema): a schema nobody else uses, dropped (with its tables) at the end."""
    import psycopg  # noqa: PLC0415 - the optional driver, only for PostgreSQL tests

    dsn = postgres_dsn()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        message = (
            f"PostgreSQL is not reachable at {dsn} ({error}); start it, or point "
            "SPAKKY_SAGA_TEST_POSTGRES at a server"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield dsn, schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
