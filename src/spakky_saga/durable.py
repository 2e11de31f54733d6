"""The durable half of a `SagaEngine`: the store, the runs' journals and leases, recovery.

`DurableRuns` starts a durable run (checks its name, flow and data, and opens its journal),
keeps the leases of running sagas alive (one heartbeat task), and finishes unfinished sagas:
it claims them, replays their log (`recovery.replay`) and hands what the log says to the
executor it was given, the same one fresh runs use: `Executor.roll_back` compensates,
`Executor.run` carries on from the log's `StartPoint`, exactly as a live run would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from spakky_saga._text import error_text
from spakky_saga.codec import check_round_trip
from spakky_saga.context import enter_step, leave_step
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import (
    SagaCompensationFailedError,
    SagaFlowChangedError,
    SagaFlowDefinitionError,
    SagaInterruptedError,
    SagaLeaseLostError,
    SagaNotRegisteredError,
    SagaSignalTargetError,
    SagaStoreError,
)
from spakky_saga.events import SagaEventKind
from spakky_saga.execution import Executor
from spakky_saga.fingerprint import Structure, describe_changes, identity_of
from spakky_saga.flow import SagaFlow
from spakky_saga.journal import SagaJournal, begin_record
from spakky_saga.listeners import ListenerSet
from spakky_saga.logs import ENGINE_LOGGER
from spakky_saga.plan import ExecutionPlan, GroupNode, StepNode
from spakky_saga.recovery import (
    RecoveredSaga,
    RecoveryOutcome,
    RecoveryPolicy,
    RecoveryReport,
    Replayed,
    replay,
)
from spakky_saga.registry import SagaRegistry
from spakky_saga.run import SagaRun, SignalBox
from spakky_saga.status import SagaStatus
from spakky_saga.store import (
    CANCEL_REQUESTED,
    SIGNALLED,
    CancelRequest,
    SagaRecord,
    SagaStore,
    SagaUpdate,
)
from spakky_saga.strategy import DEFAULT_STRATEGY

logger: Final = ENGINE_LOGGER


class DurableRuns:
    """Everything a durable engine keeps beyond one run."""

    __slots__ = (
        "_active",
        "_cancelling",
        "_clock",
        "_executor",
        "_heartbeat",
        "_held",
        "_opened",
        "_signals",
        "_tasks",
        "lease",
        "owner",
        "recovery",
        "registry",
        "store",
    )

    def __init__(
        self,
        store: SagaStore,
        registry: SagaRegistry,
        executor: Executor,
        *,
        lease: float,
        recovery: RecoveryPolicy,
        owner: str,
        clock: Callable[[], float],
        signals: SignalBox,
    ) -> None:
        self.store = store
        self._signals = signals
        self.registry = registry
        self._executor = executor
        self.lease = lease
        self.recovery = recovery
        self.owner = owner
        self._clock = clock
        self._active: dict[str, SagaJournal] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        """The task running each fresh run: what a cancel request cancels."""
        self._cancelling: set[str] = set()
        """Runs whose cancel request the heartbeat acted on (once each)."""
        self._held: set[str] = set()
        """Sagas `recover()` claimed and has not started finishing yet."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._opened = False

    async def begin(
        self, flow: SagaFlow[Any], plan: ExecutionPlan, data: AbstractSagaData, saga_name: str
    ) -> SagaJournal:
        """Check, register and open the log of a durable run (nothing is written yet: the
        saga's row goes out with its first write-ahead batch)."""
        registration = self.registry.get(saga_name)
        if registration is None:
            registration = self.registry.register(saga_name, flow)  # refuses a bad name
        identity = identity_of(plan)
        registered = registration.plan()
        if registered is not plan and identity_of(registered).fingerprint != identity.fingerprint:
            changes = describe_changes(identity_of(registered).structure, identity.structure)
            raise SagaFlowDefinitionError(
                f'saga "{saga_name}" is registered with another flow ({"; ".join(changes)}); '
                "one name must always mean one flow, or recovery would run the wrong steps"
            )
        text = check_round_trip(data)  # refuse data that cannot be stored, before any step
        await self.open()
        saga_id = str(data.saga_id)
        journal = SagaJournal(
            self.store,
            saga_id,
            self.owner,
            self.lease,
            wall_clock=self._executor.wall_clock,
            begin=begin_record(
                saga_id=saga_id,
                saga_name=saga_name,
                owner=self.owner,
                fingerprint=identity.fingerprint,
                structure=identity.encoded,
                policy=(registration.recovery or self.recovery).value,
                data_text=text,
                data=data,
                now=self._executor.wall_clock(),
            ),
        )
        self.track(journal)
        task = asyncio.current_task()
        if task is not None:
            self._tasks[saga_id] = task
        return journal

    def done(self, journal: SagaJournal) -> None:
        """The run of `journal` is over: its lease needs no more renewing."""
        self._active.pop(journal.saga_id, None)
        self._tasks.pop(journal.saga_id, None)
        self._cancelling.discard(journal.saga_id)
        self._stop_beating_if_idle()

    async def open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def aclose(self) -> None:
        """Stop the heartbeat and close the store."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            _cancel(heartbeat)
            if heartbeat.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        if self._opened:
            self._opened = False
            await self.store.close()

    def track(self, journal: SagaJournal) -> None:
        """Keep `journal`'s lease alive while its run lasts (one heartbeat task an engine)."""
        self._active[journal.saga_id] = journal
        self._keep_beating()

    def _keep_beating(self) -> None:
        beat = self._heartbeat
        loop = asyncio.get_running_loop()
        if (
            beat is not None
            and not beat.done()
            and not beat.cancelling()  # stopped when idle, and not yet gone
            and beat.get_loop() is loop
        ):
            return
        if beat is not None:
            _cancel(beat)  # one on another loop: never leave it pending there
        self._heartbeat = loop.create_task(
            self._beat(), name=f"spakky-saga lease heartbeat {self.owner}"
        )

    def _stop_beating_if_idle(self) -> None:
        """No saga to keep: stop the heartbeat now rather than when its sleep ends, so that no
        loop is ever closed with it pending (a process that recovered at start and then
        only waits, a service loop that stops)."""
        if not self._active and not self._held and self._heartbeat is not None:
            _cancel(self._heartbeat)  # kept: aclose() waits for it to be gone

    async def _beat(self) -> None:
        """Renew the leases of running sagas every third of a lease; a saga found taken over
        stops at its next write, and one an operator asked to cancel is cancelled."""
        while self._active or self._held:
            await asyncio.sleep(self.lease / 3)
            journals = {i: j for i, j in self._active.items() if j.begun}
            held = [i for i in self._held if i not in journals]
            if not journals and not held:
                continue
            try:
                kept, cancel_requested = await self.store.renew(
                    self.owner, [*journals, *held], self.lease
                )
            except Exception as error:  # the store is down: the runs' writes will say so
                logger.warning(
                    "[saga=- status=lease_renewal_failed error=%s]",
                    type(error).__name__,
                    extra={"saga_error_message": error_text(error)},
                )
                continue
            for saga_id, journal in journals.items():
                if saga_id not in kept and saga_id in self._active:
                    journal.lose(SagaLeaseLostError(saga_id, self.owner))
            for saga_id, request in cancel_requested.items():
                self._cancel_run(saga_id, request)

    def _cancel_run(self, saga_id: str, request: CancelRequest) -> None:
        """An operator asked to cancel a saga this engine runs (`spakky-saga cancel`): note
        who in its log, and cancel the task running it, so that the engine compensates its
        committed steps and ends it CANCELLED, as for any cancelled run. A saga recovery
        holds is left alone: its cancellation would stop the whole `recover()` call."""
        task = self._tasks.get(saga_id)
        journal = self._active.get(saga_id)
        if task is None or journal is None or saga_id in self._cancelling or task.done():
            return
        self._cancelling.add(saga_id)
        journal.note_cancel_request(request)
        logger.warning(
            "[saga=%s status=cancel_requested by=%s]",
            saga_id,
            request.by,
            extra={"saga_id": saga_id},
        )
        task.cancel(f"saga {saga_id}: cancelled at the request of {request.by}")

    async def accepts(self, saga_id: str) -> frozenset[str] | None:
        """The signal types the waits of saga `saga_id` accept, if its flow is registered
        here; refuses a saga the store does not have, or that is not RUNNING."""
        await self.open()
        record = await self.store.load(saga_id)
        if record is None:
            raise SagaSignalTargetError(saga_id)
        if record.status not in SIGNALLED:
            raise SagaSignalTargetError(saga_id, record.status.value)
        registration = self.registry.get(record.saga_name)
        return None if registration is None else registration.plan().accepts

    # --- recovery --------------------------------------------------------------------------

    async def recover(
        self,
        observers: ListenerSet,
        *,
        limit: int,
        saga_ids: Sequence[str],
        compensate_by_name: bool,
        concurrency: int = 1,
    ) -> RecoveryReport:
        """Claim, then finish up to `concurrency` claimed sagas at a time (their writes share
        the store's group commits); the report keeps the order they were claimed in."""
        await self.open()
        claimed = await self.store.claim(self.owner, self.lease, limit, saga_ids)
        # Claimed sagas wait their turn: the heartbeat keeps their leases too, so that none
        # expires and goes to another engine meanwhile.
        self._held.update(record.saga_id for record in claimed)
        outcomes: list[RecoveredSaga | None] = [None] * len(claimed)
        slots = asyncio.Semaphore(concurrency)

        async def finish(index: int, record: SagaRecord) -> None:
            async with slots:
                try:
                    outcomes[index] = await self._finish(record, observers, compensate_by_name)
                finally:
                    self._held.discard(record.saga_id)

        try:
            if claimed:
                self._keep_beating()
            if concurrency == 1 or len(claimed) == 1:
                for index, record in enumerate(claimed):
                    await finish(index, record)
            else:
                async with asyncio.TaskGroup() as tasks:
                    for index, record in enumerate(claimed):
                        tasks.create_task(finish(index, record))
        finally:
            self._held.difference_update(record.saga_id for record in claimed)
            self._stop_beating_if_idle()
        return RecoveryReport(tuple(o for o in outcomes if o is not None))

    async def retry_compensation(self, observers: ListenerSet, saga_id: str) -> RecoveredSaga:
        await self.open()
        record = await self.store.reopen(saga_id, self.owner, self.lease)
        return await self._finish(record, observers, False, retry_failed=True)

    async def _finish(
        self,
        record: SagaRecord,
        observers: ListenerSet,
        compensate_by_name: bool,
        *,
        retry_failed: bool = False,
    ) -> RecoveredSaga:
        """Recover one claimed saga; a refusal releases it, untouched."""
        try:
            plan, nameless = self._plan(record, compensate_by_name)
            state = replay(record, plan)
        except Exception as refusal:
            with contextlib.suppress(Exception):  # let an engine that knows it take it
                await self.store.append(
                    record.saga_id, self.owner, (), SagaUpdate(release=True), self.lease
                )
            logger.warning(
                "[saga=%s status=recovery_refused error=%s]",
                record.saga_name,
                type(refusal).__name__,
                extra={"saga_id": record.saga_id, "saga_error_message": error_text(refusal)},
            )
            return RecoveredSaga(
                record.saga_id, record.saga_name, RecoveryOutcome.REFUSED, error=refusal
            )
        uncompensable = tuple(
            name for name in nameless if any(r.name == name for r in state.history)
        )
        run = self._recovered_run(record, state, observers)
        journal = run.journal
        assert isinstance(journal, SagaJournal)
        self.track(journal)
        token = enter_step(run)
        run.past_pivot = past_pivot = plan.pivot is not None and state.next_index > plan.pivot
        cancelled = (
            None
            if state.rolling_back or retry_failed or past_pivot
            else _requested(record, journal)
        )
        policy = _policy(record, cancelled, past_pivot=past_pivot, waiting=state.waiting)
        run.emit(SagaEventKind.SAGA_RECOVERED, data=state.data)
        try:
            if retry_failed:
                run.undo.extend(_failed_compensations(plan, state))
            if state.rolling_back or retry_failed or policy is RecoveryPolicy.COMPENSATE:
                in_doubt = not state.rolling_back and not retry_failed  # maybe done: undo
                run.undo.extend(state.rollback_entries(in_doubt=in_doubt))
                data = state.rollback_data or state.data
                journal.merged(data)
                error = (
                    state.step_error()  # retried: the failure it ended with, not a crash
                    if retry_failed
                    else SagaInterruptedError(record.saga_name, state.failed_step, state.error)
                )
                result = await self._executor.roll_back(
                    plan,
                    run,
                    data,
                    status=SagaStatus.STUCK if past_pivot else SagaStatus.FAILED,
                    failed_step=state.failed_step,
                    error=error,
                    cancelled=cancelled,
                    start=state.rollback_point(),
                )
                outcome = RecoveryOutcome.STUCK if past_pivot else RecoveryOutcome.COMPENSATED
            else:
                run.undo.extend(state.undo)
                result = await self._executor.run(plan, run, state.data, state.start_point())
                outcome = _FORWARD_OUTCOMES.get(result.status, RecoveryOutcome.COMPENSATED)
        except SagaCompensationFailedError as failed:
            return RecoveredSaga(
                record.saga_id,
                record.saga_name,
                RecoveryOutcome.COMPENSATION_FAILED,
                failed.result,
                failed,
            )
        except SagaStoreError as stopped:
            run.abort_unended(stopped)
            return RecoveredSaga(
                record.saga_id, record.saga_name, RecoveryOutcome.STOPPED, error=stopped
            )
        except BaseException as error:
            if error is cancelled and not _cancelled_from_outside():
                # roll_back ended the saga CANCELLED and re-raised the cancellation it was given
                return RecoveredSaga(
                    record.saga_id, record.saga_name, RecoveryOutcome.CANCELLED, error=error
                )
            run.abort_unended(error)
            raise
        finally:
            leave_step(token)
            self.done(journal)
        if uncompensable:
            logger.warning(
                "[saga=%s status=uncompensated steps=%s]",
                record.saga_name,
                ",".join(uncompensable),
                extra={"saga_id": record.saga_id},
            )
        return RecoveredSaga(record.saga_id, record.saga_name, outcome, result, None, uncompensable)

    def _recovered_run(
        self, record: SagaRecord, state: Replayed, observers: ListenerSet
    ) -> SagaRun:
        """The run that finishes `record`'s saga: its journal continues the log, and its
        history, skips, signals taken and waits in progress are the log's."""
        wall = self._executor.wall_clock
        journal = SagaJournal(
            self.store, record.saga_id, self.owner, self.lease, seq=state.seq, wall_clock=wall
        )
        journal.merged(state.data)  # the row follows the log (a group may have closed unwritten)
        run = SagaRun(record.saga_name, state.data.saga_id, self._clock, observers, journal)
        run.started -= max(0.0, wall() - state.started_at)  # offsets from the saga start
        run.history.extend(state.history)
        run.skipped = list(state.skipped) or None
        run.signals = self._signals
        run.taken = set(state.signals_taken) or None
        run.wait_started = state.wait_started
        run.escalated = state.escalated
        return run

    def _plan(
        self, record: SagaRecord, compensate_by_name: bool
    ) -> tuple[ExecutionPlan, tuple[str, ...]]:
        """The registered plan of `record`'s saga (refused when its structure changed), and
        the step names compensating by name could not find a compensation for."""
        registration = self.registry.get(record.saga_name)
        if registration is None:
            raise SagaNotRegisteredError(record.saga_name, tuple(self.registry.names()))
        plan = registration.plan()
        identity = identity_of(plan)
        if identity.fingerprint == record.fingerprint:
            return plan, ()
        old: Structure = json.loads(record.structure)
        if not compensate_by_name:
            raise SagaFlowChangedError(record.saga_name, describe_changes(old, identity.structure))
        return _plan_by_name(old, plan)


