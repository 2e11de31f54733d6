"""A process killed while one write holds many sagas' writes (the stores' group commit).

The child starts 100 quick sagas at once (half of them RESUME, half COMPENSATE), so that
their writes share batches, and SIGKILLs itself inside the third batch of at least 20 sagas'
writes (the sagas are mid-way by then): before it commits (SQLite: applied in the open
transaction; PostgreSQL: not sent) or after (committed, no saga told yet). Then another
engine recovers every saga. What must hold, for every saga of the batch and every other
one: each action that ran had its attempt in the log first (write-ahead held for each saga
in a shared batch); nothing the kill undid is in the log, and nothing committed is missing
(the log is numbered without gaps, one owner after the other); and recovery finishes each
saga from its log alone: RESUME ones complete (a step whose attempt was logged runs again
with the same key), COMPENSATE ones undo exactly what had started.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest

from spakky_saga import (
    PostgresSagaStore,
    SagaEngine,
    SagaStore,
    SqliteSagaStore,
    StoredStatus,
)
from spakky_saga.store import SagaRecord
from tests.crash.flows import Participant, fleet_ids, read_effects, register_fleet
from tests.crash.harness import (
    check_fleet_effects,
    check_handover,
    check_log_shape,
    effects_by_saga,
    recover_until_finished,
    run_child,
    wait_for_leases,
)
from tests.postgres_support import postgres_schema

COUNT = 100
BATCH = 20
LEASE = timedelta(seconds=1)


async def _kill_in_a_batch(
    store: str, target: str, schema: str, when: str, effects: Path, *, synchronous: str = "FULL"
) -> list[str]:
    seed = uuid.uuid4().hex
    ended = await run_child(
        "batch",
        f"--store={store}",
        f"--target={target}",
        f"--schema={schema}",
        f"--effects={effects}",
        f"--lease-ms={LEASE // timedelta(milliseconds=1)}",
        f"--count={COUNT}",
        f"--seed={seed}",
        f"--kill-batch={when}",
        f"--batch-size={BATCH}",
        f"--synchronous={synchronous}",
    )
    assert ended.killed, ended.describe()
    return fleet_ids(seed, COUNT)


def _check_write_ahead(records: dict[str, SagaRecord], effects: Path) -> None:
    """Every action the killed process ran has its attempt in the log."""
    for effect in read_effects(effects):
        saga_id = effect.key.split("/", 1)[0]
        record = records.get(saga_id)
        assert record is not None, f"saga {saga_id} acted but is not in the store"
        started = {
            (event.step, event.attempt) for event in record.events if event.kind == "step_started"
        }
        assert (effect.step, int(effect.attempt)) in started, (
            f"saga {saga_id}: {effect.step} attempt {effect.attempt} ran unlogged"
        )


async def _recover_and_check(store: SagaStore, ids: list[str], effects: Path) -> None:
    engine = SagaEngine(store=store, lease=LEASE)
    register_fleet(engine, Participant(effects))
    try:
        await store.open()
        before = {i: r for i in ids if (r := await store.load(i)) is not None}
        _check_write_ahead(before, effects)
        [owner] = {record.events[0].owner for record in before.values()}
        assert owner is not None
        unfinished = [i for i, record in before.items() if record.status.unfinished]
        assert len(unfinished) >= BATCH, f"only {len(unfinished)} sagas were left unfinished"
        await wait_for_leases(store, unfinished)
        recovered = await recover_until_finished(engine, store, unfinished)
        after = {i: r for i in before if (r := await store.load(i)) is not None}
    finally:
        await engine.aclose()
    assert sorted(recovered) == sorted(unfinished)
    effects_of = effects_by_saga(effects)
    for saga_id, record in after.items():
        assert not record.status.unfinished, f"saga {saga_id} is still {record.status}"
        if record.saga_name == "fleet_resume":
            assert record.status is StoredStatus.COMPLETED, f"saga {saga_id}: {record.status}"
        check_log_shape(record)
        check_handover(record, {owner: LEASE.total_seconds()})
        # What the dead process wrote stays as it was: recovery only appends.
        assert record.events[: len(before[saga_id].events)] == before[saga_id].events
        check_fleet_effects(record, effects_of)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_kill_inside_a_shared_sqlite_batch_loses_no_acknowledged_write(
    tmp_path: Path, when: str, synchronous: Literal["FULL", "NORMAL"]
) -> None:
    """FULL: the worker thread's batch; NORMAL: a turn's batch, committed on the loop's
    thread."""
    effects, path = tmp_path / "effects.log", tmp_path / "sagas.db"
    ids = await _kill_in_a_batch(
        "sqlite", str(path), "public", when, effects, synchronous=synchronous
    )
    await _recover_and_check(SqliteSagaStore(path, synchronous=synchronous), ids, effects)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_kill_inside_a_shared_postgresql_batch_loses_no_acknowledged_write(
    tmp_path: Path, when: str
) -> None:
    effects = tmp_path / "effects.log"
    async with postgres_schema() as (dsn, schema):
        ids = await _kill_in_a_batch("postgres", dsn, schema, when, effects)
        await _recover_and_check(PostgresSagaStore(dsn, schema=schema), ids, effects)
