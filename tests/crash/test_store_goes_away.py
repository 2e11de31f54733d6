"""The PostgreSQL store going away under running sagas: backends terminated by the server
(`pg_terminate_backend`, found by the store's application_name).

- Connections killed between two writes: the pool hands out a fresh one; the saga completes.
- A write cut off once (its backend terminated while it waits on a row lock another session
  holds): the store retries it on a fresh connection; the saga completes, its log intact.
- A write cut off twice: `run()` raises SagaStoreError and stops without acting further;
  the saga stays unfinished (owned, leased) and another engine recovers it once the lease
  runs out; the engine's other sagas, running meanwhile, complete.
- Every pooled connection dropped (a server restart) between two reads: each read and lease
  call is retried on a fresh connection and answers as before.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spakky_saga import (
    PostgresSagaStore,
    SagaEngine,
    SagaFlow,
    SagaStatus,
    SagaStoreError,
    StoredStatus,
    current_step,
    saga_flow,
    step,
)
from tests.crash.flows import Order, Participant, read_effects
from tests.crash.harness import check_log_shape, kinds, wait_for_leases
from tests.postgres_support import postgres_schema, with_application_name


def _app() -> str:
    return f"spakky_crash_{uuid.uuid4().hex[:8]}"


async def _terminate_all(admin: psycopg.AsyncConnection[Any], app: str) -> list[int]:
    cursor = await admin.execute(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND application_name = %s",
        (app,),
    )
    return [row[0] for row in await cursor.fetchall()]


class RowLock:
    """Locks a saga's row from another session, so that the engine's next write to it waits;
    terminates that waiting backend `times` times (each retry is a new backend), then lets
    the row go."""

    def __init__(self, dsn: str, schema: str, app: str, times: int) -> None:
        self.dsn = dsn
        self.schema = schema
        self.app = app
        self.times = times
        self.terminated: list[int] = []
        self.done: asyncio.Task[None] | None = None

    async def take(self, saga_id: str) -> None:
        holder = await psycopg.AsyncConnection.connect(self.dsn)
        await holder.execute(
            f'SELECT 1 FROM "{self.schema}".spakky_saga_sagas WHERE saga_id = %s FOR UPDATE',
            (saga_id,),
        )
        self.done = asyncio.ensure_future(self._cut(holder))

    async def _cut(self, holder: psycopg.AsyncConnection[Any]) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as admin:
            try:
                for _ in range(self.times):
                    pid = await self._waiting_write(admin)
                    await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    self.terminated.append(pid)
            finally:
                await holder.rollback()
                await holder.close()

    async def _waiting_write(self, admin: psycopg.AsyncConnection[Any]) -> int:
        """The store's backend whose saga write (not a lease renewal) waits on the lock."""
        async with asyncio.timeout(10):
            while True:
                cursor = await admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock' AND query LIKE %s",
                    (self.app, "%spakky-saga write%"),
                )
                waiting = [int(row[0]) for row in await cursor.fetchall()]
                fresh = [pid for pid in waiting if pid not in self.terminated]
                if fresh:
                    return fresh[0]
                await asyncio.sleep(0.002)


def _flow(p: Participant, lock: RowLock | None) -> SagaFlow[Order]:
    """reserve, charge (which locks the saga's row, if given a lock), ship."""

    async def charge(data: Order) -> None:
        p.act("do", "charge")
        if lock is not None:
            await lock.take(str(current_step().saga_id))

    return saga_flow(
        p.transaction("reserve"),
        step(charge, compensate=p.undo("charge")),
        p.transaction("ship"),
    )


def _effects(path: Path, saga_id: object) -> list[tuple[str, str]]:
    return [(e.verb, e.step) for e in read_effects(path) if e.key.startswith(f"{saga_id}/")]


FULL_LOG = [
    ("saga_started", None, 1),
    ("step_started", "reserve", 1),
    ("step_committed", "reserve", 1),
    ("step_started", "charge", 1),
    ("step_committed", "charge", 1),
    ("step_started", "ship", 1),
    ("step_committed", "ship", 1),
    ("saga_finished", None, 1),
]


async def test_a_saga_completes_when_its_store_connections_are_killed_between_writes(
    tmp_path: Path,
) -> None:
    effects = tmp_path / "effects.log"
    participant = Participant(effects)
    app = _app()
    killed: list[int] = []
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(with_application_name(dsn, app), schema=schema, max_size=4)
        engine = SagaEngine(store=store, lease=timedelta(seconds=5))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:

            async def charge(data: Order) -> None:
                participant.act("do", "charge")
                killed.extend(await _terminate_all(admin, app))

            flow = saga_flow(
                participant.transaction("reserve"),
                step(charge, compensate=participant.undo("charge")),
                participant.transaction("ship"),
            )
            result = await engine.run(flow, Order(order_id=1), saga_name="cut")
        record = await store.load(str(result.data.saga_id))
        await engine.aclose()

    assert killed  # the pool's connections really went away mid-run
    assert result.status is SagaStatus.COMPLETED
    assert record is not None
    assert record.status is StoredStatus.COMPLETED
    check_log_shape(record)
    assert kinds(record.events) == FULL_LOG
    assert _effects(effects, result.data.saga_id) == [
        ("do", "reserve"),
        ("do", "charge"),
        ("do", "ship"),
    ]


