"""How a flow runs: the one driver of fresh and recovered runs.

`Executor.run` is the single forward loop. A fresh run starts it at the first item; a
recovered run starts it at a `StartPoint` built from the saga's log (which item, each step's
next attempt number, the group members that finished or failed for good): there is no second
copy of the loop for recovery, so what a crash leaves behind runs exactly as a live run would.
`Executor.roll_back` compensates and ends a run, for the forward loop and for recovery alike.

Every transition goes through the run's event seam (`SagaRun.emit`): a `SagaEvent` to the
listeners (the log lines among them) and, for a durable run, to its write-ahead journal,
flushed before the driver acts. What a failure means is the step's strategy's to decide
(`ErrorStrategy.decide`); the driver only carries the decision out.

The rules of rollback, which the rest of this module keeps:
- committed compensable steps are compensated exactly once, in reverse commit order, each
  given the latest data; a failed compensation never stops the rest; a compensation with a
  policy of its own (`action >> (undo | Retry(5))`) is retried by it first;
- rollback runs in its own task, shielded: cancelling the caller cannot leave it half done;
  the caller's cancellation is re-raised once it is over, after the failure handler ran;
- a rollback cancelled itself (the event loop shutting down: `asyncio.run` cancels every
  task) carries on for a grace period, re-running the compensation the cancellation cut
  (same attempt, same idempotency key); past the grace period every compensation that did
  not finish is recorded and reported, never dropped silently;
- observers (listeners, log handlers) and strategy code can never change what happens;
- a durable run that can no longer write its log (lease lost, store down) stops at once,
  without acting further: its saga stays unfinished in the store, for recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from spakky_saga._text import error_text, safe_repr
from spakky_saga.context import enter_step, leave_step
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import (
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaRollbackInterruptedWarning,
    SagaStepCancelledError,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaStoreError,
    SagaTimeoutError,
    SagaWaitTimeoutError,
)
from spakky_saga.events import SagaEventKind
from spakky_saga.logs import ENGINE_LOGGER
from spakky_saga.merge import merge_committed, merge_results
from spakky_saga.plan import ExecutionPlan, GroupNode, StepNode
from spakky_saga.result import SagaResult, record_of
from spakky_saga.run import Cursor, SagaRun
from spakky_saga.status import SagaStatus, StepStatus
from spakky_saga.strategy import Decision, ErrorStrategy, Escalate, FailedAttempt, Verdict
from spakky_saga.waits import Resolution, WaitSpec

logger: Final = ENGINE_LOGGER

type Sleep = Callable[[float], Awaitable[None]]

_COMMITTED: Final = StepStatus.COMMITTED
_FAILED: Final = StepStatus.FAILED
_COMPENSATED: Final = StepStatus.COMPENSATED
_RETRY: Final = Verdict.RETRY
_SKIP: Final = Verdict.SKIP
_ESCALATE: Final = Verdict.ESCALATE
_ESCALATED: Final = Decision.ESCALATE
_NO_SCOPE: Final = contextlib.nullcontext()

_STEP_STARTED: Final = SagaEventKind.STEP_STARTED
_STEP_COMMITTED: Final = SagaEventKind.STEP_COMMITTED
_STEP_FAILED: Final = SagaEventKind.STEP_FAILED
_STEP_RETRYING: Final = SagaEventKind.STEP_RETRYING
_STEP_SKIPPED: Final = SagaEventKind.STEP_SKIPPED
_STEP_ESCALATED: Final = SagaEventKind.STEP_ESCALATED
_COMPENSATION_STARTED: Final = SagaEventKind.COMPENSATION_STARTED
_COMPENSATION_DONE: Final = SagaEventKind.COMPENSATION_DONE
_COMPENSATION_FAILED: Final = SagaEventKind.COMPENSATION_FAILED
_COMPENSATION_RETRYING: Final = SagaEventKind.COMPENSATION_RETRYING
_SAGA_FINISHED: Final = SagaEventKind.SAGA_FINISHED
_SAGA_ABORTED: Final = SagaEventKind.SAGA_ABORTED
_SIGNAL_RECEIVED: Final = SagaEventKind.SIGNAL_RECEIVED
_SAGA_SUSPENDED: Final = SagaEventKind.SAGA_SUSPENDED
_NEVER_BY_SIGNAL: Final = 2**62
"""`seen` for a sleep's suspension: no number of signals wakes it early."""


@dataclass(frozen=True, slots=True)
class StartPoint:
    """Where a run starts, and what its log says of the steps before it.

    A fresh run starts at `FRESH`. A recovered one starts at the first unfinished item, with
    each step's next attempt number (an attempt that started without an outcome runs again
    with the same number), the members of the unfinished group that finished (their result,
    or None when skipped) or failed for good (they do not run again), and each compensation's
    next attempt.
    """

    index: int = 0
    attempts: Mapping[str, int] = field(default_factory=dict)
    finished: Mapping[str, AbstractSagaData | None] = field(default_factory=dict)
    committed: frozenset[str] = frozenset()
    failed: Mapping[str, BaseException] = field(default_factory=dict)
    compensation_attempts: Mapping[str, int] = field(default_factory=dict)


FRESH: Final = StartPoint()
"""A run from the first item, with nothing behind it."""


class _StepFailed:
    """Why the forward pass stopped: the failing step (or group member) and its error."""

    __slots__ = ("error", "step")

    def __init__(self, step: str, error: BaseException) -> None:
        self.step = step
        self.error = error


