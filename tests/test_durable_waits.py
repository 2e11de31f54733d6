"""Waits on a durable engine that holds them in its process (`hold_waits=True`), on every
store (in memory, a SQLite file, the machine's PostgreSQL): a signal is stored before
`signal()` returns and found by the waiting run; a saga whose engine died while it waited is
resumed by another engine (whatever its recovery policy: a wait did nothing that could be in
doubt), takes a signal sent through that other engine exactly once, and keeps its wait's
deadline and its saga timeout from before the crash; signals to unknown or finished sagas
are refused with the saga's status. Suspended waits (the default):
tests/test_durable_suspend.py."""

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
    SagaEventKind,
    SagaFlow,
    SagaResult,
    SagaSignalTargetError,
    SagaSignalTypeError,
    SagaStatus,
    SagaStore,
    SagaTimeoutError,
    SagaWaitTimeoutError,
    SignalStore,
    StoredSignal,
    saga_flow,
    step,
    wait_for,
)
from tests.waits_support import StoreFactory, stores_fixture  # noqa: F401 - the fixture "stores"


class Order(AbstractSagaData):
    amount: int
    reference: str = ""
    captured: bool = False


@dataclass(frozen=True)
class Confirmed:
    reference: str


def confirmed(data: Order, signal: Confirmed) -> Order:
    return dataclasses.replace(data, reference=signal.reference)


CALLS: list[str] = []


async def reserve(data: Order) -> None:
    CALLS.append("reserve")


async def release(data: Order) -> None:
    CALLS.append("release")


async def capture(data: Order) -> Order:
    CALLS.append(f"capture {data.reference}")
    return dataclasses.replace(data, captured=True)


def order_flow(timeout: timedelta | None = None) -> SagaFlow[Order]:
    return saga_flow(
        step(reserve, compensate=release),
        wait_for(Confirmed, merge=confirmed, timeout=timeout),
        capture,
    )


@pytest.fixture(autouse=True)
def _no_calls_yet() -> None:
    CALLS.clear()


LEASE = timedelta(seconds=30)
T0 = 1_800_000_000.0
LEFT = 0.3
"""Seconds of a deadline left when a recovering engine takes a saga over (real time)."""


POLL = timedelta(milliseconds=20)


def _engine(stores: StoreFactory, flow: SagaFlow[Order], *, hold: bool = True) -> SagaEngine:
    """An engine on the store; `hold`: its waits keep their task (else they suspend)."""
    engine = SagaEngine(store=stores(), lease=LEASE, signal_poll=POLL, hold_waits=hold, log=False)
    engine.register("order", flow)
    return engine


async def _waiting(
    engine: SagaEngine, flow: SagaFlow[Order], data: Order
) -> asyncio.Task[SagaResult[Order]]:
    task = asyncio.get_running_loop().create_task(engine.run(flow, data, saga_name="order"))
    for _ in range(1000):
        if "reserve" in CALLS or task.done():
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # in its wait (its first look for a signal)
    assert not task.done()
    return task


async def test_a_signal_to_a_durable_saga_resumes_it_and_the_log_records_it(
    stores: StoreFactory,
) -> None:
    flow = order_flow(timedelta(hours=48))
    engine = _engine(stores, flow)
    data = Order(amount=3)
    task = await _waiting(engine, flow, data)

    receipt = await engine.signal(data.saga_id, Confirmed("r-1"), signal_id="sig-1")
    result = await task

    assert result.status is SagaStatus.COMPLETED
    assert result.data.reference == "r-1"
    assert receipt.signal_id == "sig-1"
    store = engine.store
    assert store is not None
    record = await store.load(str(data.saga_id))
    assert record is not None
    kinds = [e.kind for e in record.events]
    received = kinds.index(SagaEventKind.SIGNAL_RECEIVED.value)
    assert kinds[received + 1] == SagaEventKind.STEP_COMMITTED.value
    await engine.aclose()


class Crash(BaseException):
    """The process dies here."""


class Dying(InMemorySagaStore):
    """A store that kills its engine's process (raises Crash out of the waiting run) at the
    wait's next look for signals, once `die()` was called: what a SIGKILL does to a saga
    that waits (tests/crash kills real processes). Every other call goes to `store`."""

    def __init__(self, store: SagaStore) -> None:
        super().__init__()
        self._store = store
        self._dying = False
        for name in ("open", "close", "begin", "append", "claim", "renew", "load"):
            setattr(self, name, getattr(store, name))

    def die(self) -> None:
        self._dying = True

    async def send_signal(self, signal: StoredSignal) -> bool:
        assert isinstance(self._store, SignalStore)
        return await self._store.send_signal(signal)

    async def signals(self, saga_id: str) -> list[StoredSignal]:
        if self._dying:
            raise Crash
        assert isinstance(self._store, SignalStore)
        return await self._store.signals(saga_id)


