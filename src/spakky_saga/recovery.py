"""Finishing unfinished durable sagas: policies, replaying a saga's log, and the report.

`replay` rebuilds, from a saga's log alone, everything the engine needs to finish it: the
latest data, the history so far, which committed steps still need compensating, where the
forward pass stopped, and which attempt (or compensation) started without a recorded outcome.
It is pure (no I/O), so every crash point is testable without crashing anything.

The at-least-once window: an attempt whose start is in the log but whose outcome is not may
or may not have happened. Under RESUME it runs again with the same attempt number (and so the
same idempotency key); under COMPENSATE it counts as done, and is compensated if it has a
compensation. A compensation that started without an outcome runs again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, Final

from spakky_saga.codec import decode, resolve_type
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import LoggedError, SagaCompensationInterruptedError
from spakky_saga.events import SagaEventKind
from spakky_saga.execution import StartPoint
from spakky_saga.merge import merge_committed
from spakky_saga.plan import ExecutionPlan, GroupNode, StepNode, UndoEntry
from spakky_saga.result import StepRecord, record_of
from spakky_saga.status import StepStatus
from spakky_saga.store import CANCEL_REQUESTED, signal_of

if TYPE_CHECKING:
    from spakky_saga.result import SagaResult
    from spakky_saga.store import SagaRecord, StoredEvent


class RecoveryPolicy(Enum):
    """How an unfinished saga is finished by `SagaEngine.recover()`."""

    COMPENSATE = "compensate"
    """Undo what committed (the default): the saga ends FAILED, every committed compensable
    step compensated, including an attempt that may have happened. A saga past its flow's
    pivot (the point of no return) resumes instead: nothing after the pivot is undone."""
    RESUME = "resume"
    """Carry on from the first unfinished step, re-running an attempt that may not have
    happened with the same idempotency key."""


_INTERRUPTED: Final = SagaCompensationInterruptedError.__qualname__
_CUT: Final = "CancelledError"
"""The error type the log records for an attempt a cancellation cut off."""


@dataclass
class Replayed:
    """A saga's state as its log tells it."""

    data: AbstractSagaData
    history: list[StepRecord] = field(default_factory=list)
    undo: list[UndoEntry] = field(default_factory=list)
    """Committed compensable steps not compensated yet, in commit order."""
    stopped_in: StepNode | GroupNode | None = None
    """The item the forward pass stopped in (None: it got past the last one)."""
    compensated: set[str] = field(default_factory=set)
    """Steps whose compensation ended (done, or failed for good)."""
    rollback_data: AbstractSagaData | None = None
    """The data compensations get: `data`, with what the committed members of the group the
    forward pass stopped in changed merged in, as the engine merges a failed or cut group."""
    rolling_back: bool = False
    """A compensation started, or a step (or a whole group) failed for good: only
    compensation remains."""
    next_index: int = 0
    """The first item of the plan that has not finished."""
    in_doubt: dict[str, int] = field(default_factory=dict)
    """Step key -> attempt that started without a recorded outcome."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Step key -> the last attempt started."""
    member_results: dict[str, AbstractSagaData | None] = field(default_factory=dict)
    """Committed (or skipped: None) group members of the unfinished group."""
    failed_for_good: dict[str, LoggedError] = field(default_factory=dict)
    """Step key -> the error of a step whose last attempt failed with no retry or skip
    after it (its strategy gave up)."""
    skipped: list[str] = field(default_factory=list)
    committed_keys: set[str] = field(default_factory=set)
    """Every step (or member) with a recorded commit."""
    failed_step: str | None = None
    error: str | None = None
    compensation_failures: dict[str, str] = field(default_factory=dict)
    compensation_attempts: dict[str, int] = field(default_factory=dict)
    """Step key -> the next attempt of its compensation: the same one when it started
    without an outcome (or was cut off), the next one after a failure."""
    seq: int = 0
    started_at: float = 0.0
    signals_taken: set[str] = field(default_factory=set)
    """The ids of the signals the saga's waits took (SIGNAL_RECEIVED)."""
    escalated: dict[str, tuple[int, float, LoggedError]] = field(default_factory=dict)
    """Step key -> (its failed attempt, when it escalated, the error) of a step waiting for
    an operator's decision (`Escalate()`)."""
    wait_started: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Wait step key -> (its last attempt, when that started, epoch seconds): where a
    recovered wait's deadline stays."""

    @property
    def waiting(self) -> bool:
        """Whether the forward pass stopped in a wait whose attempt is unfinished, or at a step
        waiting for an operator's decision (and nothing is to be compensated): it did nothing
        that could be in doubt, so it goes on waiting."""
        stopped = self.stopped_in
        return (
            isinstance(stopped, StepNode)
            and (
                (stopped.wait is not None and stopped.key in self.in_doubt)
                or stopped.key in self.escalated
            )
            and not self.rolling_back
        )

    def start_point(self) -> StartPoint:
        """Where the forward pass resumes, for the executor: the first unfinished item,
        each step's next attempt (an in-doubt attempt runs again with its number), and the
        unfinished group's members that finished or failed for good."""
        attempts = {key: last + 1 for key, last in self.attempts.items()}
        attempts.update(self.in_doubt)
        return StartPoint(
            index=self.next_index,
            attempts=attempts,
            finished=dict(self.member_results),
            committed=frozenset(self.committed_keys),
            failed={
                key: error
                for key, error in self.failed_for_good.items()
                if key not in self.member_results
            },
            compensation_attempts=dict(self.compensation_attempts),
        )

    def rollback_entries(self, *, in_doubt: bool) -> list[UndoEntry]:
        """What a rollback of this saga undoes, in commit order (the rollback reverses it):
        every committed compensable step not compensated yet, then the members of the group
        the forward pass stopped in that committed (or, with `in_doubt`, may have: their
        attempt started without an outcome) in declaration order, then a sequential step in
        doubt. Under COMPENSATE an attempt in doubt counts as done (at-least-once)."""
        entries = list(self.undo)
        stopped = self.stopped_in

        def owed(member: StepNode) -> bool:
            done = member.key in self.committed_keys or (in_doubt and member.key in self.in_doubt)
            return done and member.compensate is not None and member.key not in self.compensated

        if isinstance(stopped, GroupNode):
            members = tuple(m for m in stopped.members if owed(m))
            if stopped.concurrent_compensation and len(members) > 1:
                entries.append(members)
            else:
                entries.extend(members)
        elif stopped is not None and owed(stopped) and stopped.key not in self.committed_keys:
            entries.append(stopped)
        return entries

    def step_error(self) -> BaseException | None:
        """The error the failed step's last attempt ended with, as the log recorded it."""
        for error in self.failed_for_good.values():
            return error
        return None if self.error is None else LoggedError("Exception", self.error)

    def rollback_point(self) -> StartPoint:
        """What a rollback of this saga needs: each compensation's next attempt."""
        return StartPoint(compensation_attempts=dict(self.compensation_attempts))


