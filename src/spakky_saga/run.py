"""One saga run's state, and the seam every transition of it goes through.

`SagaRun` holds what a run has done (history, the undo list, skipped steps), who observes it
(listeners) and, for a durable run, its write-ahead journal. `SagaRun.emit` is the one place a
transition is announced: a `SagaEvent` to the journal (buffered; the engine flushes before it
acts) and to the listeners (called at once; their errors contained). A run is also the
`current_step()` cursor of its sequential steps; group members and compensations, which run in
tasks of their own, get a `Cursor` each.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Final, Protocol

from spakky_saga.data import AbstractSagaData
from spakky_saga.events import SagaEvent, SagaEventKind
from spakky_saga.listeners import ListenerSet
from spakky_saga.plan import StepNode, UndoEntry
from spakky_saga.result import StepRecord, record_of
from spakky_saga.status import SagaStatus, StepStatus

type Clock = Callable[[], float]


class RunLog(Protocol):
    """Where a durable run writes ahead (`journal.SagaJournal`): what the executor needs of
    it, so that how a flow runs knows nothing of stores."""

    def add(self, event: SagaEvent, /) -> None:
        """Buffer `event` (cheap; nothing is written yet)."""

    async def flush(self) -> None:
        """Write what is buffered; raise `SagaStoreError` if the run may not write any more."""

    def merged(self, data: AbstractSagaData, /) -> None:
        """A group's results were merged into `data`: the saga's stored data follows."""

    async def suspend(self, wake_at: float | None, seen: int, /) -> None:
        """The run stops in a wait (its SAGA_SUSPENDED written): the saga becomes WAITING in
        the store, to wake at `wake_at` (epoch seconds) or when it has more than `seen`
        signals."""


class SignalBox(Protocol):
    """Where a waiting run finds its signals (`signals.Signals`: the store's, or the in-memory
    engine's): what the executor needs of it, so that how a flow runs knows nothing of
    stores."""

    async def take(
        self, saga_id: str, signal_type: type, taken: Collection[str], /
    ) -> tuple[str, object] | None:
        """The oldest signal of `signal_type` sent to the saga whose id is not in `taken`:
        its id and its payload (validated), or None."""

    async def arrival(self, saga_id: str, /) -> None:
        """Return when a signal for the saga may have arrived (at the latest after the
        box's poll interval): the caller looks again."""

    def seen(self, saga_id: str, /) -> int:
        """How many signals (of any type) the saga had when `take` last looked."""

    @property
    def suspends(self) -> bool:
        """Whether a durable run waits suspended in the store (else in its process)."""


_NO_WAITS: Final[Mapping[str, tuple[int, float]]] = {}
_NO_ESCALATIONS: Final[Mapping[str, tuple[int, float, BaseException]]] = {}

_NO_DEADLINE: Final[tuple[asyncio.Timeout | None, float]] = (None, 0.0)


class Cursor:
    """What `current_step()` reads: the step (or compensation) running in a task.

    A run is its own cursor for its sequential steps; group members and compensations, which
    run in tasks of their own, get one each. `node` is None between attempts (a retry's
    backoff): what a cancellation or the saga timeout cuts is what `node` names, the attempt
    `attempt` that started at `attempt_started`.
    """

    __slots__ = ("attempt", "attempt_started", "compensating", "node", "saga_id", "saga_name")

    def __init__(
        self,
        saga_name: str,
        saga_id: uuid.UUID,
        node: StepNode | None = None,
        attempt: int = 1,
        *,
        compensating: bool = False,
    ) -> None:
        self.saga_name = saga_name
        self.saga_id = saga_id
        self.node = node
        self.attempt = attempt
        self.attempt_started = 0.0
        self.compensating = compensating


class SagaRun(Cursor):
    """The state of one run: its identity, history, undo list, journal and the event seam."""

    __slots__ = (
        "clock",
        "deadline",
        "ended",
        "escalated",
        "history",
        "journal",
        "listeners",
        "past_pivot",
        "progress",
        "signals",
        "skipped",
        "started",
        "taken",
        "undo",
        "wait_started",
    )

    def __init__(
        self,
        saga_name: str,
        saga_id: uuid.UUID,
        clock: Clock,
        listeners: ListenerSet,
        journal: RunLog | None = None,
    ) -> None:
        super().__init__(saga_name, saga_id)
        self.clock = clock
        self.listeners = listeners
        self.journal = journal
        self.progress = journal is not None or listeners.wants_progress()
        """Whether progress events are built at all: nobody wants them, no cost."""
        self.history: list[StepRecord] = []
        self.undo: list[UndoEntry] = []
        self.skipped: list[str] | None = None
        """Steps whose failure was skipped; created on the first (most runs have none)."""
        self.deadline: tuple[asyncio.Timeout | None, float] = _NO_DEADLINE
        """The saga timeout's scope, while the forward pass runs under one: tells a cut made
        by the saga timeout from one made by the caller's cancellation."""
        self.signals: SignalBox | None = None
        """Where this run's waits find their signals (set by the engine)."""
        self.taken: set[str] | None = None
        """The ids of the signals this saga's waits took (from its log, when recovered);
        created on the first (most runs take none)."""
        self.wait_started: Mapping[str, tuple[int, float]] = _NO_WAITS
        self.escalated: Mapping[str, tuple[int, float, BaseException]] = _NO_ESCALATIONS
        """A recovered run's escalated step waiting for a decision: step key -> (its failed
        attempt, when it escalated, epoch seconds, the error)."""
        """A recovered run's waits in progress: step key -> (attempt, when it started, epoch
        seconds), so that its deadline stays where it was."""
        self.ended = False
        self.past_pivot = False
        """Whether the forward pass got past the flow's pivot (its point of no return): from
        then on nothing is compensated; a failure ends the run STUCK."""
        """Whether SAGA_FINISHED or SAGA_ABORTED went out: a run ends exactly once."""
        self.started = clock()

    def emit(  # noqa: PLR0917 - positional on purpose: called on every step
        self,
        kind: SagaEventKind,
        step: str | None = None,
        key: str | None = None,
        attempt: int = 1,
        elapsed: float = 0.0,
        error: BaseException | None = None,
        data: AbstractSagaData | None = None,
        status: SagaStatus | None = None,
        delay: float = 0.0,
        signal_id: str | None = None,
        signal: object = None,
    ) -> None:
        """Hand the event to the journal (buffered) and the listeners; never raises for a
        listener (ListenerSet contains their errors)."""
        event = SagaEvent(
            kind,
            self.saga_name,
            self.saga_id,
            step,
            key,
            attempt,
            elapsed,
            self.clock() - self.started,
            error,
            data,
            status,
            delay,
            signal_id,
            signal,
        )
        if self.journal is not None:
            self.journal.add(event)
        self.listeners.notify(event)

    def abort_unended(self, error: BaseException) -> None:
        """A run that leaves by an exception the engine does not report itself (a
        KeyboardInterrupt out of a step, a log it can no longer write) still ends, once, for
        its listeners: SAGA_ABORTED with that exception."""
        if not self.ended:
            self.ended = True
            self.emit(SagaEventKind.SAGA_ABORTED, elapsed=self.clock() - self.started, error=error)

    def record(  # noqa: PLR0917 - positional on purpose: called on every step
        self,
        name: str,
        status: StepStatus,
        t0: float,
        attempt: int = 1,
        compensation: bool = False,
        error: BaseException | None = None,
    ) -> float:
        """Append a history record of something that started at `t0`; returns its elapsed."""
        elapsed = self.clock() - t0
        self.history.append(
            record_of(name, status, elapsed, attempt, compensation, error, t0 - self.started)
        )
        return elapsed
