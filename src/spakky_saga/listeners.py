"""Listeners: code that observes saga runs through the event seam and can never change them.

Subclass `SagaListener` and override the methods for the events you need (each gets a
`SagaEvent`), then attach it to an engine (`SagaEngine(listeners=[...])`) or to one run
(`engine.run(..., listeners=[...])`). Listeners are called synchronously, in the order they
were attached, at the moment of the transition; they are never awaited. A listener that raises
is reported once (a `SagaListenerWarning`) and ignored: the saga's outcome is the same with or
without it.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Iterable
from typing import Final

from spakky_saga._text import error_text, safe_repr
from spakky_saga.errors import SagaListenerWarning
from spakky_saga.events import SagaEvent, SagaEventKind


class SagaListener:
    """Base class of saga listeners; every method is a no-op until overridden.

    Methods are named after `SagaEventKind` values. A listener that only needs failures can
    return False from `wants_progress()`: the engine then does not even build the events of a
    run's normal progress (saga started/finished, step started/committed, compensations
    started/done), which keeps successful runs as fast as with no listener at all.
    """

    __slots__ = ()

    def wants_progress(self) -> bool:
        """Whether this listener wants the progress events of the run about to start."""
        return True

    def saga_started(self, event: SagaEvent) -> None:
        """A run starts; `event.data` is the input data."""

    def saga_recovered(self, event: SagaEvent) -> None:
        """`recover()` takes over an unfinished saga; `event.data` is its latest data."""

    def step_started(self, event: SagaEvent) -> None:
        """An attempt of a step starts."""

    def step_committed(self, event: SagaEvent) -> None:
        """An attempt succeeded; `event.data` is the data after it."""

    def step_failed(self, event: SagaEvent) -> None:
        """An attempt raised `event.error`."""

    def step_retrying(self, event: SagaEvent) -> None:
        """Attempt `event.attempt` follows after `event.delay_seconds`."""

    def step_skipped(self, event: SagaEvent) -> None:
        """The step failed for good and is skipped."""

    def compensation_started(self, event: SagaEvent) -> None:
        """A compensation starts; `event.data` is the data it is given."""

    def step_escalated(self, event: SagaEvent) -> None:
        """The step failed (`event.error`) and waits for an operator's decision."""

    def signal_received(self, event: SagaEvent) -> None:
        """A wait took the signal `event.signal_id`; its commit follows."""

    def compensation_done(self, event: SagaEvent) -> None:
        """A compensation succeeded."""

    def compensation_failed(self, event: SagaEvent) -> None:
        """A compensation raised `event.error` (or never ran: the rollback was cut off)."""

    def compensation_retrying(self, event: SagaEvent) -> None:
        """The compensation's own policy runs attempt `event.attempt` after
        `event.delay_seconds`."""

    def saga_finished(self, event: SagaEvent) -> None:
        """The run returns a result with `event.status`."""

    def saga_suspended(self, event: SagaEvent) -> None:
        """The run stops in the wait `event.step`; the saga is WAITING in the store."""

    def saga_aborted(self, event: SagaEvent) -> None:
        """The run raises `event.error` (a failed compensation, or a cancellation)."""


PROGRESS_KINDS: Final = frozenset(
    {
        SagaEventKind.SAGA_STARTED,
        SagaEventKind.STEP_STARTED,
        SagaEventKind.STEP_COMMITTED,
        SagaEventKind.COMPENSATION_STARTED,
        SagaEventKind.COMPENSATION_DONE,
        SagaEventKind.SAGA_FINISHED,
    }
)
"""Events of a run's normal progress: built only when some listener wants them."""

type _Handler = Callable[[SagaEvent], object]


class _Entry:
    """One attached listener, and whether its first error was reported already."""

    __slots__ = ("listener", "reported")

    def __init__(self, listener: object) -> None:
        self.listener = listener
        self.reported = False


class ListenerSet:
    """Listeners attached together, with each event kind's handlers looked up once.

    `notify` is the one place listeners are called: it contains their exceptions. A listener
    is reported once per attachment: an engine's listeners once per engine (the sets `plus`
    makes for one run share their entries), a run's own listeners once per run.
    """

    __slots__ = ("_entries", "_handlers", "_progress")

    def __init__(
        self, listeners: Iterable[object] = (), *, inherited: tuple[_Entry, ...] = ()
    ) -> None:
        own = tuple(_Entry(listener) for listener in listeners)
        for entry in own:
            if not any(callable(getattr(entry.listener, k.value, None)) for k in SagaEventKind):
                raise TypeError(
                    f"{safe_repr(entry.listener)} is not a saga listener: subclass SagaListener "
                    "and override the methods of the events you need (step_failed, ...)"
                )
        self._entries: tuple[_Entry, ...] = (*inherited, *own)
        self._handlers: dict[SagaEventKind, tuple[tuple[_Entry, _Handler], ...]] = {
            kind: tuple(
                (entry, handler)
                for entry in self._entries
                if (handler := _handler(entry.listener, kind)) is not None
            )
            for kind in SagaEventKind
        }
        self._progress = tuple(
            entry
            for entry in self._entries
            if any(owner is entry for k in PROGRESS_KINDS for owner, _ in self._handlers[k])
        )

    @property
    def listeners(self) -> tuple[object, ...]:
        return tuple(entry.listener for entry in self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def plus(self, extra: Iterable[object]) -> ListenerSet:
        """These listeners followed by `extra` (one run's own)."""
        return ListenerSet(extra, inherited=self._entries)

    def wants_progress(self) -> bool:
        """True when some listener handles a progress event and wants them for this run."""
        for entry in self._progress:
            wants = getattr(entry.listener, "wants_progress", None)
            try:
                if wants is None or wants():
                    return True
            except Exception as error:
                _report(entry, "wants_progress", error)
        return False

    def notify(self, event: SagaEvent) -> None:
        """Call every handler of `event.kind`; a raising listener is reported once, ignored."""
        for entry, handler in self._handlers[event.kind]:
            try:
                handler(event)
            except (Exception, asyncio.CancelledError) as error:
                _report(entry, event.kind.value, error)


def _report(entry: _Entry, where: str, error: BaseException) -> None:
    if entry.reported:
        return
    entry.reported = True
    # The listener's type, not its repr: a repr with an address would make every listener's
    # warning text new, and the warnings registry would keep each of them.
    kind = type(entry.listener).__qualname__
    warnings.warn(
        SagaListenerWarning(
            f"saga listener {kind} raised {error_text(error)} in {where}(); it is ignored "
            "(observers never change a saga's run), and its later errors are not reported"
        ),
        stacklevel=3,
    )


def _handler(listener: object, kind: SagaEventKind) -> _Handler | None:
    """The listener's method for `kind`, or None when it is missing or SagaListener's no-op."""
    method = getattr(listener, kind.value, None)
    if not callable(method):
        return None
    if getattr(type(listener), kind.value, None) is getattr(SagaListener, kind.value):
        return None
    handler: _Handler = method
    return handler