def replay(record: SagaRecord, plan: ExecutionPlan) -> Replayed:  # noqa: PLR0915 - one branch per event kind
    """The state of `record`'s saga, from its log, against `plan` (same structure)."""
    steps: dict[str, StepNode] = {}
    group_of: dict[str, GroupNode] = {}
    groups_by_key: dict[str, GroupNode] = {}
    for item in plan.nodes:
        if isinstance(item, GroupNode):
            groups_by_key[item.key] = item
            for member in item.members:
                steps[member.key] = member
                group_of[member.key] = item
        else:
            steps[item.key] = item

    # Past the pivot a saga only goes forward: an attempt a cancellation cut off there (its
    # run was left for recovery) runs again, as an attempt in doubt does.
    later = () if plan.pivot is None else plan.nodes[plan.pivot + 1 :]
    after_pivot = {
        key
        for item in later
        for key in ([m.key for m in item.members] if isinstance(item, GroupNode) else [item.key])
    }
    state = Replayed(data=decode(_data_class(record.data_type), record.data))
    resolved: set[str] = set()  # steps committed or skipped
    compensated: set[str] = set()  # compensations done or failed (not retried by recovery)
    committed: list[UndoEntry] = []  # compensable commits, in the order they were registered
    group_failed = False
    if record.events:
        state.started_at = record.events[0].at
    for event in record.events:
        state.seq = event.seq
        if event.kind == CANCEL_REQUESTED:  # an operator's request, not a transition
            continue
        kind = SagaEventKind(event.kind)
        if kind is SagaEventKind.SIGNAL_RECEIVED:
            signal = signal_of(event)
            state.signals_taken.add(signal["signal_id"])
            escalation = state.escalated.pop(event.step_key or "", None)
            if escalation is not None and signal.get("resolution") == "compensate":
                state.failed_for_good[event.step_key or ""] = escalation[2]  # let it fail
            continue
        if kind is SagaEventKind.SAGA_SUSPENDED:  # the wait's attempt stays unfinished
            continue
        key = event.step_key or ""
        offset = event.at - state.started_at
        if kind is SagaEventKind.SAGA_STARTED:
            if event.data is not None:
                state.data = decode(_data_class(event.data_type), event.data)
            continue
        group = groups_by_key.get(key)
        if group is not None:  # the group itself failed: its merge (or the saga timeout)
            if kind is SagaEventKind.STEP_FAILED:
                state.history.append(_record(group.name, StepStatus.FAILED, event, offset))
                state.failed_step, state.error = group.name, event.error
                group_failed = True
            continue
        node = steps.get(key)
        if node is None:
            continue
        if kind is not SagaEventKind.STEP_ESCALATED:
            state.escalated.pop(key, None)  # decided: it goes on (retried, skipped, ...)
        if kind is SagaEventKind.STEP_ESCALATED:
            error = state.failed_for_good.pop(key, None)
            error = error or LoggedError(event.error_type or "Exception", event.error)
            state.escalated[key] = (event.attempt, event.at, error)
        elif kind is SagaEventKind.STEP_STARTED:
            begun = state.wait_started.get(key)
            if node.wait is not None and (begun is None or begun[0] != event.attempt):
                # an attempt resumed after a suspension logs STEP_STARTED again: its deadline
                # counts from the first
                state.wait_started[key] = (event.attempt, event.at)
            state.attempts[key] = event.attempt
            state.in_doubt[key] = event.attempt
            state.failed_for_good.pop(key, None)
        elif kind is SagaEventKind.STEP_COMMITTED:
            state.in_doubt.pop(key, None)
            state.failed_for_good.pop(key, None)
            state.history.append(_record(node.name, StepStatus.COMMITTED, event, offset))
            resolved.add(key)
            state.committed_keys.add(key)
            if state.failed_step == node.name:  # an earlier attempt failed, this one did not
                state.failed_step = state.error = None
            result = (
                None if event.data is None else decode(_data_class(event.data_type), event.data)
            )
            member_of = group_of.get(key)
            if member_of is None:
                if result is not None:
                    state.data = result
                if node.compensate is not None:
                    committed.append(node)
            else:
                state.member_results[key] = result
                _close_group(state, member_of, resolved, committed)
        elif kind is SagaEventKind.STEP_FAILED and key in after_pivot and event.error_type == _CUT:
            state.history.append(_record(node.name, StepStatus.FAILED, event, offset))
        elif kind is SagaEventKind.STEP_FAILED:
            state.in_doubt.pop(key, None)
            state.history.append(_record(node.name, StepStatus.FAILED, event, offset))
            state.failed_step, state.error = node.name, event.error
            # failed for good, unless a retry or a skip of this very step follows
            state.failed_for_good[key] = LoggedError(event.error_type or "Exception", event.error)
        elif kind is SagaEventKind.STEP_RETRYING:
            state.failed_for_good.pop(key, None)
        elif kind is SagaEventKind.STEP_SKIPPED:
            state.failed_for_good.pop(key, None)
            resolved.add(key)
            state.skipped.append(node.name)
            state.failed_step = state.error = None
            member_of = group_of.get(key)
            if member_of is not None:
                state.member_results[key] = None
                _close_group(state, member_of, resolved, committed)
        elif kind is SagaEventKind.COMPENSATION_STARTED:
            state.rolling_back = True
            compensated.discard(key)  # run again (retry_compensation): done only once it ends
            state.compensation_failures.pop(key, None)
            state.compensation_attempts[key] = event.attempt  # in doubt until its outcome
        elif kind is SagaEventKind.COMPENSATION_DONE:
            compensated.add(key)
            state.compensation_attempts.pop(key, None)
            state.history.append(
                _record(node.name, StepStatus.COMPENSATED, event, offset, compensation=True)
            )
        elif kind is SagaEventKind.COMPENSATION_FAILED:
            if event.error_type != _INTERRUPTED:  # cut off by a shutdown: it must still run
                compensated.add(key)
                state.compensation_failures[key] = event.error or ""
                state.compensation_attempts[key] = event.attempt + 1
            state.history.append(
                _record(node.name, StepStatus.FAILED, event, offset, compensation=True)
            )
        elif kind is SagaEventKind.COMPENSATION_RETRYING:
            compensated.discard(key)  # its policy runs it again
            state.compensation_failures.pop(key, None)
            state.compensation_attempts[key] = event.attempt

    state.next_index = len(plan.nodes)
    for index, item in enumerate(plan.nodes):
        keys = [m.key for m in item.members] if isinstance(item, GroupNode) else [item.key]
        if not all(k in resolved for k in keys):
            state.next_index = index
            break
    stopped_in = plan.nodes[state.next_index] if state.next_index < len(plan.nodes) else None
    if state.failed_for_good and not group_failed:
        # The step that failed the saga: in a group, the first failing member in declaration
        # order (as the engine reports it), whichever failed last in time.
        first = next(key for key in steps if key in state.failed_for_good)
        state.failed_step = steps[first].name
        state.error = str(state.failed_for_good[first])
    state.rolling_back = (
        state.rolling_back
        or group_failed
        or any(key not in group_of for key in state.failed_for_good)
        or (
            # a group whose every member finished or failed for good, one of them failing
            isinstance(stopped_in, GroupNode)
            and any(m.key in state.failed_for_good for m in stopped_in.members)
            and all(m.key in resolved or m.key in state.failed_for_good for m in stopped_in.members)
        )
    )
    for entry in committed:
        if isinstance(entry, tuple):
            left = tuple(m for m in entry if m.key not in compensated)
            if len(left) > 1:
                state.undo.append(left)
            else:
                state.undo.extend(left)
        elif entry.key not in compensated:
            state.undo.append(entry)
    state.stopped_in = stopped_in
    state.compensated = compensated
    if isinstance(stopped_in, GroupNode):
        results = [state.member_results.get(m.key) for m in stopped_in.members]
        state.rollback_data = merge_committed(stopped_in, state.data, results)
    else:
        state.rollback_data = state.data
    return state


