"""Running durably: what the log holds before each action, what is refused up front, and
what happens when the engine may no longer write (lease lost, store gone)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spakky_saga import (
    AbstractSagaData,
    InMemorySagaStore,
    SagaAlreadyStartedError,
    SagaDataCodecError,
    SagaEngine,
    SagaEngineConfigurationError,
    SagaFlowDefinitionError,
    SagaLeaseLostError,
    SagaStatus,
    SagaStoreError,
    SqliteSagaStore,
    StoredStatus,
    current_step,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.testing import VirtualClock
from tests.durable_support import Ledger, StoreClock, Ticket, bump
from tests.support import wrong


async def test_an_attempt_is_in_the_log_before_its_action_runs_and_a_commit_before_the_next(
    tmp_path: Path,
) -> None:
    store = SqliteSagaStore(tmp_path / "sagas.db")
    seen: list[list[tuple[str, str | None]]] = []

    def watching(change: int) -> Callable[[Ticket], Awaitable[Ticket]]:
        async def action(data: Ticket) -> Ticket:
            record = await store.load(str(data.saga_id))
            assert record is not None
            seen.append([(e.kind, e.step) for e in record.events[-2:]])
            return dataclasses.replace(data, stock=data.stock + change)

        action.__name__ = f"add_{change}"
        return action

    engine = SagaEngine(store=store)
    flow = saga_flow(watching(1), watching(2))
    result = await engine.run(flow, Ticket(order_id=1), saga_name="order")
    await engine.aclose()

    assert result.status is SagaStatus.COMPLETED
    assert seen == [
        [("saga_started", None), ("step_started", "add_1")],
        [("step_committed", "add_1"), ("step_started", "add_2")],
    ]


async def test_the_log_holds_the_data_of_every_commit_and_the_final_status(
    tmp_path: Path,
) -> None:
    store = SqliteSagaStore(tmp_path / "sagas.db", synchronous="NORMAL")
    ledger = Ledger()
    engine = SagaEngine(store=store)
    flow = saga_flow(ledger.transaction("reserve", bump("stock", 3)), ledger.action("notify"))

    result = await engine.run(flow, Ticket(order_id=1), saga_name="order")

    record = await store.load(str(result.data.saga_id))
    await engine.aclose()
    assert record is not None
    assert (record.status, record.owner) == (StoredStatus.COMPLETED, None)
    assert '"stock":3' in record.data.replace(" ", "")
    commits = [e for e in record.events if e.kind == "step_committed"]
    assert [(e.step, e.data is not None) for e in commits] == [
        ("reserve", True),
        ("notify", False),  # returned None: the data did not change, nothing written
    ]
    assert {e.owner for e in record.events} == {engine.owner}


async def test_data_that_cannot_round_trip_is_refused_before_any_step_naming_the_field() -> None:
    class Opaque:
        pass

    class Bad(AbstractSagaData):
        order_id: int
        handle: object = None

    ledger = Ledger()
    engine = SagaEngine(store=InMemorySagaStore())
    flow = saga_flow(ledger.action("reserve"))

    with pytest.raises(SagaDataCodecError, match='Bad field "handle" cannot be stored') as raised:
        await engine.run(flow, wrong(Bad(order_id=1, handle=Opaque())), saga_name="order")

    assert raised.value.field == "handle"
    assert ledger.names() == []


async def test_a_value_that_comes_back_different_is_refused_naming_the_field() -> None:
    class Counted(AbstractSagaData):
        count: int = 0

    async def noop(data: Counted) -> None:
        return None

    engine = SagaEngine(store=InMemorySagaStore())
    seven = wrong("7")  # dataclasses do not check types; JSON brings it back as 7

    with pytest.raises(SagaDataCodecError, match=r"Counted field \"count\".*'7' comes back"):
        await engine.run(saga_flow(noop), Counted(count=seven), saga_name="x")


async def test_a_durable_saga_needs_a_name() -> None:
    engine = SagaEngine(store=InMemorySagaStore())

    with pytest.raises(SagaFlowDefinitionError, match="a durable saga needs a name of its own"):
        await engine.run(saga_flow(Ledger().action("a")), Ticket(order_id=1))


async def test_one_name_means_one_flow() -> None:
    engine = SagaEngine(store=InMemorySagaStore())
    ledger = Ledger()
    engine.register("order", saga_flow(ledger.transaction("reserve")))

    with pytest.raises(SagaFlowDefinitionError, match=r"registered with another flow \(item 1 was"):
        await engine.run(saga_flow(ledger.action("ship")), Ticket(order_id=1), saga_name="order")


async def test_a_saga_id_runs_durably_once() -> None:
    engine = SagaEngine(store=InMemorySagaStore())
    flow = saga_flow(Ledger().action("a"))
    data = Ticket(order_id=1)
    await engine.run(flow, data, saga_name="order")

    with pytest.raises(SagaAlreadyStartedError, match="already has saga"):
        await engine.run(flow, data, saga_name="order")


async def test_the_idempotency_key_names_saga_step_position_and_attempt() -> None:
    keys: list[str] = []

    async def charge(data: Ticket) -> None:
        keys.append(current_step().idempotency_key)

    async def refund(data: Ticket) -> None:
        keys.append(current_step().idempotency_key)

    async def fail(data: Ticket) -> None:
        raise ValueError("no")

    data = Ticket(order_id=1)
    await SagaEngine().run(saga_flow(step(charge, compensate=refund), fail), data)

    assert keys == [f"{data.saga_id}/1:charge/1", f"{data.saga_id}/1:charge/undo"]
    with pytest.raises(LookupError, match="outside a saga step"):
        current_step()


async def test_an_engine_that_lost_its_lease_stops_before_its_next_write() -> None:
    clock = StoreClock()
    store = InMemorySagaStore(clock=clock)
    ledger = Ledger()
    gate = asyncio.Event()
    reached = asyncio.Event()

    async def slow(data: Ticket) -> None:
        reached.set()
        await gate.wait()

    flow = saga_flow(ledger.transaction("reserve"), slow, ledger.transaction("ship"))
    first = SagaEngine(store=store)
    second = SagaEngine(store=store)
    second.register("order", flow)
    running = asyncio.create_task(first.run(flow, Ticket(order_id=1), saga_name="order"))
    await reached.wait()
    clock.expire()  # the first engine stalls past its lease
    report = await second.recover()  # and the second takes the saga over
    gate.set()

    with pytest.raises(SagaLeaseLostError, match="no longer owned by engine"):
        await running
    assert "ship" not in ledger.names()  # the first engine stopped before acting again
    assert [s.outcome for s in report.sagas] == ["compensated"]
    assert ledger.names().count("undo reserve") == 1


async def test_a_running_saga_keeps_its_lease_with_the_heartbeat(saga_clock: VirtualClock) -> None:
    # Virtual loop time (saga_clock) is the store's clock too: the heartbeat's sleeps and the
    # lease's expiry move together, exactly, however busy the machine is.
    store = InMemorySagaStore(clock=saga_clock)
    gate = asyncio.Event()

    async def long(data: Ticket) -> None:
        await gate.wait()

    engine = SagaEngine(store=store, lease=timedelta(seconds=30))
    other = SagaEngine(store=store)
    flow = saga_flow(long)
    other.register("order", flow)
    running = asyncio.create_task(engine.run(flow, Ticket(order_id=1), saga_name="order"))
    await asyncio.sleep(100)  # more than three leases long: only the heartbeat keeps it

    assert len(await other.recover()) == 0
    gate.set()
    result = await running
    assert result.status is SagaStatus.COMPLETED
    await engine.aclose()


async def test_a_store_that_fails_stops_the_run_and_leaves_the_saga_for_recovery() -> None:
    class Failing(InMemorySagaStore):
        def __init__(self) -> None:
            super().__init__()
            self.broken = False

        async def append(self, *args: object, **kwargs: object) -> None:
            if self.broken:
                raise SagaStoreError("disk full")
            await super().append(*args, **kwargs)  # type: ignore[arg-type]

    store = Failing()
    ledger = Ledger()

    async def break_store(data: Ticket) -> None:
        store.broken = True

    flow = saga_flow(ledger.transaction("reserve"), break_store, ledger.transaction("ship"))
    engine = SagaEngine(store=store)

    with pytest.raises(SagaStoreError, match="disk full"):
        await engine.run(flow, Ticket(order_id=1), saga_name="order")

    assert ledger.names() == ["reserve"]  # no action, no compensation without a log
    [record] = await store.list()
    assert record.status is StoredStatus.RUNNING


async def test_recover_needs_a_store() -> None:
    with pytest.raises(SagaEngineConfigurationError, match="needs a durable engine"):
        await SagaEngine().recover()


def test_engine_options_are_checked_when_built() -> None:
    with pytest.raises(SagaEngineConfigurationError) as raised:
        SagaEngine(lease=timedelta(0), store="sagas.db")  # type: ignore[arg-type]

    assert len(raised.value.problems) == 2
    assert "lease=" in raised.value.problems[0]
    assert "store='sagas.db'" in raised.value.problems[1]


async def test_the_attempts_of_a_groups_members_share_writes(tmp_path: Path) -> None:
    class Counting(SqliteSagaStore):
        writes = 0

        async def append(self, *args: Any, **kwargs: Any) -> None:
            Counting.writes += 1
            await super().append(*args, **kwargs)

    ledger = Ledger()
    engine = SagaEngine(store=Counting(tmp_path / "sagas.db"), log=False)
    flow = saga_flow(
        ledger.transaction("reserve"),
        parallel(*(ledger.transaction(f"member{i}") for i in range(8))),
    )

    result = await engine.run(flow, Ticket(order_id=1), saga_name="order")
    await engine.aclose()

    assert result.status is SagaStatus.COMPLETED
    # reserve's commit with member0's attempt, the other seven attempts together, the end:
    # not one write a member
    assert Counting.writes == 3
