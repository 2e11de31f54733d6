"""A recovery that is itself killed is recovered in turn.

Process A dies inside a step; process B recovers the saga and dies too (inside the re-run
step, or inside a compensation); the parent finishes it. The in-doubt work runs again each
time with the same idempotency key, and the log shows three owners, one after the other,
each taking over only once the previous lease ran out.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import (
    PostgresSagaStore,
    RecoveredSaga,
    SagaEngine,
    SagaStatus,
    SagaStore,
    SqliteSagaStore,
    StoredStatus,
)
from spakky_saga.store import SagaRecord
from tests.crash.flows import FLOWS, KillPlan, Participant, read_effects
from tests.crash.harness import (
    check_handover,
    check_log_shape,
    owner_runs,
    run_child,
    wait_for_leases,
)
from tests.postgres_support import postgres_schema

A_LEASE = timedelta(seconds=1)
B_LEASE = timedelta(milliseconds=500)


@asynccontextmanager
async def _store(kind: str, directory: Path) -> AsyncIterator[tuple[list[str], SagaStore]]:
    """The child arguments that name a new store of `kind`, and the parent's handle on it."""
    if kind == "sqlite":
        path = directory / "sagas.db"
        yield ["--store=sqlite", f"--target={path}"], SqliteSagaStore(path)
        return
    async with postgres_schema() as (dsn, schema):
        yield (
            ["--store=postgres", f"--target={dsn}", f"--schema={schema}"],
            PostgresSagaStore(dsn, schema=schema),
        )


async def _crash_twice_then_recover(
    kind: str, directory: Path, policy: str, a_dies: KillPlan, b_dies: KillPlan
) -> tuple[list[tuple[str, str, str]], RecoveredSaga, SagaRecord]:
    effects = directory / "effects.log"
    saga_id = str(uuid.uuid4())
    async with _store(kind, directory) as (store_args, store):
        a = await run_child(
            "saga",
            *store_args,
            f"--effects={effects}",
            f"--lease-ms={A_LEASE // timedelta(milliseconds=1)}",
            "--scenario=line",
            f"--policy={policy}",
            f"--kill={a_dies}",
            f"--saga-id={saga_id}",
        )
        assert a.killed, a.describe()
        b = await run_child(  # polls recover() until A's lease ran out, then dies in it
            "recover",
            *store_args,
            f"--effects={effects}",
            f"--lease-ms={B_LEASE // timedelta(milliseconds=1)}",
            f"--kill={b_dies}",
        )
        assert b.killed, b.describe()
        engine = SagaEngine(store=store, lease=timedelta(seconds=5))
        engine.register("line", FLOWS["line"](Participant(effects)))
        try:
            await store.open()
            await wait_for_leases(store, [saga_id])  # B's
            recovered = (await engine.recover(saga_ids=[saga_id])).sagas
            record = await store.load(saga_id)
        finally:
            await engine.aclose()
    assert record is not None
    check_log_shape(record)
    owners = owner_runs(record.events)
    assert len(owners) == 3, owners  # A, then B, then the parent
    assert owners[-1] == engine.owner
    a_owner, b_owner = owners[0], owners[1]
    assert a_owner is not None
    assert b_owner is not None
    check_handover(record, {a_owner: A_LEASE.total_seconds(), b_owner: B_LEASE.total_seconds()})
    effects_of_saga = [
        (e.verb, e.step, e.attempt) for e in read_effects(effects) if e.key.startswith(saga_id)
    ]
    [saga] = recovered
    return effects_of_saga, saga, record


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_resumed_step_killed_again_runs_a_third_time_with_the_same_key(
    kind: str, tmp_path: Path
) -> None:
    dies_in_charge = KillPlan("do", "charge", "after")

    effects, saga, record = await _crash_twice_then_recover(
        kind, tmp_path, "resume", dies_in_charge, dies_in_charge
    )

    assert effects == [
        ("do", "reserve", "1"),
        *[("do", "charge", "1")] * 3,  # A's, B's and the parent's: one attempt, one key
        ("do", "ship", "1"),
        ("do", "notify", "1"),
    ]
    assert saga.outcome == "completed"
    assert saga.result is not None
    assert saga.result.status is SagaStatus.COMPLETED
    assert record.status is StoredStatus.COMPLETED


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_recovery_killed_while_compensating_is_finished_without_repeating_done_work(
    kind: str, tmp_path: Path
) -> None:
    effects, saga, record = await _crash_twice_then_recover(
        kind,
        tmp_path,
        "compensate",
        KillPlan("do", "ship", "before"),
        KillPlan("undo", "charge", "after"),
    )

    assert effects == [
        ("do", "reserve", "1"),
        ("do", "charge", "1"),
        ("undo", "ship", "undo"),  # B: ship's attempt was in doubt
        ("undo", "charge", "undo"),  # B, then it died
        ("undo", "charge", "undo"),  # the parent: in doubt, again, same key
        ("undo", "reserve", "undo"),
    ]
    assert saga.outcome == "compensated"
    assert record.status is StoredStatus.FAILED