class _GroupFailed(_StepFailed):
    """A parallel group failed; `data` is what its committed members changed, merged."""

    __slots__ = ("data",)

    def __init__(self, step: str, error: BaseException, data: AbstractSagaData) -> None:
        super().__init__(step, error)
        self.data = data


class _Suspended(BaseException):
    """A durable run stops in a wait: it leaves the attempt loop (a BaseException, so that no
    strategy sees it) for `Executor.run`, which suspends the saga in the store."""

    def __init__(self, step: StepNode, attempt: int, wake_at: float | None, seen: int) -> None:
        super().__init__(step.name)
        self.step = step
        self.attempt = attempt
        self.wake_at = wake_at
        self.seen = seen


class _GraceOver(Exception):
    """The shutdown grace period ran out while a compensation was running."""


class _Rollback:
    """One rollback's state: the failed (or never-run) compensations, the failure handler's
    own error, an error that stopped it (KeyboardInterrupt/SystemExit from a compensation,
    or a journal that can no longer write), and the end of the shutdown grace period once a
    shutdown cancelled it."""

    __slots__ = ("failures", "fatal", "grace", "grace_until", "handler_error")

    def __init__(self, grace: float) -> None:
        self.failures: dict[str, BaseException] = {}
        self.handler_error: BaseException | None = None
        self.fatal: BaseException | None = None
        self.grace = grace
        self.grace_until: float | None = None

    def carry_on(self, task: asyncio.Task[Any]) -> bool:
        """A shutdown cancelled `task` during the rollback: take the cancellation back and
        go on, while the grace period (started by the first such cancellation) lasts."""
        if self.grace <= 0:
            return False
        now = asyncio.get_running_loop().time()
        if self.grace_until is None:
            self.grace_until = now + self.grace
        elif now >= self.grace_until:
            return False
        task.uncancel()
        return True