def _close_group(
    state: Replayed, group: GroupNode, resolved: set[str], committed: list[UndoEntry]
) -> None:
    """When every member of `group` is resolved: merge its results into the data, and
    register its committed members for compensation, as the engine does."""
    if not all(m.key in resolved for m in group.members):
        return
    results = [state.member_results.pop(m.key, None) for m in group.members]
    state.data = merge_committed(group, state.data, results)
    done = tuple(
        m for m in group.members if m.compensate is not None and m.key in state.committed_keys
    )
    if group.concurrent_compensation and len(done) > 1:
        committed.append(done)
    else:
        committed.extend(done)


def _data_class(name: str | None) -> Any:
    if not name:
        raise ValueError("a log entry with data has no data type")
    return resolve_type(name)


def _record(
    name: str, status: StepStatus, event: StoredEvent, offset: float, *, compensation: bool = False
) -> StepRecord:
    """A history record from a log entry; it was logged when the step ended, so it started
    `elapsed` earlier."""
    error = None if event.error_type is None else LoggedError(event.error_type, event.error)
    return record_of(
        name,
        status,
        event.elapsed,
        event.attempt,
        compensation,
        error,
        max(0.0, offset - event.elapsed),
    )


class RecoveryOutcome(StrEnum):
    """What recovery did with one saga (a `str`, so it prints and compares as its value)."""

    COMPLETED = "completed"
    """Resumed, and its forward pass completed."""
    COMPENSATED = "compensated"
    """Its committed steps were compensated (the saga ended FAILED or TIMED_OUT)."""
    COMPENSATION_FAILED = "compensation_failed"
    """A compensation failed: the saga is COMPENSATION_FAILED, for `retry_compensation`."""
    REFUSED = "refused"
    """Left untouched: unknown name, changed flow, or data that no longer loads."""
    STOPPED = "stopped"
    """Its log could not be written (store down, lease lost): still unfinished."""
    CANCELLED = "cancelled"
    """An operator asked to cancel it (`spakky-saga cancel`): its committed steps were
    compensated, whatever its recovery policy, and it ended CANCELLED."""
    STUCK = "stuck"
    """Past its flow's pivot (the point of no return), a step failed for good: nothing was
    compensated and the saga is STUCK, for an operator to finish."""
    WAITING = "waiting"
    """Resumed in its wait, and suspended again (WAITING): its signal has not arrived nor
    its time come (it woke for a signal of another type, or its engine died in the wait)."""

    @property
    def needs_attention(self) -> bool:
        """Whether an operator has something to do about it."""
        return self in (
            RecoveryOutcome.REFUSED,
            RecoveryOutcome.COMPENSATION_FAILED,
            RecoveryOutcome.STUCK,
        )


@dataclass(frozen=True, slots=True)
class RecoveredSaga:
    """What recovery did with one saga."""

    saga_id: str
    saga_name: str
    outcome: RecoveryOutcome
    result: SagaResult[Any] | None = None
    error: BaseException | None = None
    uncompensated: tuple[str, ...] = ()
    """Committed steps with no compensation to run: under `compensate_by_name`, names the
    current flow no longer has."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """Every saga one `recover()` call looked at; one failure never stops the others."""

    sagas: tuple[RecoveredSaga, ...] = ()

    @property
    def refused(self) -> tuple[RecoveredSaga, ...]:
        """Sagas left untouched: unknown name, changed flow, data that no longer loads."""
        return tuple(s for s in self.sagas if s.outcome is RecoveryOutcome.REFUSED)

    @property
    def needs_attention(self) -> tuple[RecoveredSaga, ...]:
        """Sagas an operator has to look at: refused, with a failed compensation, or stuck
        past their pivot."""
        return tuple(s for s in self.sagas if s.outcome.needs_attention)

    def __len__(self) -> int:
        return len(self.sagas)
