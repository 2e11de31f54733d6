"""Turns a scenario into a flow whose steps write a journal, runs it, and returns the trace.

The journal is the ground truth the invariants are checked against: each action attempt,
compensation, backoff sleep and failure-handler call records, with the virtual time, when it
started and how it ended (returned data, raised, or was cancelled), and the caller records
every cancellation it delivered. Nothing in it comes from the engine's own reports.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import operator
import warnings
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, Final, Literal, NamedTuple, cast
from uuid import UUID

from spakky_saga import (
    AbstractSagaData,
    Compensate,
    ErrorStrategy,
    ExponentialBackoff,
    FlowItem,
    InMemorySagaStore,
    Retry,
    SagaCompensationFailedError,
    SagaEngine,
    SagaEvent,
    SagaEventKind,
    SagaFlow,
    SagaListener,
    SagaListenerWarning,
    SagaResult,
    SagaStep,
    Skip,
    Transaction,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.store import SagaRecord
from tests.faults.scenario import (
    EIGHTH,
    MAX_STEPS,
    QUARTER,
    SIXTEENTH,
    GroupSpec,
    Scenario,
    StepSpec,
    Strategy,
)
from tests.faults.virtual_loop import run_virtual

FIELDS: Final = (*(f"f{index}" for index in range(1, MAX_STEPS + 1)), "shared")
SHARED: Final = len(FIELDS) - 1
"""Where the field `shared` is in a snapshot's values."""

FaultData: Final = cast(
    type[AbstractSagaData],
    type(
        "FaultData",
        (AbstractSagaData,),
        {
            "__module__": __name__,
            "__qualname__": "FaultData",
            "__annotations__": dict.fromkeys(FIELDS, "int"),
            **dict.fromkeys(FIELDS, 0),
        },
    ),
)
"""Saga data with one int field per possible step: step `s<i>` writes `f<i>` (its attempt
number), so the latest data says exactly which steps committed with data; and one field,
`shared`, that group members marked `shared` write (their index): two of them in one group
conflict."""

type Snapshot = tuple[UUID, tuple[int, ...]]


_VALUES: Final = operator.attrgetter(*FIELDS)


def snapshot(data: AbstractSagaData) -> Snapshot:
    """The data's identity and field values: comparable across runs and objects."""
    return data.saga_id, _VALUES(data)


class Boom(Exception):
    """The error a failing attempt raises when `retry_on` should match it."""


class OtherError(Exception):
    """The error a failing attempt raises when `retry_on` should not match it."""


class UndoError(Exception):
    """What a failing compensation raises."""


class HandlerError(Exception):
    """What a raising compensation-failure handler raises."""


class StubbornError(RuntimeError):
    """What a step that turns its cancellation into its own error raises."""


class WrongOutput:
    """What a step returning something other than the saga's data returns."""

    def __repr__(self) -> str:
        return "WrongOutput()"  # no address: runs with and without observers compare equal


type EntryKind = Literal[
    "start",  # an action attempt started (data: its input)
    "commit",  # ... returned (data: what it returned, or None)
    "raise",  # ... raised `error`
    "cut",  # ... was cancelled (`error`: the StubbornError it raised instead, if stubborn)
    "wrong",  # ... returned something that is not the saga's data
    "backoff",  # the engine slept before a retry (attempt: the failed attempt)
    "backoff_done",
    "backoff_cut",
    "undo",  # a compensation started (data: what it was given)
    "undo_ok",
    "undo_raise",
    "undo_cut",
    "handler",  # the failure handler was called (data: what it was given)
    "cancel",  # the caller cancelled the saga's task (the cancel was delivered)
]


class Entry(NamedTuple):
    kind: EntryKind
    step: int = 0
    """The step's index (0 for saga-level entries)."""
    attempt: int = 0
    time: float = 0.0
    """Virtual seconds since the saga started (its caller called it)."""
    data: Snapshot | None = None
    error: BaseException | None = None


type OutcomeKind = Literal["result", "compensation_failed", "cancelled", "raised"]


@dataclasses.dataclass(slots=True)
class Trace:
    """What a run did: the journal, and what the caller saw."""

    journal: list[Entry]
    outcome: OutcomeKind
    result: SagaResult[Any] | None
    """The returned result, or the one SagaCompensationFailedError carries."""
    error: BaseException | None
    """The exception the caller got (None when a result was returned)."""
    tasks_left: int
    """Tasks other than the caller's still alive when the caller got its answer."""
    listener_warnings: list[str]
    input: Snapshot
    durable: bool = False
    stored: SagaRecord | None = None
    """On a durable engine: the saga as its store has it after the run."""