class Executor:
    """Runs compiled plans: forward, retries, groups, rollback. Stateless between runs: every
    run's state is its `SagaRun`.

    `sleep` waits between retries and in `sleep()` waits; `compensation_timeout` bounds each
    compensation attempt that has no timeout of its own (None: no bound); `shutdown_grace` is
    how long a rollback goes on after a shutdown cancelled it; `wall_clock` (epoch seconds)
    places the deadlines of waits, which outlive a process.
    """

    __slots__ = ("compensation_timeout", "shutdown_grace", "sleep", "wall_clock")

    def __init__(
        self,
        *,
        sleep: Sleep,
        compensation_timeout: float | None,
        shutdown_grace: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sleep = sleep
        self.compensation_timeout = compensation_timeout
        self.shutdown_grace = shutdown_grace
        self.wall_clock = wall_clock

    async def run[D: AbstractSagaData](  # noqa: PLR0915 - the hot loop is inlined on purpose
        self, plan: ExecutionPlan, run: SagaRun, data: D, start: StartPoint = FRESH
    ) -> SagaResult[D]:
        """The forward pass from `start`, then the result or the rollback."""
        clock = run.clock
        started = run.started
        progress = run.progress
        journal = run.journal
        history = run.history  # (no bound methods kept here: each costs an in-flight saga bytes)
        undo = run.undo
        failure: _StepFailed | None = None
        status = SagaStatus.COMPLETED
        node: StepNode | GroupNode | None = None
        interrupted: list[AbstractSagaData] | None = None  # set while a group runs
        t0 = started  # when the running item started
        nodes = plan.nodes
        pivot = None if plan.pivot is None else nodes[plan.pivot]
        run.past_pivot = plan.pivot is not None and start.index > plan.pivot
        attempts = start.attempts
        task = asyncio.current_task()
        assert task is not None, "a saga runs in a task"
        before = task.cancelling()  # cancellations of this task from before the saga: not ours
        scope: Any = _NO_SCOPE
        if plan.timeout is not None:
            # What is left of it: a recovered run's `started` is the saga's own start.
            scope = asyncio.timeout(plan.timeout - (clock() - started))
            run.deadline = (scope, plan.timeout)
        try:
            async with scope:
                for node in nodes[start.index :] if start.index else nodes:
                    if isinstance(node, StepNode) and node.simple:
                        step = node
                        name = step.name
                        if progress:
                            run.emit(_STEP_STARTED, name, step.key)
                            if journal is not None:
                                await journal.flush()  # write-ahead: the attempt, then act
                        run.node = step
                        run.attempt = 1
                        t0 = run.attempt_started = clock()
                        try:
                            out = await step.action(data)
                            if task.cancelling() > before:  # a swallowed cancellation
                                raise asyncio.CancelledError
                            if out is not None and out.__class__ is not data.__class__:
                                _check_output(name, out, data)
                        except (Exception, asyncio.CancelledError) as caught:
                            error = _step_error(name, caught, before)
                            run.node = None
                            elapsed = run.record(name, _FAILED, t0, 1, False, error)
                            run.emit(_STEP_FAILED, name, step.key, 1, elapsed, error)
                            failure = _StepFailed(name, error)
                            break
                        run.node = None
                        elapsed = clock() - t0
                        history.append(
                            record_of(name, _COMMITTED, elapsed, 1, False, None, t0 - started)
                        )
                        if out is not None:
                            data = out
                        if step.compensate is not None:
                            undo.append(step)
                        if progress:
                            run.emit(_STEP_COMMITTED, name, step.key, 1, elapsed, data=data)
                    elif isinstance(node, StepNode):
                        t0 = clock()
                        first = attempts.get(node.key, 1) if attempts else 1
                        committed, value = await self._attempt(node, data, run, run, first)
                        if committed:
                            if value is not None:
                                data = value
                            if node.compensate is not None:
                                undo.append(node)
                        elif value is not None:
                            failure = _StepFailed(node.name, value)
                            break
                    else:
                        interrupted = []
                        t0 = clock()
                        outcome = await self._run_group(node, data, run, interrupted, start)
                        if isinstance(outcome, _GroupFailed):
                            failure = outcome
                            data = outcome.data  # type: ignore[assignment] # merge keeps the type
                        else:
                            data = outcome  # type: ignore[assignment] # merge keeps the data type
                        if journal is not None:
                            journal.merged(data)
                        if failure is not None:
                            break
                    if node is pivot:
                        run.past_pivot = True  # the point of no return: no compensation now
                else:
                    node = None  # finished: nothing was running
        except TimeoutError as error:
            if not isinstance(scope, asyncio.Timeout) or not scope.expired():
                raise
            if interrupted:
                data = interrupted[-1]  # type: ignore[assignment] # merged from this saga's data
                if journal is not None:
                    journal.merged(data)
            status = SagaStatus.TIMED_OUT
            running = node.name if node is not None else None
            assert plan.timeout is not None
            timeout_error = SagaTimeoutError(
                run.saga_name, timedelta(seconds=plan.timeout), running
            )
            timeout_error.__cause__ = error
            failure = _StepFailed(running or "-", timeout_error)
            if isinstance(node, GroupNode):
                elapsed = run.record(node.name, _FAILED, t0, 1, False, timeout_error)
                run.emit(_STEP_FAILED, node.name, node.key, 1, elapsed, timeout_error)
            else:
                _cut(run, run, timeout_error)  # nothing, when it was waiting to retry
        except _Suspended as suspended:
            return await _suspend(run, data, suspended)
        except asyncio.CancelledError as cancelled:
            if interrupted:
                data = interrupted[-1]  # type: ignore[assignment] # merged from this saga's data
                if journal is not None:
                    journal.merged(data)
            _cut(run, run, cancelled)
            running = node.name if node is not None else None
            await self.roll_back(plan, run, data, cancelled=cancelled, failed_step=running)
            raise  # roll_back re-raises the cancellation itself; this is for type checkers
        if failure is None:
            elapsed = clock() - started
            result = _ended(run, status, data, elapsed)
            run.ended = True
            if progress:
                run.emit(_SAGA_FINISHED, elapsed=elapsed, data=data, status=status)
                if journal is not None:
                    await journal.flush()
            return result
        if run.past_pivot:
            status = SagaStatus.STUCK
        elif status is not SagaStatus.TIMED_OUT:
            status = SagaStatus.FAILED
        return await self.roll_back(
            plan, run, data, status=status, failed_step=failure.step, error=failure.error
        )

    async def _attempt(  # noqa: PLR0915 - one attempt loop; splitting it costs a frame a step
        self,
        step: StepNode,
        data: AbstractSagaData,
        run: SagaRun,
        cursor: Cursor,
        first_attempt: int = 1,
    ) -> tuple[bool, Any]:
        """Run one step with its strategy, timeout and retries, from `first_attempt`.

        Returns (True, output) when it committed, (False, None) when it failed and is
        skipped, and (False, error) when it failed for good. A sequential step's `cursor` is
        the run itself, which also tracks the attempt for the saga timeout's record; a group
        member has a cursor of its own.
        """
        clock = run.clock
        progress = run.progress
        journal = run.journal
        name = step.name
        key = step.key
        attempt = first_attempt
        task = asyncio.current_task()
        assert task is not None, "a saga runs in a task"
        before = task.cancelling()  # cancellations from before this step are not its own
        escalated = run.escalated.get(key) if run.escalated else None
        while True:
            if escalated is not None:  # recovered where it waits for an operator's decision
                attempt, error, elapsed = escalated[0], escalated[2], 0.0
                escalated = None
                decision: Decision | Exception = _ESCALATED
            else:
                if progress:
                    run.emit(_STEP_STARTED, name, key, attempt)
                    if journal is not None:
                        await journal.flush()
                cursor.node, cursor.attempt = step, attempt
                t0 = cursor.attempt_started = clock()
                try:
                    if step.wait is not None:
                        out = await self._wait(step, data, run, attempt)
                    elif step.timeout is None:
                        out = await step.action(data)
                    else:
                        out = await _with_timeout(step, data)
                    if task.cancelling() > before:  # a swallowed cancellation: it still wins
                        raise asyncio.CancelledError
                    if out is not None and out.__class__ is not data.__class__:
                        _check_output(name, out, data)
                except (Exception, asyncio.CancelledError) as caught:
                    error = _step_error(name, caught, before)  # a cancellation wins: no retry
                    cursor.node = None
                    elapsed = run.record(name, _FAILED, t0, attempt, False, error)
                    run.emit(_STEP_FAILED, name, key, attempt, elapsed, error)
                    decision = decide(step.strategy, FailedAttempt(name, attempt, error))
                else:
                    cursor.node = None
                    elapsed = clock() - t0
                    run.history.append(
                        record_of(name, _COMMITTED, elapsed, attempt, False, None, t0 - run.started)
                    )
                    if progress:
                        committed_data = (out or data) if cursor is run else out
                        run.emit(_STEP_COMMITTED, name, key, attempt, elapsed, data=committed_data)
                    return True, out
            if not isinstance(decision, Decision):  # the strategy itself raised: it fails
                return False, decision
            if decision.verdict is _ESCALATE:
                decision = await self._escalate(step, run, attempt, error)
            if decision.verdict is _RETRY:
                attempt += 1
                delay = decision.delay
                run.emit(_STEP_RETRYING, name, key, attempt, elapsed, error, delay=delay)
                if delay > 0:
                    if journal is not None:
                        await journal.flush()  # the failure is known before waiting
                    await self.sleep(delay)
                continue
            if decision.verdict is _SKIP:
                if run.skipped is None:
                    run.skipped = []
                run.skipped.append(name)
                run.emit(_STEP_SKIPPED, name, key, attempt, elapsed, error)
                return False, None
            return False, error

    async def _wait(
        self, step: StepNode, data: AbstractSagaData, run: SagaRun, attempt: int
    ) -> Any:
        """A wait's attempt (`wait_for`, `sleep`): until its deadline, which is absolute (a
        recovered attempt keeps the start its log recorded), for a signal of its type, then
        the data merged with it; a timeout raises `SagaWaitTimeoutError` for its strategy."""
        spec = step.wait
        assert spec is not None
        begun = run.wait_started.get(step.key)
        started = begun[1] if begun is not None and begun[0] == attempt else self.wall_clock()
        signal_type = spec.signal_type
        if signal_type is None:  # a sleep
            deadline = spec.deadline(started)
            left = 0.0 if deadline is None else max(0.0, deadline - self.wall_clock())
            if left and run.journal is not None and run.signals and run.signals.suspends:
                await _let_timeout_fire()
                raise _Suspended(step, attempt, _wake_at(run, deadline), _NEVER_BY_SIGNAL)
            if left:
                await self.sleep(left)
            return None
        found = await self._receive(step, run, attempt, spec, started)
        if found is None:
            raise SagaWaitTimeoutError(step.name, signal_type.__qualname__, spec.timeout or 0.0)
        assert spec.merge is not None
        return spec.merge(data, found)

    async def _receive(
        self, step: StepNode, run: SagaRun, attempt: int, spec: WaitSpec, started: float
    ) -> object | None:
        """The signal `spec` waits for (taken: recorded as SIGNAL_RECEIVED), or None when
        its deadline (counted from `started`, epoch seconds) passed first. A durable run
        with nothing to take suspends instead (`_Suspended`)."""
        signal_type = spec.signal_type
        assert signal_type is not None
        deadline = spec.deadline(started)
        left = None if deadline is None else max(0.0, deadline - self.wall_clock())
        box = run.signals
        assert box is not None, "every engine gives its runs a signal box"
        saga_id = str(run.saga_id)
        taken = run.taken if run.taken is not None else set[str]()
        found = await box.take(saga_id, signal_type, taken)
        if found is None and left != 0 and run.journal is not None and box.suspends:
            await _let_timeout_fire()
            raise _Suspended(step, attempt, _wake_at(run, deadline), box.seen(saga_id))
        if found is None:
            try:
                async with asyncio.timeout(left) as scope:
                    while found is None:
                        await box.arrival(saga_id)
                        found = await box.take(saga_id, signal_type, taken)
            except TimeoutError:
                if not scope.expired():
                    raise
                return None
        signal_id, payload = found
        taken.add(signal_id)
        run.taken = taken
        run.emit(
            _SIGNAL_RECEIVED, step.name, step.key, attempt, signal_id=signal_id, signal=payload
        )
        return payload

    async def _escalate(
        self, step: StepNode, run: SagaRun, attempt: int, error: BaseException
    ) -> Decision:
        """Ask an operator (`Escalate()`): announce it (written ahead), wait for a
        `Resolution` (suspended, on a durable engine) and return what it decided; after the
        strategy's timeout without one, its `then` decides."""
        strategy = step.strategy
        assert isinstance(strategy, Escalate)
        pending = run.escalated.get(step.key)
        if pending is not None and pending[0] == attempt:  # recovered: it escalated before
            started = pending[1]
        else:
            started = self.wall_clock()
            run.emit(_STEP_ESCALATED, step.name, step.key, attempt, error=error)
            if run.journal is not None:
                await run.journal.flush()  # the escalation is known before waiting
        timeout = None if strategy.timeout is None else strategy.timeout.total_seconds()
        found = await self._receive(step, run, attempt, _ask(timeout), started)
        if not isinstance(found, Resolution):
            return Decision.SKIP if strategy.then.skips else Decision.FAIL
        return _DECIDED[found.decision]

    async def _run_group(  # noqa: PLR0915 - one group: start, wait, record, merge
        self,
        group: GroupNode,
        data: AbstractSagaData,
        run: SagaRun,
        interrupted: list[AbstractSagaData],
        start: StartPoint,
    ) -> AbstractSagaData | _GroupFailed:
        """Run members concurrently, wait for all of them, then merge or report failure.

        Each member runs with its own strategy (a retrying member does not hold up its
        siblings; a skipped one contributes nothing). Committed members are registered for
        compensation even if the group is cancelled (saga timeout or caller cancellation)
        while siblings are still running. When the group fails, what its committed members
        changed is merged anyway, so that their compensations see it; the first failing
        member in declaration order is the saga's `failed_step`. In a recovered group, the
        members the log says finished or failed for good do not run again.

        A member whose journal can no longer write stops the group; its `SagaStoreError`
        (not an exception group) leaves the run, for recovery to finish.
        """
        members = group.members
        results: list[Any] = [None] * len(members)
        committed = [False] * len(members)
        errors: list[BaseException | None] = [None] * len(members)
        cursors = [Cursor(run.saga_name, run.saga_id) for _ in members]

        async def run_member(index: int, member: StepNode, first: int) -> None:
            cursor = cursors[index]
            previous = enter_step(cursor)  # the member's own task
            try:
                ok, value = await self._attempt(member, data, run, cursor, first)
            finally:
                leave_step(previous)
            if ok:
                committed[index] = True
                results[index] = value
            else:
                errors[index] = value  # None when the member failed and is skipped

        try:
            async with asyncio.TaskGroup() as tasks:
                for index, member in enumerate(members):
                    key = member.key
                    if key in start.finished:
                        results[index] = start.finished[key]
                        committed[index] = key in start.committed
                    elif key in start.failed:
                        errors[index] = start.failed[key]
                    else:
                        first = start.attempts.get(key, 1)
                        tasks.create_task(run_member(index, member, first))
        except BaseException as cut:
            # Cancelled (saga timeout or caller) with members still running, or a member
            # could not write its log: each running one gets its FAILED record, and what the
            # committed ones changed is the latest data their compensations must see.
            for cursor in cursors:
                if cursor.node is not None:
                    _cut(run, cursor, _cut_reason(run, cursor.node, cut))
            interrupted.append(merge_committed(group, data, results))
            if isinstance(cut, BaseExceptionGroup) and (lost := _store_error(cut)) is not None:
                raise lost from cut
            raise
        finally:
            done = tuple(m for m, ok in zip(members, committed, strict=True) if ok and m.compensate)
            if group.concurrent_compensation and len(done) > 1:
                run.undo.append(done)
            else:
                run.undo.extend(done)
        for member, error in zip(members, errors, strict=True):
            if error is not None:
                return _GroupFailed(member.name, error, merge_committed(group, data, results))
        t0 = run.clock()
        try:
            return merge_results(group, data, results)
        except Exception as error:
            elapsed = run.record(group.name, _FAILED, t0, 1, False, error)
            run.emit(_STEP_FAILED, group.name, group.key, 1, elapsed, error)
            latest = data if group.merge is not None else merge_committed(group, data, results)
            return _GroupFailed(group.name, error, latest)

    async def roll_back[D: AbstractSagaData](
        self,
        plan: ExecutionPlan,
        run: SagaRun,
        data: D,
        *,
        status: SagaStatus = SagaStatus.FAILED,
        failed_step: str | None = None,
        error: BaseException | None = None,
        cancelled: asyncio.CancelledError | None = None,
        start: StartPoint = FRESH,
    ) -> SagaResult[D]:
        """Compensate `run.undo` in reverse, report, and end the run: return the result, or
        raise SagaCompensationFailedError, or re-raise the caller's cancellation. A run past
        its flow's pivot compensates nothing: it only ends.

        The rollback (and the failure handler) runs in its own task, shielded: a cancellation
        of the caller, however many times it arrives, waits for it, then wins.
        """
        outcome = _Rollback(self.shutdown_grace)
        if run.undo and not run.past_pivot:
            # Eager: compensations that never suspend finish here, without a loop iteration.
            task = asyncio.Task(
                self._compensate_all(plan, run, data, outcome, start),
                loop=asyncio.get_running_loop(),
                eager_start=True,
            )
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError as again:
                    cancelled = cancelled or again
            if not task.cancelled():
                task.result()  # retrieve it: _compensate_all keeps its own errors
        elapsed = run.clock() - run.started
        result: SagaResult[D] = SagaResult(
            status,
            data,
            failed_step,
            error if cancelled is None else cancelled,
            tuple(run.history),
            timedelta(seconds=elapsed),
            run.saga_name,
            tuple(run.skipped or ()),
        )
        journal = run.journal
        run.ended = True
        if outcome.fatal is not None:
            run.emit(_SAGA_ABORTED, elapsed=elapsed, error=outcome.fatal, data=data)
            raise outcome.fatal
        if cancelled is not None:
            # Past the pivot the saga must go on: RUNNING tells a durable run's journal to
            # leave it unfinished, for recovery to take forward.
            going_on = SagaStatus.RUNNING if run.past_pivot else None
            run.emit(_SAGA_ABORTED, elapsed=elapsed, error=cancelled, data=data, status=going_on)
            if journal is not None:
                with contextlib.suppress(Exception):  # recovery finishes it if this is lost
                    await journal.flush()
            raise cancelled
        if outcome.failures:
            failed = SagaCompensationFailedError(result, outcome.failures)
            run.emit(_SAGA_ABORTED, elapsed=elapsed, error=failed, data=data)
            if journal is not None:
                await journal.flush()
            if outcome.handler_error is not None:
                raise failed from outcome.handler_error
            raise failed
        run.emit(
            _SAGA_FINISHED, failed_step, elapsed=elapsed, error=error, data=data, status=status
        )
        if journal is not None:
            await journal.flush()
        return result

    async def _compensate_all(
        self,
        plan: ExecutionPlan,
        run: SagaRun,
        data: AbstractSagaData,
        outcome: _Rollback,
        start: StartPoint,
    ) -> None:
        """Undo committed steps in reverse; a failed compensation never stops the rest.

        If this rollback is cut off (cancelled past the shutdown grace period), the
        compensation running and every later one are recorded as interrupted: reported like
        failures, and said on stderr as a warning, never dropped silently. Then the flow's
        failure handler runs, if anything failed.
        """
        entries = list(reversed(run.undo))
        position = 0
        firsts = start.compensation_attempts
        try:
            for position, entry in enumerate(entries):  # noqa: B007 - read after the loop
                if isinstance(entry, tuple):
                    await self._compensate_together(entry, run, data, outcome, firsts)
                else:
                    await self._compensate(entry, run, data, outcome, firsts.get(entry.key, 1))
        except asyncio.CancelledError:
            for entry in entries[position + 1 :]:
                for step in entry if isinstance(entry, tuple) else (entry,):
                    _interrupted(run, step, outcome, started=False)
            _warn_interrupted(run, outcome)
        except SagaStoreError as lost:  # the log cannot be written: stop, recovery finishes it
            outcome.fatal = lost
            return
        except BaseException as fatal:  # KeyboardInterrupt / SystemExit from a compensation
            outcome.fatal = fatal
            for entry in entries[position + 1 :]:
                for step in entry if isinstance(entry, tuple) else (entry,):
                    _interrupted(run, step, outcome, started=False)
            return
        if outcome.failures and plan.compensation_failure_handler is not None:
            await _call_handler(plan.compensation_failure_handler, run, data, outcome)

    async def _compensate_together(
        self,
        steps: tuple[StepNode, ...],
        run: SagaRun,
        data: AbstractSagaData,
        outcome: _Rollback,
        firsts: Mapping[str, int],
    ) -> None:
        """Compensate group members concurrently (`compensation_order="concurrent"`), each
        in a task of its own that is always waited for."""
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._compensate(step, run, data, outcome, firsts.get(step.key, 1)))
            for step in steps
        ]
        this = asyncio.current_task()
        assert this is not None
        while True:
            try:
                await asyncio.wait(tasks)
                break
            except asyncio.CancelledError:
                if outcome.carry_on(this):
                    continue
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                raise
        for task in tasks:
            if task.cancelled():
                raise asyncio.CancelledError
            fatal = task.exception()
            if fatal is not None:
                raise fatal

    async def _compensate(  # noqa: PLR0915 - one compensation loop, its outcomes in one place
        self,
        step: StepNode,
        run: SagaRun,
        data: AbstractSagaData,
        outcome: _Rollback,
        first_attempt: int = 1,
    ) -> None:
        """Run one compensation under its own policy (attempts, timeout), from
        `first_attempt`; record, announce and report what happened."""
        name = step.name
        key = step.key
        compensate = step.compensate
        assert compensate is not None, "only steps with a compensation are put on the undo list"
        attempt = first_attempt
        bounded = step.compensation_timeout or self.compensation_timeout
        cursor = Cursor(run.saga_name, run.saga_id, step, attempt, compensating=True)
        task = asyncio.current_task()
        assert task is not None
        while True:
            if run.progress:
                run.emit(_COMPENSATION_STARTED, name, key, attempt, data=data)
                if run.journal is not None:
                    await run.journal.flush()  # write-ahead: the compensation, then act
            cursor.attempt = attempt
            token = enter_step(cursor)
            t0 = run.clock()
            try:
                if outcome.grace_until is None and bounded is None:
                    await compensate(data)  # the common case: no frame of its own
                else:
                    await self._call_compensation(step, compensate, data, outcome)
            except _GraceOver:
                _interrupted(run, step, outcome, started=True, since=t0, attempt=attempt)
                raise asyncio.CancelledError from None
            except asyncio.CancelledError as caught:
                if not task.cancelling():  # the compensation raised it on its own: it failed
                    error: BaseException = _step_error(name, caught, 0)
                elif outcome.carry_on(task):  # a shutdown: run this attempt again, in grace
                    _interrupted(run, step, None, started=True, since=t0, attempt=attempt)
                    continue
                else:  # the rollback itself is cut off
                    _interrupted(run, step, outcome, started=True, since=t0, attempt=attempt)
                    raise
            except Exception as caught:
                error = caught
            except BaseException as fatal:  # KeyboardInterrupt / SystemExit: record, then go
                elapsed = run.record(name, _FAILED, t0, attempt, True, fatal)
                outcome.failures[_unique_key(outcome.failures, name)] = fatal
                run.emit(_COMPENSATION_FAILED, name, key, attempt, elapsed, fatal)
                raise
            else:
                elapsed = run.record(name, _COMPENSATED, t0, attempt, True)
                if run.progress:
                    run.emit(_COMPENSATION_DONE, name, key, attempt, elapsed, data=data)
                return
            finally:
                leave_step(token)
            elapsed = run.record(name, _FAILED, t0, attempt, True, error)
            run.emit(_COMPENSATION_FAILED, name, key, attempt, elapsed, error)
            decision = decide(
                step.compensation_strategy, FailedAttempt(name, attempt, error, compensation=True)
            )
            if isinstance(decision, Decision) and decision.verdict is _RETRY:
                attempt += 1
                delay = decision.delay
                run.emit(_COMPENSATION_RETRYING, name, key, attempt, elapsed, error, delay=delay)
                if delay > 0:
                    if run.journal is not None:
                        await run.journal.flush()
                    await self._backoff(delay, outcome, task)
                continue
            outcome.failures[_unique_key(outcome.failures, name)] = (
                decision if isinstance(decision, Exception) else error
            )
            return

    async def _call_compensation(
        self,
        step: StepNode,
        compensate: Callable[[Any], Awaitable[object]],
        data: AbstractSagaData,
        outcome: _Rollback,
    ) -> None:
        """One compensation attempt, bounded by its timeout (a TimeoutError is its failure)
        and by the end of the shutdown grace period (`_GraceOver`)."""
        timeout = step.compensation_timeout
        if timeout is None:
            timeout = self.compensation_timeout
        grace_until = outcome.grace_until
        if timeout is None and grace_until is None:
            await compensate(data)
            return
        now = asyncio.get_running_loop().time()
        own = math.inf if timeout is None else now + timeout
        deadline = own if grace_until is None else min(own, grace_until)
        try:
            async with asyncio.timeout_at(deadline) as scope:
                await compensate(data)
        except TimeoutError:
            if scope.expired() and deadline < own:
                raise _GraceOver from None
            raise

    async def _backoff(self, delay: float, outcome: _Rollback, task: asyncio.Task[Any]) -> None:
        """Wait before a compensation's next attempt; a shutdown shortens the wait to none
        while the grace period lasts."""
        try:
            await self.sleep(delay)
        except asyncio.CancelledError:
            if not task.cancelling() or not outcome.carry_on(task):
                raise


