"""`explore_failures`: run a saga once per failure point and check every promise each time.

The failure points, in the order they run:

1. the baseline: no fault;
2. each action failing (every attempt raises), in flow order, group members in declaration
   order;
3. each compensation failing, in a run where it runs: the last scenario of (2) that rolled
   that step back, with its compensation failing too;
4. with `timeouts=True`, each action hanging until a timeout cuts it off (its own step
   timeout, or the saga timeout), on virtual loop time so that it takes no real time;
5. with `cancellation=True`, the caller cancelling at each await point of each run of (1)
   to (3): cancelled at the 1st, 2nd, ... time the run suspends, until it finishes first.

Each run gets a freshly instrumented copy of the flow (see `_injection`), and its calls and
outcome go through the checks (see `_invariants` and `Check`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaCompensationFailedError
from spakky_saga.events import SagaEvent
from spakky_saga.flow import SagaFlow
from spakky_saga.listeners import SagaListener
from spakky_saga.result import SagaResult
from spakky_saga.testing._injection import Faults, Recorder, instrument
from spakky_saga.testing._invariants import Observed, check_run
from spakky_saga.testing._source import SagaSource, Source
from spakky_saga.testing.report import ExplorationReport, Scenario, ScenarioOutcome
from spakky_saga.testing.virtual_time import VirtualClock


class SagaRunner(Protocol):
    """What runs the flow: a `SagaEngine`, or anything with its `run`."""

    async def run[D: AbstractSagaData](
        self,
        flow: SagaFlow[D],
        data: D,
        *,
        saga_name: str = ...,
        listeners: Iterable[object] = ...,
    ) -> SagaResult[D]: ...


class InjectedFault(Exception):
    """What an injected failure raises (unless `explore_failures(error=...)` says otherwise)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A scenario, by site keys (what `ScenarioRunner.run` runs)."""

    scenario: Scenario
    faults: Faults
    cancel_at: int | None = None
    virtual: bool = False
    """Run on virtual loop time (a hang that only a timeout ends)."""


async def explore_failures[D: AbstractSagaData](
    saga: SagaSource[D],
    data: D,
    *,
    engine: SagaRunner | None = None,
    timeouts: bool = False,
    cancellation: bool = False,
    error: Callable[[str], Exception] = InjectedFault,
    saga_name: str | None = None,
    max_cancellation_points: int = 500,
) -> ExplorationReport[D]:
    """Run `saga` on `data` once per failure point and check the saga's promises each time.

    `saga` is a `SagaFlow`, an `AbstractSaga` (its `cached_flow()` runs, under its class
    name), or a zero-argument function returning either, called for every run so each run
    gets fresh services. `engine` runs the flow (default: an engine on a `VirtualClock`, so
    retry backoff takes no time). `timeouts=True` adds a hang of each step that a timeout
    can end (run on virtual loop time: needs looptime); `cancellation=True` adds the caller
    cancelling at every await point. `error(message)` builds the injected exceptions.

    Returns an `ExplorationReport`: `report.ok`, `report.violations`, `report.scenarios`;
    print it for a table. Never raises for a broken promise: assert on the report (or call
    `report.assert_ok()`).
    """
    started = time.perf_counter()
    source = Source(saga, saga_name, "explore_failures")
    runner: SagaRunner = engine if engine is not None else VirtualClock().engine(log=False)
    shape = source.shape
    explorer = ScenarioRunner(source, runner, data, error)
    outcomes: list[ScenarioOutcome[D]] = []
    notes: list[str] = []

    base = [Plan(Scenario(), Faults(error))]
    base += [
        Plan(Scenario(failing_step=site.label), Faults(error, fail_action=site.key))
        for site in shape.sites
    ]
    base_runs = [await explorer.run(plan, baseline=index == 0) for index, plan in enumerate(base)]
    outcomes += [outcome for outcome, _ in base_runs]

    compensation_plans = []
    for site in shape.sites:
        if not site.compensable:
            continue
        trigger = next(
            (
                plan
                for plan, (_, recorder) in reversed(list(zip(base, base_runs, strict=True)))
                if any(c.site is site for c in recorder.of("compensation"))
            ),
            None,
        )
        if trigger is None:
            notes.append(
                f"the compensation of {site.label} never ran: no single failing step rolls it "
                "back (it is the last step that can fail, or every later one is skipped)"
            )
            continue
        compensation_plans.append(
            Plan(
                Scenario(
                    failing_step=trigger.scenario.failing_step,
                    failing_compensation=site.label,
                ),
                Faults(error, fail_action=trigger.faults.fail_action, fail_compensation=site.key),
            )
        )
    for plan in compensation_plans:
        outcomes.append((await explorer.run(plan))[0])

    if timeouts:
        for site in shape.sites:
            if not (site.timeout or shape.saga_timeout):
                notes.append(
                    f"{site.label} hanging: it has no timeout, and the flow no saga timeout, so "
                    "nothing would ever end the hang"
                )
                continue
            plan = Plan(
                Scenario(hanging_step=site.label),
                Faults(error, hang_action=site.key),
                virtual=True,
            )
            outcomes.append((await explorer.run(plan))[0])

    if cancellation:
        for plan in base + compensation_plans:
            for point in range(1, max_cancellation_points + 1):
                cancelled = Plan(
                    Scenario(
                        failing_step=plan.scenario.failing_step,
                        failing_compensation=plan.scenario.failing_compensation,
                        cancelled_at=point,
                    ),
                    plan.faults,
                    cancel_at=point,
                )
                outcome, _ = await explorer.run(cancelled)
                if not explorer.last_cancel_issued:
                    break  # the run finished before its `point`th await: every point is done
                outcomes.append(outcome)
            else:
                notes.append(
                    f"cancellation during {plan.scenario}: stopped after "
                    f"{max_cancellation_points} await points (max_cancellation_points)"
                )

    return ExplorationReport(
        saga_name=source.name,
        scenarios=tuple(outcomes),
        notes=tuple(notes),
        elapsed=timedelta(seconds=time.perf_counter() - started),
    )


class FailureExplorer:
    """`explore_failures` bound to an engine: what the `explore_failures` fixture returns."""

    __slots__ = ("engine",)

    def __init__(self, engine: SagaRunner) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"FailureExplorer(engine={self.engine!r})"

    async def __call__[D: AbstractSagaData](
        self,
        saga: SagaSource[D],
        data: D,
        *,
        timeouts: bool = False,
        cancellation: bool = False,
        error: Callable[[str], Exception] = InjectedFault,
        saga_name: str | None = None,
        max_cancellation_points: int = 500,
    ) -> ExplorationReport[D]:
        """`explore_failures(saga, data, engine=self.engine, ...)`."""
        return await explore_failures(
            saga,
            data,
            engine=self.engine,
            timeouts=timeouts,
            cancellation=cancellation,
            error=error,
            saga_name=saga_name,
            max_cancellation_points=max_cancellation_points,
        )


class ScenarioRunner[D: AbstractSagaData]:
    """Runs one plan: instrument, run (cancelling if asked), check. Also what
    `explore_crashes` runs its uncrashed reference with."""

    def __init__(
        self,
        source: Source[D],
        runner: SagaRunner,
        data: D,
        error: Callable[[str], Exception],
    ) -> None:
        self.source = source
        self.runner = runner
        self.data = data
        self.error = error
        self.last_cancel_issued = False
        self.clock = VirtualClock()

    async def run(
        self, plan: Plan, *, baseline: bool = False
    ) -> tuple[ScenarioOutcome[D], Recorder]:
        recorder = Recorder()
        shape = self.source.shape
        flow, subject = self.source.next()
        flow = instrument(flow, shape, plan.faults, recorder)
        events = _AbortedData()
        call = self.runner.run(flow, self.data, saga_name=self.source.name, listeners=[events])
        if plan.virtual:
            with self.clock.virtual_loop():
                result, raised, issued = await _drive(call, plan.cancel_at, recorder)
        else:
            result, raised, issued = await _drive(call, plan.cancel_at, recorder)
        self.last_cancel_issued = issued
        observed = Observed(
            recorder.calls, self.data, result, raised, issued, events.data, recorder.finished_at
        )
        violations = check_run(plan.scenario, shape, observed, baseline=baseline)
        if isinstance(raised, SagaCompensationFailedError) and result is None:
            result = raised.result
        if result is not None:
            outcome = result.status.name
        else:
            outcome = type(raised).__name__ if raised is not None else "-"
        if isinstance(raised, SagaCompensationFailedError | asyncio.CancelledError):
            outcome = type(raised).__name__
        return (
            ScenarioOutcome(
                scenario=plan.scenario,
                outcome=outcome,
                result=result,
                raised=raised,
                ran=tuple(c.label for c in recorder.calls),
                compensated=tuple(
                    c.site.label for c in recorder.of("compensation") if c.site is not None
                ),
                failed_compensations=tuple(
                    c.site.label
                    for c in recorder.of("compensation")
                    if c.site is not None and c.raised is not None
                ),
                violations=tuple(violations),
                subject=subject,
            ),
            recorder,
        )


class _AbortedData(SagaListener):
    """Keeps the data of the SAGA_ABORTED event: what a cancelled run rolled back with."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: object | None = None

    def saga_aborted(self, event: SagaEvent) -> None:
        self.data = event.data


