"""Ask an operator (`Escalate()`): a step that fails waits at its failure for
`engine.resolve(saga_id, decision, by=...)`: "retry" runs it again, "skip" goes on without
it, "compensate" fails it; without a decision in time its `then` decides. On a durable
engine the saga is suspended meanwhile (WAITING), the decision is sent from another engine
and the saga resumed by recovery; the decision and who made it are in the saga's log.
Build-time checks: not in a parallel group, not as a compensation's policy."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from spakky_saga import (
    AbstractSagaData,
    Escalate,
    InMemorySagaStore,
    RecoveryOutcome,
    Retry,
    SagaEngine,
    SagaEventKind,
    SagaFlow,
    SagaFlowDefinitionError,
    SagaResolutionError,
    SagaResult,
    SagaStatus,
    SagaWaitDefinitionError,
    Skip,
    StepStatus,
    StoredStatus,
    saga_flow,
    step,
)
from spakky_saga.testing import VirtualClock


class Shipment(AbstractSagaData):
    order_id: int = 1


class Warehouse:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    async def reserve(self, data: Shipment) -> None:
        self.calls.append("reserve")

    async def release(self, data: Shipment) -> None:
        self.calls.append("release")

    async def ship(self, data: Shipment) -> None:
        self.calls.append("ship")
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("warehouse API down")

    async def notify(self, data: Shipment) -> None:
        self.calls.append("notify")

    def flow(self, strategy: Escalate) -> SagaFlow[Shipment]:
        return saga_flow(
            step(self.reserve, compensate=self.release), step(self.ship) | strategy, self.notify
        )


async def _escalated(
    engine: SagaEngine, flow: SagaFlow[Shipment], data: Shipment
) -> asyncio.Task[SagaResult[Shipment]]:
    task = asyncio.get_running_loop().create_task(engine.run(flow, data))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    return task


@pytest.mark.parametrize(
    ("decision", "status", "calls"),
    [
        ("retry", SagaStatus.COMPLETED, ["reserve", "ship", "ship", "notify"]),
        ("skip", SagaStatus.COMPLETED, ["reserve", "ship", "notify"]),
        ("compensate", SagaStatus.FAILED, ["reserve", "ship", "release"]),
    ],
)
async def test_an_escalated_step_does_what_the_operator_decides(
    saga_clock: VirtualClock, decision: str, status: SagaStatus, calls: list[str]
) -> None:
    warehouse = Warehouse(failures=1)
    engine = saga_clock.engine()
    data = Shipment()
    task = await _escalated(engine, warehouse.flow(Escalate()), data)

    await engine.resolve(data.saga_id, decision, by="ops@box")  # type: ignore[arg-type] # str
    result = await task

    assert result.status is status
    assert warehouse.calls == calls
    ship = [(r.status, r.attempt) for r in result.history if r.name == "ship"]
    assert ship[0] == (StepStatus.FAILED, 1)
    if decision == "retry":
        assert ship[1] == (StepStatus.COMMITTED, 2)
    if decision == "skip":
        assert result.skipped == ("ship",)


async def test_without_a_decision_in_time_the_escalation_falls_back_to_then(
    saga_clock: VirtualClock,
) -> None:
    warehouse = Warehouse(failures=1)
    engine = saga_clock.engine()

    compensated = await engine.run(warehouse.flow(Escalate(timeout=timedelta(hours=4))), Shipment())
    skipped = await engine.run(
        Warehouse(failures=1).flow(Escalate(timeout=timedelta(hours=4), then=Skip())), Shipment()
    )

    assert compensated.status is SagaStatus.FAILED
    assert isinstance(compensated.error, ConnectionError)
    assert warehouse.calls == ["reserve", "ship", "release"]
    assert skipped.status is SagaStatus.COMPLETED
    assert skipped.skipped == ("ship",)
    assert saga_clock.now == pytest.approx(8 * 3600, abs=1)


async def test_resolve_refuses_another_decision_or_no_one_deciding(
    saga_clock: VirtualClock,
) -> None:
    engine = saga_clock.engine()
    data = Shipment()
    task = await _escalated(engine, Warehouse(failures=1).flow(Escalate()), data)

    with pytest.raises(SagaResolutionError, match="'retry', 'skip' or 'compensate'"):
        await engine.resolve(data.saga_id, "later", by="ops")  # type: ignore[arg-type] # deliberate
    with pytest.raises(SagaResolutionError, match="say who decides"):
        await engine.resolve(data.saga_id, "skip", by=" ")
    await engine.resolve(data.saga_id, "skip", by="ops")
    assert (await task).status is SagaStatus.COMPLETED


async def test_a_durable_saga_escalates_suspended_and_another_engine_carries_out_the_decision() -> (
    None
):
    store = InMemorySagaStore()
    warehouse = Warehouse(failures=1)
    flow = warehouse.flow(Escalate(timeout=timedelta(days=2)))
    engines = [SagaEngine(store=store, log=False) for _ in range(3)]
    for engine in engines:
        engine.register("shipment", flow)
    first, operator, worker = engines
    data = Shipment()

    waiting = await first.run(flow, data, saga_name="shipment")
    nothing_yet = await worker.recover()
    await operator.resolve(data.saga_id, "retry", by="ops@box")
    report = await worker.recover()

    assert waiting.status is SagaStatus.WAITING
    assert len(nothing_yet) == 0
    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.COMPLETED]
    assert warehouse.calls == ["reserve", "ship", "ship", "notify"]
    record = await store.load(str(data.saga_id))
    assert record is not None
    assert record.status is StoredStatus.COMPLETED
    kinds = [e.kind for e in record.events]
    assert SagaEventKind.STEP_ESCALATED.value in kinds
    [decided] = [
        json.loads(e.data or "{}")
        for e in record.events
        if e.kind == SagaEventKind.SIGNAL_RECEIVED.value
    ]
    assert (decided["resolution"], decided["by"]) == ("retry", "ops@box")


async def test_a_durable_escalation_decided_compensate_compensates_on_recovery() -> None:
    store = InMemorySagaStore()
    warehouse = Warehouse(failures=1)
    flow = warehouse.flow(Escalate())
    engine = SagaEngine(store=store, log=False)
    engine.register("shipment", flow)
    data = Shipment()
    await engine.run(flow, data, saga_name="shipment")

    await engine.resolve(data.saga_id, "compensate", by="ops")
    report = await engine.recover()

    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.COMPENSATED]
    assert warehouse.calls == ["reserve", "ship", "release"]


def test_escalate_is_checked_where_it_is_written() -> None:
    warehouse = Warehouse(failures=0)

    with pytest.raises(SagaFlowDefinitionError, match="timeout must be a positive"):
        Escalate(timeout=timedelta(0))
    with pytest.raises(SagaFlowDefinitionError, match="then must be Compensate"):
        Escalate(then=Retry())  # type: ignore[arg-type] # deliberate
    with pytest.raises(SagaWaitDefinitionError, match="cannot escalate in a parallel group"):
        (step(warehouse.ship) | Escalate()) & step(warehouse.notify)
    with pytest.raises(SagaFlowDefinitionError, match="a compensation cannot escalate"):
        step(warehouse.reserve) >> (step(warehouse.release) | Escalate())
    assert Escalate(then=Skip()).skips is True