_RUNNING: Final[contextvars.ContextVar[tuple[int, int]]] = contextvars.ContextVar(
    "fault_step", default=(0, 0)
)
"""(step index, attempt) of the action last run in this task: tells the engine's backoff
sleep which step it waits for (a group member's retries run in the member's task)."""


class Journal:
    """One saga run's journal; the run's steps find it in `_JOURNAL` (so that one flow can
    serve any number of concurrent runs, each with its own journal)."""

    def __init__(self) -> None:
        self.began = asyncio.get_running_loop().time()
        """When the saga was started: entries hold times relative to it."""
        self.entries: list[Entry] = []
        self.calls: dict[int, int] = {}
        """Attempts started so far, by step index."""
        self.undos = 0
        self.handled = False
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = (0, False)

    async def reached(self, task: asyncio.Task[Any], undos: int, handled: bool) -> None:
        """Wait until `undos` compensations started (or the handler ran), or `task` ended."""
        if self._done(undos, handled) or task.done():
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._wanted = (undos, handled)

        def wake(_: object) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        try:
            await waiter
        finally:
            task.remove_done_callback(wake)
            self._waiter = None

    def _done(self, undos: int, handled: bool) -> bool:
        return (self.handled if handled else False) or (undos > 0 and self.undos >= undos)

    def add(
        self,
        kind: EntryKind,
        step: int = 0,
        attempt: int = 0,
        data: AbstractSagaData | None = None,
        error: BaseException | None = None,
    ) -> None:
        now = asyncio.get_running_loop().time() - self.began
        taken = snapshot(data) if data is not None else None
        self.entries.append(Entry(kind, step, attempt, now, taken, error))
        self.undos += kind == "undo"
        self.handled |= kind == "handler"
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._done(*self._wanted):
            waiter.set_result(None)

    async def backoff(self, delay: float) -> None:
        """The engine's `sleep=`: a real (virtual-time) sleep, journaled."""
        index, attempt = _RUNNING.get()
        self.add("backoff", index, attempt)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.add("backoff_cut", index, attempt)
            raise
        self.add("backoff_done", index, attempt)


async def _wait(ticks: int, quarters: int, forever: bool) -> None:
    for _ in range(ticks):
        await asyncio.sleep(0)
    if quarters:
        await asyncio.sleep(quarters * QUARTER)
    if forever:
        await asyncio.get_running_loop().create_future()


_JOURNAL: Final[contextvars.ContextVar[Journal]] = contextvars.ContextVar("fault_journal")
"""The journal of the saga running in this task (inherited by the tasks it starts: group
members, the rollback, concurrent compensations)."""


def _action(spec: StepSpec) -> Callable[[Any], Coroutine[Any, Any, Any]]:
    async def action(data: AbstractSagaData) -> AbstractSagaData | WrongOutput | None:
        journal = _JOURNAL.get()
        number = journal.calls[spec.index] = journal.calls.get(spec.index, 0) + 1
        attempt = spec.attempt(number)
        _RUNNING.set((spec.index, number))
        journal.add("start", spec.index, number, data)
        try:
            await _wait(attempt.ticks, attempt.delay, attempt.outcome in ("hang", "stubborn"))
        except asyncio.CancelledError:
            if attempt.outcome == "stubborn":
                stubborn = StubbornError(f"{spec.name} does not do cancellation")
                journal.add("cut", spec.index, number, error=stubborn)
                raise stubborn from None
            journal.add("cut", spec.index, number)
            raise
        if attempt.outcome in ("raise", "cancel_self"):
            error: BaseException
            if attempt.outcome == "cancel_self":
                error = asyncio.CancelledError(f"{spec.name} cancelled itself")
            elif attempt.error == "boom":
                error = Boom(f"{spec.name} attempt {number} failed")
            elif attempt.error == "timeout":
                error = TimeoutError(f"{spec.name} attempt {number}: the payment API timed out")
            else:
                error = OtherError(f"{spec.name} attempt {number} failed")
            journal.add("raise", spec.index, number, error=error)
            raise error
        if attempt.outcome == "wrong_type":
            journal.add("wrong", spec.index, number)
            return WrongOutput()
        out = None
        if attempt.returns_data:
            changes: dict[str, Any] = {spec.field: number}  # FaultData's fields: built at run time
            if spec.shared:
                changes["shared"] = spec.index
            out = dataclasses.replace(data, **changes)
        journal.add("commit", spec.index, number, out)
        return out

    action.__name__ = action.__qualname__ = spec.name
    return action


