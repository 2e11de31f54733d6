"""Where a saga run is, and what happened to a step: the two status enums, on their own so
that events, results and timelines can all name them without importing each other.

Names and values are those of the documented package.
"""

from __future__ import annotations

from enum import Enum


class SagaStatus(Enum):
    """Where a saga run is, or how it ended."""

    STARTED = "STARTED"
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    STUCK = "STUCK"
    """A step after the flow's pivot (its point of no return) failed for good: nothing was
    compensated, the saga can neither go back nor forward on its own; an operator must finish
    it. See docs/runtime.md, "The point of no return"."""
    WAITING = "WAITING"
    """A durable run stopped in a wait (`wait_for`, `sleep`): the saga is suspended in the
    store, and any engine on it resumes it when its signal arrives or its time comes. See
    docs/waits.md."""


class StepStatus(Enum):
    """What happened to one step attempt or compensation."""

    COMMITTED = "COMMITTED"
    """The action succeeded."""
    FAILED = "FAILED"
    """The action (or, with `compensation=True`, the compensation) raised."""
    COMPENSATED = "COMPENSATED"
    """The compensation of a committed action succeeded."""
