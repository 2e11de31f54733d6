"""Several engine processes on one PostgreSQL database.

Process A starts 200 sagas at once (slow steps; half of them RESUME, half COMPENSATE) and is
SIGKILLed by the parent once every saga has begun and about a third of the steps are done.
Then other engines recover every unfinished saga: the parent alone, or two processes B and C
racing each other. The log must show that no saga is lost, that each finished, that no two
engines ever ran one saga at once (each owner's entries are one block, A's first, the next
owner's written only after A's lease ran out), and that with B and C racing, each saga was
finished by one of them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

from spakky_saga import PostgresSagaStore, SagaEngine, StoredStatus
from spakky_saga.store import SagaRecord
from tests.crash.flows import FLEET_STEPS, MIDWAY, Participant, fleet_ids, register_fleet
from tests.crash.harness import (
    Ended,
    check_fleet_effects,
    check_handover,
    check_log_shape,
    effects_by_saga,
    recover_until_finished,
    run_child,
    wait_for_leases,
)
from tests.postgres_support import postgres_schema

COUNT = 200
A_LEASE = timedelta(seconds=2)
"""A's lease: not shorter, or a begin queued behind 200 others on A's connection pool can
land after the first heartbeat, which then declares the saga lost (test_found_bugs.py)."""
RECOVERY_LEASE = timedelta(seconds=1)
"""The recovering engines' lease: short, so that B and C take over each other's claimed but
not yet started sagas; not so short that a loaded machine stalling a process for a moment
makes it lose a saga it is running (a legitimate takeover, but not what these tests check)."""


def _ms(lease: timedelta) -> str:
    return str(lease // timedelta(milliseconds=1))


async def _crash_fleet(dsn: str, schema: str, effects: Path) -> tuple[Ended, list[str]]:
    """Start COUNT sagas in process A and SIGKILL it mid-way; the ids of its sagas."""
    seed = uuid.uuid4().hex
    ended = await run_child(
        "fleet",
        f"--target={dsn}",
        f"--schema={schema}",
        f"--effects={effects}",
        f"--lease-ms={_ms(A_LEASE)}",
        f"--count={COUNT}",
        f"--midway={COUNT * len(FLEET_STEPS) * 3 // 8}",
        f"--seed={seed}",
        kill_on=(MIDWAY,),
    )
    assert ended.killed, ended.describe()
    return ended, fleet_ids(seed, COUNT)


async def _load_all(store: PostgresSagaStore, ids: list[str]) -> dict[str, SagaRecord]:
    records = {}
    for saga_id in ids:
        record = await store.load(saga_id)
        assert record is not None, f"saga {saga_id} was started by A but is not in the store"
        records[saga_id] = record
    return records


def _died_mid_way(before: dict[str, SagaRecord]) -> list[str]:
    """The sagas A left unfinished; A was killed with work done and work left."""
    unfinished = [saga_id for saga_id, record in before.items() if record.status.unfinished]
    assert unfinished
    assert any(
        event.kind == "step_committed" for record in before.values() for event in record.events
    )
    return unfinished


def _check_finished(
    before: dict[str, SagaRecord],
    after: dict[str, SagaRecord],
    listed: list[SagaRecord],
    effects: Path,
) -> tuple[str, Counter[str | None]]:
    """Every saga finished with a sound log; A's owner id and who finished how many."""
    assert sorted(record.saga_id for record in listed) == sorted(after)  # none lost
    assert not [record for record in listed if record.status.unfinished]
    [a_owner] = {record.events[0].owner for record in before.values()}
    assert a_owner is not None
    effects_of = effects_by_saga(effects)
    finishers: Counter[str | None] = Counter()
    for saga_id, record in after.items():
        assert not record.status.unfinished, f"saga {saga_id} is still {record.status}"
        assert record.owner is None
        if record.saga_name == "fleet_resume":
            assert record.status is StoredStatus.COMPLETED, f"saga {saga_id}: {record.status}"
        check_log_shape(record)
        check_handover(record, {a_owner: A_LEASE.total_seconds()})
        owners = {event.owner for event in record.events} - {a_owner}
        assert len(owners) <= 1, f"saga {saga_id} was recovered by {owners}"
        if before[saga_id].status.unfinished:
            assert len(owners) == 1, f"saga {saga_id} was finished by nobody"
            finishers.update(owners)
        else:
            assert not owners, f"saga {saga_id} had finished before the kill: {owners} wrote"
        check_fleet_effects(record, effects_of)
    return a_owner, finishers


async def test_a_killed_engine_s_sagas_are_all_finished_by_another_engine_after_the_lease(
    tmp_path: Path,
) -> None:
    effects = tmp_path / "effects.log"
    async with postgres_schema() as (dsn, schema):
        _, ids = await _crash_fleet(dsn, schema, effects)
        store = PostgresSagaStore(dsn, schema=schema)
        engine = SagaEngine(store=store, lease=RECOVERY_LEASE)
        register_fleet(engine, Participant(effects))
        try:
            await store.open()
            before = await _load_all(store, ids)
            await wait_for_leases(store, ids)
            recovered = await recover_until_finished(engine, store, ids)
            after = await _load_all(store, ids)
            listed = await store.list(limit=10 * COUNT)
        finally:
            await engine.aclose()

    unfinished = _died_mid_way(before)
    _, finishers = _check_finished(before, after, listed, effects)
    assert finishers == Counter({engine.owner: len(unfinished)})
    assert sorted(recovered) == sorted(unfinished)
    outcomes = Counter(saga.outcome for saga in recovered.values())
    assert set(outcomes) <= {"completed", "compensated"}, outcomes


async def test_two_engines_recovering_at_once_never_both_run_one_saga(tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    async with postgres_schema() as (dsn, schema):
        _, ids = await _crash_fleet(dsn, schema, effects)
        store = PostgresSagaStore(dsn, schema=schema)
        try:
            await store.open()
            before = await _load_all(store, ids)
            recoverers = await asyncio.gather(
                *(
                    run_child(
                        "recover",
                        f"--target={dsn}",
                        f"--schema={schema}",
                        f"--effects={effects}",
                        f"--lease-ms={_ms(RECOVERY_LEASE)}",
                    )
                    for _ in range(2)
                )
            )
            after = await _load_all(store, ids)
            listed = await store.list(limit=10 * COUNT)
        finally:
            await store.close()

    for ended in recoverers:
        assert ended.returncode == 0, ended.describe()
    summaries = [json.loads(ended.stdout[-1]) for ended in recoverers]
    unfinished = _died_mid_way(before)
    _, finishers = _check_finished(before, after, listed, effects)
    assert set(finishers) <= {summary["owner"] for summary in summaries}
    assert sum(finishers.values()) == len(unfinished)
    finished_by_summary = sum(
        summary["outcomes"].get("completed", 0) + summary["outcomes"].get("compensated", 0)
        for summary in summaries
    )
    assert finished_by_summary == len(unfinished), summaries
