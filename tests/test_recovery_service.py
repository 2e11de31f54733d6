"""Recovery without an operator: `SagaEngine.serve()` / `recovering()` claim expired leases
continuously and finish what they claim, several at a time. On virtual loop time
(`saga_clock`): leases, passes and slow compensations take no real time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest

from spakky_saga import (
    InMemorySagaStore,
    SagaEngine,
    SagaEngineConfigurationError,
    SagaFlow,
    SagaStoreError,
    StoredStatus,
    saga_flow,
    step,
)
from spakky_saga.store import SagaRecord
from spakky_saga.testing import VirtualClock
from tests.durable_support import Crash, Ledger, Ticket, engines

LEASE = timedelta(seconds=6)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


def order_flow(ledger: Ledger, undo_seconds: float = 0.0) -> SagaFlow[Ticket]:
    async def undo_reserve(data: Ticket) -> None:
        await asyncio.sleep(undo_seconds)
        ledger.entries.append(("undo reserve", str(data.order_id)))

    return saga_flow(step(ledger.action("reserve"), compensate=undo_reserve), ledger.action("pay"))


async def crash_sagas(
    engine: SagaEngine, ledger: Ledger, flow: SagaFlow[Ticket], count: int
) -> list[str]:
    ids = []
    for order_id in range(count):
        ledger.crash_at = "pay"
        data = Ticket(order_id=order_id)
        with pytest.raises(Crash):
            await engine.run(flow, data, saga_name="order")
        ids.append(str(data.saga_id))
    return ids


async def wait_until_finished(store: InMemorySagaStore, ids: Sequence[str]) -> float:
    """Poll the store (virtual time) until every saga finished; return when, in seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(600):
        records = [await store.load(i) for i in ids]
        if all(r is not None and not r.status.unfinished for r in records):
            return loop.time() - started
        await asyncio.sleep(0.5)
    raise AssertionError("the sagas were never finished")


async def test_a_serving_engine_finishes_what_a_dead_engine_left_without_a_recover_call(
    saga_clock: VirtualClock, ledger: Ledger
) -> None:
    store = InMemorySagaStore(clock=saga_clock)
    flow = order_flow(ledger)
    crashed, serving = engines(store, flow, lease=LEASE)
    [saga_id] = await crash_sagas(crashed, ledger, flow, 1)

    async with serving.recovering(every=timedelta(seconds=2)):
        took = await wait_until_finished(store, [saga_id])

    assert LEASE.total_seconds() <= took <= LEASE.total_seconds() + 3  # once the lease ran out
    record = await store.load(saga_id)
    assert record is not None
    assert record.status is StoredStatus.FAILED
    assert ledger.names() == ["reserve", "undo reserve"]


async def test_claimed_sagas_are_finished_several_at_a_time(
    saga_clock: VirtualClock, ledger: Ledger
) -> None:
    store = InMemorySagaStore(clock=saga_clock)
    flow = order_flow(ledger, undo_seconds=5.0)  # each compensation takes 5 s
    crashed, recovering = engines(store, flow, lease=LEASE)
    await crash_sagas(crashed, ledger, flow, 16)
    await asyncio.sleep(LEASE.total_seconds() + 1)
    loop = asyncio.get_running_loop()

    started = loop.time()
    report = await recovering.recover(concurrency=8)

    assert len(report) == 16
    assert loop.time() - started == pytest.approx(10.0, abs=0.5)  # 2 rounds of 8, not 16 x 5 s
    assert [s.saga_id for s in report.sagas] == [
        r.saga_id for r in sorted(await store.list(limit=100), key=lambda r: r.created)
    ]
    assert ledger.names().count("undo reserve") == 16


async def test_a_pass_that_fails_is_logged_and_the_next_one_recovers(
    saga_clock: VirtualClock, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    class FlakyClaims(InMemorySagaStore):
        failures = 1

        async def claim(
            self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
        ) -> list[SagaRecord]:
            if FlakyClaims.failures:
                FlakyClaims.failures -= 1
                raise SagaStoreError("the database restarts")
            return await super().claim(owner, lease_seconds, limit, saga_ids)

    store = FlakyClaims(clock=saga_clock)
    flow = order_flow(ledger)
    crashed, serving = engines(store, flow, lease=LEASE)
    [saga_id] = await crash_sagas(crashed, ledger, flow, 1)

    async with serving.recovering(every=timedelta(seconds=2)):
        await wait_until_finished(store, [saga_id])

    failed = [r.getMessage() for r in caplog.records if "recovery_pass_failed" in r.getMessage()]
    assert failed == ["[saga=- status=recovery_pass_failed error=SagaStoreError]"]


async def test_leaving_recovering_lets_the_pass_in_progress_finish(
    saga_clock: VirtualClock, ledger: Ledger
) -> None:
    store = InMemorySagaStore(clock=saga_clock)
    flow = order_flow(ledger, undo_seconds=5.0)
    crashed, serving = engines(store, flow, lease=LEASE)
    [saga_id] = await crash_sagas(crashed, ledger, flow, 1)
    await asyncio.sleep(LEASE.total_seconds() + 1)

    async with serving.recovering(every=timedelta(seconds=60)):
        await asyncio.sleep(1)  # the first pass claimed it and is compensating

    record = await store.load(saga_id)
    assert record is not None
    assert record.status is StoredStatus.FAILED  # finished, not abandoned half way
    assert ledger.names() == ["reserve", "undo reserve"]


def test_recovery_options_need_a_store_and_sensible_values() -> None:
    with pytest.raises(SagaEngineConfigurationError, match="recovery needs a store"):
        SagaEngine(recover_every=timedelta(seconds=5))
    with pytest.raises(SagaEngineConfigurationError, match="recover_every"):
        SagaEngine(store=InMemorySagaStore(), recover_every=timedelta(0))


async def test_serve_refuses_a_bad_interval_and_recover_a_bad_concurrency() -> None:
    engine = SagaEngine(store=InMemorySagaStore(), log=False)
    with pytest.raises(SagaEngineConfigurationError, match="every"):
        await engine.serve(every=timedelta(0))
    with pytest.raises(SagaEngineConfigurationError, match="concurrency"):
        await engine.recover(concurrency=0)
