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

    def compensation_done(self, event: SagaEvent) -> None:
        """A compensation succeeded."""

    def compensation_failed(self, event: SagaEvent) -> None:
        """A compensation raised `event.error` (or never ran: the rollback was cut off)."""

    def saga_finished(self, event: SagaEvent) -> None:
        """The run returns a result with `event.status`."""

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


class ListenerSet:
    """Listeners attached together, with each event kind's handlers looked up once.

    `notify` is the one place listeners are called: it contains their exceptions.
    """

    __slots__ = ("_handlers", "_listeners", "_progress", "_reported")

    def __init__(
        self, listeners: Iterable[object] = (), *, reported: set[int] | None = None
    ) -> None:
        self._listeners: tuple[object, ...] = tuple(listeners)
        for listener in self._listeners:
            if not any(callable(getattr(listener, k.value, None)) for k in SagaEventKind):
                raise TypeError(
                    f"{safe_repr(listener)} is not a saga listener: subclass SagaListener and "
                    "override the methods of the events you need (step_failed, ...)"
                )
        self._handlers: dict[SagaEventKind, tuple[tuple[object, _Handler], ...]] = {
            kind: tuple(
                (listener, handler)
                for listener in self._listeners
                if (handler := _handler(listener, kind)) is not None
            )
            for kind in SagaEventKind
        }
        self._progress = tuple(
            listener
            for listener in self._listeners
            if any(owner is listener for k in PROGRESS_KINDS for owner, _ in self._handlers[k])
        )
        self._reported = reported if reported is not None else set()

    @property
    def listeners(self) -> tuple[object, ...]:
        return self._listeners

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def plus(self, extra: Iterable[object]) -> ListenerSet:
        """These listeners followed by `extra` (one run's own), sharing what was reported."""
        return ListenerSet((*self._listeners, *extra), reported=self._reported)

    def wants_progress(self) -> bool:
        """True when some listener handles a progress event and wants them for this run."""
        for listener in self._progress:
            wants = getattr(listener, "wants_progress", None)
            try:
                if wants is None or wants():
                    return True
            except Exception as error:
                self._report(listener, "wants_progress", error)
        return False

    def notify(self, event: SagaEvent) -> None:
        """Call every handler of `event.kind`; a raising listener is reported once, ignored."""
        for listener, handler in self._handlers[event.kind]:
            try:
                handler(event)
            except (Exception, asyncio.CancelledError) as error:
                self._report(listener, event.kind.value, error)

    def _report(self, listener: object, where: str, error: BaseException) -> None:
        if id(listener) in self._reported:
            return
        self._reported.add(id(listener))
        warnings.warn(
            SagaListenerWarning(
                f"saga listener {safe_repr(listener)} raised {error_text(error)} in {where}(); "
                "it is ignored (observers never change a saga's run), and later errors of this "
                "listener are not reported again"
            ),
            stacklevel=2,
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