def _compensation(spec: StepSpec) -> Callable[[Any], Coroutine[Any, Any, None]]:
    undo = spec.undo
    assert undo is not None

    async def compensate(data: AbstractSagaData) -> None:
        journal = _JOURNAL.get()
        journal.add("undo", spec.index, data=data)
        try:
            await _wait(undo.ticks, undo.delay, undo.outcome == "hang")
        except asyncio.CancelledError:
            journal.add("undo_cut", spec.index)
            raise
        if undo.outcome in ("raise", "cancel_self"):
            error: BaseException = (
                UndoError(f"undo {spec.name} failed")
                if undo.outcome == "raise"
                else asyncio.CancelledError(f"undo {spec.name} cancelled itself")
            )
            journal.add("undo_raise", spec.index, error=error)
            raise error
        journal.add("undo_ok", spec.index)

    compensate.__name__ = compensate.__qualname__ = f"undo_{spec.name}"
    return compensate


@dataclasses.dataclass(frozen=True, slots=True)
class BrokenRetry(Retry):
    """A Retry whose delay computation raises (strategy code can never crash the engine)."""

    def delay_before(self, attempt: int) -> float:
        raise OverflowError("backoff formula overflowed")


def is_boom(error: BaseException) -> bool:
    return isinstance(error, Boom)


def broken_predicate(error: BaseException) -> bool:
    raise ValueError("retry_on predicate is broken")


def _strategy(spec: Strategy) -> ErrorStrategy:
    if spec.kind == "compensate":
        return Compensate()
    if spec.kind == "skip":
        return Skip()
    retry = BrokenRetry if spec.broken else Retry
    return retry(
        spec.max_attempts,
        ExponentialBackoff(spec.backoff * QUARTER),
        Skip() if spec.then_skip else Compensate(),
        retry_on=_retry_on(spec),
    )


def _retry_on(spec: Strategy) -> Any:
    """The step's `retry_on=`. Typed Any: the mypy plugin rejects a value typed as the union
    of an exception class and a predicate, though it accepts each alone (a false positive)."""
    return {
        "any": None,
        "boom": Boom,
        "predicate": is_boom,
        "raising_predicate": broken_predicate,
    }[spec.retry_on]


def _step(spec: StepSpec) -> SagaStep[Any] | Transaction[Any]:
    action = _action(spec)
    strategy = _strategy(spec.strategy)
    timeout = _seconds(spec.timeout, QUARTER)
    if spec.undo is None:
        return step(action, on_error=strategy, timeout=timeout)
    return step(action, compensate=_compensation(spec), on_error=strategy, timeout=timeout)


def _seconds(units: int | None, unit: float) -> timedelta | None:
    return None if units is None else timedelta(seconds=units * unit)


def build_flow(scenario: Scenario) -> SagaFlow[Any]:
    """The scenario's flow; its steps journal into the running saga's `Journal`."""
    items: list[FlowItem[Any]] = []
    for item in scenario.items:
        if isinstance(item, GroupSpec):
            members = [_step(member) for member in item.members]
            items.append(
                parallel(*members, compensate="concurrent" if item.concurrent else "reverse")
            )
        else:
            items.append(_step(item))
    flow = saga_flow(*items)
    saga_timeout = _seconds(scenario.saga_timeout, EIGHTH)
    if saga_timeout is not None:
        flow = flow.timeout(saga_timeout)
    handler = _handler(scenario)
    if handler is not None:
        flow = flow.on_compensation_failure(handler)
    return flow


def _handler(scenario: Scenario) -> Callable[[Any], Coroutine[Any, Any, None] | None] | None:
    kind = scenario.handler
    if kind == "none":
        return None
    if kind in ("sync", "sync_raises"):

        def handle(data: AbstractSagaData) -> None:
            _JOURNAL.get().add("handler", data=data)
            if kind == "sync_raises":
                raise HandlerError("alerting is down")

        return handle

    async def handle_async(data: AbstractSagaData) -> None:
        _JOURNAL.get().add("handler", data=data)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if kind == "async_raises":
            raise HandlerError("alerting is down")

    return handle_async


class RaisingListener(SagaListener):
    """Raises from every method: RuntimeError from step events, CancelledError (which a
    careless `except Exception` would let through) from saga and compensation events, and
    ValueError from `wants_progress`."""

    def wants_progress(self) -> bool:
        raise ValueError("listener config unreadable")

    def _raise(self, event: SagaEvent) -> None:
        if event.kind.value.startswith(("saga_", "compensation_")):
            raise asyncio.CancelledError("listener cancelled itself")
        raise RuntimeError("listener backend down")


