"""The engine's front: options, running a flow, durability (register, recover).

`SagaEngine` is a facade. How a flow runs (forward, retries, groups, rollback) is
`execution.Executor`, the one driver of fresh and recovered runs; durability (the store, the
journals and leases, recovery) is `durable.DurableRuns`, which is handed the same executor.
This module only checks options, opens a run (its `SagaRun`, its journal) and hands it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Final

from spakky_saga._text import safe_repr
from spakky_saga.context import enter_step, leave_step
from spakky_saga.data import AbstractSagaData
from spakky_saga.durable import DurableRuns
from spakky_saga.errors import (
    SagaEngineConfigurationError,
    SagaEngineNotConnectedError,
    SagaResolutionError,
    SagaStoreError,
)
from spakky_saga.events import SagaEventKind
from spakky_saga.execution import Executor, Sleep
from spakky_saga.fingerprint import identity_of
from spakky_saga.flow import SagaFlow
from spakky_saga.listeners import ListenerSet
from spakky_saga.logs import ENGINE_LOGGER, SagaLogListener
from spakky_saga.plan import StepNode, plan_for
from spakky_saga.recovery import RecoveredSaga, RecoveryPolicy, RecoveryReport
from spakky_saga.registry import FlowSource, SagaRegistry
from spakky_saga.result import ANONYMOUS, SagaResult
from spakky_saga.run import Clock, SagaRun
from spakky_saga.signals import RunningSignals, SignalReceipt, Signals
from spakky_saga.store import SagaStore, SignalStore, WaitingStore, WakingStore
from spakky_saga.waits import Decided, Resolution

_SAGA_STARTED: Final = SagaEventKind.SAGA_STARTED
_PAUSE_RANDOM: Final = random.Random()
logger: Final = ENGINE_LOGGER

DEFAULT_RECOVERY_CONCURRENCY: Final = 32
"""Claimed sagas finished at a time by `recover()` and `serve()`: their writes share commits,
so recovery gets faster up to about this many (docs/durability.md, "The recovery service")."""


class SagaEngine:
    """Runs saga flows, in memory or durably.

    `clock` returns monotonic seconds (for `elapsed`); `sleep` waits between retries (by
    default `asyncio.sleep`, looked up when needed, so tests that patch it keep working);
    `compensation_timeout` bounds each compensation attempt that has no timeout of its own
    (None: no bound); `shutdown_grace` is how long a rollback carries on after the event loop
    shutting down cancelled it; `listeners` observe every run (after the built-in log lines,
    unless `log=False`). Bad options raise `SagaEngineConfigurationError`.

    With a `store`, runs are durable: written ahead to the saga log, owned through a lease
    of `lease` (renewed while they run), and finished after a crash by `recover()` with their
    registered flow (see `register`) according to `recovery`. A closed engine refuses new runs
    with `SagaEngineNotConnectedError`.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_durable",
        "_executor",
        "_listeners",
        "_nudges",
        "_owner",
        "_registry",
        "_running",
        "_signals",
        "recover_every",
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
        recover_every: timedelta | None = None,
        shutdown_grace: timedelta = timedelta(seconds=30),
        signal_poll: timedelta = timedelta(seconds=1),
        hold_waits: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
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
        if not (isinstance(shutdown_grace, timedelta) and shutdown_grace >= timedelta(0)):
            problems.append(
                f"SagaEngine(shutdown_grace={shutdown_grace!r}): must be a datetime.timedelta "
                ">= 0 (how long a rollback carries on once the event loop shuts down; 0 cuts "
                "it off at once)"
            )
        if recover_every is not None and not (
            isinstance(recover_every, timedelta) and recover_every > timedelta(0)
        ):
            problems.append(
                f"SagaEngine(recover_every={recover_every!r}): must be a positive "
                "datetime.timedelta (how often the spakky integration recovers), or None"
            )
        if (recover_on_start or recover_every is not None) and store is None:
            problems.append(
                "SagaEngine(recover_on_start=..., recover_every=...): recovery needs a store; "
                "pass store=SqliteSagaStore(...) or PostgresSagaStore(...)"
            )
        if sleep is not None and not callable(sleep):
            problems.append(
                f"SagaEngine(sleep={safe_repr(sleep)}): must be an async function taking "
                "seconds, such as asyncio.sleep, or None"
            )
        if store is not None and not isinstance(store, SagaStore):
            problems.append(
                f"SagaEngine(store={safe_repr(store)}): must be a SagaStore "
                "(SqliteSagaStore(path), PostgresSagaStore(dsn), InMemorySagaStore())"
            )
        if not (isinstance(signal_poll, timedelta) and signal_poll > timedelta(0)):
            problems.append(
                f"SagaEngine(signal_poll={signal_poll!r}): must be a positive "
                "datetime.timedelta (how often a waiting saga looks for signals sent through "
                "another engine)"
            )
        if problems:
            raise SagaEngineConfigurationError(*problems)
        self._running: RunningSignals | None = None
        self._nudges: set[asyncio.Event] = set()
        """One a `serve()` loop: a signal sent through this engine starts its next pass at
        once (the saga it wakes is resumed without waiting out `every`)."""
        self._signals: Signals
        if isinstance(store, SignalStore):
            suspends = not hold_waits and isinstance(store, WaitingStore)
            self._signals = Signals(store, poll=signal_poll.total_seconds(), suspends=suspends)
        else:  # no store (or one without signals): the signals of the sagas it runs
            self._running = RunningSignals()
            self._signals = Signals(self._running, poll=None)
        self._executor = Executor(
            sleep=sleep or _backoff_sleep,
            compensation_timeout=(
                None if compensation_timeout is None else compensation_timeout.total_seconds()
            ),
            shutdown_grace=shutdown_grace.total_seconds(),
            wall_clock=wall_clock,
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
                self._executor,
                lease=lease.total_seconds(),
                recovery=recovery,
                owner=self._owner,
                clock=clock,
                signals=self._signals,
            )
        )
        self.recover_on_start = recover_on_start
        self.recover_every = recover_every
        """How often the spakky integration's recovery service runs `serve()` (None: never)."""
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

    def registered_fingerprint(self, saga_name: str) -> str | None:
        """The fingerprint of the flow registered as `saga_name` (what recovery compares with
        a stored saga's: a different one means the flow changed, and recovery refuses it), or
        None when the name is not registered."""
        registration = self._registry.get(saga_name)
        return None if registration is None else identity_of(registration.plan()).fingerprint

    def registered_waits(self, saga_name: str) -> dict[str, type] | None:
        """The signal type each `wait_for` of the flow registered as `saga_name` waits for,
        by the wait's step key (`"3"`), in flow order; None when the name is not
        registered. What an operator's tools offer to send to one of its sagas."""
        registration = self._registry.get(saga_name)
        if registration is None:
            return None
        return {
            node.key: node.wait.signal_type
            for node in registration.plan().nodes
            if isinstance(node, StepNode) and node.wait is not None and node.wait.signal_type
        }

    async def recover(
        self,
        *,
        limit: int = 100,
        saga_ids: Sequence[str] = (),
        compensate_by_name: bool = False,
        listeners: Iterable[object] = (),
        concurrency: int = DEFAULT_RECOVERY_CONCURRENCY,
    ) -> RecoveryReport:
        """Finish unfinished sagas from the store whose owner's lease expired (or every
        unfinished saga among `saga_ids`, once their lease expired), up to `concurrency` at a
        time.

        Each is claimed (so no other engine runs it), checked against its registered flow,
        then finished by its recovery policy: its committed steps compensated (COMPENSATE),
        or the forward pass resumed (RESUME); a saga that was already compensating is
        compensated. A saga whose name is not registered, whose flow changed, or whose data
        no longer loads is refused and released, untouched; `compensate_by_name=True`
        compensates a changed flow's committed steps by their names instead. One saga's
        failure never stops the others. See docs/durability.md.
        """
        durable = self._needs_store("recover()")
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise SagaEngineConfigurationError(
                f"recover(concurrency={concurrency!r}): must be an int >= 1 (how many "
                "claimed sagas are finished at a time)"
            )
        observers = self._listeners.plus(listeners) if listeners else self._listeners
        return await durable.recover(
            observers,
            limit=limit,
            saga_ids=saga_ids,
            compensate_by_name=compensate_by_name,
            concurrency=concurrency,
        )

    async def serve(
        self,
        *,
        every: timedelta = timedelta(seconds=5),
        concurrency: int = DEFAULT_RECOVERY_CONCURRENCY,
        limit: int = 100,
        stop: asyncio.Event | None = None,
        listeners: Iterable[object] = (),
    ) -> None:
        """Recover continuously: every `every` (give or take a fifth, at random, so that
        engines sharing a store spread out), claim the sagas whose owner's lease expired and
        finish them, `concurrency` at a time, until `stop` is set.

        A pass that claimed a full batch (`limit`) is followed at once by another; a pass
        that fails (the store is down) is logged and the next one tries again. Setting `stop`
        lets the pass in progress finish (a drain); cancelling the task stops at once (the
        sagas it was finishing stay claimed until their lease expires, then any engine
        finishes them).

        `recovering(...)` runs this in the background for the length of an `async with`.
        """
        self._needs_store("serve()")
        seconds = every.total_seconds() if isinstance(every, timedelta) else -1.0
        if seconds <= 0:
            raise SagaEngineConfigurationError(
                f"serve(every={every!r}): must be a positive datetime.timedelta"
            )
        stop = stop or asyncio.Event()
        nudge = asyncio.Event()
        self._nudges.add(nudge)
        store = self.store
        listener = (  # a signal sent through another engine wakes this one at once
            asyncio.ensure_future(self._listen(store, nudge, seconds))
            if isinstance(store, WakingStore)
            else None
        )
        try:
            while not stop.is_set():
                nudge.clear()
                found = 0
                try:
                    report = await self.recover(
                        limit=limit, concurrency=concurrency, listeners=listeners
                    )
                    found = len(report)
                    if found:
                        logger.info(
                            "[saga=- status=recovery_pass sagas=%d refused=%d]",
                            found,
                            len(report.refused),
                            extra={"saga_engine": self._owner},
                        )
                except Exception as error:  # the store is down: say so, try again next pass
                    logger.warning(
                        "[saga=- status=recovery_pass_failed error=%s]",
                        type(error).__name__,
                        extra={"saga_engine": self._owner, "saga_error_message": str(error)},
                    )
                if found >= limit:
                    continue  # more may be waiting: no pause
                pause = seconds * _PAUSE_RANDOM.uniform(0.8, 1.2)
                await _first_of(stop, nudge, pause)
        finally:
            self._nudges.discard(nudge)
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, store: WakingStore, nudge: asyncio.Event, retry: float) -> None:
        """Start a pass (`nudge`) at each of the store's wake-up notices; when listening
        fails, log it and listen again `retry` seconds later (the passes poll meanwhile)."""
        while True:
            try:
                async for _ in store.wakeups():
                    nudge.set()
            except SagaStoreError as error:
                logger.warning(
                    "[saga=- status=wakeups_failed error=%s]",
                    type(error).__name__,
                    extra={"saga_engine": self._owner, "saga_error_message": str(error)},
                )
            await asyncio.sleep(retry)

    @contextlib.asynccontextmanager
    async def recovering(
        self,
        *,
        every: timedelta = timedelta(seconds=5),
        concurrency: int = DEFAULT_RECOVERY_CONCURRENCY,
        limit: int = 100,
    ) -> AsyncIterator[None]:
        """Run `serve()` in the background while the block runs; on leaving it, stop it and
        wait for the pass in progress to finish:

            async with engine.recovering(every=timedelta(seconds=10)):
                await serve_http_requests()
        """
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self.serve(every=every, concurrency=concurrency, limit=limit, stop=stop),
            name=f"spakky-saga recovery {self._owner}",
        )
        try:
            yield
        finally:
            stop.set()
            await task

    async def retry_compensation(
        self, saga_id: str, *, listeners: Iterable[object] = ()
    ) -> RecoveredSaga:
        """Run the failed compensations of a COMPENSATION_FAILED saga again (after its
        participant was repaired)."""
        durable = self._needs_store("retry_compensation()")
        observers = self._listeners.plus(listeners) if listeners else self._listeners
        return await durable.retry_compensation(observers, saga_id)

    def _needs_store(self, what: str) -> DurableRuns:
        if self._durable is None:
            raise SagaEngineConfigurationError(
                f"{what} needs a durable engine, and this one has no store: "
                "SagaEngine(store=SqliteSagaStore(...))"
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
        written: the run stops without acting further, for `recover()` to finish. On a
        durable engine a run that reaches a wait (`wait_for`, `sleep`) with nothing to take
        returns a result with status WAITING: the saga is suspended in the store, and an
        engine's `recover()`/`serve()` resumes it (docs/waits.md).
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
        running = self._running if plan.accepts else None
        if running is not None:
            running.opened(str(data.saga_id), plan.accepts)
        run.signals = self._signals
        token = enter_step(run)
        try:
            if run.progress:
                run.emit(_SAGA_STARTED, data=data)
            return await self._executor.run(plan, run, data)
        except BaseException as error:
            run.abort_unended(error)
            raise
        finally:
            leave_step(token)
            if running is not None:
                running.closed(str(data.saga_id))
            if journal is not None and self._durable is not None:
                self._durable.done(journal)

    async def signal(
        self, saga_id: uuid.UUID | str, payload: object, /, *, signal_id: str | None = None
    ) -> SignalReceipt:
        """Send `payload` (a dataclass or pydantic model instance) to the saga `saga_id`, for
        its `wait_for(type(payload), ...)`: stored (durably, on a durable engine) before this
        returns, taken by one wait at most, kept if the saga has not reached its wait yet.

        `signal_id` makes sending idempotent: a repeat of an id stores nothing new
        (`receipt.duplicate`). Raises `SagaSignalTargetError` for an unknown saga or one not
        RUNNING (finished, compensating; on an engine without a store: one it does not
        run), `SagaSignalTypeError` when no wait of the saga accepts the payload's type (if
        its flow is registered here) or it cannot be stored as JSON,
        `SagaSignalConflictError` when `signal_id` names another signal. See docs/waits.md.
        """
        target = str(saga_id)
        if self._durable is not None:
            accepts = self._durable.accepts
        else:
            assert self._running is not None
            accepts = self._running.accepts
        receipt = await self._signals.send(
            target, payload, signal_id, accepts, self._executor.wall_clock()
        )
        for nudge in self._nudges:  # a saga it woke is resumed by the next pass, now
            nudge.set()
        return receipt

    async def resolve(
        self, saga_id: uuid.UUID | str, decision: Decided, /, *, by: str
    ) -> SignalReceipt:
        """Answer a saga whose step escalated (`Escalate()`): "retry" runs the step again,
        "skip" goes on without it, "compensate" fails it (the saga compensates). `by` (who
        decides) is recorded with the decision in the saga's log. A signal (`Resolution`)
        like any other: stored before this returns, taken once; a saga that has not
        escalated yet keeps it for its next escalation. Raises `SagaResolutionError` for
        another decision, and what `signal` raises."""
        if decision not in ("retry", "skip", "compensate"):
            raise SagaResolutionError(
                f"resolve({saga_id}, {safe_repr(decision)}): the decision is 'retry', 'skip' or "
                "'compensate'"
            )
        if not isinstance(by, str) or not by.strip():
            raise SagaResolutionError(
                f"resolve({saga_id}, {decision!r}, by={safe_repr(by)}): say who decides "
                "(user@host): it is recorded in the saga's log"
            )
        return await self.signal(saga_id, Resolution(decision, by))


async def _first_of(stop: asyncio.Event, nudge: asyncio.Event, seconds: float) -> None:
    """Wait until `stop` or `nudge` is set, or `seconds` passed."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(nudge.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _sleep(delay: float) -> None:
    """The backoff's default sleep: `asyncio.sleep`, looked up when it is needed.

    A seam users' tests patch, as they do in the documented package
    (`monkeypatch.setattr("spakky_saga.engine._sleep", fake)`), or patch `asyncio.sleep`
    itself; `SagaEngine(sleep=...)` is the supported way.
    """
    await asyncio.sleep(delay)


def _backoff_sleep(delay: float) -> Awaitable[None]:
    """This module's `_sleep`, looked up at call time, so that patching it takes effect."""
    return _sleep(delay)


DEFAULT_ENGINE: Final = SagaEngine()
"""The engine `run_saga_flow` and unconnected sagas use."""


async def run_saga_flow[D: AbstractSagaData](
    flow: SagaFlow[D], data: D, *, saga_name: str = ANONYMOUS
) -> SagaResult[D]:
    """Run `flow` on `data` with the default engine; see `SagaEngine.run`."""
    return await DEFAULT_ENGINE.run(flow, data, saga_name=saga_name)