_DECIDED: Final = {
    "retry": Decision.retry(0.0),
    "skip": Decision.SKIP,
    "compensate": Decision.FAIL,
}
"""What an operator's decision (`Resolution.decision`) means for the escalated step."""


def _ask(timeout: float | None) -> WaitSpec:
    """What an escalated step waits for: a `Resolution`, for `timeout` seconds at most."""
    return WaitSpec(Resolution, None, timeout)


def _ended[D: AbstractSagaData](
    run: SagaRun, status: SagaStatus, data: D, elapsed: float
) -> SagaResult[D]:
    """The result of a run that ends (or stops, WAITING) without a failure."""
    return SagaResult(
        status,
        data,
        None,
        None,
        tuple(run.history),
        timedelta(seconds=elapsed),
        run.saga_name,
        tuple(run.skipped or ()),
    )


async def _let_timeout_fire() -> None:
    """Yield once before suspending: a saga timeout already past (a saga woken at its
    deadline) is due at once (`call_soon`), and must end the run rather than a suspension
    that would wake it again at once."""
    await asyncio.sleep(0)


def _wake_at(run: SagaRun, deadline: float | None) -> float | None:
    """When a suspended wait wakes (epoch seconds): its deadline, or the saga timeout's if
    that comes first (then the resumed run times out at once); None: only a signal wakes it."""
    scope, _ = run.deadline
    when = None if scope is None else scope.when()
    if when is None:
        return deadline
    saga_deadline = time.time() + (when - asyncio.get_running_loop().time())
    return saga_deadline if deadline is None else min(deadline, saga_deadline)


