"""Every store keeps the same contract: atomic batches, leases, one owner per claim."""

from __future__ import annotations

import asyncio
import time

import pytest

from spakky_saga import SagaAlreadyStartedError, SagaLeaseLostError, SagaStore, SagaStoreError
from spakky_saga.store import CancelRequest, SagaRecord, SagaUpdate, StoredEvent, StoredStatus


def a_record(saga_id: str = "s1", owner: str = "engine-a", name: str = "Order") -> SagaRecord:
    now = time.time()
    return SagaRecord(
        saga_id=saga_id,
        saga_name=name,
        status=StoredStatus.RUNNING,
        fingerprint="f" * 32,
        structure="[]",
        policy="compensate",
        data='{"order_id": 1}',
        data_type="tests.support:OrderData",
        codec="pydantic-json/1",
        created=now,
        updated=now,
        owner=owner,
    )


def an_event(seq: int, kind: str = "step_committed", data: str | None = None) -> StoredEvent:
    return StoredEvent(
        seq=seq,
        kind=kind,
        at=time.time(),
        step_key="1",
        step="reserve",
        attempt=1,
        elapsed=0.25,
        error_type="Boom" if kind == "step_failed" else None,
        error="refused" if kind == "step_failed" else None,
        data=data,
        data_type="tests.support:OrderData" if data else None,
    )


async def test_a_saga_reads_back_as_written(store: SagaStore) -> None:
    await store.begin(a_record(), [an_event(1, "saga_started")], 30)
    await store.append(
        "s1",
        "engine-a",
        [an_event(2, "step_started"), an_event(3, data='{"order_id": 2}')],
        SagaUpdate(data='{"order_id": 2}', data_type="tests.support:OrderData"),
        30,
    )

    loaded = await store.load("s1")

    assert loaded is not None
    assert (loaded.saga_name, loaded.owner) == ("Order", "engine-a")
    assert loaded.status is StoredStatus.RUNNING
    assert [(e.seq, e.kind) for e in loaded.events] == [
        (1, "saga_started"),
        (2, "step_started"),
        (3, "step_committed"),
    ]
    assert loaded.events[2].data is not None
    assert loaded.events[2].data.replace(" ", "") == '{"order_id":2}'
    assert loaded.data.replace(" ", "") == '{"order_id":2}'
    assert loaded.events[1].elapsed == 0.25
    assert await store.load("nope") is None


async def test_a_saga_id_starts_once(store: SagaStore) -> None:
    await store.begin(a_record(), [], 30)

    with pytest.raises(SagaAlreadyStartedError, match="already has saga s1"):
        await store.begin(a_record(), [], 30)


async def test_only_the_owner_appends_and_a_refused_batch_writes_nothing(store: SagaStore) -> None:
    await store.begin(a_record(), [an_event(1, "saga_started")], 30)

    with pytest.raises(SagaLeaseLostError, match="no longer owned by engine engine-b"):
        await store.append(
            "s1", "engine-b", [an_event(2)], SagaUpdate(status=StoredStatus.FAILED), 30
        )

    loaded = await store.load("s1")
    assert loaded is not None
    assert loaded.status is StoredStatus.RUNNING
    assert [e.seq for e in loaded.events] == [1]


async def test_a_live_lease_cannot_be_claimed_an_expired_one_can(store: SagaStore) -> None:
    await store.begin(a_record("live"), [], 30)
    await store.begin(a_record("expired"), [], 0.01)
    await asyncio.sleep(0.05)

    claimed = await store.claim("engine-b", 30, 10)

    assert [r.saga_id for r in claimed] == ["expired"]
    assert claimed[0].owner == "engine-b"
    with pytest.raises(SagaLeaseLostError):  # the old owner stops before its next write
        await store.append("expired", "engine-a", [an_event(1)], SagaUpdate(), 30)


async def test_finished_and_released_sagas_are_never_claimed(store: SagaStore) -> None:
    await store.begin(a_record("done"), [], 30)
    await store.append(
        "done", "engine-a", [], SagaUpdate(status=StoredStatus.COMPLETED, release=True), 30
    )
    await store.begin(a_record("released"), [], 30)
    await store.append("released", "engine-a", [], SagaUpdate(release=True), 30)

    claimed = await store.claim("engine-b", 30, 10)

    assert [r.saga_id for r in claimed] == ["released"]  # unfinished, nobody owns it
    done = await store.load("done")
    assert done is not None
    assert (done.status, done.owner) == (StoredStatus.COMPLETED, None)


async def test_concurrent_claims_never_share_a_saga(store: SagaStore) -> None:
    for index in range(20):
        await store.begin(a_record(f"s{index:02}"), [], 0.001)
    await asyncio.sleep(0.02)

    batches = await asyncio.gather(*(store.claim(f"engine-{n}", 30, 5) for n in range(6)))

    ids = [r.saga_id for batch in batches for r in batch]
    assert sorted(ids) == [f"s{index:02}" for index in range(20)]


async def test_renew_keeps_only_the_leases_still_held(store: SagaStore) -> None:
    await store.begin(a_record("mine"), [], 30)
    await store.begin(a_record("lost"), [], 0.001)
    await asyncio.sleep(0.02)
    await store.claim("engine-b", 30, 10, saga_ids=["lost"])

    assert await store.renew("engine-a", ["mine", "lost"], 30) == ({"mine"}, {})


