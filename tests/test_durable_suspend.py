"""Suspended waits (a durable engine's default), on every store: a saga that reaches a wait
with no signal is WAITING in the store, owned by nobody, and `run()` returns a WAITING
result (no task, no lease); a signal wakes it and any engine on the store resumes it (a
recovery pass; at once on an engine that serves and was sent the signal); a sleep wakes when
its time comes; a saga whose time has not come stays suspended; an operator's cancel request
wakes it to be compensated; a signal that is not the one it waits for leaves it WAITING."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest

from spakky_saga import (
    AbstractSagaData,
    InMemorySagaStore,
    RecoveryOutcome,
    SagaEngine,
    SagaFlow,
    SagaStatus,
    StoredStatus,
    saga_flow,
    sleep,
    step,
    wait_for,
)
from tests.waits_support import StoreFactory, stores_fixture  # noqa: F401 - the fixture "stores"


class Order(AbstractSagaData):
    amount: int
    reference: str = ""


@dataclass(frozen=True)
class Confirmed:
    reference: str


@dataclass(frozen=True)
class Note:
    text: str


def confirmed(data: Order, signal: Confirmed) -> Order:
    return dataclasses.replace(data, reference=signal.reference)


def noted(data: Order, signal: Note) -> Order:
    return data


CALLS: list[str] = []


async def reserve(data: Order) -> None:
    CALLS.append("reserve")


async def release(data: Order) -> None:
    CALLS.append("release")


async def ship(data: Order) -> None:
    CALLS.append(f"ship {data.reference}")


FLOW: SagaFlow[Order] = saga_flow(
    step(reserve, compensate=release),
    wait_for(Confirmed, merge=confirmed, timeout=timedelta(hours=48)),
    ship,
    wait_for(Note, merge=noted, timeout=timedelta(hours=1)),
)


@pytest.fixture(autouse=True)
def _no_calls_yet() -> None:
    CALLS.clear()


def _engine(stores: StoreFactory, flow: SagaFlow[Order] = FLOW) -> SagaEngine:
    engine = SagaEngine(store=stores(), log=False)
    engine.register("order", flow)
    return engine


async def _status(engine: SagaEngine, data: Order) -> tuple[StoredStatus, str | None]:
    assert engine.store is not None
    record = await engine.store.load(str(data.saga_id))
    assert record is not None
    return record.status, record.owner


async def test_a_saga_reaching_a_wait_is_suspended_in_the_store_and_run_returns_waiting(
    stores: StoreFactory,
) -> None:
    engine = _engine(stores)
    data = Order(amount=1)

    result = await engine.run(FLOW, data, saga_name="order")

    assert result.status is SagaStatus.WAITING
    assert [r.name for r in result.history] == ["reserve"]
    assert await _status(engine, data) == (StoredStatus.WAITING, None)
    assert CALLS == ["reserve"]
    await engine.aclose()


async def test_a_signal_wakes_a_suspended_saga_and_another_engine_resumes_it(
    stores: StoreFactory,
) -> None:
    first, sender, resumer = _engine(stores), _engine(stores), _engine(stores)
    data = Order(amount=1)
    await first.run(FLOW, data, saga_name="order")
    await first.aclose()

    before = await resumer.recover()
    await sender.signal(data.saga_id, Confirmed("c-1"), signal_id="c-1")
    report = await resumer.recover()

    assert len(before) == 0  # nothing woke it yet
    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.WAITING]  # at the next wait
    assert CALLS == ["reserve", "ship c-1"]
    assert await _status(resumer, data) == (StoredStatus.WAITING, None)
    await sender.signal(data.saga_id, Note("done"))
    final = await resumer.recover()
    assert [s.outcome for s in final.sagas] == [RecoveryOutcome.COMPLETED]
    result = final.sagas[0].result
    assert result is not None
    assert result.data.reference == "c-1"
    assert [r.name for r in result.history] == [
        "reserve",
        "wait_for(Confirmed)",
        "ship",
        "wait_for(Note)",
    ]
    for engine in (sender, resumer):
        await engine.aclose()


async def test_a_signal_of_a_type_the_wait_does_not_take_leaves_the_saga_waiting(
    stores: StoreFactory,
) -> None:
    engine = _engine(stores)
    data = Order(amount=1)
    await engine.run(FLOW, data, saga_name="order")

    await engine.signal(data.saga_id, Note("early"))  # for the second wait: kept
    report = await engine.recover()

    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.WAITING]
    assert await _status(engine, data) == (StoredStatus.WAITING, None)
    await engine.signal(data.saga_id, Confirmed("c"))
    done = await engine.recover()
    assert [s.outcome for s in done.sagas] == [RecoveryOutcome.COMPLETED]  # the Note was kept
    await engine.aclose()


async def test_a_suspended_sleep_wakes_when_its_time_comes(stores: StoreFactory) -> None:
    flow = saga_flow(reserve, sleep(timedelta(milliseconds=150)), ship)
    engine = _engine(stores, flow)
    data = Order(amount=1)
    result = await engine.run(flow, data, saga_name="order")
    assert result.status is SagaStatus.WAITING

    early = await engine.recover()
    await asyncio.sleep(0.25)
    woke = await engine.recover()

    assert len(early) == 0
    assert [s.outcome for s in woke.sagas] == [RecoveryOutcome.COMPLETED]
    assert CALLS == ["reserve", "ship "]
    await engine.aclose()


async def test_a_cancel_request_wakes_a_suspended_saga_to_be_compensated(
    stores: StoreFactory,
) -> None:
    engine = _engine(stores)
    data = Order(amount=1)
    await engine.run(FLOW, data, saga_name="order")
    assert engine.store is not None

    asked = await engine.store.request_cancel(str(data.saga_id), "ops@box")
    report = await engine.recover()

    assert asked is not None
    assert asked.cancel_request is not None
    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.CANCELLED]
    assert CALLS == ["reserve", "release"]
    assert (await _status(engine, data))[0] is StoredStatus.CANCELLED
    await engine.aclose()


async def test_a_serving_engine_resumes_a_saga_at_once_when_it_is_sent_its_signal(
    stores: StoreFactory,
) -> None:
    engine = _engine(stores)
    data = Order(amount=1)
    await engine.run(FLOW, data, saga_name="order")

    async with engine.recovering(every=timedelta(hours=1)):  # no pass of its own meanwhile
        await asyncio.sleep(0.05)
        sent = time.monotonic()
        await engine.signal(data.saga_id, Confirmed("now"))
        for _ in range(400):
            if "ship now" in CALLS:
                break
            await asyncio.sleep(0.005)
        resumed = time.monotonic() - sent

    assert CALLS == ["reserve", "ship now"]
    assert resumed < 30  # within one pass, not after `every`
    await engine.aclose()


async def test_a_sleep_woken_early_suspends_again_until_its_first_deadline() -> None:
    # A signal for a later wait wakes the saga while it sleeps: the resumed sleep logs
    # STEP_STARTED again, and its deadline still counts from the first (explore_crashes
    # found it restarting from the second, so the saga slept a full hour more).
    now = [1_000_000.0]
    store = InMemorySagaStore(clock=lambda: now[0])
    engine = SagaEngine(store=store, wall_clock=lambda: now[0], log=False)
    flow = saga_flow(sleep(timedelta(hours=1)), wait_for(Confirmed, merge=_confirmed))
    engine.register("slept", flow)
    data = _Slept()
    assert (await engine.run(flow, data, saga_name="slept")).status is SagaStatus.WAITING

    now[0] += 600
    await engine.signal(data.saga_id, Confirmed("r-1"))  # for the wait after the sleep
    woken = await engine.recover()
    now[0] += 3000  # the sleep's first deadline
    finished = await engine.recover()

    assert [s.outcome for s in woken.sagas] == [RecoveryOutcome.WAITING]
    assert [s.outcome for s in finished.sagas] == [RecoveryOutcome.COMPLETED]
    await engine.aclose()


class _Slept(AbstractSagaData):
    reference: str = ""


def _confirmed(data: _Slept, signal: Confirmed) -> _Slept:
    return dataclasses.replace(data, reference=signal.reference)
