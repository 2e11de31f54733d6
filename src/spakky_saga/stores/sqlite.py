"""`SqliteSagaStore`: the saga log in one SQLite file, the embedded default.

Design:
- WAL mode; `synchronous` is chosen on purpose: "FULL" (default) survives power loss (an fsync
  per commit), "NORMAL" survives a process crash but may lose the last commits on power loss.
- One connection, used only by one worker thread: blocking SQLite calls (and fsyncs) never
  run on the event loop. Writes queued while the worker is busy are committed together in
  one transaction (group commit), each in its own savepoint so that one refused write (a lost
  lease) does not undo the others: many sagas in flight share fsyncs.
- A versioned schema (`spakky_saga_schema`), created on first use; a file from a newer
  version, a damaged file, or a database holding other tables is refused with a clear error.
- Nothing is written to a file before it is known to be a saga store or empty: the file's
  size is checked against its header (a truncated file is refused as damaged), its tables
  are read, and only then is it switched to WAL. `create=False` opens only an existing store.
- SQL that SQLite 3.40 (what Python 3.12 ships here) runs: no `unixepoch('subsec')`; times
  are epoch seconds computed in Python.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote

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
    SagaStoreDamagedError,
    SagaStoreLocationError,
    SagaStoreNotFoundError,
    SagaUpdate,
    StoredEvent,
    StoredSignal,
    StoredStatus,
)
from spakky_saga.stores.listing import (
    count_statement,
    nodes_statement,
    page_statement,
    wake_statement,
)

SCHEMA_VERSION: Final = 6
"""Bump with a numbered migration in `_MIGRATIONS` when the tables change. 2: who asked to
cancel a saga, and when (`spakky-saga cancel`). 3: the indexes the console's list pages
(`query`) and counts use, and the operators' audit trail. 4: failures' traceback text in the
log, and when each engine last renewed its leases (the console's nodes view); 5: signals
(`engine.signal`), and when a WAITING saga wakes; 6: each saga gets an integer key, and the
log is kept by it (`_LOG_BY_SAGA_KEY`)."""

_SAGA_TABLE_COLUMNS: Final = (  # version 5's columns, in order: what version 6 copies
    "saga_id, saga_name, status, fingerprint, structure, policy, data, data_type, codec, "
    "created, updated, owner, lease_expires, failed_step, error, cancel_requested_by, "
    "cancel_requested_at, wake_at"
)
_EVENT_TABLE_COLUMNS: Final = (  # the same for the log, without its saga id
    "seq, kind, at, step_key, step, attempt, elapsed, error_type, error, data, data_type, "
    "owner, traceback"
)

_LOG_BY_SAGA_KEY: Final = (
    # Until version 5 the log was a WITHOUT ROWID table keyed by (saga_id, seq). Saga ids are
    # random, so each write put its entries (about 400 bytes with the data) somewhere in the
    # middle of that B-tree, and a batch of 100 sagas' writes dirtied a page per saga. Now
    # each saga has an integer key, given in the order sagas start, and the log is a rowid
    # table found by a unique index on (saga_key, seq): entries are appended at the table's
    # end, and the index entries of the sagas in flight, which started at about the same
    # time, share a few pages. Measured in raw SQL, a batch of 50 writes: 28 -> 9 us a write
    # with synchronous=NORMAL, 33 -> 15 with FULL (benchmarks/README.md, issue 15, third
    # pass). Both tables are copied once, in the
    # migration's transaction.
    """CREATE TABLE spakky_saga_sagas_v6 (
        saga_key INTEGER PRIMARY KEY,
        saga_id TEXT NOT NULL UNIQUE,
        saga_name TEXT NOT NULL,
        status TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        structure TEXT NOT NULL,
        policy TEXT NOT NULL,
        data TEXT NOT NULL,
        data_type TEXT NOT NULL,
        codec TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        owner TEXT,
        lease_expires REAL,
        failed_step TEXT,
        error TEXT,
        cancel_requested_by TEXT,
        cancel_requested_at REAL,
        wake_at REAL
    )""",
    f"INSERT INTO spakky_saga_sagas_v6 ({_SAGA_TABLE_COLUMNS}) "
    f"SELECT {_SAGA_TABLE_COLUMNS} FROM spakky_saga_sagas ORDER BY created, saga_id",
    """CREATE TABLE spakky_saga_events_v6 (
        saga_key INTEGER NOT NULL REFERENCES spakky_saga_sagas_v6 (saga_key),
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        step_key TEXT,
        step TEXT,
        attempt INTEGER NOT NULL,
        elapsed REAL NOT NULL,
        error_type TEXT,
        error TEXT,
        data TEXT,
        data_type TEXT,
        owner TEXT,
        traceback TEXT
    )""",
    f"INSERT INTO spakky_saga_events_v6 (saga_key, {_EVENT_TABLE_COLUMNS}) "
    f"SELECT s.saga_key, {', '.join('e.' + c for c in _EVENT_TABLE_COLUMNS.split(', '))} "
    "FROM spakky_saga_events AS e JOIN spakky_saga_sagas_v6 AS s ON s.saga_id = e.saga_id "
    "ORDER BY s.saga_key, e.seq",
    "DROP TABLE spakky_saga_events",
    "DROP TABLE spakky_saga_sagas",  # and its indexes, made again below
    # renaming also renames the log's reference to it
    "ALTER TABLE spakky_saga_sagas_v6 RENAME TO spakky_saga_sagas",
    "ALTER TABLE spakky_saga_events_v6 RENAME TO spakky_saga_events",
    "CREATE UNIQUE INDEX spakky_saga_events_log ON spakky_saga_events (saga_key, seq)",
    "CREATE INDEX spakky_saga_sagas_status ON spakky_saga_sagas (status, lease_expires)",
    "CREATE INDEX spakky_saga_sagas_created ON spakky_saga_sagas (created, saga_id)",
    "CREATE INDEX spakky_saga_sagas_wake ON spakky_saga_sagas (status, wake_at)",
)

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE spakky_saga_sagas (
            saga_id TEXT PRIMARY KEY,
            saga_name TEXT NOT NULL,
            status TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            structure TEXT NOT NULL,
            policy TEXT NOT NULL,
            data TEXT NOT NULL,
            data_type TEXT NOT NULL,
            codec TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            owner TEXT,
            lease_expires REAL,
            failed_step TEXT,
            error TEXT
        )""",
        "CREATE INDEX spakky_saga_sagas_status ON spakky_saga_sagas (status, lease_expires)",
        """CREATE TABLE spakky_saga_events (
            saga_id TEXT NOT NULL REFERENCES spakky_saga_sagas (saga_id),
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            at REAL NOT NULL,
            step_key TEXT,
            step TEXT,
            attempt INTEGER NOT NULL,
            elapsed REAL NOT NULL,
            error_type TEXT,
            error TEXT,
            data TEXT,
            data_type TEXT,
            owner TEXT,
            PRIMARY KEY (saga_id, seq)
        ) WITHOUT ROWID""",
    ),
    2: (
        "ALTER TABLE spakky_saga_sagas ADD COLUMN cancel_requested_by TEXT",
        "ALTER TABLE spakky_saga_sagas ADD COLUMN cancel_requested_at REAL",
    ),
    3: (
        # Sorted by creation, a list page reads this index in order and stops after a page
        # (keyset paging). `updated` stays unindexed on purpose: every write changes it, and
        # an index on it would cost every write an index update (on PostgreSQL, the HOT
        # updates the write path relies on); a page by update time is a top-N sort instead.
        "CREATE INDEX spakky_saga_sagas_created ON spakky_saga_sagas (created, saga_id)",
        # operators' actions (the console's audit trail): no foreign key, they outlive purge
        """CREATE TABLE spakky_saga_audit (
            saga_id TEXT NOT NULL,
            at REAL NOT NULL,
            action TEXT NOT NULL,
            by TEXT NOT NULL,
            origin TEXT NOT NULL,
            outcome TEXT NOT NULL
        )""",
        "CREATE INDEX spakky_saga_audit_saga ON spakky_saga_audit (saga_id, at)",
    ),
    4: (
        # NULL in the entries written before: an old log stays readable, without tracebacks
        "ALTER TABLE spakky_saga_events ADD COLUMN traceback TEXT",
        # one row per engine, written by its heartbeat (`renew`): the console's nodes view
        """CREATE TABLE spakky_saga_nodes (
            owner TEXT PRIMARY KEY,
            renewed REAL NOT NULL
        )""",
    ),
    5: (
        # signals sent to sagas (waits, docs/waits.md): kept until their saga is purged
        """CREATE TABLE spakky_saga_signals (
            signal_id TEXT PRIMARY KEY,
            saga_id TEXT NOT NULL,
            signal_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            codec TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX spakky_saga_signals_saga ON spakky_saga_signals (saga_id, at)",
        # when a WAITING (suspended) saga is to be claimed again: None, only by a signal
        "ALTER TABLE spakky_saga_sagas ADD COLUMN wake_at REAL",
        "CREATE INDEX spakky_saga_sagas_wake ON spakky_saga_sagas (status, wake_at)",
    ),
    6: _LOG_BY_SAGA_KEY,
}

_SAGA_COLUMNS: Final = ", ".join(SAGA_COLUMNS)
_AUDIT: Final = ", ".join(AuditEntry._fields)
_SIGNAL: Final = ", ".join(StoredSignal._fields)
_WAITING: Final = StoredStatus.WAITING.value
_RUNNING: Final = StoredStatus.RUNNING.value
_EVENT_COLUMNS: Final = ", ".join(StoredEvent._fields)  # a row is a StoredEvent, in order

type Synchronous = Literal["FULL", "NORMAL"]


class _Write(NamedTuple):
    """One saga's write: a new saga's row (`record`, from `begin`) or a change to a row its
    writer owns (`update`, from `append`), with its log entries. The worker writes many in
    one transaction."""

    saga_id: str
    owner: str | None
    record: SagaRecord | None
    update: SagaUpdate | None
    events: Sequence[StoredEvent]
    lease_seconds: float
    extend: bool = False
    """Whether an `append` extends the lease (only when less than half of it is left)."""


class _TurnBatch:
    """Writes made on one event loop in one turn, for one inline commit, and their callers'
    futures."""

    __slots__ = ("futures", "loop", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.writes: list[_Write] = []
        self.futures: list[asyncio.Future[None]] = []


class _Job:
    """Work for the worker's connection, and the loop future its outcome goes to: a write
    (`write`, batched with others) or a function (`run`, in a transaction of its own)."""

    __slots__ = ("future", "handed_back", "loop", "run", "write")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None,
        *,
        run: Callable[[sqlite3.Connection], Any] | None = None,
        write: _Write | None = None,
    ) -> None:
        self.run = run
        self.write = write
        self.loop = loop
        self.future: asyncio.Future[Any] | None = None if loop is None else loop.create_future()
        self.handed_back: threading.Event | None = None
        """Set by the worker once the outcome is on its way (only on a virtual-time loop)."""


type _Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


def _hand_back(
    jobs: Sequence[_Job], results: Sequence[Any], errors: Sequence[BaseException | None]
) -> None:
    """Hand the jobs' outcomes to their loops (from the worker thread): one wake-up per loop
    for the whole batch, not one per job. Nobody waits for a job without a loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for job, result, error in zip(jobs, results, errors, strict=True):
        if job.loop is not None and job.future is not None:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
    for loop, outcomes in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, outcomes)
    for job in jobs:
        if job.handed_back is not None:
            job.handed_back.set()


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteSagaStore:
    """A `SagaStore` in the SQLite file at `path`: a file path or a `sqlite:///relative.db` /
    `sqlite:////absolute/sagas.db` URL.

    With `create=True` (the default, for engines) a missing file is created; with
    `create=False` (for commands that only read, or act on sagas already there) `open()`
    creates nothing and raises `SagaStoreNotFoundError` when there is no saga store at `path`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        inline_writes: bool | None = None,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(
                f"SqliteSagaStore(synchronous={synchronous!r}): use 'FULL' (survives power "
                "loss) or 'NORMAL' (survives a process crash, faster)"
            )
        self.path = _file_of(path)
        self.create = create
        self.synchronous: Synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._ready = False
        self._inline_enabled = synchronous == "NORMAL" if inline_writes is None else inline_writes
        self._inline: sqlite3.Connection | None = None
        self._inline_lock = threading.Lock()
        self._inline_since_checkpoint = 0
        self._worker_writes = 0
        """Writes handed to the worker and not answered yet: while there are some, a new write
        joins them rather than going inline (they share a commit)."""
        self._inline_turn: str | None = None
        """The saga that wrote inline in this turn of the event loop, if one did."""
        self._turn_batch: _TurnBatch | None = None
        """The other sagas' writes of this turn, committed together at the start of the next
        one (`_in_turn_batch`)."""
        self._lease_until: dict[str, float] = {}
        """When the leases this store object set last run out at the earliest (begin, claim,
        reopen, renew, an extending append): an `append` extends a lease only when less than
        half of it is left, so most writes leave the lease and its index alone."""

    def __repr__(self) -> str:
        return f"SqliteSagaStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    def __str__(self) -> str:
        return f"SQLite saga store {self.path}"

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the worker and create (or check) the schema. Works from any event loop: the
        worker answers each call on the loop that made it."""
        if self._ready:
            return
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name=f"spakky-saga-sqlite:{self.path.name}", daemon=True
                )
                self._thread.start()
        # Idempotent, if two loops open the store at once.
        await self._submit(_Job(asyncio.get_running_loop(), run=self._prepare))
        self._ready = True

    async def close(self) -> None:
        with self._starting:
            thread, self._thread = self._thread, None
            self._ready = False
        with self._inline_lock:
            inline, self._inline = self._inline, None
            if inline is not None:
                inline.close()
        if thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)

    # --- the store contract -----------------------------------------------------------------

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        now = self._clock()
        await self._write(_Write(record.saga_id, record.owner, record, None, events, lease_seconds))
        self._lease_until[record.saga_id] = now + lease_seconds

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        now = self._clock()
        extend = not update.release and (
            self._lease_until.get(saga_id, 0.0) < now + lease_seconds / 2
        )
        try:
            await self._write(_Write(saga_id, owner, None, update, events, lease_seconds, extend))
        except SagaLeaseLostError:
            self._lease_until.pop(saga_id, None)
            raise
        if update.release:
            self._lease_until.pop(saga_id, None)
        elif extend:
            self._lease_until[saga_id] = now + lease_seconds

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        def run(db: sqlite3.Connection) -> list[SagaRecord]:
            now = self._clock()
            wanted = ""
            params: list[object] = [s.value for s in UNFINISHED]
            params.append(now)
            if saga_ids:
                wanted = f" AND saga_id IN ({', '.join('?' * len(saga_ids))})"
                params.extend(saga_ids)
            rows = db.execute(
                f"SELECT saga_id FROM spakky_saga_sagas WHERE (status IN (?, ?) "
                f"AND (owner IS NULL OR lease_expires <= ?) OR status = ? AND wake_at <= ?)"
                f"{wanted} ORDER BY created LIMIT ?",
                (*params[:3], _WAITING, now, *params[3:], limit),
            ).fetchall()
            claimed = []
            for (saga_id,) in rows:
                db.execute(
                    "UPDATE spakky_saga_sagas SET owner = ?, lease_expires = ?, wake_at = NULL, "
                    "status = CASE status WHEN ? THEN ? ELSE status END WHERE saga_id = ?",
                    (owner, now + lease_seconds, _WAITING, _RUNNING, saga_id),
                )
                claimed.append(_load(db, saga_id))
            return [r for r in claimed if r is not None]

        now = self._clock()
        result: list[SagaRecord] = await self._call(run)
        self._lease_until.update((record.saga_id, now + lease_seconds) for record in result)
        return result

    async def reopen(self, saga_id: str, owner: str, lease_seconds: float) -> SagaRecord:
        def run(db: sqlite3.Connection) -> SagaRecord:
            changed = db.execute(
                "UPDATE spakky_saga_sagas SET status = ?, owner = ?, lease_expires = ? "
                "WHERE saga_id = ? AND status = ?",
                (
                    StoredStatus.COMPENSATING.value,
                    owner,
                    self._clock() + lease_seconds,
                    saga_id,
                    StoredStatus.COMPENSATION_FAILED.value,
                ),
            ).rowcount
            record = _load(db, saga_id)
            if changed != 1 or record is None:
                state = "unknown" if record is None else record.status.value
                raise SagaStoreError(
                    f"saga {saga_id} is {state}; only a COMPENSATION_FAILED saga can have its "
                    "compensation retried"
                )
            return record

        now = self._clock()
        result: SagaRecord = await self._call(run)
        self._lease_until[saga_id] = now + lease_seconds
        return result

    async def renew(self, owner: str, saga_ids: Sequence[str], lease_seconds: float) -> Renewal:
        if not saga_ids:
            return Renewal(set(), {})

        def run(db: sqlite3.Connection) -> Renewal:
            marks = ", ".join("?" * len(saga_ids))
            now = self._clock()
            db.execute(
                f"UPDATE spakky_saga_sagas SET lease_expires = ? "
                f"WHERE owner = ? AND saga_id IN ({marks})",
                (now + lease_seconds, owner, *saga_ids),
            )
            db.execute(
                "INSERT INTO spakky_saga_nodes (owner, renewed) VALUES (?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET renewed = excluded.renewed",
                (owner, now),
            )
            rows = db.execute(
                "SELECT saga_id, status, cancel_requested_by, cancel_requested_at "
                f"FROM spakky_saga_sagas WHERE owner = ? AND saga_id IN ({marks})",
                (owner, *saga_ids),
            ).fetchall()
            return Renewal(
                {row[0] for row in rows},
                {
                    saga_id: CancelRequest(by, at)
                    for saga_id, status, by, at in rows
                    if by is not None and status == StoredStatus.RUNNING.value
                },
            )

        now = self._clock()
        result: Renewal = await self._call(run)
        self._lease_until.update((saga_id, now + lease_seconds) for saga_id in result.kept)
        return result

    async def request_cancel(self, saga_id: str, by: str) -> SagaRecord | None:
        def run(db: sqlite3.Connection) -> SagaRecord | None:
            now = self._clock()
            db.execute(
                "UPDATE spakky_saga_sagas SET cancel_requested_by = ?, cancel_requested_at = ?, "
                "wake_at = CASE status WHEN ? THEN ? ELSE wake_at END "
                "WHERE saga_id = ? AND status IN (?, ?) AND cancel_requested_at IS NULL",
                (by, now, _WAITING, now, saga_id, _RUNNING, _WAITING),
            )
            row = db.execute(
                f"SELECT {_SAGA_COLUMNS} FROM spakky_saga_sagas WHERE saga_id = ?", (saga_id,)
            ).fetchone()
            return None if row is None else SagaRecord.from_row(row)

        result: SagaRecord | None = await self._call(run)
        return result

    async def send_signal(self, signal: StoredSignal) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            status = db.execute(
                "SELECT status FROM spakky_saga_sagas WHERE saga_id = ?", (signal.saga_id,)
            ).fetchone()
            row = db.execute(
                f"SELECT {_SIGNAL} FROM spakky_saga_signals WHERE signal_id = ?",
                (signal.signal_id,),
            ).fetchone()
            existing = None if row is None else StoredSignal(*row)
            if not check_send(None if status is None else status[0], existing, signal):
                return False
            db.execute(
                f"INSERT INTO spakky_saga_signals ({_SIGNAL}) VALUES (?, ?, ?, ?, ?, ?)", signal
            )
            db.execute(  # a suspended saga wakes: the next claim takes it
                "UPDATE spakky_saga_sagas SET wake_at = ? WHERE saga_id = ? AND status = ?",
                (self._clock(), signal.saga_id, _WAITING),
            )
            return True

        stored: bool = await self._call(run)
        return stored

    async def suspend(self, saga_id: str, owner: str, wake_at: float | None, seen: int) -> None:
        def run(db: sqlite3.Connection) -> int:
            now = self._clock()
            return db.execute(
                "UPDATE spakky_saga_sagas SET status = ?, owner = NULL, lease_expires = NULL, "
                "updated = ?, wake_at = CASE WHEN (SELECT COUNT(*) FROM spakky_saga_signals "
                "WHERE saga_id = ?) > ? THEN ? ELSE ? END WHERE saga_id = ? AND owner = ?",
                (_WAITING, now, saga_id, seen, now, wake_at, saga_id, owner),
            ).rowcount

        changed: int = await self._call(run)
        self._lease_until.pop(saga_id, None)
        if changed != 1:
            raise SagaLeaseLostError(saga_id, owner)

    async def signals(self, saga_id: str) -> builtins.list[StoredSignal]:
        def run(db: sqlite3.Connection) -> builtins.list[StoredSignal]:
            rows = db.execute(
                f"SELECT {_SIGNAL} FROM spakky_saga_signals WHERE saga_id = ? "
                "ORDER BY at, signal_id",
                (saga_id,),
            )
            return [StoredSignal(*row) for row in rows]

        result: builtins.list[StoredSignal] = await self._call(run)
        return result

    async def load(self, saga_id: str) -> SagaRecord | None:
        result: SagaRecord | None = await self._call(lambda db: _load(db, saga_id))
        return result

    async def list(
        self, statuses: Sequence[StoredStatus] = (), limit: int = 100
    ) -> list[SagaRecord]:
        def run(db: sqlite3.Connection) -> list[SagaRecord]:
            where = ""
            params: list[object] = []
            if statuses:
                where = f" WHERE status IN ({', '.join('?' * len(statuses))})"
                params = [s.value for s in statuses]
            rows = db.execute(
                f"SELECT {_SAGA_COLUMNS} FROM spakky_saga_sagas{where} "
                "ORDER BY updated DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [SagaRecord.from_row(row) for row in rows]

        result: list[SagaRecord] = await self._call(run)
        return result

    async def query(self, query: SagaQuery) -> SagaPage:
        statement, params = page_statement(query, "spakky_saga_sagas", _SAGA_COLUMNS, "?")

        def run(db: sqlite3.Connection) -> SagaPage:
            rows = db.execute(statement, params).fetchall()
            return query.page([SagaRecord.from_row(row) for row in rows], len(rows) > query.limit)

        result: SagaPage = await self._call(run)
        return result

    async def count_by_status(self, query: SagaQuery) -> dict[StoredStatus, int]:
        statement, params = count_statement(query, "spakky_saga_sagas", "?")

        def run(db: sqlite3.Connection) -> dict[StoredStatus, int]:
            return {StoredStatus(s): n for s, n in db.execute(statement, params).fetchall()}

        result: dict[StoredStatus, int] = await self._call(run)
        return result

    async def audit(self, entry: AuditEntry) -> None:
        await self._call(
            lambda db: db.execute(
                f"INSERT INTO spakky_saga_audit ({_AUDIT}) VALUES (?, ?, ?, ?, ?, ?)", entry
            )
        )

    async def audit_trail(self, saga_id: str) -> builtins.list[AuditEntry]:
        def run(db: sqlite3.Connection) -> builtins.list[AuditEntry]:
            rows = db.execute(
                f"SELECT {_AUDIT} FROM spakky_saga_audit WHERE saga_id = ? ORDER BY at", (saga_id,)
            )
            return [AuditEntry(*row) for row in rows]

        result: builtins.list[AuditEntry] = await self._call(run)
        return result

    async def nodes(self) -> builtins.list[EngineNode]:
        statement, params = nodes_statement("spakky_saga_sagas", "spakky_saga_nodes", "?")

        def run(db: sqlite3.Connection) -> builtins.list[EngineNode]:
            return [EngineNode(*row) for row in db.execute(statement, params)]

        result: builtins.list[EngineNode] = await self._call(run)
        return result

    async def wake_times(
        self, saga_ids: Sequence[str] = (), *, due_by: float | None = None, limit: int = 100
    ) -> dict[str, float]:
        statement, params = wake_statement("spakky_saga_sagas", "?", saga_ids, due_by, limit)

        def run(db: sqlite3.Connection) -> dict[str, float]:
            return {saga_id: wake_at for saga_id, wake_at in db.execute(statement, params)}

        result: dict[str, float] = await self._call(run)
        return result

    async def purge(self, finished_before: float, *, dry_run: bool = False) -> tuple[str, ...]:
        def run(db: sqlite3.Connection) -> tuple[str, ...]:
            # One transaction (the job's): the ids read and the rows deleted are the same
            # sagas. The status index finds them; the log's (saga_key, seq) index, their
            # entries.
            which = (
                f"FROM spakky_saga_sagas WHERE status IN ({', '.join('?' * len(PURGEABLE))}) "
                "AND updated < ?"
            )
            params = (*(s.value for s in PURGEABLE), finished_before)
            gone = tuple(
                row[0] for row in db.execute(f"SELECT saga_id {which} ORDER BY saga_id", params)
            )
            if gone and not dry_run:
                db.execute(
                    f"DELETE FROM spakky_saga_events WHERE saga_key IN (SELECT saga_key {which})",
                    params,
                )
                db.execute(
                    f"DELETE FROM spakky_saga_signals WHERE saga_id IN (SELECT saga_id {which})",
                    params,
                )
                db.execute(f"DELETE {which}", params)
            return gone

        result: tuple[str, ...] = await self._call(run)
        return result

    # --- the worker thread -------------------------------------------------------------------

    async def _call(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `run` on the worker's connection, in a transaction of its own."""
        if not self._ready:
            await self.open()
        return await self._submit(_Job(asyncio.get_running_loop(), run=run))

    async def _write(self, write: _Write) -> None:
        """Write inline when that is cheaper (see `_try_inline`, `_in_turn_batch`), else
        through the worker, with the other writes waiting there."""
        if not self._ready:
            await self.open()
        if self._inline_enabled and not self._worker_writes:
            turn = self._inline_turn
            if turn is None or turn == write.saga_id:
                if self._try_inline(write):
                    return
            elif await self._in_turn_batch(write):
                return
        await self._submit(_Job(asyncio.get_running_loop(), write=write))

    def _try_inline(self, write: _Write) -> bool:
        """With synchronous=NORMAL a commit is a write to the WAL, no fsync (about 15 us): it
        costs less on the loop's thread than the round trip to the worker. The first saga to
        write in a turn of the event loop commits at once; the others that write in the same
        turn join one batch, committed at the start of the next turn (`_in_turn_batch`):
        one transaction for 100 sagas in flight, not 100. While the worker has writes, writes
        join them there. The inline connection never waits for a lock (busy timeout 0) and
        never checkpoints (the worker does), so it cannot hold the loop up; if the database
        is busy, the write goes to the worker after all. Returns whether it was written (or
        raises why not)."""
        if not self._inline_lock.acquire(blocking=False):  # another loop's turn
            return False
        if self._inline_turn is None:
            self._inline_turn = write.saga_id
            asyncio.get_running_loop().call_soon(self._end_inline_turn)
        try:
            errors = self._commit_inline([write])
        finally:
            self._inline_lock.release()
        if errors is None:
            return False
        [error] = errors
        if error is not None:
            raise _store_error(error, self.path) from None
        return True

    def _end_inline_turn(self) -> None:
        self._inline_turn = None

    async def _in_turn_batch(self, write: _Write) -> bool:
        """Join this turn's batch of inline writes (see `_try_inline`); False when the batch
        belongs to another event loop (the caller goes to the worker). The batch is written
        even if this caller is cancelled meanwhile: a cancelled flush must not leave a gap in
        its saga's log."""
        loop = asyncio.get_running_loop()
        batch = self._turn_batch
        if batch is not None and batch.loop is not loop:
            return False
        if batch is None or len(batch.writes) >= _TURN_BATCH_LIMIT:
            batch = self._turn_batch = _TurnBatch(loop)
            loop.call_soon(self._commit_turn, batch)
        future: asyncio.Future[None] = loop.create_future()
        batch.writes.append(write)
        batch.futures.append(future)
        await future
        return True

    def _commit_turn(self, batch: _TurnBatch) -> None:
        """Commit a turn's batch on the inline connection (the loop's thread); if that is
        busy, hand the writes to the worker, which answers the same futures."""
        if self._turn_batch is batch:
            self._turn_batch = None
        errors: list[BaseException | None] | None = None
        if self._thread is None:  # closed meanwhile
            closed = SagaStoreError(f"{self} was closed before these writes were committed")
            errors = [closed] * len(batch.writes)
        elif self._inline_lock.acquire(blocking=False):
            try:
                errors = self._commit_inline(batch.writes)
            finally:
                self._inline_lock.release()
        if errors is None:  # busy: the worker commits them, together
            for write, future in zip(batch.writes, batch.futures, strict=True):
                job = _Job(batch.loop, write=write)
                assert job.future is not None
                self._worker_writes += 1
                job.future.add_done_callback(functools.partial(self._relay, future))
                self._jobs.put(job)
            return
        for future, error in zip(batch.futures, errors, strict=True):
            if future.done():  # cancelled: its write went out all the same
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(_store_error(error, self.path))

    def _relay(self, future: asyncio.Future[None], done: asyncio.Future[Any]) -> None:
        """A turn batch's write the worker committed: its outcome to the waiting caller."""
        self._worker_writes -= 1
        if future.done():
            return
        error = None if done.cancelled() else done.exception()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)

    def _commit_inline(
        self, writes: Sequence[_Write]
    ) -> builtins.list[BaseException | None] | None:
        """Commit `writes` in one transaction on the inline connection (the caller holds
        `_inline_lock`): each one's refusal (None: written), every one the transaction's
        failure if it failed, or None when the database is busy (nothing was written)."""
        db = self._inline
        if db is None:
            db = self._inline = self._connect(busy_timeout=0.0)
            db.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # locked by the worker or another process
            return None
        try:
            errors = _apply_writes(db, writes, self._clock())
            # A write alone that was refused may have changed something: undo it.
            db.execute("ROLLBACK" if len(writes) == 1 and errors[0] is not None else "COMMIT")
        except BaseException as failure:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [failure] * len(writes)
        self._inline_since_checkpoint += len(writes)
        if self._inline_since_checkpoint >= _CHECKPOINT_EVERY:
            self._inline_since_checkpoint = 0
            self._jobs.put(_Job(None, run=_checkpoint))
        return errors

    async def _submit(self, job: _Job) -> Any:
        if job.write is not None:
            self._worker_writes += 1
        loop = job.loop
        virtual = loop is not None and getattr(loop, "looptime_on", False) is True
        if virtual:
            job.handed_back = threading.Event()
        self._jobs.put(job)
        assert job.future is not None
        try:
            if virtual and loop is not None and job.handed_back is not None:
                # Virtual loop time (spakky_saga.testing's VirtualClock, with looptime) moves
                # on to the next timer when the loop has nothing to do, and cannot see this
                # worker thread's work: a saga timeout would fire while a write is on its way.
                # Work in an executor it sees (and waits for in real time).
                await asyncio.shield(loop.run_in_executor(None, job.handed_back.wait))
            return await job.future
        finally:
            if job.write is not None:
                self._worker_writes -= 1

    def _work(self) -> None:
        """The worker: owns the connection; commits queued writes together."""
        db: sqlite3.Connection | None = None
        pending: _Job | None = None
        while True:
            job = pending if pending is not None else self._jobs.get()
            pending = None
            if job is None:
                break
            if db is None:
                try:
                    db = self._connect(inspect=True)
                except BaseException as error:
                    _hand_back([job], [None], [error])
                    continue
            if job.run is _checkpoint:  # outside any transaction; a failure is not urgent
                with contextlib.suppress(sqlite3.Error):
                    _checkpoint(db)
                continue
            if job.write is None:
                _run_one(db, job, self.path)
                continue
            batch = [job]
            while True:  # take every write already waiting: they share one commit
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)  # stop, after committing this batch
                    break
                if more.write is None:
                    pending = more  # runs next, on its own
                    break
                batch.append(more)
            _write_batch(db, batch, self.path, self._clock)
        if db is not None:
            db.close()

    def _connect(
        self, busy_timeout: float | None = None, *, inspect: bool = False
    ) -> sqlite3.Connection:
        """A connection to the file. With `inspect` (the worker's first connection), nothing is
        written before the file is known to be a saga store or empty: its place and size are
        checked, its tables read, and only then is it switched to WAL."""
        timeout = self._busy_timeout if busy_timeout is None else busy_timeout
        if inspect:
            self._check_place()
            _check_size(self.path)
        mode = "rwc" if self.create else "rw"  # rw: never creates the file
        try:
            db = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode={quote(mode)}",
                uri=True,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.OperationalError as error:
            raise SagaStoreError(
                f"{self.path} cannot be opened ({error}); check that this process may read and "
                "write the file and its directory"
            ) from error
        try:
            if inspect:
                self._check_tables(db)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as error:
            db.close()
            if "malformed" in str(error):
                raise _damaged(self.path, str(error)) from error
            raise SagaStoreError(
                f"{self.path} cannot be opened as a saga store ({error}); is it a SQLite "
                "database? Point SqliteSagaStore at a new file or an existing saga store"
            ) from error
        except BaseException:
            db.close()
            raise
        return db

    def _check_place(self) -> None:
        """Refuse a path that cannot be a saga store file, saying why (before SQLite would say
        only "unable to open database file")."""
        path = self.path
        if path.is_dir():
            raise SagaStoreLocationError(
                f"{path} is a directory, not a file; give the saga store's file, e.g. "
                f"{path / 'sagas.db'}"
            )
        parent = path.absolute().parent
        if not parent.exists():
            raise SagaStoreLocationError(
                f"cannot open the SQLite saga store {path}: its directory {parent} does not "
                "exist; create it (mkdir -p) or fix the path"
            )
        if not parent.is_dir():
            raise SagaStoreLocationError(
                f"cannot open the SQLite saga store {path}: {parent} is a file, not a directory"
            )
        if not self.create and not path.exists():
            raise SagaStoreNotFoundError(
                f"no saga store at {path}: the file does not exist; check the path (nothing "
                "was created)"
            )

    def _check_tables(self, db: sqlite3.Connection) -> None:
        """Read (only read) the file's tables: refuse another application's database, and,
        with create=False, a file that holds no saga store."""
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "spakky_saga_schema" in tables:
            return
        if tables:
            raise _foreign(self.path, tables)
        if not self.create:
            raise SagaStoreNotFoundError(
                f"no saga store at {self.path}: the file is an empty database; check the path "
                "(nothing was written to it)"
            )

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Create the schema on first use (or migrate it), in one transaction; refuse newer,
        unknown or foreign databases."""
        try:
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        except sqlite3.DatabaseError as error:
            raise SagaStoreError(
                f"{self.path} is not a usable SQLite database ({error}); point "
                "SqliteSagaStore at a new file or an existing saga store"
            ) from error
        if "spakky_saga_schema" not in tables:
            if tables:
                raise _foreign(self.path, tables)
            if not self.create:
                raise SagaStoreNotFoundError(f"no saga store at {self.path}; check the path")
            version = 0
            db.execute("CREATE TABLE spakky_saga_schema (version INTEGER NOT NULL)")
            db.execute("INSERT INTO spakky_saga_schema (version) VALUES (0)")
        else:
            version = db.execute("SELECT version FROM spakky_saga_schema").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SagaSchemaVersionError(
                f"{self.path} has saga store schema version {version}, but this version of "
                f"spakky-saga-typed knows versions up to {SCHEMA_VERSION}; upgrade the library "
                "(never downgrade it under a store a newer version wrote)"
            )
        if version < SCHEMA_VERSION and not self.create:
            raise SagaSchemaVersionError(
                f"{self.path} has saga store schema version {version} and this version of "
                f"spakky-saga-typed uses {SCHEMA_VERSION}; opened with create=False it is not "
                "upgraded: start an engine on it once (it upgrades the schema)"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):  # in the job's one transaction
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
            db.execute("UPDATE spakky_saga_schema SET version = ?", (step,))


_TURN_BATCH_LIMIT: Final = 32
"""Writes per inline commit of a turn's batch: more start another batch, committed by a
callback of its own, so that the loop runs other callbacks in between rather than one long
one (with 100 sagas in flight a commit held 25 writes and the loop 2.2 ms, median, on a
loaded 2-core machine with schema version 5; with version 6 the longest callback was 0.85 ms
on a quiet one)."""

_CHECKPOINT_EVERY: Final = 500
"""Writes committed inline between two checkpoints the worker runs (the inline connection
never checkpoints, so that a commit on the loop's thread never waits for an fsync). Counted
in writes, not commits: a turn's batch commits dozens at once, and a WAL left to grow makes
every page read slower (the WAL index is searched for each)."""


def _checkpoint(db: sqlite3.Connection) -> None:
    """Copy the WAL into the database (PASSIVE: never waits for readers or writers)."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _run_one(db: sqlite3.Connection, job: _Job, path: Path) -> None:
    assert job.run is not None
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = job.run(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except BaseException as error:
        _hand_back([job], [None], [_store_error(error, path)])
        return
    _hand_back([job], [result], [None])


def _write_batch(
    db: sqlite3.Connection, batch: list[_Job], path: Path, clock: Callable[[], float]
) -> None:
    """Commit a batch of writes in one transaction (one fsync for all of them)."""
    writes = [job.write for job in batch if job.write is not None]
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            errors = _apply_writes(db, writes, clock())
        except BaseException:
            db.execute("ROLLBACK")
            raise
        # A write alone that was refused may have changed something: undo it.
        db.execute("ROLLBACK" if len(writes) == 1 and errors[0] is not None else "COMMIT")
    except BaseException as error:  # the transaction failed: nothing was written
        failure = _store_error(error, path)
        _hand_back(batch, [None] * len(batch), [failure] * len(batch))
        return
    _hand_back(
        batch,
        [None] * len(batch),
        [None if error is None else _store_error(error, path) for error in errors],
    )


class _Refused(Exception):
    """A write of the batch was refused (a saga id taken, a lease lost, a log entry there
    already): the batch is written again write by write, to learn which."""


def _apply_writes(
    db: sqlite3.Connection, writes: Sequence[_Write], now: float
) -> list[BaseException | None]:
    """Apply `writes` in the open transaction; return each one's refusal (None: written).

    First all at once (one `executemany` per statement), which is what happens when no write
    is refused; if one is, that is undone and the writes are applied one at a time, each in
    a savepoint, so that a refused write changes nothing and the others still go in. A write
    alone needs no savepoint: when it is refused, the caller rolls the transaction back."""
    if len(writes) == 1:
        return [_apply_alone(db, writes[0], now, savepoint=False)]
    db.execute("SAVEPOINT batch")
    try:
        _apply_together(db, writes, now)
    except (sqlite3.IntegrityError, _Refused):
        db.execute("ROLLBACK TO batch")
        db.execute("RELEASE batch")
        return [_apply_alone(db, write, now) for write in writes]
    db.execute("RELEASE batch")
    return [None] * len(writes)


def _apply_together(db: sqlite3.Connection, writes: Sequence[_Write], now: float) -> None:
    rows = [_row(write, now) for write in writes if write.record is not None]
    if rows:
        db.executemany(_INSERT_SAGA, rows)
    changes: dict[str, list[tuple[object, ...]]] = {}
    for write in writes:
        if write.update is not None:
            statement, values = _change(write, now)
            changes.setdefault(statement, []).append(values)
    for statement, params in changes.items():
        if db.executemany(statement, params).rowcount != len(params):
            raise _Refused  # a lease was lost: which one, the write-by-write pass says
    entries = [(write.saga_id, *event) for write in writes for event in write.events]
    if entries:
        db.executemany(_INSERT_EVENT, entries)


def _apply_alone(
    db: sqlite3.Connection, write: _Write, now: float, *, savepoint: bool = True
) -> BaseException | None:
    if savepoint:
        db.execute("SAVEPOINT one")
    try:
        if write.record is not None:
            try:
                db.execute(_INSERT_SAGA, _row(write, now))
            except sqlite3.IntegrityError:
                raise SagaAlreadyStartedError(write.saga_id) from None
        else:
            statement, params = _change(write, now)
            if db.execute(statement, params).rowcount != 1:
                raise SagaLeaseLostError(write.saga_id, write.owner or "")
        if write.events:
            db.executemany(_INSERT_EVENT, [(write.saga_id, *event) for event in write.events])
    except Exception as error:
        if savepoint:
            db.execute("ROLLBACK TO one")
            db.execute("RELEASE one")
        return error
    if savepoint:
        db.execute("RELEASE one")
    return None


_INSERT_SAGA: Final = (
    f"INSERT INTO spakky_saga_sagas ({_SAGA_COLUMNS}) VALUES ({', '.join('?' * len(SAGA_COLUMNS))})"
)
_SAGA_KEY: Final = "(SELECT saga_key FROM spakky_saga_sagas WHERE saga_id = ?)"
"""The integer key the log is kept by (schema version 6), from a saga's id: one lookup in the
ids' index, whose page the write's UPDATE has just read."""

_INSERT_EVENT: Final = (
    f"INSERT INTO spakky_saga_events (saga_key, {_EVENT_COLUMNS}) "
    f"VALUES ({_SAGA_KEY}, {', '.join('?' * len(StoredEvent._fields))})"
)


def _row(write: _Write, now: float) -> tuple[object, ...]:
    """A new saga's row (`begin`), in `SAGA_COLUMNS` order."""
    record = write.record
    assert record is not None
    return (
        record.saga_id,
        record.saga_name,
        record.status.value,
        record.fingerprint,
        record.structure,
        record.policy,
        record.data,
        record.data_type,
        record.codec,
        record.created,
        now,
        record.owner,
        now + write.lease_seconds,
        record.failed_step,
        record.error,
        None,
        None,
    )


def _change(write: _Write, now: float) -> tuple[str, tuple[object, ...]]:
    """The UPDATE for an `append` and its parameters. Only the columns that change are set:
    SQLite rewrites an index entry whenever an indexed column is set, even to its own value,
    and the status index (status, lease_expires) would double the pages a step writes. So
    the lease is set only when the write extends it (`_Write.extend`)."""
    update = write.update
    assert update is not None
    sets = ["updated = ?"]
    values: list[object] = [now]
    for column, value in (
        ("status", None if update.status is None else update.status.value),
        ("data", update.data),
        ("data_type", update.data_type),
        ("failed_step", update.failed_step),
        ("error", update.error),
    ):
        if value is not None:
            sets.append(f"{column} = ?")
            values.append(value)
    if update.release:
        sets.append("owner = NULL, lease_expires = NULL")
    elif write.extend:
        sets.append("lease_expires = ?")
        values.append(now + write.lease_seconds)
    statement = f"UPDATE spakky_saga_sagas SET {', '.join(sets)} WHERE saga_id = ? AND owner = ?"
    return statement, (*values, write.saga_id, write.owner)


def _file_of(path: str | Path) -> Path:
    """The file a `path` argument names: a path, or a `sqlite:///` URL as the CLI takes (and
    SQLAlchemy writes): `sqlite:///relative.db`, `sqlite:////absolute/sagas.db`."""
    text = str(path)
    if isinstance(path, str) and path.startswith("sqlite:"):
        rest = path.removeprefix("sqlite:")
        if not rest.startswith("///") or rest.startswith("/////"):
            raise SagaStoreLocationError(
                f"SqliteSagaStore({path!r}): a SQLite URL names a file as "
                "sqlite:///relative.db or sqlite:////absolute/path/sagas.db"
            )
        text = rest.removeprefix("///")
    if not text:
        raise SagaStoreLocationError(
            f"SqliteSagaStore({path!r}): the path is empty; give the saga store's file, e.g. "
            "'sagas.db' or 'sqlite:///sagas.db'"
        )
    return Path(text)


_HEADER: Final = b"SQLite format 3\x00"


def _check_size(path: Path) -> None:
    """Refuse a truncated file before SQLite reads it: SQLite reads the missing end of a page
    as zeros, so a file cut short inside its last page reads without an error, its last log
    entries filled with NULs. The header says how many pages the file holds (when its
    "version-valid-for" matches its change counter); with an empty write-ahead log the file
    must hold all of them. (While the WAL has content, pages may legitimately live there.)"""
    try:
        size = path.stat().st_size
        wal = Path(f"{path}-wal")
        if size == 0 or (wal.exists() and wal.stat().st_size > 0):
            return
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return  # SQLite says what is wrong with a file it cannot read
    if len(header) < 100 or not header.startswith(_HEADER):
        return  # not a SQLite file: refused as such when opened
    page_size = int.from_bytes(header[16:18]) or 0
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32])
    counted = header[24:28] == header[92:96]
    if page_size < 512:
        raise _damaged(path, f"its header gives a page size of {page_size} bytes")
    if size % page_size or (counted and size < pages * page_size):
        expected = (
            f"{pages} pages of {page_size} bytes" if counted else f"whole {page_size}-byte pages"
        )
        raise _damaged(
            path,
            f"the file is {size} bytes but its header says it holds {expected}: it was cut "
            "short (an interrupted copy, a full disk)",
        )