async def _drive[T](
    call: Coroutine[Any, Any, T], cancel_at: int | None, recorder: Recorder
) -> tuple[T | None, BaseException | None, bool]:
    """Await `call` in a task of its own (cancelled at its `cancel_at`th suspension, if
    given); returns (result, raised, whether the cancellation was issued)."""
    counter = _CancelAt(call, cancel_at)

    async def caller() -> T:
        try:
            return await counter
        finally:
            recorder.finished_at = recorder.mark()

    task = asyncio.get_running_loop().create_task(caller())
    try:
        return await task, None, counter.issued
    except (Exception, asyncio.CancelledError) as raised:
        this = asyncio.current_task()
        if isinstance(raised, asyncio.CancelledError) and this is not None and this.cancelling():
            raise  # the explorer itself is being cancelled
        return None, raised, counter.issued


class _CancelAt[T]:
    """Awaits a coroutine, counting the times it suspends; at the `at`th, cancels the task
    awaiting it: as if its caller's task were cancelled while the saga waited there."""

    __slots__ = ("at", "coro", "issued", "suspensions")

    def __init__(self, coro: Coroutine[Any, Any, T], at: int | None) -> None:
        self.coro = coro
        self.at = at
        self.suspensions = 0
        self.issued = False

    def __await__(self) -> Generator[Any, Any, T]:
        coro = self.coro
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            self.suspensions += 1
            if self.suspensions == self.at:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                self.issued = True
            try:
                value, error = (yield yielded), None
            except BaseException as thrown:  # delivered to the saga where it waits
                value, error = None, thrown
