"""`PostgresSagaStore`: the saga log in PostgreSQL, for several engines on several machines.

psycopg 3 with its async connection pool (opened by `open()`, closed by `close()`). Leases use
the server's clock, so engines on machines whose clocks differ still agree on expiry. Claims
take rows with `FOR UPDATE SKIP LOCKED`: concurrent `recover()` calls on different nodes never
take the same saga, and never wait on each other. Each store keeps its tables in one schema
(`schema=`, default `public`), created with a version row on first use; a schema from a newer
version is refused, and so is a schema holding other tables and no saga store (before anything
is created in it). `create=False` opens only an existing store, reading and creating nothing.

Opening first makes one connection of its own: an error the configuration causes (a bad DSN,
an unknown database or role, failed authentication) is raised at once with the server's
reason; one that may pass (connection refused, timed out, the server starting up) is retried
until `open_timeout`. Only then is the pool opened, so its log does not repeat the failure.

A write that loses its connection (a killed backend, a failover) is retried once on a fresh
connection: the pool's idle connections are checked first (after a server restart they are
all dead, and the retry must not take another of them). If the first try had in fact
committed, the retry sees its own rows and counts as done, so a write is never applied twice.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

from pydantic_core import PydanticSerializationError, to_json

from spakky_saga.audit import AuditEntry
from spakky_saga.console_store import EngineNode
from spakky_saga.errors import (
    SagaAlreadyStartedError,
    SagaLeaseLostError,
    SagaSchemaVersionError,
    SagaStoreError,
)
from spakky_saga.query import SagaPage, SagaQuery
from spakky_saga.signals import check_send
from spakky_saga.store import (
    PURGEABLE,
    SAGA_COLUMNS,
    UNFINISHED,
    CancelRequest,
    Renewal,
    SagaRecord,
    SagaStoreConnectionError,
    SagaStoreLocationError,
    SagaStoreNotFoundError,
    SagaUpdate,
    StoredEvent,
    StoredSignal,
    StoredStatus,
)
from spakky_saga.stores.group_commit import DEFAULT_CONCURRENCY, FlushOutcomes, GroupCommit
from spakky_saga.stores.listing import (
    count_statement,
    nodes_statement,
    page_statement,
    wake_statement,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

SCHEMA_VERSION: Final = 5
"""Bump with a numbered migration in `_MIGRATIONS` when the tables change. 2: who asked to
cancel a saga, and when (`spakky-saga cancel`). 3: the indexes the console's list pages
(`query`) and counts use, and the operators' audit trail. 4: failures' traceback text in the
log, and when each engine last renewed its leases (the console's nodes view); 5: signals
(`engine.signal`), and when a WAITING saga wakes."""

_NOW: Final = "extract(epoch from clock_timestamp())"
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE {s}.spakky_saga_sagas (
            saga_id TEXT PRIMARY KEY,
            saga_name TEXT NOT NULL,
            status TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            structure TEXT NOT NULL,
            policy TEXT NOT NULL,
            data JSONB NOT NULL,
            data_type TEXT NOT NULL,
            codec TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            owner TEXT,
            lease_expires DOUBLE PRECISION,
            failed_step TEXT,
            error TEXT
        )""",
        "CREATE INDEX spakky_saga_sagas_status ON {s}.spakky_saga_sagas (status, lease_expires)",
        """CREATE TABLE {s}.spakky_saga_events (
            saga_id TEXT NOT NULL REFERENCES {s}.spakky_saga_sagas (saga_id),
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            step_key TEXT,
            step TEXT,
            attempt INTEGER NOT NULL,
            elapsed DOUBLE PRECISION NOT NULL,
            error_type TEXT,
            error TEXT,
            data JSONB,
            data_type TEXT,
            owner TEXT,
            PRIMARY KEY (saga_id, seq)
        )""",
    ),
    2: (
        "ALTER TABLE {s}.spakky_saga_sagas ADD COLUMN cancel_requested_by TEXT",
        "ALTER TABLE {s}.spakky_saga_sagas ADD COLUMN cancel_requested_at DOUBLE PRECISION",
    ),
    3: (
        # Sorted by creation, a list page reads this index in order and stops after a page
        # (keyset paging). `updated` stays unindexed on purpose: every write changes it, and
        # an index on it would cost every write an index update (on PostgreSQL, the HOT
        # updates the write path relies on); a page by update time is a top-N sort instead.
        "CREATE INDEX spakky_saga_sagas_created ON {s}.spakky_saga_sagas (created, saga_id)",
        # operators' actions (the console's audit trail): no foreign key, they outlive purge
        """CREATE TABLE {s}.spakky_saga_audit (
            saga_id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            action TEXT NOT NULL,
            by TEXT NOT NULL,
            origin TEXT NOT NULL,
            outcome TEXT NOT NULL
        )""",
        "CREATE INDEX spakky_saga_audit_saga ON {s}.spakky_saga_audit (saga_id, at)",
    ),
    4: (
        # NULL in the entries written before: an old log stays readable, without tracebacks
        "ALTER TABLE {s}.spakky_saga_events ADD COLUMN traceback TEXT",
        # one row per engine, written by its heartbeat (`renew`): the console's nodes view
        """CREATE TABLE {s}.spakky_saga_nodes (
            owner TEXT PRIMARY KEY,
            renewed DOUBLE PRECISION NOT NULL
        )""",
    ),
    5: (
        # signals sent to sagas (waits, docs/waits.md): kept until their saga is purged
        """CREATE TABLE {s}.spakky_saga_signals (
            signal_id TEXT PRIMARY KEY,
            saga_id TEXT NOT NULL,
            signal_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            codec TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX spakky_saga_signals_saga ON {s}.spakky_saga_signals (saga_id, at)",
        # when a WAITING (suspended) saga is to be claimed again: NULL, only by a signal
        "ALTER TABLE {s}.spakky_saga_sagas ADD COLUMN wake_at DOUBLE PRECISION",
        "CREATE INDEX spakky_saga_sagas_wake ON {s}.spakky_saga_sagas (status, wake_at)",
    ),
}

_SAGA_COLUMNS: Final = ", ".join(c + "::text" if c == "data" else c for c in SAGA_COLUMNS)
_AUDIT: Final = ", ".join(AuditEntry._fields)
_SIGNAL: Final = ", ".join(StoredSignal._fields)
_WAITING: Final = StoredStatus.WAITING.value
_RUNNING: Final = StoredStatus.RUNNING.value
_EVENT_COLUMNS: Final = ", ".join(
    f + "::text" if f == "data" else f for f in StoredEvent._fields
)  # in StoredEvent's order: a row is a StoredEvent


class PostgresSagaStore:
    """A `SagaStore` in the PostgreSQL database at `dsn` (a libpq connection string or URL).

    `schema` is where the tables live (a schema of the store's own: one holding other tables
    is refused); `create=False` opens only an existing store (`SagaStoreNotFoundError`
    otherwise, nothing created); `min_size`/`max_size` size the connection pool;
    `open_timeout` (seconds) is how long `open()` retries a server that refuses or does not
    answer connections before raising `SagaStoreConnectionError` (errors in the DSN, the
    database or role name, or the password are raised at once). `flushes` is how many batch
    writes may be in flight at once (see `GroupCommit`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        create: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        open_timeout: float = 10.0,
        flushes: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if not _IDENTIFIER.match(schema):
            raise SagaStoreLocationError(
                f"PostgresSagaStore(schema={schema!r}): use a plain SQL identifier "
                "(letters, digits and underscores, not starting with a digit)"
            )
        if schema.startswith("pg_"):
            raise SagaStoreLocationError(
                f"PostgresSagaStore(schema={schema!r}): schema names starting with pg_ are "
                "reserved for PostgreSQL's own schemas; choose another name, e.g. 'sagas'"
            )
        self.dsn = dsn
        self.schema = schema
        self.create = create
        self._min_size = min_size
        self._max_size = max_size
        self._open_timeout = open_timeout
        self._pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool[Any]] = {}
        """One connection pool per event loop that uses the store (a pool's connections and
        tasks belong to the loop that opened it): see `open()`."""
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._opened = False
        """Whether `open()` succeeded once: a loop that uses the store later gets its pool."""
        self._open_error: SagaStoreError | None = None
        if not 1 <= flushes <= max_size:
            raise ValueError(
                f"PostgresSagaStore(flushes={flushes}): use 1 to max_size ({max_size}) "
                "concurrent batch writes"
            )
        self._flushes = flushes
        self._group_commits: dict[asyncio.AbstractEventLoop, GroupCommit[_Write]] = {}
        """One group commit per event loop, like the pools."""
        self._statements = _statements(self._t)

    def __repr__(self) -> str:
        return f"PostgresSagaStore(schema={self.schema!r})"

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def _pool(self) -> AsyncConnectionPool[Any] | None:
        """The running loop's pool (None outside a loop, or before this loop opened one)."""
        try:
            return self._pools.get(asyncio.get_running_loop())
        except RuntimeError:
            return None

    async def open(self) -> None:
        """Connect, check (or create) the schema, then open this event loop's pool;
        idempotent. Raises `SagaStoreConnectionError` (with the server's reason),
        `SagaStoreNotFoundError` (`create=False` and no store in the schema),
        `SagaStoreLocationError` (the schema holds other tables) or `SagaSchemaVersionError`.

        The store works from any event loop: each loop that uses it gets a pool of its own,
        opened on its first use there once the store was opened anywhere (a spakky
        application recovering on its service loop and running sagas under `asyncio.run`).
        """
        loop = asyncio.get_running_loop()
        if loop in self._pools:
            return
        lock = self._opening.setdefault(loop, asyncio.Lock())
        async with lock:
            if loop in self._pools:
                return
            try:
                self._pools[loop] = await self._open_pool()
            except SagaStoreError as error:
                self._open_error = error
                raise
            self._open_error = None
            self._opened = True

    async def _open_pool(self) -> AsyncConnectionPool[Any]:
        psycopg, pool_module = _driver()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._open_timeout
        conn = await self._first_connection(deadline)
        try:
            await self._prepare(conn)
        except psycopg.Error as error:
            raise SagaStoreError(
                f'cannot open the PostgreSQL saga store in schema "{self.schema}" at '
                f"{_where(self.dsn)}: {_one_line(error)}"
            ) from error
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Any] = pool_module.AsyncConnectionPool(
            self.dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            # No check on checkout (a round trip each time): a write that meets a broken
            # connection is retried once on a fresh one (see _write).
            kwargs={"autocommit": True},
        )
        try:  # the server answered a moment ago: this fails only if it just went away
            await pool.open(wait=True, timeout=max(deadline - loop.time(), 1.0))
        except BaseException as error:
            await pool.close()
            raise SagaStoreConnectionError(
                f"cannot open the PostgreSQL saga store at {_where(self.dsn)}: its connection "
                f"pool did not start ({type(error).__name__}: {error}); the server answered one "
                "connection, so check max_connections and the server's log",
                transient=True,
            ) from error
        return pool

    async def _first_connection(self, deadline: float) -> AsyncConnection[Any]:
        """One connection of our own, to learn why the server cannot be used: raise at once
        when retrying cannot help, retry until `deadline` when it may."""
        psycopg, _ = _driver()
        loop = asyncio.get_running_loop()
        pause = 0.05
        attempts = 0
        while True:
            attempts += 1
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.05)):
                    conn: AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True
                    )
                return conn
            except (psycopg.Error, TimeoutError) as error:
                transient, advice = _diagnose(error, self.dsn)
                reason = "no answer" if isinstance(error, TimeoutError) else _one_line(error)
                if not transient:
                    raise SagaStoreConnectionError(
                        f"cannot open the PostgreSQL saga store at {_where(self.dsn)}: "
                        f"{reason}; {advice}",
                        transient=False,
                    ) from error
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise SagaStoreConnectionError(
                        f"cannot open the PostgreSQL saga store at {_where(self.dsn)}: "
                        f"{reason} ({attempts} attempts in {self._open_timeout:g} s, "
                        f"open_timeout={self._open_timeout:g}); {advice}",
                        transient=True,
                    ) from error
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 1.0)

    async def close(self) -> None:
        """Close every loop's pool, each on its own loop: this one's here; one whose loop runs
        in another thread there (waiting up to `open_timeout`); one whose loop is closed
        already (an `asyncio.run` that ended) is let go, its connections gone with the loop's
        tasks. Reopened by `open()`."""
        pools, self._pools = self._pools, {}
        self._group_commits = {}  # each belonged to a pool's loop
        self._opening = {}
        self._opened = False
        here = asyncio.get_running_loop()
        for loop, pool in pools.items():
            if loop is here:
                await pool.close()
            elif not loop.is_closed() and loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(pool.close(), loop)
                with contextlib.suppress(Exception):  # its loop stopped meanwhile: let it go
                    await asyncio.wait_for(asyncio.wrap_future(closing), self._open_timeout)

    # --- the store contract -----------------------------------------------------------------

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        values = (
            record.saga_id,
            record.saga_name,
            record.status.value,
            record.fingerprint,
            record.structure,
            record.policy,
            record.data,
            record.data_type,
            record.codec,
            record.owner,
            lease_seconds,
            record.failed_step,
            record.error,
        )
        await self._writes().write(_Write.of(values, events, begin=True, release=False))

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        status = update.status
        values = (
            saga_id,
            owner,
            lease_seconds,
            update.release,
            None if status is None else status.value,
            update.data,
            update.data_type,
            update.failed_step,
            update.error,
        )
        await self._writes().write(_Write.of(values, events, begin=False, release=update.release))

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        # Retried once after a lost connection (`_call`): if the first try had committed, the
        # sagas it took stay this owner's until their lease runs out, then go to the next
        # claim; never to two owners at once.
        only = " AND saga_id = ANY(%s)" if saga_ids else ""
        params: list[object] = [[s.value for s in UNFINISHED]]
        if saga_ids:
            params.append(list(saga_ids))

        async def run(conn: AsyncConnection[Any]) -> list[SagaRecord]:
            async with conn.transaction():
                cursor = await conn.execute(
                    f"WITH candidates AS ("
                    f"  SELECT saga_id FROM {self._t('sagas')}"
                    f"  WHERE (status = ANY(%s) AND (owner IS NULL OR lease_expires <= {_NOW})"
                    f"  OR status = '{_WAITING}' AND wake_at <= {_NOW})"
                    f"{only} ORDER BY created LIMIT %s FOR UPDATE SKIP LOCKED) "
                    f"UPDATE {self._t('sagas')} AS s SET owner = %s, "
                    f"lease_expires = {_NOW} + %s, wake_at = NULL, status = CASE s.status "
                    f"WHEN '{_WAITING}' THEN '{_RUNNING}' ELSE s.status END "
                    f"FROM candidates WHERE s.saga_id = candidates.saga_id RETURNING s.saga_id",
                    (*params, limit, owner, lease_seconds),
                )
                ids = [row[0] for row in await cursor.fetchall()]
            return await self._load_many(conn, ids)

        return await self._call(run)

    async def reopen(self, saga_id: str, owner: str, lease_seconds: float) -> SagaRecord:
        async def run(conn: AsyncConnection[Any]) -> tuple[int, SagaRecord | None]:
            cursor = await conn.execute(
                f"UPDATE {self._t('sagas')} SET status = %s, owner = %s, "
                f"lease_expires = {_NOW} + %s WHERE saga_id = %s AND status = %s",
                (
                    StoredStatus.COMPENSATING.value,
                    owner,
                    lease_seconds,
                    saga_id,
                    StoredStatus.COMPENSATION_FAILED.value,
                ),
            )
            return cursor.rowcount, await self._load(conn, saga_id)

        changed, record = await self._call(run)
        if changed != 1 or record is None:
            state = "unknown" if record is None else record.status.value
            raise SagaStoreError(
                f"saga {saga_id} is {state}; only a COMPENSATION_FAILED saga can have its "
                "compensation retried"
            )
        return record

    async def renew(self, owner: str, saga_ids: Sequence[str], lease_seconds: float) -> Renewal:
        if not saga_ids:
            return Renewal(set(), {})

        async def run(conn: AsyncConnection[Any]) -> builtins.list[Any]:
            # Rows locked in saga id order, as batch writes lock them: never a deadlock.
            cursor = await conn.execute(
                f"WITH locked AS (SELECT saga_id FROM {self._t('sagas')} "
                "WHERE owner = %s AND saga_id = ANY(%s) ORDER BY saga_id FOR UPDATE), "
                f"node AS (INSERT INTO {self._t('nodes')} (owner, renewed) VALUES (%s, {_NOW}) "
                "ON CONFLICT (owner) DO UPDATE SET renewed = excluded.renewed) "
                f"UPDATE {self._t('sagas')} AS s SET lease_expires = {_NOW} + %s "
                "FROM locked WHERE s.saga_id = locked.saga_id AND s.owner = %s "
                "RETURNING s.saga_id, s.status, s.cancel_requested_by, s.cancel_requested_at",
                (owner, list(saga_ids), owner, lease_seconds, owner),
            )
            return await cursor.fetchall()

        rows = await self._call(run)
        return Renewal(
            {row[0] for row in rows},
            {
                saga_id: CancelRequest(by, at)
                for saga_id, status, by, at in rows
                if by is not None and status == StoredStatus.RUNNING.value
            },
        )

    async def request_cancel(self, saga_id: str, by: str) -> SagaRecord | None:
        async def run(conn: AsyncConnection[Any]) -> Any:
            # One transaction: the row read is the one the request was (or was not) written
            # to, not one its owner changed since (it acts on the request at once).
            async with conn.transaction():
                await conn.execute(
                    f"UPDATE {self._t('sagas')} SET cancel_requested_by = %s, "
                    f"cancel_requested_at = {_NOW}, wake_at = CASE status "
                    f"WHEN '{_WAITING}' THEN {_NOW} ELSE wake_at END "
                    "WHERE saga_id = %s AND status = ANY(%s) AND cancel_requested_at IS NULL",
                    (by, saga_id, [_RUNNING, _WAITING]),
                )
                cursor = await conn.execute(
                    f"SELECT {_SAGA_COLUMNS} FROM {self._t('sagas')} WHERE saga_id = %s",
                    (saga_id,),
                )
                return await cursor.fetchone()

        row = await self._call(run)
        return None if row is None else SagaRecord.from_row(row)

    async def send_signal(self, signal: StoredSignal) -> bool:
        async def run(conn: AsyncConnection[Any]) -> bool:
            # One transaction; FOR SHARE holds the saga's row (its status) until it commits.
            async with conn.transaction():
                cursor = await conn.execute(
                    f"SELECT status FROM {self._t('sagas')} WHERE saga_id = %s FOR SHARE",
                    (signal.saga_id,),
                )
                status = await cursor.fetchone()
                existing = await self._signal(conn, signal.signal_id)
                if not check_send(None if status is None else status[0], existing, signal):
                    return False
                cursor = await conn.execute(
                    f"INSERT INTO {self._t('signals')} ({_SIGNAL}) VALUES "
                    "(%s, %s, %s, %s, %s, %s) ON CONFLICT (signal_id) DO NOTHING "
                    "RETURNING signal_id",
                    signal,
                )
                if await cursor.fetchone() is not None:
                    cursor = await conn.execute(  # a suspended saga wakes: the next claim
                        f"UPDATE {self._t('sagas')} SET wake_at = {_NOW} "
                        f"WHERE saga_id = %s AND status = '{_WAITING}'",
                        (signal.saga_id,),
                    )
                    if cursor.rowcount:  # tell serving engines now (delivered at commit)
                        await conn.execute("SELECT pg_notify(%s, %s)", (self._channel, ""))
                    return True
                existing = await self._signal(conn, signal.signal_id)  # sent meanwhile
                return check_send(status[0] if status else None, existing, signal)

        stored: bool = await self._call(run)
        return stored

    async def suspend(self, saga_id: str, owner: str, wake_at: float | None, seen: int) -> None:
        async def run(conn: AsyncConnection[Any]) -> int:
            cursor = await conn.execute(
                f"UPDATE {self._t('sagas')} SET status = '{_WAITING}', owner = NULL, "
                f"lease_expires = NULL, updated = {_NOW}, wake_at = CASE WHEN (SELECT count(*) "
                f"FROM {self._t('signals')} WHERE saga_id = %s) > %s THEN {_NOW} "
                "ELSE %s::double precision END WHERE saga_id = %s AND owner = %s",
                (saga_id, seen, wake_at, saga_id, owner),
            )
            return cursor.rowcount

        if await self._call(run) != 1:
            raise SagaLeaseLostError(saga_id, owner)

    async def _signal(self, conn: AsyncConnection[Any], signal_id: str) -> StoredSignal | None:
        cursor = await conn.execute(
            f"SELECT {_SIGNAL} FROM {self._t('signals')} WHERE signal_id = %s", (signal_id,)
        )
        row = await cursor.fetchone()
        return None if row is None else StoredSignal(*row)

    async def signals(self, saga_id: str) -> builtins.list[StoredSignal]:
        rows = await self._execute(
            f"SELECT {_SIGNAL} FROM {self._t('signals')} WHERE saga_id = %s ORDER BY at, signal_id",
            (saga_id,),
        )
        return [StoredSignal(*row) for row in rows]

    async def load(self, saga_id: str) -> SagaRecord | None:
        return await self._call(lambda conn: self._load(conn, saga_id))

    async def list(
        self, statuses: Sequence[StoredStatus] = (), limit: int = 100
    ) -> list[SagaRecord]:
        where = " WHERE status = ANY(%s)" if statuses else ""
        params: list[object] = [[s.value for s in statuses]] if statuses else []

        async def run(conn: AsyncConnection[Any]) -> builtins.list[SagaRecord]:
            cursor = await conn.execute(
                f"SELECT {_SAGA_COLUMNS} FROM {self._t('sagas')}{where} "
                "ORDER BY updated DESC LIMIT %s",
                (*params, limit),
            )
            return [SagaRecord.from_row(row) for row in await cursor.fetchall()]

        return await self._call(run)

    async def query(self, query: SagaQuery) -> SagaPage:
        statement, params = page_statement(query, self._t("sagas"), _SAGA_COLUMNS, "%s")
        rows = await self._execute(statement, params)
        return query.page([SagaRecord.from_row(row) for row in rows], len(rows) > query.limit)

    async def count_by_status(self, query: SagaQuery) -> dict[StoredStatus, int]:
        statement, params = count_statement(query, self._t("sagas"), "%s")
        return {StoredStatus(s): n for s, n in await self._execute(statement, params)}

    async def audit(self, entry: AuditEntry) -> None:
        await self._execute(
            f"INSERT INTO {self._t('audit')} ({_AUDIT}) VALUES (%s, %s, %s, %s, %s, %s)",
            entry,
        )

    async def audit_trail(self, saga_id: str) -> builtins.list[AuditEntry]:
        rows = await self._execute(
            f"SELECT {_AUDIT} FROM {self._t('audit')} WHERE saga_id = %s ORDER BY at", (saga_id,)
        )
        return [AuditEntry(*row) for row in rows]

    async def nodes(self) -> builtins.list[EngineNode]:
        statement, params = nodes_statement(self._t("sagas"), self._t("nodes"), "%s")
        return [EngineNode(*row) for row in await self._execute(statement, params)]

    async def wake_times(
        self, saga_ids: Sequence[str] = (), *, due_by: float | None = None, limit: int = 100
    ) -> dict[str, float]:
        statement, params = wake_statement(self._t("sagas"), "%s", saga_ids, due_by, limit)
        return {saga_id: wake_at for saga_id, wake_at in await self._execute(statement, params)}

    async def _execute(self, statement: str, params: Sequence[object]) -> builtins.list[Any]:
        async def run(conn: AsyncConnection[Any]) -> builtins.list[Any]:
            cursor = await conn.execute(statement, params)
            return [] if cursor.description is None else await cursor.fetchall()

        return await self._call(run)

    async def purge(self, finished_before: float, *, dry_run: bool = False) -> tuple[str, ...]:
        which = f"{self._t('sagas')} WHERE status = ANY(%s) AND updated < %s"
        params: list[object] = [[s.value for s in PURGEABLE], finished_before]
        if dry_run:
            statement = f"SELECT saga_id FROM {which}"
        else:
            # One statement (one implicit transaction): the rows, and the log entries of the
            # rows it deleted; the foreign key is checked at the statement's end.
            statement = (
                f"WITH gone AS (DELETE FROM {which} RETURNING saga_id), "
                f"entries AS (DELETE FROM {self._t('events')} "
                "WHERE saga_id IN (SELECT saga_id FROM gone)), "
                f"signals AS (DELETE FROM {self._t('signals')} "
                "WHERE saga_id IN (SELECT saga_id FROM gone)) SELECT saga_id FROM gone"
            )

        async def run(conn: AsyncConnection[Any]) -> tuple[str, ...]:
            cursor = await conn.execute(statement, params)
            return tuple(sorted(row[0] for row in await cursor.fetchall()))

        return await self._call(run)

    # --- helpers ----------------------------------------------------------------------------

    def _t(self, table: str) -> str:
        return f'"{self.schema}".spakky_saga_{table}'

    @property
    def _channel(self) -> str:
        """The NOTIFY channel of this store's wake-ups (one per schema)."""
        return f"spakky_saga_wake_{self.schema}"[:63]

    async def wakeups(self) -> AsyncGenerator[None]:
        """Yield whenever a signal sent by any process woke a suspended saga of this store
        (LISTEN on a connection of its own, outside the pool); raises
        `SagaStoreConnectionError` when that connection fails (the engine listens again
        later, and polls meanwhile)."""
        psycopg, _ = _driver()
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        except psycopg.Error as error:
            raise SagaStoreConnectionError(
                f"cannot listen for wake-ups at {_where(self.dsn)}: {_one_line(error)}",
                transient=True,
            ) from error
        try:
            await conn.execute(f'LISTEN "{self._channel}"')
            async for _ in conn.notifies():
                yield None
        except psycopg.Error as error:
            raise SagaStoreConnectionError(
                f"listening for wake-ups at {_where(self.dsn)} failed: {_one_line(error)}",
                transient=True,
            ) from error
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _open_here(self) -> None:
        """Open this loop's pool if the store was opened (on any loop); else say it is not
        open, or why opening it failed."""
        if self._opened:
            await self.open()
            return
        self._connection()  # raises, saying why

    def _connection(self) -> Any:
        pool = self._pool
        if pool is None:
            if self._open_error is not None:
                raise SagaStoreError(
                    f"{self!r} is not open: opening it failed: {self._open_error}"
                ) from self._open_error
            raise SagaStoreError(f"{self!r} is not open; await store.open() first")
        return pool.connection()

    async def _call[T](self, run: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run a read, or a change that is safe to make twice, with `_retrying`.

        Shielded from its caller's cancellation: the query finishes on its connection, which
        goes back to the pool, and the caller stops waiting at once. Cancelled mid-query,
        psycopg would cancel the query on the server, and if the task is cancelled again
        meanwhile (a task group, a web server or an engine shutting down: `aclose()` while
        the heartbeat renews leases) it closes the connection and logs warnings on stderr.
        A change finished after its caller left is one a crash at that moment would leave:
        a claim or renewal holds its sagas until the lease runs out, no longer."""
        call = self._retrying(lambda conn, _retried: run(conn), write=False)
        task = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_outcome_retrieved)
            raise

    async def _write(self, run: Callable[[AsyncConnection[Any], bool], Awaitable[None]]) -> None:
        """Run a write with `_retrying`; `run` is told whether this is the second try (the
        first may have committed before its connection died)."""
        await self._retrying(run, write=True)

    async def _retrying[T](
        self, run: Callable[[AsyncConnection[Any], bool], Awaitable[T]], *, write: bool
    ) -> T:
        """Run `run` on a pooled connection; once more on a fresh one if the connection was
        lost (a server restart drops every pooled connection: the first call after it would
        otherwise fail). Errors are `SagaStoreError`s. A write opens this loop's pool if need
        be; a read needs the store opened (on some loop) first."""
        psycopg, _ = _driver()
        if self._pool is None:
            await (self.open() if write else self._open_here())
        for retried in (False, True):
            try:
                async with self._connection() as conn:
                    return await run(conn, retried)
            except psycopg.OperationalError as error:
                if retried:
                    what = (
                        "the write failed twice; the saga stays unfinished in the store and "
                        "is recovered later"
                        if write
                        else "lost the connection twice"
                    )
                    raise SagaStoreError(f"PostgreSQL saga store: {what} ({error})") from error
                await self._drop_dead_connections()
            except psycopg.Error as error:
                raise SagaStoreError(f"PostgreSQL saga store: {error}") from error
        raise AssertionError("unreachable: the second try returns or raises")

    async def _drop_dead_connections(self) -> None:
        """After a connection was lost, test the pool's idle connections and replace the dead
        ones: when the server dropped them all (a restart, a failover, an administrator),
        the retry would otherwise take another dead one."""
        pool = self._pool
        if pool is not None:
            await pool.check()

    async def _owned_with(self, conn: AsyncConnection[Any], saga_id: str, owner: object) -> bool:
        cursor = await conn.execute(
            f"SELECT 1 FROM {self._t('sagas')} WHERE saga_id = %s AND owner = %s",
            (saga_id, owner),
        )
        return await cursor.fetchone() is not None

    def _writes(self) -> GroupCommit[_Write]:
        """The running loop's group commit (writes from one loop share round trips)."""
        loop = asyncio.get_running_loop()
        writes = self._group_commits.get(loop)
        if writes is None:
            writes = self._group_commits[loop] = GroupCommit(
                self._flush, _saga_of, concurrency=self._flushes
            )
        return writes

    async def _flush(self, writes: Sequence[_Write]) -> FlushOutcomes:
        """Write a batch of sagas' writes in one statement (one round trip, one commit), each
        applied only where its lease holds. A batch the server refuses as a whole for one
        write's sake (a value it cannot store, a log entry there already) is written again
        one write at a time, so that the refusal stays with the saga that caused it."""
        psycopg, _ = _driver()
        try:
            return await self._write_batch(writes)
        except SagaStoreError as error:
            if len(writes) == 1 or not isinstance(
                error.__cause__, psycopg.DataError | psycopg.IntegrityError
            ):
                raise
        outcomes: list[BaseException | None] = []
        for write in writes:
            try:
                outcomes.extend(await self._write_batch((write,)))
            except SagaStoreError as error:
                outcomes.append(error)
        return outcomes

    async def _write_batch(self, writes: Sequence[_Write]) -> FlushOutcomes:
        outcomes: dict[int, BaseException | None] = {}

        async def run(conn: AsyncConnection[Any], retried: bool) -> None:
            todo = list(enumerate(writes))
            if retried:  # the first try may have committed before its connection died
                there = await self._logged_already(conn, writes)
                outcomes.update((index, None) for index, write in todo if write in there)
                todo = [(index, write) for index, write in todo if write not in there]
                if not todo:
                    return
            if len(todo) == 1:
                write = todo[0][1]
                statements = self._statements
                statement = statements.begin_one if write.begin else statements.append_one
                cursor = await conn.execute(statement, write.alone(), prepare=True)
            else:
                cursor = await conn.execute(
                    self._statements.batch, _batch_params([w for _, w in todo]), prepare=True
                )
            written = {row[0] for row in await cursor.fetchall()}
            for index, write in todo:
                outcomes[index] = (
                    None if write.saga_id in written else await self._refusal(conn, write, retried)
                )

        await self._write(run)
        return [outcomes[index] for index in range(len(writes))]

    async def _logged_already(
        self, conn: AsyncConnection[Any], writes: Sequence[_Write]
    ) -> set[_Write]:
        """The writes whose last log entry is in the store (they were written)."""
        logged = [w for w in writes if w.entries]
        if not logged:
            return set()
        cursor = await conn.execute(
            f"SELECT saga_id, seq FROM {self._t('events')} "
            "WHERE (saga_id, seq) IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
            ([w.saga_id for w in logged], [w.last_seq for w in logged]),
        )
        there = set(await cursor.fetchall())
        return {w for w in logged if (w.saga_id, w.last_seq) in there}

    async def _refusal(
        self, conn: AsyncConnection[Any], write: _Write, retried: bool
    ) -> BaseException | None:
        """Why the batch statement did not write `write` (None: it was written after all)."""
        if write.begin:
            if retried and await self._owned_with(conn, write.saga_id, write.owner):
                return None  # the first try committed before its connection died
            return SagaAlreadyStartedError(write.saga_id)
        return SagaLeaseLostError(write.saga_id, write.owner or "")

    async def _load(self, conn: AsyncConnection[Any], saga_id: str) -> SagaRecord | None:
        cursor = await conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM {self._t('sagas')} WHERE saga_id = %s", (saga_id,)
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        cursor = await conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM {self._t('events')} WHERE saga_id = %s ORDER BY seq",
            (saga_id,),
        )
        events = tuple(StoredEvent(*event) for event in await cursor.fetchall())
        return SagaRecord.from_row(row, events)

    async def _load_many(
        self, conn: AsyncConnection[Any], ids: Sequence[str]
    ) -> builtins.list[SagaRecord]:
        """Sagas with their events, in the order of `ids`: two queries, whatever their number
        (recovery claims hundreds at once)."""
        if not ids:
            return []
        cursor = await conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM {self._t('sagas')} WHERE saga_id = ANY(%s)", (ids,)
        )
        rows = {row[0]: row for row in await cursor.fetchall()}
        cursor = await conn.execute(
            f"SELECT saga_id, {_EVENT_COLUMNS} FROM {self._t('events')} "
            "WHERE saga_id = ANY(%s) ORDER BY saga_id, seq",
            (ids,),
        )
        events: dict[str, list[StoredEvent]] = {}
        for saga_id, *event in await cursor.fetchall():
            events.setdefault(saga_id, []).append(StoredEvent(*event))
        return [
            SagaRecord.from_row(rows[saga_id], tuple(events.get(saga_id, ())))
            for saga_id in ids
            if saga_id in rows
        ]

    async def _prepare(self, conn: AsyncConnection[Any]) -> None:
        """Check the schema, and create (or migrate) it when allowed, under an advisory lock so
        that engines starting together do not race. Refuses a newer version and a schema that
        holds other tables; with `create=False`, reads only (a read-only transaction)."""
        async with conn.transaction():
            if self.create:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
            else:
                await conn.execute("SET TRANSACTION READ ONLY")
            cursor = await conn.execute(
                "SELECT c.relname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                "ORDER BY c.relname",
                (self.schema,),
            )
            tables = [row[0] for row in await cursor.fetchall()]
            if "spakky_saga_schema" not in tables:
                if not self.create:
                    raise SagaStoreNotFoundError(await self._not_found(conn))
                if tables:
                    raise SagaStoreLocationError(
                        f'schema "{self.schema}" at {_where(self.dsn)} holds other tables '
                        f"({', '.join(tables[:5])}) and no saga store; nothing was created: "
                        "give the saga store a schema of its own (schema='sagas', or "
                        "--schema sagas)"
                    )
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await conn.execute(f"CREATE TABLE {self._t('schema')} (version INTEGER NOT NULL)")
                await conn.execute(f"INSERT INTO {self._t('schema')} (version) VALUES (0)")
                version = 0
            else:
                cursor = await conn.execute(f"SELECT version FROM {self._t('schema')}")
                row = await cursor.fetchone()
                version = row[0] if row is not None else 0
            if version > SCHEMA_VERSION:
                raise SagaSchemaVersionError(
                    f'schema "{self.schema}" has saga store schema version {version}, but this '
                    f"version of spakky-saga-typed knows versions up to {SCHEMA_VERSION}; "
                    "upgrade the library (never downgrade it under a store a newer version wrote)"
                )
            if version < SCHEMA_VERSION and not self.create:
                raise SagaSchemaVersionError(
                    f'schema "{self.schema}" has saga store schema version {version} and this '
                    f"version of spakky-saga-typed uses {SCHEMA_VERSION}; opened with "
                    "create=False it is not upgraded: start an engine on it once (it upgrades "
                    "the schema)"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    await conn.execute(statement.replace("{s}", f'"{self.schema}"'))
                await conn.execute(f"UPDATE {self._t('schema')} SET version = %s", (step,))

    async def _not_found(self, conn: AsyncConnection[Any]) -> str:
        """Why there is no store here, and the schemas of this database that hold one."""
        cursor = await conn.execute(
            "SELECT n.nspname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'spakky_saga_schema' AND c.relkind = 'r' ORDER BY n.nspname"
        )
        others = [row[0] for row in await cursor.fetchall()]
        found = (
            f"schemas of this database with a saga store: {', '.join(others[:10])}"
            if others
            else "no schema of this database holds one"
        )
        return (
            f'no saga store in schema "{self.schema}" at {_where(self.dsn)} (did you mean '
            f"--schema / schema=?); {found}; nothing was created"
        )


_NEW_ROW: Final = (
    "saga_id",
    "saga_name",
    "status",
    "fingerprint",
    "structure",
    "policy",
    "data",
    "data_type",
    "codec",
    "owner",
    "lease",
    "failed_step",
    "error",
)
"""A new saga's row as a write carries it (`begin`), in this order."""
_CHANGE: Final = (
    "saga_id",
    "owner",
    "lease",
    "release",
    "status",
    "data",
    "data_type",
    "failed_step",
    "error",
)
"""A change to an owned row as a write carries it (`append`), in this order."""
_SAGA_ID: Final = 0
_NEW_ROW_OWNER: Final = _NEW_ROW.index("owner")
_CHANGE_OWNER: Final = _CHANGE.index("owner")
assert _NEW_ROW[_SAGA_ID] == _CHANGE[_SAGA_ID] == "saga_id"


class _Write(NamedTuple):
    """One saga's write: its row's values (`_NEW_ROW` or `_CHANGE`) and its log entries."""

    saga_id: str
    owner: str | None
    begin: bool
    """A new saga's row (`begin`), else a change to an owned one (`append`)."""
    values: tuple[object, ...]
    entries_json: str
    """The log entries as JSON arrays joined by commas (no brackets), or ''."""
    entries: int
    release: bool
    last_seq: int

    @classmethod
    def of(
        cls,
        values: tuple[object, ...],
        events: Sequence[StoredEvent],
        *,
        begin: bool,
        release: bool,
    ) -> _Write:
        saga_id = cast(str, values[_SAGA_ID])
        owner = cast(str | None, values[_NEW_ROW_OWNER if begin else _CHANGE_OWNER])
        last_seq = events[-1].seq if events else 0
        entries = _entries(saga_id, events)
        return cls(saga_id, owner, begin, values, entries, len(events), release, last_seq)

    def alone(self) -> dict[str, object]:
        """The parameters of the statement that writes it alone (`_Statements.begin_one`,
        `_Statements.append_one`)."""
        params = dict(zip(_NEW_ROW if self.begin else _CHANGE, self.values, strict=True))
        params["entries"] = f"[{self.entries_json}]"
        return params


def _outcome_retrieved(task: asyncio.Future[Any]) -> None:
    """A shielded read its caller stopped waiting for: its error is nobody's to raise (taking
    it spares asyncio's "exception was never retrieved")."""
    if not task.cancelled():
        task.exception()


def _saga_of(write: _Write) -> str:
    return write.saga_id


_dumps_escaped: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _dumps(value: object) -> str:
    """JSON for a batch's parameters, compact. pydantic-core's encoder does it in Rust (about
    3 us for a step's entries, against 13 for the standard library's): on PostgreSQL's path
    this is per write, on the event loop. A lone surrogate (an error text decoded with
    `surrogateescape`) is not UTF-8: the standard library escapes it instead, and the server
    refuses that write alone. A NaN is written as such and refused by the server (JSON has
    none), for its own write only as well."""
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return _dumps_escaped(value)


def _entries(saga_id: str, events: Sequence[StoredEvent]) -> str:
    """The entries as JSON arrays (saga id first, then the columns), joined by commas."""
    if not events:
        return ""
    return _dumps([(saga_id, *event) for event in events])[1:-1]


def _batch_params(writes: Sequence[_Write]) -> tuple[str, str, str]:
    """The batch statement's three parameters: the new rows, the changes, the entries."""
    begins = _dumps([w.values for w in writes if w.begin])
    changes = _dumps([w.values for w in writes if not w.begin])
    entries = ",".join(w.entries_json for w in writes if w.entries)
    return begins, changes, f"[{entries}]"


class _Statements(NamedTuple):
    """The write statements of one store (they name its schema)."""

    batch: str
    """Any number of sagas' writes, given as JSON (`_batch_params`)."""
    begin_one: str
    """One new saga's row and entries (`_Write.alone`)."""
    append_one: str
    """One change to an owned row, and its entries (`_Write.alone`)."""


def _statements(table: Callable[[str], str]) -> _Statements:
    """The write statements. A batch writes new sagas' rows (a saga id that exists is left
    alone), changes to rows their writer still owns (locked in saga id order, as `renew`
    locks them, so that the two never deadlock), and the log entries of exactly the rows
    written; it returns the ids of the sagas written. Its parameters are three JSON texts:
    nothing is adapted value by value on the client. A write alone (one saga at a time, the
    idle case) goes out as the same thing without the joins and the sort, which costs the
    server less. A change extends the lease only when less than half of it is left (the
    heartbeat renews it every third), and leaves indexed columns as they are unless the
    status changes, so that most updates are HOT (no index entry written). The leading
    comment names them in `pg_stat_activity`."""
    sagas, events = table("sagas"), table("events")
    columns = (
        "saga_id, saga_name, status, fingerprint, structure, policy, data, data_type, codec, "
        "created, updated, owner, lease_expires, failed_step, error"
    )
    change = f"""updated = {_NOW},
    lease_expires = CASE WHEN c.release THEN NULL
      WHEN s.lease_expires < {_NOW} + c.lease / 2 THEN {_NOW} + c.lease
      ELSE s.lease_expires END,
    owner = CASE WHEN c.release THEN NULL ELSE s.owner END,
    status = COALESCE(c.status, s.status), data = COALESCE(c.data, s.data),
    data_type = COALESCE(c.data_type, s.data_type),
    failed_step = COALESCE(c.failed_step, s.failed_step), error = COALESCE(c.error, s.error)"""

    def entries_of(written: str, parameter: str) -> str:
        return f"""added AS (
  INSERT INTO {events} (saga_id, seq, kind, at, step_key, step, attempt, elapsed, error_type,
    error, data, data_type, owner, traceback)
  SELECT w.saga_id, (x->>1)::int, x->>2, (x->>3)::float8, x->>4, x->>5, (x->>6)::int,
    (x->>7)::float8, x->>8, x->>9, (x->>10)::jsonb, x->>11, x->>12, x->>13
  FROM jsonb_array_elements({parameter}::jsonb) AS x JOIN {written} AS w ON w.saga_id = x->>0
  RETURNING saga_id)"""

    batch = f"""/* spakky-saga write */
WITH new_rows AS (
  SELECT x->>0 AS saga_id, x->>1 AS saga_name, x->>2 AS status, x->>3 AS fingerprint,
    x->>4 AS structure, x->>5 AS policy, (x->>6)::jsonb AS data, x->>7 AS data_type,
    x->>8 AS codec, x->>9 AS owner, (x->>10)::float8 AS lease, x->>11 AS failed_step,
    x->>12 AS error
  FROM jsonb_array_elements(%s::jsonb) AS x),
begun AS (
  INSERT INTO {sagas} ({columns})
  SELECT saga_id, saga_name, status, fingerprint, structure, policy, data, data_type, codec,
    {_NOW}, {_NOW}, owner, {_NOW} + lease, failed_step, error FROM new_rows
  ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id),
changes AS (
  SELECT x->>0 AS saga_id, x->>1 AS owner, (x->>2)::float8 AS lease,
    (x->>3)::boolean AS release, x->>4 AS status, (x->>5)::jsonb AS data, x->>6 AS data_type,
    x->>7 AS failed_step, x->>8 AS error
  FROM jsonb_array_elements(%s::jsonb) AS x),
locked AS (
  SELECT s.saga_id FROM {sagas} AS s JOIN changes AS c
    ON s.saga_id = c.saga_id AND s.owner = c.owner
  ORDER BY s.saga_id FOR UPDATE OF s),
owned AS (
  UPDATE {sagas} AS s SET {change}
  FROM changes AS c, locked AS l
  WHERE s.saga_id = c.saga_id AND l.saga_id = c.saga_id AND s.owner = c.owner
  RETURNING s.saga_id),
written AS (SELECT saga_id FROM begun UNION ALL SELECT saga_id FROM owned),
{entries_of("written", "%s")}
SELECT saga_id FROM written"""
    begin_one = f"""/* spakky-saga write */
WITH begun AS (
  INSERT INTO {sagas} ({columns})
  VALUES (%(saga_id)s, %(saga_name)s, %(status)s, %(fingerprint)s, %(structure)s,
    %(policy)s, %(data)s::jsonb, %(data_type)s, %(codec)s, {_NOW}, {_NOW}, %(owner)s,
    {_NOW} + %(lease)s, %(failed_step)s, %(error)s)
  ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id),
{entries_of("begun", "%(entries)s")}
SELECT saga_id FROM begun"""
    append_one = f"""/* spakky-saga write */
WITH c AS (
  SELECT %(saga_id)s::text AS saga_id, %(owner)s::text AS owner, %(lease)s::float8 AS lease,
    %(release)s::boolean AS release,
    %(status)s::text AS status, %(data)s::jsonb AS data, %(data_type)s::text AS data_type,
    %(failed_step)s::text AS failed_step, %(error)s::text AS error),
owned AS (
  UPDATE {sagas} AS s SET {change}
  FROM c WHERE s.saga_id = c.saga_id AND s.owner = c.owner RETURNING s.saga_id),
{entries_of("owned", "%(entries)s")}
SELECT saga_id FROM owned"""
    return _Statements(batch, begin_one, append_one)


_TRANSIENT: Final = (
    "connection refused",
    "timeout expired",
    "timed out",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "too many clients",
    "remaining connection slots",
    "server closed the connection unexpectedly",
    "no route to host",
    "network is unreachable",
    "connection reset",
)
"""Connection errors that may pass if tried again (libpq gives no SQLSTATE for them)."""

_ADVICE: Final = (
    (re.compile(r'database "[^"]*" does not exist'), "check the database name in the DSN"),
    (re.compile(r'role "[^"]*" does not exist'), "check the user name in the DSN"),
    (
        re.compile(r"authentication failed|no password supplied|pg_hba\.conf|permission denied"),
        "check the user and password in the DSN (and the server's pg_hba.conf)",
    ),
    (
        re.compile(r"resolve host|translate host name|name or service not known", re.IGNORECASE),
        "check the host name in the DSN",
    ),
)


def _diagnose(error: BaseException, dsn: str) -> tuple[bool, str]:
    """(whether retrying may help, what to do) for a failed connection."""
    psycopg, _ = _driver()
    text = str(error)
    if isinstance(error, TimeoutError):
        return True, "check that the server is running and the host and port in the DSN"
    if isinstance(error, psycopg.ProgrammingError):  # the DSN itself did not parse
        if re.search(r"[?&]schema=", dsn) or '"schema"' in text:
            return False, (
                "schema is not a connection option: take it out of the DSN and pass "
                "schema=... (--schema ...) instead"
            )
        return False, (
            "the DSN is not a libpq connection string or URL; write it as "
            "postgresql://user:password@host:5432/database or 'host=... dbname=... user=...'"
        )
    for pattern, advice in _ADVICE:
        if pattern.search(text):
            return False, advice
    lowered = text.lower()
    if any(marker in lowered for marker in _TRANSIENT):
        return True, (
            "check that the server is running and the host and port in the DSN, or give it "
            "longer with open_timeout="
        )
    if "FATAL:" in text:  # the server answered and refused: trying again will not help
        return False, "the server refused the connection; check the DSN"
    return True, "check that the server is running and the host and port in the DSN"


def _where(dsn: str) -> str:
    """The server and database a DSN names, without its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - the optional driver

        parts = conninfo_to_dict(dsn)
    except Exception:  # a DSN that does not parse is described as such
        return "a DSN that does not parse"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    database = f"/{parts['dbname']}" if parts.get("dbname") else ""
    return f"{user}{host}{port}{database}"


def _one_line(error: BaseException) -> str:
    """psycopg's message on one line, without its "connection failed: ... failed:" prefix."""
    text = " ".join(str(error).split())
    return re.sub(r"^connection failed: connection to server at .*? failed: ", "", text)


def _driver() -> tuple[Any, Any]:
    """psycopg and psycopg_pool, imported on first use: the `postgres` extra is optional, and
    `import spakky_saga` must not pay for (or require) a database driver."""
    try:
        import psycopg  # noqa: PLC0415 - optional dependency, imported when first needed
        import psycopg_pool  # noqa: PLC0415 - optional dependency, imported when first needed
    except ImportError as error:  # pragma: no cover - the extra is installed in tests
        raise SagaStoreError(
            "PostgresSagaStore needs psycopg 3 and psycopg-pool: "
            "pip install 'spakky-saga-typed[postgres]'"
        ) from error
    return psycopg, psycopg_pool