def _plan_by_name(old: Structure, current: ExecutionPlan) -> tuple[ExecutionPlan, tuple[str, ...]]:
    """The old flow's positions, with the compensations the current flow has for each step
    name: enough to compensate what committed. Also the names (that had a compensation) the
    current flow no longer has: those are reported, never guessed."""
    by_name: dict[str, StepNode] = {}
    for node in current.nodes:
        for member in node.members if isinstance(node, GroupNode) else (node,):
            by_name.setdefault(member.name, member)
    missing: list[str] = []

    def step(item: dict[str, Any]) -> StepNode:
        found = by_name.get(item["step"])
        if found is None and item.get("compensation"):
            missing.append(item["step"])
        return StepNode(
            name=item["step"],
            action=found.action if found is not None else None,
            compensate=found.compensate if found is not None else None,
            compensation_name=found.compensation_name if found is not None else "",
            strategy=DEFAULT_STRATEGY,
            timeout=None,
            simple=True,
            key=item["key"],
        )

    nodes: list[StepNode | GroupNode] = []
    for item in old:
        if "group" in item:
            members = tuple(step(m) for m in item["group"])
            nodes.append(
                GroupNode(
                    name=" & ".join(m.name for m in members),
                    members=members,
                    merge=None,
                    concurrent_compensation=False,
                    key=item["key"],
                )
            )
        else:
            nodes.append(step(item))
    handler = current.compensation_failure_handler
    plan = ExecutionPlan(nodes=tuple(nodes), timeout=None, compensation_failure_handler=handler)
    return plan, tuple(missing)


