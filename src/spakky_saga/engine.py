"""How a flow runs: the one place that executes steps, retries, merges and compensates.

The engine runs a compiled plan with per-run state (`SagaRun`, run.py); nothing mutable lives
on the plan, the flow or the saga class. Every transition goes through the run's event seam
(`SagaRun.emit`): a `SagaEvent` to the listeners (the log lines among them) and, for a durable
engine, to the run's write-ahead journal, which the engine flushes before it acts. Time and
sleeping are injected (`clock=`, `sleep=`) so backoff is tested without waiting.

The rules of rollback, which the rest of this module keeps:
- committed compensable steps are compensated exactly once, in reverse commit order, each
  given the latest data; a failed compensation never stops the rest;
- rollback runs in its own task, shielded: cancelling the caller cannot leave it half done;
  the caller's cancellation is re-raised once it is over, after the failure handler ran;
- a rollback that is itself cut off (the loop shutting down) records and reports every
  compensation that did not run;
- observers (listeners, log handlers) and strategy code can never change what happens;
- a durable run that can no longer write its log (lease lost, store down) stops at once,
  without acting further: its saga stays unfinished in the store, for recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Final

from spakky_saga._text import error_text, safe_repr
from spakky_saga.context import enter_step, leave_step
from spakky_saga.data import AbstractSagaData
from spakky_saga.durable import DurableRuns
from spakky_saga.errors import (
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaEngineNotConnectedError,
    SagaFlowDefinitionError,
    SagaStepCancelledError,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaStoreError,
    SagaTimeoutError,
)
from spakky_saga.events import SagaEventKind
from spakky_saga.flow import SagaFlow
from spakky_saga.listeners import ListenerSet
from spakky_saga.logs import ENGINE_LOGGER, SagaLogListener
from spakky_saga.merge import merge_committed, merge_results
from spakky_saga.plan import ExecutionPlan, GroupNode, StepNode, plan_for
from spakky_saga.recovery import RecoveredSaga, RecoveryPolicy, RecoveryReport, Replayed
from spakky_saga.registry import FlowSource, SagaRegistry
from spakky_saga.result import ANONYMOUS, SagaResult, SagaStatus, StepRecord, StepStatus
from spakky_saga.run import Clock, Cursor, SagaRun
from spakky_saga.store import SagaStore

logger: Final = ENGINE_LOGGER

_COMMITTED: Final = StepStatus.COMMITTED
_FAILED: Final = StepStatus.FAILED
_COMPENSATED: Final = StepStatus.COMPENSATED
_NO_SCOPE: Final = contextlib.nullcontext()
_new_record: Final = tuple.__new__  # StepRecord without its Python-level __new__: hot path

_SAGA_STARTED: Final = SagaEventKind.SAGA_STARTED
_STEP_STARTED: Final = SagaEventKind.STEP_STARTED
_STEP_COMMITTED: Final = SagaEventKind.STEP_COMMITTED
_STEP_FAILED: Final = SagaEventKind.STEP_FAILED
_STEP_RETRYING: Final = SagaEventKind.STEP_RETRYING
_STEP_SKIPPED: Final = SagaEventKind.STEP_SKIPPED
_COMPENSATION_STARTED: Final = SagaEventKind.COMPENSATION_STARTED
_COMPENSATION_DONE: Final = SagaEventKind.COMPENSATION_DONE
_COMPENSATION_FAILED: Final = SagaEventKind.COMPENSATION_FAILED
_SAGA_FINISHED: Final = SagaEventKind.SAGA_FINISHED
_SAGA_ABORTED: Final = SagaEventKind.SAGA_ABORTED

type Sleep = Callable[[float], Awaitable[None]]


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


class _Rollback:
    """What a rollback ended with: the failed (or never-run) compensations, the failure
    handler's own error, and an error that stopped it (KeyboardInterrupt/SystemExit from a
    compensation, or a journal that can no longer write)."""

    __slots__ = ("failures", "fatal", "handler_error")

    def __init__(self) -> None:
        self.failures: dict[str, BaseException] = {}
        self.handler_error: BaseException | None = None
        self.fatal: BaseException | None = None


class SagaEngine:
    """Runs saga flows, in memory or durably.

    `clock` returns monotonic seconds (for `elapsed`); `sleep` waits between retries (by
    default `asyncio.sleep`, looked up when needed, so tests that patch it keep working);
    `compensation_timeout` bounds each compensation (None: no bound); `listeners` observe every
    run (after the built-in log lines, unless `log=False`).

    With a `store`, runs are durable: written ahead to the saga log, owned through a lease
    of `lease` (renewed while they run), and finished after a crash by `recover()` with their
    registered flow (see `register`) according to `recovery`. A closed engine refuses new runs
    with `SagaEngineNotConnectedError`.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_compensation_timeout",
        "_durable",
        "_listeners",
        "_owner",
        "_registry",
        "_sleep",
        "recover_on_start",
    )

    def __init__(
        self,
        *,
        clock: Clock = time.perf_counter,
        sleep: Sleep | None = None,
        compensation_timeout: timedelta | None = None,
        listeners: Iterable[object] = (),
        log: bool = True,
        store: SagaStore | None = None,
        lease: timedelta = timedelta(seconds=30),
        recovery: RecoveryPolicy = RecoveryPolicy.COMPENSATE,
        recover_on_start: bool = False,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        problems = []
        if compensation_timeout is not None and not (
            isinstance(compensation_timeout, timedelta) and compensation_timeout > timedelta(0)
        ):
            # A zero or negative bound would fail every compensation: refuse it up front.
            problems.append(
                f"SagaEngine(compensation_timeout={compensation_timeout!r}): must be a positive "
                "datetime.timedelta, or None to let compensations run to the end"
            )
        if not (isinstance(lease, timedelta) and lease > timedelta(0)):
            problems.append(
                f"SagaEngine(lease={lease!r}): must be a positive datetime.timedelta (how long "
                "a durable saga stays owned by this engine without a write or heartbeat)"
            )
        if not isinstance(recovery, RecoveryPolicy):
            problems.append(
                f"SagaEngine(recovery={recovery!r}): must be RecoveryPolicy.COMPENSATE or "
                "RecoveryPolicy.RESUME"
            )
        if store is not None and not isinstance(store, SagaStore):
            problems.append(
                f"SagaEngine(store={safe_repr(store)}): must be a SagaStore "
                "(SqliteSagaStore(path), PostgresSagaStore(dsn), InMemorySagaStore())"
            )
        if problems:
            raise SagaFlowDefinitionError(*problems)
        self._compensation_timeout = (
            compensation_timeout.total_seconds() if compensation_timeout is not None else None
        )
        self._listeners = ListenerSet(((SagaLogListener(),) if log else ()) + tuple(listeners))
        self._closed = False
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registry = SagaRegistry()
        self._durable = (
            None
            if store is None
            else DurableRuns(
                store,
                self._registry,
                lease=lease.total_seconds(),
                recovery=recovery,
                owner=self._owner,
                clock=clock,
            )
        )
        self.recover_on_start = recover_on_start
        """Whether the spakky integration calls `recover()` when the application starts."""

    def __repr__(self) -> str:
        store = "" if self._durable is None else f"store={self._durable.store!r}, "
        return f"SagaEngine({store}owner={self._owner!r})"

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    @property
    def listeners(self) -> tuple[object, ...]:
        """The listeners observing every run of this engine, the log listener first."""
        return self._listeners.listeners

    @property
    def store(self) -> SagaStore | None:
        """Where durable runs are written; None for an in-memory engine."""
        return None if self._durable is None else self._durable.store

    @property
    def owner(self) -> str:
        """This engine's identity in the store's leases (host, process, random suffix)."""
        return self._owner

    def close(self) -> None:
        """Refuse new runs from now on; runs already started finish normally."""
        self._closed = True

    async def aclose(self) -> None:
        """`close()`, then stop the lease heartbeat and close the store."""
        self.close()
        if self._durable is not None:
            await self._durable.aclose()

    # --- durability ---------------------------------------------------------------------------

    def register(
        self, saga_name: str, flow: FlowSource, *, recovery: RecoveryPolicy | None = None
    ) -> None:
        """Make `saga_name` recoverable: its flow (or a function building it) and, optionally,
        its own recovery policy. Durable runs register their flow under their name themselves;
        register at start-up too, so that a new process can recover sagas a dead one started.
        """
        self._registry.register(saga_name, flow, recovery)

    def registered(self, saga_name: str) -> bool:
        """Whether `saga_name` has a flow registered for recovery."""
        return saga_name in self._registry

    async def recover(
        self,
        *,
        limit: int = 100,
        saga_ids: Sequence[str] = (),
        compensate_by_name: bool = False,
        listeners: Iterable[object] = (),
    ) -> RecoveryReport:
        """Finish unfinished sagas from the store whose owner's lease expired (or every
        unfinished saga among `saga_ids`, once their lease expired).

        Each is claimed (so no other engine runs it), checked against its registered flow,
        then finished by its recovery policy: its committed steps compensated (COMPENSATE),
        or the forward pass resumed (RESUME); a saga that was already compensating is
        compensated. A saga whose name is not registered, whose flow changed, or whose data
        no longer loads is refused and released, untouched; `compensate_by_name=True`
        compensates a changed flow's committed steps by their names instead. One saga's
        failure never stops the others. See docs/durability.md.
        """
        durable = self._needs_store("recover()")
        observers = self._listeners.plus(listeners) if listeners else self._listeners
        return await durable.recover(
            self,
            observers,
            limit=limit,
            saga_ids=saga_ids,
            compensate_by_name=compensate_by_name,
        )

    async def retry_compensation(
        self, saga_id: str, *, listeners: Iterable[object] = ()
    ) -> RecoveredSaga:
        """Run the failed compensations of a COMPENSATION_FAILED saga again (after its
        participant was repaired)."""
        durable = self._needs_store("retry_compensation()")
        observers = self._listeners.plus(listeners) if listeners else self._listeners
        return await durable.retry_compensation(self, observers, saga_id)

    def _needs_store(self, what: str) -> DurableRuns:
        if self._durable is None:
            raise SagaEngineNotConnectedError(
                None, f"{what} needs a durable engine: SagaEngine(store=SqliteSagaStore(...))"
            )
        return self._durable

    # --- running ------------------------------------------------------------------------------

    async def run[D: AbstractSagaData](
        self,
        flow: SagaFlow[D],
        data: D,
        *,
        saga_name: str = ANONYMOUS,
        listeners: Iterable[object] = (),
    ) -> SagaResult[D]:
        """Run `flow` on `data` and return its result; a failed saga is a result, not an error.

        Raises `SagaCompensationFailedError` (carrying the result) when a compensation failed,
        after the flow's failure handler ran, and re-raises `CancelledError` after compensating
        when the calling task is cancelled. `listeners` observe this run only. On a durable
        engine, raises `SagaStoreError` (or `SagaLeaseLostError`) when the log cannot be
        written: the run stops without acting further, for `recover()` to finish.
        """
        if self._closed:
            raise SagaEngineNotConnectedError(
                saga_name, "its saga engine was closed (the application is shutting down)"
            )
        if not isinstance(data, AbstractSagaData):
            raise TypeError(
                f'saga "{saga_name}" was given {safe_repr(data)} ({type(data).__name__}) as '
                "data; pass an instance of an AbstractSagaData subclass"
            )
        plan = plan_for(flow)
        observers = self._listeners.plus(listeners) if listeners else self._listeners
        journal = None
        if self._durable is not None:
            journal = await self._durable.begin(flow, plan, data, saga_name)
        run = SagaRun(saga_name, data.saga_id, self._clock, observers, journal)
        token = enter_step(run)
        try:
            if run.progress:
                run.emit(_SAGA_STARTED, data=data)
            return await self._drive(plan, run, data)
        except BaseException as error:
            run.abort_unended(error)
            raise
        finally:
            leave_step(token)
            if journal is not None and self._durable is not None:
                self._durable.done(journal)

    async def _drive[D: AbstractSagaData](  # noqa: PLR0915 - the hot loop is inlined on purpose
        self, plan: ExecutionPlan, run: SagaRun, data: D, resume: Replayed | None = None
    ) -> SagaResult[D]:
        """The forward pass, from the start (or where a recovered saga stopped), then the
        result or the rollback."""
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
        first = 0 if resume is None else resume.next_index
        task = asyncio.current_task()
        assert task is not None, "a saga runs in a task"
        before = task.cancelling()  # cancellations of this task from before the saga: not ours
        scope: Any = _NO_SCOPE
        if plan.timeout is not None:
            scope = asyncio.timeout(plan.timeout)
            run.deadline = (scope, plan.timeout)
        try:
            async with scope:
                if resume is not None and first < len(nodes):
                    # The item a recovered saga stopped in: its in-doubt attempt runs again
                    # with the same number; a group runs only its unfinished members.
                    node = nodes[first]
                    first += 1
                    t0 = clock()
                    if isinstance(node, StepNode):
                        attempt = resume.in_doubt.get(node.key)
                        if attempt is None:
                            attempt = resume.attempts.get(node.key, 0) + 1
                        committed, value = await self._attempt(
                            node, data, run, run, first_attempt=attempt
                        )
                        if committed:
                            if value is not None:
                                data = value
                            if node.compensate is not None:
                                undo.append(node)
                        elif value is not None:
                            failure = _StepFailed(node.name, value)
                    else:
                        interrupted = []
                        outcome = await self._run_group(
                            node,
                            data,
                            run,
                            interrupted,
                            finished=resume.member_results,
                            resume=resume,
                        )
                        if isinstance(outcome, _GroupFailed):
                            failure = outcome
                            data = outcome.data  # type: ignore[assignment] # merge keeps type
                        else:
                            data = outcome  # type: ignore[assignment] # merge keeps the type
                remaining = () if failure is not None else nodes[first:] if first else nodes
                for node in remaining:
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
                            _new_record(
                                StepRecord,
                                (name, _COMMITTED, elapsed, 1, False, None, t0 - started),
                            )
                        )
                        if out is not None:
                            data = out
                        if step.compensate is not None:
                            undo.append(step)
                        if progress:
                            run.emit(_STEP_COMMITTED, name, step.key, 1, elapsed, data=data)
                    elif isinstance(node, StepNode):
                        t0 = clock()
                        committed, value = await self._attempt(node, data, run, run)
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
                        outcome = await self._run_group(node, data, run, interrupted)
                        if isinstance(outcome, _GroupFailed):
                            failure = outcome
                            data = outcome.data  # type: ignore[assignment] # merge keeps the type
                            if journal is not None:
                                journal.merged(data)
                            break
                        data = outcome  # type: ignore[assignment] # merge keeps the data type
                        if journal is not None:
                            journal.merged(data)
                else:
                    if failure is None:
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
        except asyncio.CancelledError as cancelled:
            if interrupted:
                data = interrupted[-1]  # type: ignore[assignment] # merged from this saga's data
                if journal is not None:
                    journal.merged(data)
            _cut(run, run, cancelled)
            running = node.name if node is not None else None
            await self._roll_back(plan, run, data, cancelled=cancelled, failed_step=running)
            raise  # _roll_back re-raises the cancellation itself; this is for type checkers
        if failure is None:
            elapsed = clock() - started
            result = SagaResult(
                status,
                data,
                None,
                None,
                tuple(run.history),
                timedelta(seconds=elapsed),
                run.saga_name,
                tuple(run.skipped or ()),
            )
            run.ended = True
            if progress:
                run.emit(_SAGA_FINISHED, elapsed=elapsed, data=data, status=status)
                if journal is not None:
                    await journal.flush()
            return result
        if status is not SagaStatus.TIMED_OUT:
            status = SagaStatus.FAILED
        return await self._roll_back(
            plan, run, data, status=status, failed_step=failure.step, error=failure.error
        )

    async def _attempt(  # noqa: PLR0915 - one attempt loop; splitting it costs a frame a step
        self,
        step: StepNode,
        data: AbstractSagaData,
        run: SagaRun,
        cursor: Cursor,
        *,
        first_attempt: int = 1,
    ) -> tuple[bool, Any]:
        """Run one step with its strategy, timeout and retries.

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
        while True:
            if progress:
                run.emit(_STEP_STARTED, name, key, attempt)
                if journal is not None:
                    await journal.flush()
            cursor.node, cursor.attempt = step, attempt
            t0 = cursor.attempt_started = clock()
            try:
                if step.timeout is None:
                    out = await step.action(data)
                else:
                    out = await _with_timeout(step, data)
                if task.cancelling() > before:  # a step swallowed a cancellation: it still wins
                    raise asyncio.CancelledError
                if out is not None and out.__class__ is not data.__class__:
                    _check_output(name, out, data)
            except (Exception, asyncio.CancelledError) as caught:
                error = _step_error(name, caught, before)  # a cancellation wins: no retry, skip
                cursor.node = None
                elapsed = run.record(name, _FAILED, t0, attempt, False, error)
                run.emit(_STEP_FAILED, name, key, attempt, elapsed, error)
                if attempt < step.max_attempts:
                    delay = _retry_delay(step, error, attempt + 1)
                    if isinstance(delay, float):
                        attempt += 1
                        run.emit(_STEP_RETRYING, name, key, attempt, elapsed, error, delay=delay)
                        if delay > 0:
                            if journal is not None:
                                await journal.flush()  # the failure is known before waiting
                            await (self._sleep or asyncio.sleep)(delay)
                        continue
                    if delay is not None:  # the strategy itself raised: the step fails
                        return False, delay
                if step.skip_on_failure:
                    if run.skipped is None:
                        run.skipped = []
                    run.skipped.append(name)
                    run.emit(_STEP_SKIPPED, name, key, attempt, elapsed, error)
                    return False, None
                return False, error
            cursor.node = None
            elapsed = clock() - t0
            run.history.append(
                _new_record(
                    StepRecord, (name, _COMMITTED, elapsed, attempt, False, None, t0 - run.started)
                )
            )
            if progress:
                committed_data = (out or data) if cursor is run else out
                run.emit(_STEP_COMMITTED, name, key, attempt, elapsed, data=committed_data)
            return True, out

    async def _run_group(
        self,
        group: GroupNode,
        data: AbstractSagaData,
        run: SagaRun,
        interrupted: list[AbstractSagaData],
        *,
        finished: dict[str, AbstractSagaData | None] | None = None,
        resume: Replayed | None = None,
    ) -> AbstractSagaData | _GroupFailed:
        """Run members concurrently, wait for all of them, then merge or report failure.

        Each member runs with its own strategy (a retrying member does not hold up its
        siblings; a skipped one contributes nothing). Committed members are registered for
        compensation even if the group is cancelled (saga timeout or caller cancellation)
        while siblings are still running. When the group fails, what its committed members
        changed is merged anyway, so that their compensations see it; the first failing
        member in declaration order is the saga's `failed_step`. A recovered group passes the
        members that `finished` before the crash (their results), which do not run again.
        """
        members = group.members
        results: list[Any] = [None] * len(members)
        committed = [False] * len(members)
        errors: list[BaseException | None] = [None] * len(members)
        committed_before = resume.committed_keys if resume is not None else set()
        cursors = [Cursor(run.saga_name, run.saga_id) for _ in members]

        async def run_member(index: int, member: StepNode) -> None:
            cursor = cursors[index]
            first = 1
            if resume is not None:
                first = resume.in_doubt.get(member.key) or resume.attempts.get(member.key, 0) + 1
            previous = enter_step(cursor)  # the member's own task
            try:
                ok, value = await self._attempt(member, data, run, cursor, first_attempt=first)
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
                    if finished is not None and member.key in finished:
                        results[index] = finished[member.key]
                        committed[index] = member.key in committed_before
                        continue
                    tasks.create_task(run_member(index, member))
        except BaseException as cut:
            # Cancelled (saga timeout or caller) with members still running: each running one
            # gets its FAILED record, and what the committed ones changed is the latest data
            # their compensations must see.
            for cursor in cursors:
                if cursor.node is not None:
                    _cut(run, cursor, _cut_reason(run, cursor.node, cut))
            interrupted.append(merge_committed(group, data, results))
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

    async def _roll_back[D: AbstractSagaData](
        self,
        plan: ExecutionPlan,
        run: SagaRun,
        data: D,
        *,
        status: SagaStatus = SagaStatus.FAILED,
        failed_step: str | None = None,
        error: BaseException | None = None,
        cancelled: asyncio.CancelledError | None = None,
    ) -> SagaResult[D]:
        """Compensate, report, and end the run: return the result, or raise
        SagaCompensationFailedError, or re-raise the caller's cancellation.

        The rollback (and the failure handler) runs in its own task, shielded: a cancellation
        of the caller, however many times it arrives, waits for it, then wins.
        """
        outcome = _Rollback()
        if run.undo:
            # Eager: compensations that never suspend finish here, without a loop iteration.
            task = asyncio.Task(
                self._compensate_all(plan, run, data, outcome),
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
            run.emit(_SAGA_ABORTED, elapsed=elapsed, error=cancelled, data=data)
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
        self, plan: ExecutionPlan, run: SagaRun, data: AbstractSagaData, outcome: _Rollback
    ) -> None:
        """Undo committed steps in reverse; a failed compensation never stops the rest.

        If this task is cancelled (the loop shutting down), the compensation running and every
        later one are recorded as interrupted: reported like failures, never dropped silently.
        Then the flow's failure handler runs, if anything failed.
        """
        entries = list(reversed(run.undo))
        position = 0
        try:
            for position, entry in enumerate(entries):  # noqa: B007 - read after the loop
                if isinstance(entry, tuple):
                    await asyncio.gather(
                        *(self._compensate(step, run, data, outcome) for step in entry)
                    )
                else:
                    await self._compensate(entry, run, data, outcome)
        except asyncio.CancelledError:
            for entry in entries[position + 1 :]:
                for step in entry if isinstance(entry, tuple) else (entry,):
                    _interrupted(run, step, outcome, started=False)
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

    async def _compensate(
        self, step: StepNode, run: SagaRun, data: AbstractSagaData, outcome: _Rollback
    ) -> None:
        name = step.name
        if run.progress:
            run.emit(_COMPENSATION_STARTED, name, step.key, data=data)
            if run.journal is not None:
                await run.journal.flush()  # write-ahead: the compensation, then act
        compensate = step.compensate
        assert compensate is not None, "only steps with a compensation are put on the undo list"
        token = enter_step(Cursor(run.saga_name, run.saga_id, step, compensating=True))
        t0 = run.clock()
        try:
            if self._compensation_timeout is None:
                await compensate(data)
            else:
                async with asyncio.timeout(self._compensation_timeout):
                    await compensate(data)
        except asyncio.CancelledError as caught:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the rollback itself is cut off
                _interrupted(run, step, outcome, started=True, since=t0)
                raise
            self._compensation_failed(run, step, outcome, _step_error(name, caught, 0), t0)
            return
        except Exception as caught:
            self._compensation_failed(run, step, outcome, caught, t0)
            return
        except BaseException as fatal:  # KeyboardInterrupt / SystemExit: record, then go
            self._compensation_failed(run, step, outcome, fatal, t0)
            raise
        finally:
            leave_step(token)
        elapsed = run.record(name, _COMPENSATED, t0, 1, True)
        if run.progress:
            run.emit(_COMPENSATION_DONE, name, step.key, elapsed=elapsed, data=data)

    @staticmethod
    def _compensation_failed(
        run: SagaRun, step: StepNode, outcome: _Rollback, error: BaseException, t0: float
    ) -> None:
        elapsed = run.record(step.name, _FAILED, t0, 1, True, error)
        outcome.failures[_unique_key(outcome.failures, step.name)] = error
        run.emit(_COMPENSATION_FAILED, step.name, step.key, elapsed=elapsed, error=error)


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
    run: SagaRun, step: StepNode, outcome: _Rollback, *, started: bool, since: float | None = None
) -> None:
    """Record a compensation the cut-off rollback did not finish (or never began)."""
    error = SagaCompensationInterruptedError(step.name, started=started)
    t0 = run.clock() if since is None else since
    elapsed = run.record(step.name, _FAILED, t0, 1, True, error)
    outcome.failures[_unique_key(outcome.failures, step.name)] = error
    run.emit(_COMPENSATION_FAILED, step.name, step.key, elapsed=elapsed, error=error)


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


def _retry_delay(step: StepNode, error: BaseException, attempt: int) -> float | Exception | None:
    """Seconds to wait before `attempt`, None when the strategy does not retry `error`, or
    the exception its code raised (a strategy can never crash the engine: that error fails
    the step)."""
    strategy: Any = step.strategy
    try:
        if not strategy.should_retry(error):
            return None
        delay = float(strategy.delay_before(attempt))
        if not 0.0 <= delay < math.inf:
            raise ValueError(f"retry delay must be a finite number of seconds >= 0, got {delay}")
        return delay
    except Exception as strategy_error:
        failure = RuntimeError(
            f'the error strategy of step "{step.name}" ({safe_repr(strategy)}) raised '
            f"{error_text(strategy_error)} while deciding on a retry; the step fails"
        )
        failure.__cause__ = strategy_error
        failure.__context__ = error
        return failure


def _unique_key(failures: dict[str, BaseException], name: str) -> str:
    """`name`, or `name #2`, `name #3`... when steps sharing a name failed to compensate."""
    key, number = name, 1
    while key in failures:
        number += 1
        key = f"{name} #{number}"
    return key


def _check_output(step: str, out: object, data: AbstractSagaData) -> None:
    """Reject a step result that is not the saga's data type (a subclass is fine)."""
    if not isinstance(out, data.__class__):
        raise SagaStepResultError(step, out, data.__class__)


DEFAULT_ENGINE: Final = SagaEngine()
"""The engine `run_saga_flow` and unconnected sagas use."""


async def run_saga_flow[D: AbstractSagaData](
    flow: SagaFlow[D], data: D, *, saga_name: str = ANONYMOUS
) -> SagaResult[D]:
    """Run `flow` on `data` with the default engine; see `SagaEngine.run`."""
    return await DEFAULT_ENGINE.run(flow, data, saga_name=saga_name)