async def _crashed_while_waiting(
    stores: StoreFactory, flow: SagaFlow[Order], data: Order, wall: float
) -> None:
    """Start the saga on an engine whose wall clock reads `wall`, let it reach its wait, kill
    it there, and let its (short, real) lease run out."""
    store = Dying(stores())
    dead = SagaEngine(
        store=store,
        lease=timedelta(milliseconds=50),
        wall_clock=lambda: wall,
        signal_poll=POLL,
        hold_waits=True,
        log=False,
    )
    dead.register("order", flow)
    task = await _waiting(dead, flow, data)
    store.die()
    with pytest.raises(Crash):
        await task
    await asyncio.sleep(0.08)  # the dead engine's lease runs out


def _recovering(stores: StoreFactory, flow: SagaFlow[Order], wall: float) -> SagaEngine:
    engine = SagaEngine(
        store=stores(),
        lease=LEASE,
        signal_poll=POLL,
        wall_clock=lambda: wall,
        hold_waits=True,
        log=False,
    )
    engine.register("order", flow)
    return engine


async def test_a_saga_whose_engine_died_while_waiting_is_resumed_by_another_and_takes_its_signal(
    stores: StoreFactory,
) -> None:
    flow = order_flow(timedelta(hours=48))
    data = Order(amount=3)
    await _crashed_while_waiting(stores, flow, data, wall=T0)
    other = _recovering(stores, flow, wall=T0 + 60)
    await other.signal(data.saga_id, Confirmed("r-2"), signal_id="once")
    await other.signal(data.saga_id, Confirmed("r-2"), signal_id="once")

    report = await other.recover(saga_ids=[str(data.saga_id)])

    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.COMPLETED]
    result = report.sagas[0].result
    assert result is not None
    assert result.data.reference == "r-2"
    assert CALLS == ["reserve", "capture r-2"]  # compensated nothing, whatever the policy
    await other.aclose()


async def test_a_recovered_wait_keeps_its_deadline_from_before_the_crash(
    stores: StoreFactory,
) -> None:
    flow = order_flow(timedelta(hours=2))
    data = Order(amount=3)
    await _crashed_while_waiting(stores, flow, data, wall=T0)
    other = _recovering(stores, flow, wall=T0 + 7200 - LEFT)  # 0.3 s before its deadline
    before = time.monotonic()

    report = await other.recover(saga_ids=[str(data.saga_id)])

    waited = time.monotonic() - before
    result = report.sagas[0].result
    assert result is not None
    assert isinstance(result.error, SagaWaitTimeoutError)
    assert LEFT * 0.9 <= waited < 60  # what was left, not two hours
    assert CALLS == ["reserve", "release"]
    await other.aclose()


async def test_a_saga_timeout_counts_from_the_saga_start_across_a_crash(
    stores: StoreFactory,
) -> None:
    flow = order_flow().timeout(timedelta(minutes=90))
    data = Order(amount=3)
    await _crashed_while_waiting(stores, flow, data, wall=T0)
    other = _recovering(stores, flow, wall=T0 + 5400 - LEFT)
    before = time.monotonic()

    report = await other.recover(saga_ids=[str(data.saga_id)])

    waited = time.monotonic() - before
    result = report.sagas[0].result
    assert result is not None
    assert result.status is SagaStatus.TIMED_OUT
    assert isinstance(result.error, SagaTimeoutError)
    assert LEFT * 0.5 <= waited < 60  # what was left of 90 minutes
    await other.aclose()


async def test_a_deadline_that_passed_while_no_process_ran_times_out_at_once_on_recovery(
    stores: StoreFactory,
) -> None:
    flow = order_flow(timedelta(minutes=10))
    data = Order(amount=3)
    await _crashed_while_waiting(stores, flow, data, wall=T0)
    other = _recovering(stores, flow, wall=T0 + 86400)

    report = await other.recover(saga_ids=[str(data.saga_id)])

    result = report.sagas[0].result
    assert result is not None
    assert isinstance(result.error, SagaWaitTimeoutError)
    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.COMPENSATED]
    await other.aclose()


async def test_a_signal_for_an_unknown_or_finished_saga_is_refused_with_its_status(
    stores: StoreFactory,
) -> None:
    flow = saga_flow(reserve)
    engine = _engine(stores, order_flow())
    engine.register("plain", flow)
    data = Order(amount=1)
    await engine.run(flow, data, saga_name="plain")

    with pytest.raises(SagaSignalTargetError, match="is COMPLETED") as finished:
        await engine.signal(data.saga_id, Confirmed("late"))
    assert finished.value.status == "COMPLETED"
    with pytest.raises(SagaSignalTargetError, match="there is no saga nope"):
        await engine.signal("nope", Confirmed("x"))
    await engine.aclose()


async def test_a_signal_no_wait_of_the_registered_flow_accepts_is_refused(
    stores: StoreFactory,
) -> None:
    flow = order_flow()
    engine = _engine(stores, flow)
    data = Order(amount=3)
    task = await _waiting(engine, flow, data)

    with pytest.raises(SagaSignalTypeError, match="no wait of saga"):
        await engine.signal(data.saga_id, Order(amount=1))
    await engine.signal(data.saga_id, Confirmed("ok"))
    assert (await task).status is SagaStatus.COMPLETED
    await engine.aclose()
