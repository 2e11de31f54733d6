"""`explore_failures`: run a saga once per failure point and check every promise each time.

The failure points, in the order they run:

1. the baseline: no fault;
2. each action failing (every attempt raises), in flow order, group members in declaration
   order;
3. each compensation failing, in a run where it runs: the last scenario of (2) that rolled
   that step back, with its compensation failing too;
2b. each `wait_for` with a timeout getting no signal (so it times out), every other wait
   getting the signal `signals=` gives for its type (in every other scenario, each
   `wait_for` gets its signal when it starts);
4. with `timeouts=True`, each action hanging until a timeout cuts it off (its own step
   timeout, or the saga timeout), on virtual loop time so that it takes no real time;
5. with `cancellation=True`, the caller cancelling at each await point of each run of (1)
   to (3): cancelled at the 1st, 2nd, ... time the run suspends, until it finishes first.

Each run gets a freshly instrumented copy of the flow (see `_injection`), and its calls and
outcome go through the checks (see `_invariants` and `Check`).

A wait is not an action the explorer can fail: the engine runs it. The explorer varies what
reaches it instead (its signal arrives, or never does) and sees it through its events (a
wait's attempt is a call: started at STEP_STARTED, ended at STEP_COMMITTED with the merged
data or at STEP_FAILED with its timeout error), so every check applies to it as to a step.
A flow with waits runs on virtual loop time: a 48-hour timeout or sleep takes no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaCompensationFailedError, SagaSignalError
from spakky_saga.events import SagaEvent
from spakky_saga.flow import SagaFlow
from spakky_saga.listeners import SagaListener
from spakky_saga.result import SagaResult
from spakky_saga.testing._injection import Call, Faults, Recorder, Shape, Site, instrument
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


@runtime_checkable
class SignallingRunner(SagaRunner, Protocol):
    """A runner that also delivers signals (a `SagaEngine`): what a flow with waits needs."""

    async def signal(self, saga_id: UUID, payload: object, /) -> object: ...


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
    signals: Sequence[object] = (),
) -> ExplorationReport[D]:
    """Run `saga` on `data` once per failure point and check the saga's promises each time.

    `saga` is a `SagaFlow`, an `AbstractSaga` (its `cached_flow()` runs, under its class
    name), or a zero-argument function returning either, called for every run so each run
    gets fresh services. `engine` runs the flow (default: an engine on a `VirtualClock`, so
    retry backoff takes no time). `timeouts=True` adds a hang of each step that a timeout
    can end (run on virtual loop time: needs looptime); `cancellation=True` adds the caller
    cancelling at every await point. `error(message)` builds the injected exceptions.
    `signals` are payloads for the flow's waits: each `wait_for` is sent the one of its
    signal type when it starts, except in its own "gets no signal" scenario (a `wait_for`
    with a timeout); the engine must have `signal` (a `SagaEngine`: the default one does).

    Returns an `ExplorationReport`: `report.ok`, `report.violations`, `report.scenarios`;
    print it for a table. Never raises for a broken promise: assert on the report (or call
    `report.assert_ok()`).
    """
    started = time.perf_counter()
    source = Source(saga, saga_name, "explore_failures")
    runner: SagaRunner = engine if engine is not None else VirtualClock().engine(log=False)
    shape = source.shape
    explorer = ScenarioRunner(source, runner, data, error, signals)
    outcomes: list[ScenarioOutcome[D]] = []
    notes: list[str] = []
    waits = bool(shape.waits)  # a flow with waits runs on virtual loop time

    base = [Plan(Scenario(), Faults(error), virtual=waits)]
    base += [
        Plan(Scenario(failing_step=site.label), Faults(error, fail_action=site.key), virtual=waits)
        for site in shape.fault_sites
    ]
    base += [
        Plan(
            Scenario(unsignalled_wait=site.label),
            Faults(error, withhold_signal=site.key),
            virtual=True,
        )
        for site in shape.waits
        if site.can_time_out
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
                    unsignalled_wait=trigger.scenario.unsignalled_wait,
                    failing_compensation=site.label,
                ),
                Faults(
                    error,
                    fail_action=trigger.faults.fail_action,
                    withhold_signal=trigger.faults.withhold_signal,
                    fail_compensation=site.key,
                ),
                virtual=waits,
            )
        )
    for plan in compensation_plans:
        outcomes.append((await explorer.run(plan))[0])

    if timeouts:
        for site in shape.fault_sites:
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
                        unsignalled_wait=plan.scenario.unsignalled_wait,
                        cancelled_at=point,
                    ),
                    plan.faults,
                    cancel_at=point,
                    virtual=plan.virtual,
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
        signals: Sequence[object] = (),
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
            signals=signals,
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
        signals: Sequence[object] = (),
        *,
        post: Post | None = None,
        reloads: bool = False,
    ) -> None:
        self.source = source
        self.reloads = reloads
        """Whether the runner's sagas may go through the store (suspend and resume)."""
        self.runner = runner
        self.post = post
        self.data = data
        self.error = error
        self.last_cancel_issued = False
        self.clock = VirtualClock()
        self.payloads = _payloads(source.shape, signals, runner, source.explorer)

    async def run(
        self, plan: Plan, *, baseline: bool = False
    ) -> tuple[ScenarioOutcome[D], Recorder]:
        recorder = Recorder()
        shape = self.source.shape
        flow, subject = self.source.next()
        flow = instrument(flow, shape, plan.faults, recorder)
        events = _AbortedData()
        sent = {
            key: payload
            for key, payload in self.payloads.items()
            if key != plan.faults.withhold_signal
        }
        waits = WaitObserver(shape, recorder, self.runner, sent, self.data, post=self.post)
        call = self.runner.run(
            flow, self.data, saga_name=self.source.name, listeners=[events, waits]
        )
        if plan.virtual:
            with self.clock.virtual_loop():
                result, raised, issued = await _drive(call, plan.cancel_at, recorder)
                await waits.settle()
        else:
            result, raised, issued = await _drive(call, plan.cancel_at, recorder)
            await waits.settle()
        self.last_cancel_issued = issued
        observed = Observed(
            recorder.calls,
            self.data,
            result,
            raised,
            issued,
            events.data,
            recorder.finished_at,
            signals_sent=sent,
            signals_taken=waits.taken,
            reloaded=self.reloads,
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


def _payloads(
    shape: Shape, signals: Sequence[object], runner: SagaRunner, explorer: str
) -> dict[str, object]:
    """The signal each `wait_for` of the flow is sent, by site key; refuses a flow with a
    `wait_for` whose payload is missing, or a runner that cannot send signals."""
    payloads: dict[str, object] = {}
    missing: list[str] = []
    for site in shape.waits:
        if site.signal_type is None:
            continue
        payload = next((s for s in signals if isinstance(s, site.signal_type)), None)
        if payload is None:
            missing.append(f"{site.label} ({site.signal_type.__name__})")
        else:
            payloads[site.key] = payload
    if missing:
        raise ValueError(
            f"{explorer}(saga, signals=...): no signal for {', '.join(missing)}; pass one "
            "payload of each type a wait_for waits for (each is sent when its wait starts)"
        )
    if payloads and not isinstance(runner, SignallingRunner):
        raise ValueError(
            f"{explorer}(engine=...): the flow waits for signals, but {runner!r} has no "
            "signal(saga_id, payload) to send them with; use a SagaEngine"
        )
    return payloads


type Post = Callable[[UUID, str, object], None]
"""How a `WaitObserver` hands over a signal to send instead of sending it through the runner
itself: (saga id, signal id, payload), the signal id `key#attempt` of the wait's attempt."""


class WaitObserver(SagaListener):
    """Sees the flow's waits through their events: each attempt a call in the recorder (so
    that every check applies to it as to a step), the signals each took, and sends each
    `wait_for` its signal when it starts (unless the scenario withholds it), through the
    runner or `post`. An attempt resumed after a suspension (STEP_STARTED again, for the same
    attempt) is the same call, sent nothing again. `process` is whose calls they are."""

    def __init__(
        self,
        shape: Shape,
        recorder: Recorder,
        runner: SagaRunner | None,
        sent: dict[str, object],
        data: object,
        *,
        post: Post | None = None,
        process: int = 1,
    ) -> None:
        self.latest = data
        """The data of the latest event that carried some (STEP_STARTED carries none)."""
        self.sites: dict[str, Site] = {site.key: site for site in shape.waits}
        self.recorder = recorder
        self.runner = runner
        self.sent = sent
        self.taken: dict[str, list[object]] = {}
        self.open: dict[str, Call] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.post = post
        self.process = process

    def _site(self, event: SagaEvent) -> Site | None:
        if event.data is not None:
            self.latest = event.data
        return self.sites.get(event.step_key) if event.step_key is not None else None

    def step_started(self, event: SagaEvent) -> None:
        site = self._site(event)
        if site is None:
            return
        resumed = self.open.get(site.key)
        if resumed is not None and resumed.step_attempt == event.attempt:
            return  # woken from a suspension: the attempt goes on
        call = self.recorder.start("action", site, self.latest, self.process)
        call.step_attempt = event.attempt
        self.open[site.key] = call
        payload = self.sent.get(site.key)
        if payload is not None and self.post is not None:
            self.post(event.saga_id, f"{site.key}#{event.attempt}", payload)
        elif payload is not None:
            assert isinstance(self.runner, SignallingRunner)
            task = asyncio.get_running_loop().create_task(
                _send(self.runner, event.saga_id, payload)
            )
            self.tasks.append(task)

    def step_committed(self, event: SagaEvent) -> None:
        self._end(event, returned=event.data)

    def step_failed(self, event: SagaEvent) -> None:
        self._end(event, raised=event.error)

    def step_retrying(self, event: SagaEvent) -> None:
        self._end(event, raised=event.error)

    def signal_received(self, event: SagaEvent) -> None:
        site = self._site(event)
        if site is not None:
            self.taken.setdefault(site.key, []).append(event.signal)

    def saga_aborted(self, event: SagaEvent) -> None:
        self.cut_off()

    def saga_finished(self, event: SagaEvent) -> None:
        self.cut_off()

    def _end(
        self, event: SagaEvent, returned: object = None, raised: BaseException | None = None
    ) -> None:
        site = self._site(event)
        call = self.open.pop(site.key, None) if site is not None else None
        if call is not None:
            self.recorder.end(call, returned=returned, raised=raised)

    def cut_off(self) -> None:
        """End the waits still open as cut off (cancelled, the saga timeout, a killed
        process)."""
        for call in self.open.values():
            self.recorder.end(call, raised=asyncio.CancelledError())
        self.open.clear()

    async def settle(self) -> None:
        """Wait for the signals still being sent (a run that ended first refuses them)."""
        await asyncio.gather(*self.tasks)


async def _send(runner: SignallingRunner, saga_id: UUID, payload: object) -> None:
    with contextlib.suppress(SagaSignalError):  # the run ended (cancelled) before it came
        await runner.signal(saga_id, payload)


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