def _failed_compensations(plan: ExecutionPlan, state: Replayed) -> list[StepNode]:
    """The steps whose compensation failed, for `retry_compensation` (oldest commit first)."""
    failed: list[StepNode] = []
    for node in plan.nodes:
        for member in node.members if isinstance(node, GroupNode) else (node,):
            if member.key in state.compensation_failures and member.compensate is not None:
                failed.append(member)
    return failed


_FORWARD_OUTCOMES: Final = {
    SagaStatus.COMPLETED: RecoveryOutcome.COMPLETED,
    SagaStatus.STUCK: RecoveryOutcome.STUCK,
    SagaStatus.WAITING: RecoveryOutcome.WAITING,
}
"""What a resumed saga's result status means for recovery (else: it was compensated)."""


def _policy(
    record: SagaRecord,
    cancelled: asyncio.CancelledError | None,
    *,
    past_pivot: bool,
    waiting: bool = False,
) -> RecoveryPolicy:
    """How to finish the saga: past its pivot (the point of no return) only forward, whatever
    its policy, even when an operator asked to cancel it; else, when an operator asked to
    cancel it, compensate; else, stopped in a wait (which did nothing that could be in
    doubt), go on waiting; else its own policy."""
    if past_pivot:
        return RecoveryPolicy.RESUME
    if cancelled is not None:
        return RecoveryPolicy.COMPENSATE
    return RecoveryPolicy.RESUME if waiting else RecoveryPolicy(record.policy)


def _requested(record: SagaRecord, journal: SagaJournal) -> asyncio.CancelledError | None:
    """The cancellation an operator asked for (`spakky-saga cancel`), if one did: what the
    rollback of a recovered saga ends with (CANCELLED). Noted in its log, unless its owner
    noted it before it died."""
    request = record.cancel_request
    if request is None:
        return None
    if not any(e.kind == CANCEL_REQUESTED for e in record.events):
        journal.note_cancel_request(request)
    return asyncio.CancelledError(
        f"saga {record.saga_id}: cancelled at the request of {request.by}"
    )


def _cancelled_from_outside() -> bool:
    """Whether the current task itself is being cancelled (beyond an operator's request)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel `task` from any thread; a task whose loop is closed is gone already."""
    loop = task.get_loop()
    if task.done() or loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task.cancel()
    else:
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            loop.call_soon_threadsafe(task.cancel)
