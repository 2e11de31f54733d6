"""What happens in a saga run, as data: the engine's one event seam.

Every transition of a run (saga started; step attempt started, committed, failed, retrying,
skipped; compensation started, done, failed, retrying; saga finished or aborted) is a
`SagaEvent`. Two kinds of consumers read them: listeners (observers such as the log lines or
OpenTelemetry; never awaited, never able to change the run) and, for durable engines, the saga
log (awaited before the engine moves on: write-ahead).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, NamedTuple
from uuid import UUID

if TYPE_CHECKING:
    from spakky_saga.data import AbstractSagaData
    from spakky_saga.status import SagaStatus


class SagaEventKind(Enum):
    """The transitions of a saga run, in the order a run can go through them."""

    SAGA_STARTED = "saga_started"
    SAGA_RECOVERED = "saga_recovered"
    """`recover()` takes over a saga another engine left unfinished (instead of SAGA_STARTED);
    `data` is the data its log ends with."""
    STEP_STARTED = "step_started"
    """An attempt of an action is about to run (`attempt` counts from 1)."""
    STEP_COMMITTED = "step_committed"
    """The attempt succeeded; `data` is the data after it."""
    STEP_FAILED = "step_failed"
    """The attempt raised (`error`); its strategy decides what happens next."""
    STEP_RETRYING = "step_retrying"
    """Another attempt follows after `delay_seconds`; `attempt` is the next attempt."""
    STEP_SKIPPED = "step_skipped"
    """The step failed for good and a `Skip` strategy lets the saga go on."""
    STEP_ESCALATED = "step_escalated"
    """The step failed (`error`) and its `Escalate()` strategy asks an operator: the saga
    waits at it for `engine.resolve(...)` (a SIGNAL_RECEIVED with the decision follows)."""
    SIGNAL_RECEIVED = "signal_received"
    """A wait (`wait_for`) took a signal (`signal_id`); the wait's commit, with the merged
    data, follows. Recorded in a durable saga's log with the commit: a signal is taken once."""
    COMPENSATION_STARTED = "compensation_started"
    COMPENSATION_DONE = "compensation_done"
    COMPENSATION_FAILED = "compensation_failed"
    """A compensation attempt raised (`error`); its own policy decides whether another
    attempt follows."""
    COMPENSATION_RETRYING = "compensation_retrying"
    """The compensation's policy retries it after `delay_seconds`; `attempt` is the next
    attempt."""
    SAGA_FINISHED = "saga_finished"
    """The run returns a result: `status` is COMPLETED, FAILED or TIMED_OUT."""
    SAGA_SUSPENDED = "saga_suspended"
    """A durable run stops in a wait (`step` names it) without finishing: the saga is WAITING
    in the store, held by no process, until its signal arrives or its time comes; then any
    engine resumes it (SAGA_RECOVERED). `status` is WAITING."""
    SAGA_ABORTED = "saga_aborted"
    """The run raises `error` instead of returning: a compensation failed (after the failure
    handler ran) or the task running the saga was cancelled (after compensating)."""

    # Members are singletons compared by identity, so identity is a valid hash; Enum's own
    # hashes the name in Python, and every event is looked up by kind two or three times.
    __hash__ = object.__hash__


class SagaEvent(NamedTuple):
    """One transition of one saga run.

    Every event names its saga (`saga_name`, `saga_id`) so concurrent sagas can be told
    apart. `step` is None for saga-level events, except SAGA_FINISHED, where it is the failed
    step (if any). For STEP_COMMITTED `data` is the data after the step (for a group member,
    what the member returned, or None). `elapsed_seconds` is how long the attempt or
    compensation took (the whole run for SAGA_FINISHED / SAGA_ABORTED, 0 for *_STARTED), and
    `offset_seconds` when the event happened, from the start of the saga.
    """

    kind: SagaEventKind
    saga_name: str
    saga_id: UUID
    step: str | None = None
    step_key: str | None = None
    """Where the step stands in the flow (`3`; `2.1` for a group member; `2` for a group)."""
    attempt: int = 1
    elapsed_seconds: float = 0.0
    offset_seconds: float = 0.0
    error: BaseException | None = None
    data: AbstractSagaData | None = None
    status: SagaStatus | None = None
    delay_seconds: float = 0.0
    signal_id: str | None = None
    """For SIGNAL_RECEIVED: the id of the signal the wait took."""
    signal: object = None
    """For SIGNAL_RECEIVED: the signal itself (a `Resolution` for an escalated step)."""