def _damaged(path: Path, reason: str) -> SagaStoreDamagedError:
    return SagaStoreDamagedError(
        f"SQLite saga store {path} is damaged ({reason}); restore it from a backup (the sagas "
        "in a damaged file cannot be recovered from it), or move it away to start a new store"
    )


def _foreign(path: Path, tables: set[str]) -> SagaStoreLocationError:
    return SagaStoreLocationError(
        f"{path} holds other tables ({', '.join(sorted(tables)[:5])}) and no saga store "
        "schema; nothing was written to it: use a database file of its own for the saga store"
    )


def _store_error(error: BaseException, path: Path) -> BaseException:
    if isinstance(error, sqlite3.DatabaseError) and "malformed" in str(error):
        damaged = _damaged(path, str(error))
        damaged.__cause__ = error
        return damaged
    if isinstance(error, sqlite3.Error):
        wrapped = SagaStoreError(f"SQLite saga store {path}: {error}")
        wrapped.__cause__ = error
        return wrapped
    return error


def _load(db: sqlite3.Connection, saga_id: str) -> SagaRecord | None:
    row = db.execute(
        f"SELECT {_SAGA_COLUMNS} FROM spakky_saga_sagas WHERE saga_id = ?", (saga_id,)
    ).fetchone()
    if row is None:
        return None
    events = tuple(
        StoredEvent(*event)
        for event in db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM spakky_saga_events WHERE saga_key = {_SAGA_KEY} "
            "ORDER BY seq",
            (saga_id,),
        )
    )
    return SagaRecord.from_row(row, events)