async def _suspend[D: AbstractSagaData](
    run: SagaRun, data: D, suspended: _Suspended
) -> SagaResult[D]:
    """Stop a durable run in its wait: SAGA_SUSPENDED written, then the saga WAITING in the
    store with no owner (`RunLog.suspend`); the caller gets a WAITING result."""
    journal = run.journal
    assert journal is not None, "only a durable run suspends"
    run.node = None
    step = suspended.step
    elapsed = run.clock() - run.started
    run.emit(
        _SAGA_SUSPENDED,
        step.name,
        step.key,
        suspended.attempt,
        elapsed,
        data=data,
        status=SagaStatus.WAITING,
    )
    run.ended = True
    await journal.flush()
    await journal.suspend(suspended.wake_at, suspended.seen)
    return _ended(run, SagaStatus.WAITING, data, elapsed)


def decide(strategy: ErrorStrategy, failure: FailedAttempt) -> Decision | Exception:
    """`strategy.decide(failure)`, or the error explaining why it could not decide: a
    strategy can never crash the engine (its error fails the step, naming the strategy)."""
    try:
        decision = strategy.decide(failure)
        if not isinstance(decision, Decision):
            raise TypeError(
                f"decide() returned {safe_repr(decision)}; it must return a Decision "
                "(Decision.retry(after), Decision.SKIP or Decision.FAIL)"
            )
        return decision
    except Exception as strategy_error:
        what = "compensation" if failure.compensation else "step"
        problem = RuntimeError(
            f'the error strategy of {what} "{failure.step}" ({safe_repr(strategy)}) raised '
            f"{error_text(strategy_error)} while deciding on attempt {failure.attempt}; the "
            f"{what} fails"
        )
        problem.__cause__ = strategy_error
        problem.__context__ = failure.error
        return problem


