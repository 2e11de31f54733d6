"""`SagaJournal`: one durable run's write-ahead log, on a real (in-memory) store."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from spakky_saga import (
    InMemorySagaStore,
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaEvent,
    SagaEventKind,
    SagaLeaseLostError,
    SagaResult,
    SagaStatus,
    StoredStatus,
)
from spakky_saga.codec import encode
from spakky_saga.journal import SagaJournal, begin_record
from tests.durable_support import Ticket

TICKET = Ticket(order_id=1)
SAGA_ID = str(TICKET.saga_id)


def event(kind: SagaEventKind, key: str | None = None, **fields: Any) -> SagaEvent:
    return SagaEvent(
        kind, "order", TICKET.saga_id, step=key and f"step {key}", step_key=key, **fields
    )


def journal(store: InMemorySagaStore) -> SagaJournal:
    return SagaJournal(
        store,
        SAGA_ID,
        "engine-a",
        30.0,
        begin=begin_record(
            saga_id=SAGA_ID,
            saga_name="order",
            owner="engine-a",
            fingerprint="f",
            structure="[]",
            policy="compensate",
            data_text=encode(TICKET),
            data=TICKET,
            now=1.0,
        ),
    )


async def test_nothing_is_written_until_a_flush_and_the_first_one_creates_the_saga() -> None:
    store = InMemorySagaStore()
    log = journal(store)
    log.add(event(SagaEventKind.SAGA_STARTED, data=TICKET))
    log.add(event(SagaEventKind.STEP_STARTED, "1"))

    assert await store.load(SAGA_ID) is None
    await log.flush()

    record = await store.load(SAGA_ID)
    assert record is not None
    assert record.status is StoredStatus.RUNNING
    assert [(e.seq, e.kind) for e in record.events] == [(1, "saga_started"), (2, "step_started")]


async def test_a_commit_writes_the_new_data_and_a_group_merge_updates_the_row() -> None:
    store = InMemorySagaStore()
    log = journal(store)
    log.add(event(SagaEventKind.SAGA_STARTED, data=TICKET))
    await log.flush()
    reserved = dataclasses.replace(TICKET, stock=1)
    log.add(event(SagaEventKind.STEP_COMMITTED, "1", data=reserved))
    await log.flush()
    record = await store.load(SAGA_ID)
    assert record is not None
    assert '"stock":1' in record.data

    log.merged(dataclasses.replace(reserved, charged=5))
    log.add(event(SagaEventKind.STEP_STARTED, "3"))
    await log.flush()

    record = await store.load(SAGA_ID)
    assert record is not None
    assert '"charged":5' in record.data


async def test_concurrent_flushes_share_one_write() -> None:
    class Counting(InMemorySagaStore):
        appends = 0

        async def append(self, *args: Any, **kwargs: Any) -> None:
            Counting.appends += 1
            await asyncio.sleep(0)  # a store does I/O: the other flushes queue meanwhile
            await super().append(*args, **kwargs)

    store = Counting()
    log = journal(store)
    log.add(event(SagaEventKind.SAGA_STARTED, data=TICKET))
    await log.flush()
    for key in ("2.1", "2.2", "2.3"):
        log.add(event(SagaEventKind.STEP_STARTED, key))

    await asyncio.gather(log.flush(), log.flush(), log.flush())

    assert Counting.appends == 1


async def test_a_lost_journal_refuses_every_later_flush_without_writing() -> None:
    store = InMemorySagaStore()
    log = journal(store)
    log.add(event(SagaEventKind.SAGA_STARTED, data=TICKET))
    await log.flush()
    lost = SagaLeaseLostError(SAGA_ID, "engine-a")
    log.lose(lost)
    log.add(event(SagaEventKind.STEP_STARTED, "1"))

    with pytest.raises(SagaLeaseLostError):
        await log.flush()
    record = await store.load(SAGA_ID)
    assert record is not None
    assert len(record.events) == 1


async def test_a_cut_compensation_run_again_does_not_keep_the_saga_compensating() -> None:
    store = InMemorySagaStore()
    log = journal(store)
    log.add(event(SagaEventKind.SAGA_STARTED, data=TICKET))
    cut = SagaCompensationInterruptedError("step 1", started=True)
    log.add(event(SagaEventKind.COMPENSATION_STARTED, "1"))
    log.add(event(SagaEventKind.COMPENSATION_FAILED, "1", error=cut))
    log.add(event(SagaEventKind.COMPENSATION_STARTED, "1"))  # the shutdown grace: again
    log.add(event(SagaEventKind.COMPENSATION_DONE, "1"))
    log.add(event(SagaEventKind.COMPENSATION_FAILED, "2", error=ValueError("refused")))
    result: SagaResult[Ticket] = SagaResult(SagaStatus.FAILED, TICKET)
    failed = SagaCompensationFailedError(result, {"step 2": ValueError("refused")})
    log.add(event(SagaEventKind.SAGA_ABORTED, error=failed))
    await log.flush()

    record = await store.load(SAGA_ID)
    assert record is not None
    assert record.status is StoredStatus.COMPENSATION_FAILED  # not left for recovery


async def test_a_compensation_cut_for_good_leaves_the_saga_to_recovery() -> None:
    store = InMemorySagaStore()
    log = journal(store)
    log.add(event(SagaEventKind.SAGA_STARTED, data=TICKET))
    cut = SagaCompensationInterruptedError("step 1", started=True)
    log.add(event(SagaEventKind.COMPENSATION_STARTED, "1"))
    log.add(event(SagaEventKind.COMPENSATION_FAILED, "1", error=cut))
    result: SagaResult[Ticket] = SagaResult(SagaStatus.FAILED, TICKET)
    failed = SagaCompensationFailedError(result, {"step 1": cut})
    log.add(event(SagaEventKind.SAGA_ABORTED, error=failed))
    await log.flush()

    record = await store.load(SAGA_ID)
    assert record is not None
    assert record.status is StoredStatus.COMPENSATING
    assert record.owner == "engine-a"  # its lease runs out, then recover() finishes it


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


async def test_a_failure_is_logged_with_its_traceback_text_its_end_kept_when_long() -> None:
    store = InMemorySagaStore()
    log = journal(store)
    log.add(event(SagaEventKind.SAGA_STARTED, data=TICKET))
    log.add(event(SagaEventKind.STEP_FAILED, "1", error=_raised(ValueError("card declined"))))
    log.add(event(SagaEventKind.STEP_FAILED, "2", error=_raised(KeyError("x" * 20_000))))
    log.add(event(SagaEventKind.STEP_FAILED, "3", error=ValueError("never raised")))
    log.add(event(SagaEventKind.STEP_FAILED, "4", error=_raised(_Unprintable())))
    await log.flush()
    loaded = await store.load(SAGA_ID)
    assert loaded is not None
    started, short, long, unraised, unprintable = loaded.events
    assert started.traceback is None
    assert short.traceback is not None
    assert short.traceback.startswith("Traceback (most recent call last):\n")
    assert "in _raised" in short.traceback
    assert short.traceback.endswith("ValueError: card declined\n")
    assert long.traceback is not None
    assert len(long.traceback) == 8000
    assert long.traceback.startswith("...\n")
    assert long.traceback.endswith("xxx'\n")  # KeyError: 'xxx...'
    assert unraised.traceback is None
    assert unraised.error == "never raised"
    assert unprintable.traceback is None or "_Unprintable" in unprintable.traceback
