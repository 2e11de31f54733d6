"""Each check's message, provoked by an engine that tampers with what the real one returns.

`Tampering` runs the real engine, then changes the outcome the way a buggy engine would:
every violation below is one the harness must report, worded so a reader knows what broke.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from spakky_saga import (
    AbstractSagaData,
    Parallel,
    SagaCompensationFailedError,
    SagaEngine,
    SagaEvent,
    SagaFlow,
    SagaListener,
    SagaResult,
    SagaStatus,
    Skip,
    StepRecord,
    StepStatus,
    saga_flow,
    step,
)
from spakky_saga.testing import Check, ExplorationReport, explore_failures
from tests.testing.flows import Order, Services, order_flow
from tests.testing.support import needs_looptime
from tests.testing.toy_engine import Bug, ToyEngine

type Tamper = Callable[[SagaFlow[Any], SagaResult[Any]], SagaResult[Any]]


class Tampering:
    """The real engine, with its results changed by `tamper` (and its SAGA_ABORTED data by
    `aborted`)."""

    def __init__(
        self,
        tamper: Tamper = lambda flow, result: result,
        *,
        aborted: AbstractSagaData | None = None,
        after: Callable[[SagaFlow[Any], Any], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = SagaEngine(log=False)
        self.tamper = tamper
        self.aborted = aborted
        self.after = after

    async def run[D: AbstractSagaData](
        self,
        flow: SagaFlow[D],
        data: D,
        *,
        saga_name: str = "<anonymous>",
        listeners: Iterable[object] = (),
    ) -> SagaResult[D]:
        observers = list(listeners)
        if self.aborted is not None:
            observers = [_Rewrite(listener, self.aborted) for listener in observers]
        result = await self.engine.run(flow, data, saga_name=saga_name, listeners=observers)
        if self.after is not None and not result.succeeded:
            await self.after(flow, data)
        tampered: SagaResult[D] = self.tamper(flow, result)
        return tampered


class _Rewrite(SagaListener):
    def __init__(self, listener: Any, data: AbstractSagaData) -> None:
        self.listener = listener
        self.data = data

    def saga_aborted(self, event: SagaEvent) -> None:
        self.listener.saga_aborted(event._replace(data=self.data))


async def explore(
    engine: Any, flow: SagaFlow[Order] | None = None, **options: Any
) -> ExplorationReport[Order]:
    return await explore_failures(
        flow if flow is not None else order_flow(Services()), Order(), engine=engine, **options
    )


def messages(report: ExplorationReport[Order], scenario: str, check: Check) -> list[str]:
    return [
        v.message
        for v in report.violations
        if v.scenario.description == scenario and v.check is check
    ]


def failing(flow: SagaFlow[Any], result: SagaResult[Any]) -> bool:
    return result.status is SagaStatus.FAILED


async def test_a_result_is_checked_against_the_tampering_engine_without_tampering() -> None:
    assert (await explore(Tampering())).ok


async def test_timed_out_without_a_saga_timeout_is_reported() -> None:
    report = await explore(
        Tampering(
            lambda flow, r: (
                dataclasses.replace(r, status=SagaStatus.TIMED_OUT) if failing(flow, r) else r
            )
        )
    )

    assert messages(report, "ship fails", Check.STATUS) == [
        "TIMED_OUT, but the flow has no saga timeout"
    ]


async def test_timed_out_with_another_error_is_reported() -> None:
    flow = order_flow(Services()).timeout(timedelta(minutes=1))

    report = await explore(
        Tampering(
            lambda flow, r: (
                dataclasses.replace(r, status=SagaStatus.TIMED_OUT) if failing(flow, r) else r
            )
        ),
        flow,
    )

    assert messages(report, "ship fails", Check.STATUS) == [
        "TIMED_OUT with error InjectedFault: injected failure of step ship (attempt 1), not "
        "SagaTimeoutError"
    ]


async def test_failed_although_every_step_committed_is_reported() -> None:
    report = await explore(
        Tampering(
            lambda flow, r: dataclasses.replace(r, status=SagaStatus.FAILED) if r.succeeded else r
        )
    )

    assert messages(report, "no fault", Check.STATUS) == [
        "FAILED at None (-), although every step that ran committed or was skipped"
    ]
    assert messages(report, "no fault", Check.BASELINE) == [
        "without any fault the saga ends FAILED at None (-); every other scenario starts from there"
    ]


async def test_a_finished_run_still_running_is_reported() -> None:
    report = await explore(
        Tampering(lambda flow, r: dataclasses.replace(r, status=SagaStatus.RUNNING))
    )

    assert "a finished run has status RUNNING" in messages(report, "ship fails", Check.STATUS)


async def test_completed_with_an_error_or_unreached_steps_is_reported() -> None:
    def complete(flow: SagaFlow[Any], r: SagaResult[Any]) -> SagaResult[Any]:
        return dataclasses.replace(r, status=SagaStatus.COMPLETED)

    report = await explore(Tampering(complete))

    assert messages(report, "charge fails", Check.STATUS) == [
        "COMPLETED although charge failed (InjectedFault: injected failure of step charge "
        "(attempt 1))",
        "COMPLETED although ship never ran",
        "COMPLETED with failed_step='charge' and error=InjectedFault: injected failure of step "
        "charge (attempt 1)",
    ]


async def test_a_wrong_skipped_list_is_reported() -> None:
    services = Services()
    flow = saga_flow(step(services.notify) | Skip(), step(services.ship))

    report = await explore(Tampering(lambda flow, r: dataclasses.replace(r, skipped=())), flow)

    assert messages(report, "notify fails", Check.STATUS) == [
        "skipped=[], but the steps that failed and were skipped are ['notify']"
    ]


async def test_another_error_than_the_steps_is_reported() -> None:
    report = await explore(
        Tampering(
            lambda flow, r: (
                dataclasses.replace(r, error=ValueError("other")) if failing(flow, r) else r
            )
        )
    )

    assert messages(report, "ship fails", Check.STATUS) == [
        "result.error is ValueError: other, not the error ship raised (InjectedFault: injected "
        "failure of step ship (attempt 1))"
    ]


@needs_looptime
async def test_a_step_timeout_reported_as_another_error_is_reported() -> None:
    services = Services()
    flow = saga_flow(step(services.ship, timeout=timedelta(seconds=5)))

    report = await explore(
        Tampering(
            lambda flow, r: (
                dataclasses.replace(r, error=ValueError("other")) if failing(flow, r) else r
            )
        ),
        flow,
        timeouts=True,
    )

    assert messages(report, "ship hangs", Check.STATUS) == [
        "ship was cut off by its timeout, but result.error is ValueError: other, not "
        "SagaStepTimeoutError"
    ]


async def test_other_result_data_is_reported_as_another_object() -> None:
    report = await explore(
        Tampering(lambda flow, r: dataclasses.replace(r, data=Order(order_id=2)))
    )

    assert messages(report, "no fault", Check.STATUS) == [
        "result.data is another data object #1 (Order), not the latest data (the data ship "
        "returned)"
    ]


async def test_history_records_without_calls_are_reported() -> None:
    extra = (
        StepRecord("ship", StepStatus.COMMITTED, attempt=2),
        StepRecord("reserve", StepStatus.FAILED, attempt=3),
        StepRecord("ticket", StepStatus.COMPENSATED, compensation=True),
    )

    report = await explore(
        Tampering(lambda flow, r: dataclasses.replace(r, history=r.history + extra))
    )

    assert messages(report, "no fault", Check.HISTORY) == [
        "the history has 1 COMMITTED record of ship attempt 2, but no such call committed",
        "the history has 1 FAILED record of reserve attempt 3, but no such call failed",
        "the history has 1 COMPENSATED compensation record of ticket that no compensation "
        "call matches",
    ]


async def test_an_uninvited_cancellation_is_reported() -> None:
    def cancel(flow: SagaFlow[Any], result: SagaResult[Any]) -> SagaResult[Any]:
        raise asyncio.CancelledError

    report = await explore(Tampering(cancel))

    assert messages(report, "no fault", Check.OUTCOME) == [
        "the run raised CancelledError though nobody cancelled it"
    ]


async def test_an_exception_instead_of_a_result_is_reported() -> None:
    def explode(flow: SagaFlow[Any], result: SagaResult[Any]) -> SagaResult[Any]:
        raise RuntimeError("engine bug")

    report = await explore(Tampering(explode))

    assert messages(report, "no fault", Check.OUTCOME) == [
        "the run raised RuntimeError: engine bug instead of returning a result (no "
        "compensation failed)"
    ]


async def test_a_compensation_failure_without_a_result_is_reported() -> None:
    engine = SagaEngine(log=False)

    class NoResult:
        async def run(self, flow: Any, data: Any, **options: Any) -> Any:
            try:
                return await engine.run(flow, data, **options)
            except SagaCompensationFailedError as failed:
                raise SagaCompensationFailedError(None, failed.failures) from None

    report = await explore(NoResult())

    assert messages(report, "undo reserve fails, ship fails", Check.FAILURE_REPORTED) == [
        "SagaCompensationFailedError carries no result"
    ]


async def test_a_step_run_after_the_saga_failed_is_reported() -> None:
    async def late(flow: SagaFlow[Any], data: Any) -> None:
        last = flow.items[-1]
        assert not isinstance(last, Parallel)
        await last.action(data)

    report = await explore(Tampering(after=late))

    assert "ship ran after the saga had failed at reserve" in messages(
        report, "reserve fails", Check.STATUS
    )


async def test_a_cancelled_rollback_with_other_data_is_reported() -> None:
    report = await explore(Tampering(aborted=Order(order_id=3)), cancellation=True)

    assert messages(report, "cancelled at await 3", Check.COMPENSATION_DATA) == [
        "the cancelled saga rolled back with another data object #1 (Order), not the latest "
        "data (the data reserve returned)"
    ]


async def test_a_failure_handler_called_before_the_rollback_ended_is_reported() -> None:
    report = await explore(ToyEngine(Bug.HANDLER_FIRST))

    assert messages(report, "undo reserve fails, ship fails", Check.FAILURE_HANDLER) == [
        "the failure handler ran before every compensation had finished"
    ]
    assert messages(report, "ship fails", Check.FAILURE_HANDLER) == [
        "the failure handler ran once though no compensation failed"
    ]


async def test_a_failure_handler_that_raises_is_still_checked() -> None:
    services = Services()

    async def handler(data: Order) -> None:
        raise RuntimeError("pager down")

    flow = saga_flow(
        step(services.reserve, compensate=services.release), step(services.ship)
    ).on_compensation_failure(handler)

    report = await explore(SagaEngine(log=False), flow)

    assert report.ok, str(report)
    assert report.scenario("undo reserve fails, ship fails").ran[-1] == "failure handler"