for _kind in SagaEventKind:
    setattr(RaisingListener, _kind.value, RaisingListener._raise)


class RaisingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("log sink down")


def _raising_filter(record: logging.LogRecord) -> bool:
    raise RuntimeError("log filter broke")


ENGINE_LOGGER: Final = logging.getLogger("spakky_saga.engine")


def run_scenario(
    scenario: Scenario, data: AbstractSagaData, *, observers: bool, durable: bool = False
) -> Trace:
    """Run `scenario` on a fresh virtual-time loop; with `observers`, with a raising listener,
    log handler and log filter attached; `durable`, on an engine writing its saga log to an
    in-memory store."""
    handler = RaisingHandler()
    if observers:
        ENGINE_LOGGER.addHandler(handler)
        ENGINE_LOGGER.addFilter(_raising_filter)
        level = ENGINE_LOGGER.level
        ENGINE_LOGGER.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SagaListenerWarning)
            trace = run_virtual(_main(scenario, data, observers, durable))
    finally:
        if observers:
            ENGINE_LOGGER.removeHandler(handler)
            ENGINE_LOGGER.removeFilter(_raising_filter)
            ENGINE_LOGGER.setLevel(level)
    trace.listener_warnings = [
        str(w.message) for w in caught if issubclass(w.category, SagaListenerWarning)
    ]
    return trace


async def _main(
    scenario: Scenario, data: AbstractSagaData, observers: bool, durable: bool
) -> Trace:
    engine = new_engine(scenario.compensation_timeout, durable=durable)
    name = "faults" if durable else "<anonymous>"  # a durable saga needs a name (recovery)
    trace = await call_saga(engine, scenario, data, observers=observers, saga_name=name)
    trace.tasks_left = len(asyncio.all_tasks() - {asyncio.current_task()})
    if durable:
        assert engine.store is not None
        trace.durable = True
        trace.stored = await engine.store.load(str(data.saga_id))
        await engine.aclose()  # its lease heartbeat is the one task allowed to outlive a run
        trace.tasks_left = len(asyncio.all_tasks() - {asyncio.current_task()})
    return trace


async def _journaled_sleep(delay: float) -> None:
    await _JOURNAL.get().backoff(delay)


def new_engine(
    compensation_timeout: int | None, *, raising_listener: bool = False, durable: bool = False
) -> SagaEngine:
    """An engine on the running (virtual) loop's clock whose backoff sleeps are journaled
    (optionally with a raising listener of its own, or durable on an in-memory store); it can
    be shared by any number of concurrent `call_saga`s."""
    return SagaEngine(
        clock=asyncio.get_running_loop().time,
        sleep=_journaled_sleep,
        compensation_timeout=_seconds(compensation_timeout, QUARTER),
        listeners=[RaisingListener()] if raising_listener else [],
        store=InMemorySagaStore() if durable else None,
    )


async def call_saga(
    engine: SagaEngine,
    scenario: Scenario,
    data: AbstractSagaData,
    *,
    observers: bool,
    flow: SagaFlow[Any] | None = None,
    saga_name: str = "<anonymous>",
) -> Trace:
    """Be the saga's caller: start it in a task (running `flow`, by default the scenario's
    flow built afresh), cancel it as the scenario says, and record what came back
    (`tasks_left` is for the caller of this function to fill in)."""
    journal = Journal()
    _JOURNAL.set(journal)  # copied into the saga's task below, and on into its groups' tasks
    loop = asyncio.get_running_loop()
    if flow is None:
        flow = build_flow(scenario)
    listeners = [RaisingListener()] if observers else []
    task = asyncio.create_task(engine.run(flow, data, saga_name=saga_name, listeners=listeners))
    for point in scenario.cancels:
        if point.at:
            await asyncio.sleep(max(0.0, journal.began + point.at * SIXTEENTH - loop.time()))
        if point.on_undo or point.on_handler:
            await journal.reached(task, point.on_undo, point.on_handler)
        for _ in range(point.ticks):
            await asyncio.sleep(0)
        if task.done():
            break
        if task.cancel("caller"):
            journal.add("cancel")
    outcome: OutcomeKind
    result: SagaResult[Any] | None = None
    error: BaseException | None = None
    try:
        result = await task
        outcome = "result"
    except SagaCompensationFailedError as failed:
        outcome, result, error = "compensation_failed", failed.result, failed
    except asyncio.CancelledError as cancelled:
        outcome, error = "cancelled", cancelled
    except Exception as other:
        outcome, error = "raised", other
    return Trace(journal.entries, outcome, result, error, 0, [], snapshot(data))


def new_data() -> AbstractSagaData:
    return FaultData()
