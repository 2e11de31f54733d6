"""A store written by schema version 1 (no cancel requests, no console index nor audit trail,
no tracebacks in the log nor engines' renewal times, no signals; on SQLite the log in a
WITHOUT ROWID table) is upgraded to the current version when an engine opens it
(create=True), its sagas kept, and refused, untouched, by a command that opens it with
create=False; on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spakky_saga import (
    AuditEntry,
    PostgresSagaStore,
    SagaConsoleStore,
    SagaQuery,
    SagaSchemaVersionError,
    SagaSort,
    SagaStoreError,
    SqliteSagaStore,
)
from spakky_saga.store import (
    SagaStore,
    SagaUpdate,
    SignalStore,
    StoredSignal,
    StoredStatus,
)
from tests.postgres_support import postgres_schema
from tests.stores.test_store_contract import a_record, an_event

_DOWNGRADE = (  # {t} the sagas table, {s} the schema ("" on SQLite)
    "DROP TABLE {s}spakky_saga_signals",
    "DROP INDEX {s}spakky_saga_sagas_wake",
    "ALTER TABLE {t} DROP COLUMN wake_at",
    "DROP TABLE {s}spakky_saga_nodes",
    "ALTER TABLE {s}spakky_saga_events DROP COLUMN traceback",
    "DROP INDEX {s}spakky_saga_sagas_created",
    "DROP TABLE {s}spakky_saga_audit",
    "ALTER TABLE {t} DROP COLUMN cancel_requested_by",
    "ALTER TABLE {t} DROP COLUMN cancel_requested_at",
)

_SQLITE_V1_TABLES = (  # after _DOWNGRADE: version 1's tables, keyed by saga id
    "ALTER TABLE spakky_saga_events RENAME TO events_now",
    "ALTER TABLE spakky_saga_sagas RENAME TO sagas_now",
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
    "INSERT INTO spakky_saga_sagas SELECT saga_id, saga_name, status, fingerprint, structure, "
    "policy, data, data_type, codec, created, updated, owner, lease_expires, failed_step, "
    "error FROM sagas_now",
    "INSERT INTO spakky_saga_events SELECT s.saga_id, seq, kind, at, step_key, step, attempt, "
    "elapsed, error_type, e.error, e.data, e.data_type, e.owner "
    "FROM events_now AS e JOIN sagas_now AS s USING (saga_key)",
    "DROP TABLE events_now",
    "DROP TABLE sagas_now",
    "CREATE INDEX spakky_saga_sagas_status ON spakky_saga_sagas (status, lease_expires)",
)


async def _a_running_saga(store: SagaStore) -> None:
    await store.open()
    try:
        await store.begin(a_record("old"), [an_event(1, "saga_started")], 30)
    finally:
        await store.close()


def _sqlite_back_to_version_1(path: Path) -> None:
    """Make the SQLite file a store as version 1 wrote it, its sagas and logs kept."""
    db = sqlite3.connect(path)
    for statement in (*_DOWNGRADE, *_SQLITE_V1_TABLES):
        db.execute(statement.format(t="spakky_saga_sagas", s=""))
    db.execute("UPDATE spakky_saga_schema SET version = 1")
    db.commit()
    db.close()


async def _open_and_close(store: SagaStore) -> None:
    try:
        await store.open()
    finally:
        await store.close()


async def _upgraded_and_cancellable(store: SagaStore) -> None:
    await store.open()
    try:
        asked = await store.request_cancel("old", "ops@box")
        loaded = await store.load("old")
    finally:
        await store.close()
    assert asked is not None
    assert asked.cancel_request is not None
    assert loaded is not None
    assert loaded.status is StoredStatus.RUNNING
    assert [e.seq for e in loaded.events] == [1]
    assert isinstance(store, SagaConsoleStore)
    await store.open()
    try:  # version 3: the console's queries and audit trail
        page = await store.query(SagaQuery(sort=SagaSort.CREATED))
        await store.audit(AuditEntry("old", 1.0, "cancel", "ops", "::1", "requested"))
        trail = await store.audit_trail("old")
    finally:
        await store.close()
    assert [r.saga_id for r in page.records] == ["old"]
    assert [e.by for e in trail] == ["ops"]
    await store.open()
    try:  # version 4: the old log reads without tracebacks; the heartbeat's time is kept
        await store.renew("engine-a", ["old"], 30)
        nodes = await store.nodes()
        old_log = await store.load("old")
        # version 5: signals
        assert isinstance(store, SignalStore)
        stored = await store.send_signal(StoredSignal("s1", "old", "m:T", "{}", "c", 1.0))
        signals = await store.signals("old")
        waking = await store.wake_times()  # version 5 keeps when WAITING sagas wake
    finally:
        await store.close()
    assert [(n.owner, n.sagas) for n in nodes] == [("engine-a", 1)]
    assert nodes[0].renewed is not None
    assert old_log is not None
    assert [e.traceback for e in old_log.events] == [None]
    assert stored is True
    assert [s.signal_id for s in signals] == ["s1"]
    assert waking == {}  # its one saga runs


async def test_a_version_1_sqlite_store_is_upgraded_by_an_engine_and_refused_read_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    await _a_running_saga(SqliteSagaStore(path))
    _sqlite_back_to_version_1(path)

    with pytest.raises(SagaSchemaVersionError, match="schema version 1 and this") as refused:
        await _open_and_close(SqliteSagaStore(path, create=False))
    assert "start an engine on it once" in str(refused.value)
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM spakky_saga_schema").fetchall() == [(1,)]
    db.close()

    await _upgraded_and_cancellable(SqliteSagaStore(path))
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM spakky_saga_schema").fetchall() == [(6,)]
    [log_table] = db.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'spakky_saga_events'"
    ).fetchone()
    db.close()
    assert "WITHOUT ROWID" not in log_table  # version 6: a rowid table, kept by saga key


async def test_a_version_1_postgres_schema_is_upgraded_by_an_engine_and_refused_read_only() -> None:
    import psycopg  # noqa: PLC0415 - the optional driver, only for PostgreSQL tests

    async with postgres_schema() as (dsn, schema):
        await _a_running_saga(PostgresSagaStore(dsn, schema=schema))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            for statement in _DOWNGRADE:
                await admin.execute(
                    statement.format(t=f'"{schema}".spakky_saga_sagas', s=f'"{schema}".')
                )
            await admin.execute(f'UPDATE "{schema}".spakky_saga_schema SET version = 1')

            read_only = PostgresSagaStore(dsn, schema=schema, create=False)
            with pytest.raises(SagaSchemaVersionError, match="schema version 1 and this"):
                await _open_and_close(read_only)
            cursor = await admin.execute(f'SELECT version FROM "{schema}".spakky_saga_schema')
            assert await cursor.fetchall() == [(1,)]

            await _upgraded_and_cancellable(PostgresSagaStore(dsn, schema=schema))
            cursor = await admin.execute(f'SELECT version FROM "{schema}".spakky_saga_schema')
            assert await cursor.fetchall() == [(5,)]


async def test_a_version_1_sqlite_log_is_kept_by_saga_key_every_entry_kept_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    store = SqliteSagaStore(path)
    await store.open()
    try:
        for saga in ("b", "a", "c"):  # not in id order: the copy must not reorder a log
            await store.begin(a_record(saga), [an_event(1, "saga_started")], 30)
            await store.append(
                saga, "engine-a", [an_event(2, data='{"n": 2}'), an_event(3, "step_failed")],
                SagaUpdate(data='{"n": 2}'), 30,
            )  # fmt: skip
        before = {saga: await store.load(saga) for saga in ("a", "b", "c")}
    finally:
        await store.close()
    _sqlite_back_to_version_1(path)

    store = SqliteSagaStore(path)
    await store.open()
    try:
        after = {saga: await store.load(saga) for saga in ("a", "b", "c")}
        with pytest.raises(SagaStoreError, match="UNIQUE constraint failed"):
            await store.append("a", "engine-a", [an_event(3)], SagaUpdate(), 30)
        await store.append("a", "engine-a", [an_event(4)], SagaUpdate(), 30)
        extended = await store.load("a")
        await store.begin(a_record("d"), [an_event(1, "saga_started")], 30)
        new = await store.load("d")
    finally:
        await store.close()
    assert after == before
    assert extended is not None
    assert [e.seq for e in extended.events] == [1, 2, 3, 4]
    assert new is not None
    assert [e.seq for e in new.events] == [1]
    db = sqlite3.connect(path)
    try:  # the log's reference follows the renamed sagas table; nothing dangles
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        [reference] = db.execute("PRAGMA foreign_key_list(spakky_saga_events)").fetchall()
    finally:
        db.close()
    assert reference[2:5] == ("spakky_saga_sagas", "saga_key", "saga_key")