async def test_a_write_cut_off_once_is_retried_on_a_fresh_connection_and_the_saga_completes(
    tmp_path: Path,
) -> None:
    effects = tmp_path / "effects.log"
    app = _app()
    async with postgres_schema() as (dsn, schema):
        lock = RowLock(dsn, schema, app, times=1)
        store = PostgresSagaStore(with_application_name(dsn, app), schema=schema, max_size=4)
        engine = SagaEngine(store=store, lease=timedelta(seconds=5))
        result = await engine.run(
            _flow(Participant(effects), lock), Order(order_id=1), saga_name="cut"
        )
        assert lock.done is not None
        await lock.done
        record = await store.load(str(result.data.saga_id))
        await engine.aclose()

    assert len(lock.terminated) == 1  # the write after charge lost its connection once
    assert result.status is SagaStatus.COMPLETED
    assert record is not None
    assert record.status is StoredStatus.COMPLETED
    check_log_shape(record)  # the retry wrote the batch once
    assert kinds(record.events) == FULL_LOG
    assert _effects(effects, result.data.saga_id) == [
        ("do", "reserve"),
        ("do", "charge"),
        ("do", "ship"),
    ]


async def test_a_write_cut_off_twice_stops_the_saga_for_recovery_and_loses_no_other_saga(
    tmp_path: Path,
) -> None:
    effects = tmp_path / "effects.log"
    participant = Participant(effects)
    app = _app()
    lease = timedelta(seconds=1)
    go_on = asyncio.Event()

    async def wait(data: Order) -> None:
        await go_on.wait()

    others_flow = saga_flow(
        participant.transaction("reserve"), wait, participant.transaction("ship")
    )
    async with postgres_schema() as (dsn, schema):
        lock = RowLock(dsn, schema, app, times=2)
        store = PostgresSagaStore(with_application_name(dsn, app), schema=schema, max_size=4)
        engine = SagaEngine(store=store, lease=lease)
        others = [
            asyncio.ensure_future(engine.run(others_flow, Order(order_id=index), saga_name="other"))
            for index in range(3)
        ]
        cut = Order(order_id=99)

        with pytest.raises(SagaStoreError, match="failed twice"):
            await engine.run(_flow(participant, lock), cut, saga_name="cut")

        assert lock.done is not None
        await lock.done
        go_on.set()
        finished = await asyncio.gather(*others)
        stopped = await store.load(str(cut.saga_id))
        await engine.aclose()

        store = PostgresSagaStore(dsn, schema=schema)
        recovering = SagaEngine(store=store, lease=lease)
        recovering.register("cut", _flow(participant, None))
        try:
            await store.open()
            await wait_for_leases(store, [str(cut.saga_id)])
            [recovered] = (await recovering.recover(saga_ids=[str(cut.saga_id)])).sagas
            after = await store.load(str(cut.saga_id))
            other_records = [await store.load(str(r.data.saga_id)) for r in finished]
        finally:
            await recovering.aclose()

    assert len(lock.terminated) == 2
    # Stopped at once: the attempt at ship was never written, so ship never ran.
    assert stopped is not None
    assert (stopped.status, stopped.owner) == (StoredStatus.RUNNING, engine.owner)
    assert kinds(stopped.events)[-1] == ("step_started", "charge", 1)
    # Recovered: charge's commit was never written (in doubt), so it is compensated too.
    assert recovered.outcome == "compensated"
    assert after is not None
    assert after.status is StoredStatus.FAILED
    check_log_shape(after)
    assert _effects(effects, cut.saga_id) == [
        ("do", "reserve"),
        ("do", "charge"),
        ("undo", "charge"),
        ("undo", "reserve"),
    ]
    # The engine's other sagas, in flight meanwhile, are not lost.
    assert [r.status for r in finished] == [SagaStatus.COMPLETED] * 3
    for record in other_records:
        assert record is not None
        assert record.status is StoredStatus.COMPLETED
        check_log_shape(record)


async def test_reads_and_lease_calls_after_the_server_dropped_every_connection_answer_as_before(
    tmp_path: Path,
) -> None:
    app = _app()
    effects = tmp_path / "effects.log"
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(with_application_name(dsn, app), schema=schema, max_size=4)
        engine = SagaEngine(store=store, lease=timedelta(seconds=30))
        result = await engine.run(
            _flow(Participant(effects), None), Order(order_id=1), saga_name="r"
        )
        saga_id = str(result.data.saga_id)
        before = await store.load(saga_id)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            assert await _terminate_all(admin, app)  # the pool's idle connections, all dead
        try:
            loaded = await store.load(saga_id)
            listed = await store.list()
            renewed = await store.renew("nobody", [saga_id], 30)
            claimed = await store.claim("engine-x", 30, 10)
            cancelled = await store.request_cancel(saga_id, "ops@box")
            purged = await store.purge(0.0, dry_run=True)
        finally:
            await engine.aclose()

    assert loaded == before
    assert [record.saga_id for record in listed] == [saga_id]
    assert renewed == (set(), {})
    assert claimed == []  # it finished: nothing to claim
    assert cancelled is not None
    assert cancelled.status is StoredStatus.COMPLETED
    assert purged == ()
