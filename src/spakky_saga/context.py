"""What a running step can know about itself: `current_step()` and its idempotency key.

A durable saga runs each step at least once: a step whose attempt was recorded but whose
outcome was not (the process died in between) runs again on recovery, with the same attempt
number. `current_step().idempotency_key` is the same string both times, so a participant (a
payment API, a message broker) can recognise and drop the repeat. Compensations see their own
key (`.../undo`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final, Protocol
from uuid import UUID


@dataclass(frozen=True, slots=True)
class StepContext:
    """The step (or compensation) running in the current task."""

    saga_name: str
    saga_id: UUID
    step: str
    step_key: str
    """Where the step stands in the flow (`3`, or `2.1` for a group member)."""
    attempt: int
    compensation: bool = False

    @property
    def idempotency_key(self) -> str:
        """Stable per saga, step position and attempt: `<saga id>/<key>:<step>/<attempt>`;
        for a compensation `.../undo`, then `.../undo/2`, `.../undo/3` for the attempts its
        own policy retries (the first keeps the key sagas already stored were given). Pass it
        to participants that deduplicate."""
        return idempotency_key(
            str(self.saga_id), self.step_key, self.step, self.attempt, self.compensation
        )


def idempotency_key(
    saga_id: str, step_key: str, step: str, attempt: int, compensation: bool = False
) -> str:
    """The idempotency key a step's attempt (or a compensation's) is given: what
    `current_step().idempotency_key` says while it runs, and the console shows from its log."""
    suffix = ("undo" if attempt == 1 else f"undo/{attempt}") if compensation else str(attempt)
    return f"{saga_id}/{step_key}:{step}/{suffix}"


class StepCursor(Protocol):
    """What the engine keeps current while it runs a step: read only when asked, so the
    engine pays two attribute stores per step, not an object."""

    saga_name: str
    saga_id: UUID
    node: Any
    """The running step's plan node (`.name`, `.key`), or None between steps."""
    attempt: int
    compensating: bool


_CURSORS: Final[dict[object, StepCursor]] = {}
"""The cursor of each task running a saga step. A dict keyed by task rather than a ContextVar:
a ContextVar set per run copies the task's context mapping, which costs every in-flight saga
a few hundred bytes; an entry here costs a few dozen."""


def current_step() -> StepContext:
    """The step running in this task; raises LookupError outside a step or compensation."""
    cursor = _CURSORS.get(asyncio.current_task())
    node = None if cursor is None else cursor.node
    if cursor is None or node is None:
        raise LookupError(
            "current_step() is called outside a saga step: call it inside a step's action or "
            "compensation (while the engine runs it)"
        )
    return StepContext(
        saga_name=cursor.saga_name,
        saga_id=cursor.saga_id,
        step=node.name,
        step_key=node.key,
        attempt=cursor.attempt,
        compensation=cursor.compensating,
    )


def enter_step(cursor: StepCursor) -> StepCursor | None:
    """Make `cursor` current for this task; returns what was current (a saga run inside a
    step of another saga), to hand back to `leave_step`."""
    task = asyncio.current_task()
    previous = _CURSORS.get(task)
    _CURSORS[task] = cursor
    return previous


def leave_step(previous: StepCursor | None) -> None:
    """Undo `enter_step`: restore what was current for this task."""
    task = asyncio.current_task()
    if previous is None:
        _CURSORS.pop(task, None)
    else:
        _CURSORS[task] = previous