def _store_error(group: BaseExceptionGroup[BaseException]) -> SagaStoreError | None:
    """The store error a group's failure stands for, if a member's log could not be
    written: raised on its own, so that `except SagaStoreError` sees it."""
    stores = group.subgroup(SagaStoreError)
    chosen: BaseException | None = stores
    while isinstance(chosen, BaseExceptionGroup):
        chosen = chosen.exceptions[0]
    return chosen if isinstance(chosen, SagaStoreError) else None


def _cut_reason(run: SagaRun, step: StepNode, caught: BaseException) -> BaseException:
    """What cut `step` off: the saga timeout (a SagaTimeoutError naming it), or `caught`."""
    deadline, seconds = run.deadline
    if deadline is None or not deadline.expired():
        return caught
    return SagaTimeoutError(run.saga_name, timedelta(seconds=seconds), step.name)


def _cut(run: SagaRun, cursor: Cursor, error: BaseException) -> None:
    """Record the attempt `cursor` was running when a cancellation or the saga timeout cut it
    off (nothing, when none was: between steps, or waiting to retry)."""
    step = cursor.node
    if step is None:
        return
    cursor.node = None
    elapsed = run.record(step.name, _FAILED, cursor.attempt_started, cursor.attempt, False, error)
    run.emit(_STEP_FAILED, step.name, step.key, cursor.attempt, elapsed, error)


