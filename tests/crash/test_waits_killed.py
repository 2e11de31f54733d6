"""A process SIGKILLed while its sagas wait, on SQLite and PostgreSQL: suspended in the store
(the default) or held in the process (`hold_waits=True`). Another process sends the signals
(each twice: a repeat by its id is stored once); the parent, a third engine, resumes every
saga: each takes its signal exactly once (one SIGNAL_RECEIVED, the one id), ships once and
compensates nothing, whatever its recovery policy. A sleep that ends while no process runs
the saga is honoured by the engine that takes it over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spakky_saga import SagaEngine, SagaEventKind, SagaStore, StoredStatus
from tests.crash.child import open_store
from tests.crash.harness import run_child, wait_for_leases
from tests.crash.wait_flows import SLEEP, Effects, engine_for, saga_ids
from tests.postgres_support import postgres_schema

COUNT = 12
LEASE_MS = 300


@pytest.fixture(params=["sqlite", "postgres"])
async def where(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[str]]:
    """The child's store options: `--store KIND --target ... --schema ...`."""
    if request.param == "sqlite":
        yield ["--store", "sqlite", "--target", str(tmp_path / "sagas.db")]
        return
    async with postgres_schema() as (dsn, schema):
        yield ["--store", "postgres", "--target", dsn, "--schema", schema]


def _store(where: list[str]) -> SagaStore:
    options = dict(zip(where[::2], where[1::2], strict=True))
    return open_store(options["--store"], options["--target"], options.get("--schema", "public"))


async def _finish_all(engine: SagaEngine, store: SagaStore, ids: list[str]) -> None:
    """Recovery passes until every saga finished (a woken saga may suspend again first)."""
    outcomes: list[object] = []
    try:
        async with asyncio.timeout(60):
            while True:
                report = await engine.recover(limit=1000)
                outcomes.extend((s.outcome, s.error) for s in report.sagas)
                records = [await store.load(saga_id) for saga_id in ids]
                if all(r is not None and not r.status.unfinished for r in records):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        states = [(r.status, r.owner, r.lease_expires) for r in records if r is not None]
        raise AssertionError(f"not finished: {states}; outcomes {outcomes[:5]}") from None


@pytest.mark.parametrize("hold", [False, True], ids=["suspended", "held"])
async def test_sagas_waiting_in_a_killed_process_take_signals_sent_from_another_exactly_once(
    where: list[str], hold: bool, tmp_path: Path
) -> None:
    effects = Effects(tmp_path / "effects.log")
    common = [*where, "--effects", str(effects.path), "--count", str(COUNT), "--seed", "w"]
    common += ["--lease-ms", str(LEASE_MS)]
    killed = await run_child(
        "wait-start", "--scenario", "waiting", *common, *(["--hold"] if hold else [])
    )
    assert killed.killed, killed.describe()
    sent = await run_child("wait-signal", *common, kill_on=())
    store = _store(where)
    engine = engine_for(store, effects, hold=False, lease_ms=LEASE_MS)
    ids = [str(i) for i in saga_ids(COUNT, "w")]

    await store.open()
    await wait_for_leases(store, ids)
    await _finish_all(engine, store, ids)

    assert killed.killed, killed.describe()
    assert sent.returncode == 0, sent.describe()
    assert sent.stdout == [f"SENT {COUNT}"]  # every second send was a repeat
    done = effects.read()
    for saga_id in ids:
        record = await store.load(saga_id)
        assert record is not None
        assert record.status is StoredStatus.COMPLETED, (saga_id, record.status)
        taken = [
            json.loads(e.data or "{}")["signal_id"]
            for e in record.events
            if e.kind == SagaEventKind.SIGNAL_RECEIVED.value
        ]
        assert taken == [f"s-{saga_id}"]
        assert done[saga_id] == ["reserve", f"ship p-{saga_id}"]
    await engine.aclose()


@pytest.mark.parametrize("hold", [False, True], ids=["suspended", "held"])
async def test_a_sleep_that_ended_while_no_process_ran_is_honoured_after_a_restart(
    where: list[str], hold: bool, tmp_path: Path
) -> None:
    effects = Effects(tmp_path / "effects.log")
    common = [*where, "--effects", str(effects.path), "--count", "3", "--seed", "s"]
    common += ["--lease-ms", str(LEASE_MS)]
    killed = await run_child(
        "wait-start", "--scenario", "sleeping", *common, *(["--hold"] if hold else [])
    )
    store = _store(where)
    engine = engine_for(store, effects, hold=False, lease_ms=LEASE_MS)
    ids = [str(i) for i in saga_ids(3, "s")]
    await store.open()

    early = await engine.recover()
    await asyncio.sleep(SLEEP.total_seconds())  # the sleep ends with no process running it
    await wait_for_leases(store, ids)
    await _finish_all(engine, store, ids)

    assert killed.killed, killed.describe()
    if not hold:  # suspended: nobody may take it before its time
        assert len(early) == 0
    done = effects.read()
    assert all(done[saga_id] == ["reserve", "ship -"] for saga_id in ids), done
    await engine.aclose()