async def test_listing_filters_by_status_newest_first(store: SagaStore) -> None:
    await store.begin(a_record("a"), [], 30)
    await store.begin(a_record("b"), [], 30)
    await store.append("a", "engine-a", [], SagaUpdate(status=StoredStatus.FAILED), 30)

    everything = await store.list()
    failed = await store.list([StoredStatus.FAILED])

    assert [r.saga_id for r in everything] == ["a", "b"]
    assert [r.saga_id for r in failed] == ["a"]
    assert everything[0].events == ()


async def test_only_a_compensation_failed_saga_reopens(store: SagaStore) -> None:
    await store.begin(a_record("x"), [], 30)
    with pytest.raises(SagaStoreError, match="only a COMPENSATION_FAILED saga"):
        await store.reopen("x", "engine-b", 30)
    await store.append(
        "x",
        "engine-a",
        [],
        SagaUpdate(status=StoredStatus.COMPENSATION_FAILED, release=True),
        30,
    )

    reopened = await store.reopen("x", "engine-b", 30)

    assert (reopened.status, reopened.owner) == (StoredStatus.COMPENSATING, "engine-b")


async def _finish(store: SagaStore, saga_id: str, status: StoredStatus) -> None:
    await store.begin(a_record(saga_id), [an_event(1, "saga_started")], 30)
    await store.append(
        saga_id,
        "engine-a",
        [an_event(2, "saga_ended")],
        SagaUpdate(status=status, release=True),
        30,
    )


async def test_purge_deletes_only_finished_sagas_updated_before_the_time(
    store: SagaStore,
) -> None:
    for status in StoredStatus:
        if status is not StoredStatus.RUNNING:
            await _finish(store, f"old-{status.value.lower()}", status)
    await store.begin(a_record("old-running"), [an_event(1, "saga_started")], 30)
    await asyncio.sleep(0.01)
    cutoff = time.time()
    await asyncio.sleep(0.01)
    await _finish(store, "new-completed", StoredStatus.COMPLETED)

    gone = await store.purge(cutoff)

    assert gone == ("old-cancelled", "old-completed", "old-failed", "old-timed_out")
    for saga_id in gone:
        assert await store.load(saga_id) is None
    kept = sorted(r.saga_id for r in await store.list())
    # kept: unfinished (WAITING too), and the sagas an operator must still see to
    # (COMPENSATION_FAILED, STUCK)
    assert kept == [
        "new-completed",
        "old-compensating",
        "old-compensation_failed",
        "old-running",
        "old-stuck",
        "old-waiting",
    ]
    still = await store.load("old-compensation_failed")
    assert still is not None
    assert [e.seq for e in still.events] == [1, 2]
    assert await store.purge(cutoff) == ()


async def test_a_dry_run_purge_names_the_sagas_and_deletes_nothing(store: SagaStore) -> None:
    await _finish(store, "done", StoredStatus.COMPLETED)
    await _finish(store, "failed", StoredStatus.FAILED)

    would = await store.purge(time.time() + 60, dry_run=True)

    assert would == ("done", "failed")
    assert sorted(r.saga_id for r in await store.list()) == ["done", "failed"]
    done = await store.load("done")
    assert done is not None
    assert len(done.events) == 2


async def test_a_cancel_request_is_kept_on_a_running_saga_and_told_to_its_owner(
    store: SagaStore,
) -> None:
    await store.begin(a_record("run"), [an_event(1, "saga_started")], 30)
    before = time.time()

    asked = await store.request_cancel("run", "ops@box")
    again = await store.request_cancel("run", "someone@else")  # the first request is kept

    assert asked is not None
    assert asked.status is StoredStatus.RUNNING
    request = asked.cancel_request
    assert request is not None
    assert request.by == "ops@box"
    assert before - 1 <= request.at <= time.time() + 1
    assert again is not None
    assert again.cancel_request == request
    renewal = await store.renew("engine-a", ["run"], 30)
    assert renewal == ({"run"}, {"run": CancelRequest("ops@box", request.at)})
    assert await store.renew("engine-b", ["run"], 30) == (set(), {})  # not the owner's
    loaded = await store.load("run")
    assert loaded is not None
    assert loaded.cancel_request == request
    assert [e.seq for e in loaded.events] == [1]  # the log is the owner's to write


async def test_a_cancel_request_changes_nothing_on_a_saga_that_is_not_running(
    store: SagaStore,
) -> None:
    await _finish(store, "done", StoredStatus.COMPLETED)
    await store.begin(a_record("undoing"), [], 30)
    await store.append("undoing", "engine-a", [], SagaUpdate(status=StoredStatus.COMPENSATING), 30)

    done = await store.request_cancel("done", "ops@box")
    undoing = await store.request_cancel("undoing", "ops@box")

    assert done is not None
    assert (done.status, done.cancel_request) == (StoredStatus.COMPLETED, None)
    assert undoing is not None
    assert (undoing.status, undoing.cancel_request) == (StoredStatus.COMPENSATING, None)
    assert await store.request_cancel("nope", "ops@box") is None
    assert await store.renew("engine-a", ["undoing"], 30) == ({"undoing"}, {})