def _interrupted(
    run: SagaRun,
    step: StepNode,
    outcome: _Rollback | None,
    *,
    started: bool,
    since: float | None = None,
    attempt: int = 1,
) -> None:
    """Record a compensation the rollback's cancellation cut off (or that never began);
    `outcome` None: it runs again at once (the shutdown grace period), not a failure."""
    error = SagaCompensationInterruptedError(step.name, started=started)
    t0 = run.clock() if since is None else since
    elapsed = run.record(step.name, _FAILED, t0, attempt, True, error)
    if outcome is not None:
        outcome.failures[_unique_key(outcome.failures, step.name)] = error
    run.emit(_COMPENSATION_FAILED, step.name, step.key, attempt, elapsed, error)


def _warn_interrupted(run: SagaRun, outcome: _Rollback) -> None:
    """Say on stderr (a warning, shown without any logging set up) that a rollback was cut
    off, naming what did not finish: the program may well exit 0 after it."""
    cut = [
        key
        for key, error in outcome.failures.items()
        if isinstance(error, SagaCompensationInterruptedError)
    ]
    if not cut:
        return
    grace = "" if outcome.grace <= 0 else f" after the {outcome.grace:g} s shutdown grace period"
    with contextlib.suppress(Exception):  # a warnings filter set to "error" must not crash it
        warnings.warn(
            SagaRollbackInterruptedWarning(
                f'saga "{run.saga_name}" ({run.saga_id}): its rollback was cut off{grace}; '
                f"compensations not finished: {', '.join(cut)}. They need manual repair (a "
                "durable engine's recover() finishes them)"
            ),
            stacklevel=1,
        )


async def _call_handler(
    handler: Callable[[Any], Any], run: SagaRun, data: AbstractSagaData, outcome: _Rollback
) -> None:
    """Call the flow's compensation-failure handler with the data; its own error is logged
    and chained to the SagaCompensationFailedError, never raised in its place."""
    try:
        returned = handler(data)
        if inspect.isawaitable(returned):
            await returned
    except (Exception, asyncio.CancelledError) as error:
        outcome.handler_error = error
        with contextlib.suppress(Exception):  # a raising log handler must not hide the report
            logger.error(
                "[saga=%s status=compensation_handler_failed error=%s]",
                run.saga_name,
                type(error).__name__,
                extra={"saga_id": str(run.saga_id), "saga_error_message": error_text(error)},
                exc_info=error,
            )


async def _with_timeout(step: StepNode, data: AbstractSagaData) -> Any:
    """Run a step's action under its timeout, reporting an overrun as SagaStepTimeoutError."""
    assert step.timeout is not None
    try:
        async with asyncio.timeout(step.timeout) as scope:
            return await step.action(data)
    except TimeoutError as error:
        if not scope.expired():
            raise
        raise SagaStepTimeoutError(step.name, timedelta(seconds=step.timeout)) from error


def _step_error(step: str, error: Exception | asyncio.CancelledError, before: int) -> Exception:
    """What a step's (or compensation's) exception counts as, on the failure path only.

    While the saga's task is being cancelled (by its caller, the saga timeout or a parallel
    group), any exception is that cancellation: a step that turns CancelledError into its own
    exception must not be retried or skipped. A CancelledError the step raised on its own,
    from awaiting something cancelled elsewhere, is the step's failure
    (SagaStepCancelledError), so the saga returns a result instead of cancelling a caller
    nobody cancelled. `before` is the task's count of pending cancellations when the saga or
    step began: one the caller's own code swallowed earlier (without `uncancel()`) is not
    this saga's.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() > before:
        if isinstance(error, asyncio.CancelledError):
            raise error
        raise asyncio.CancelledError() from error
    if isinstance(error, Exception):
        return error
    failure = SagaStepCancelledError(step)
    failure.__cause__ = error
    return failure


def _unique_key(failures: dict[str, BaseException], name: str) -> str:
    """`name`, or `name #2`, `name #3`... when steps sharing a name failed to compensate."""
    key, number = name, 1
    while key in failures:
        number += 1
        key = f"{name} #{number}"
    return key


def _check_output(step: str, out: object, data: AbstractSagaData) -> None:
    """Reject a step result that is not the saga's data type (a subclass is fine); an
    un-awaited coroutine is closed first, so no "never awaited" warning follows."""
    if not isinstance(out, data.__class__):
        if inspect.iscoroutine(out):
            out.close()
        raise SagaStepResultError(step, out, data.__class__)
