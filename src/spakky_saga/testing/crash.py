"""`explore_crashes`: kill a durable engine at every write to its store, recover the saga with
a new engine, and check every promise of recovery each time.

`explore_failures` injects faults into a run but never kills the engine running it, and a
durable engine's hardest code, recovery, runs only after such a kill. Here, for each
scenario (the faults asked for, every signal sent; then, for a flow with waits, each
`wait_for` with a timeout getting none):

1. the saga runs once on a durable engine without a crash (with the faults asked for): the
   reference. Its writes to the store (`begin`, `append`) are the crash points;
2. for each recovery policy, and each write k: a new run on a fresh store is killed at its
   kth write, after the write reached the store, and (with `lost_writes=True`) just before
   it, the write lost; the killed engine can reach the store no more (see `_process`);
3. its owner's lease expires on the store's clock, and a new engine (a new process: the same
   flow registered under the same name) calls `recover()`;
4. the calls both engines made, the log at the crash, the recovery report and the stored
   saga go through the checks (`_crash_invariants`).

Everything runs on a `VirtualClock` (and, for a flow with timeouts or waits, on virtual loop
time), so backoff and leases take no time. A flow with waits suspends in the store: a run
(killed or not, and the recovery) goes on after each suspension as a serving engine would,
time moving on to the wake-up, until the saga no longer waits; the suspension and the
wake-up are writes, so crash points, and its signals are sent by a process that is never
killed (see `explore_crashes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any, Final
from uuid import UUID

from spakky_saga.data import AbstractSagaData
from spakky_saga.engine import SagaEngine
from spakky_saga.errors import SagaCompensationFailedError, SagaSignalError
from spakky_saga.flow import SagaFlow
from spakky_saga.recovery import RecoveryOutcome, RecoveryPolicy, RecoveryReport
from spakky_saga.result import SagaResult
from spakky_saga.status import SagaStatus
from spakky_saga.store import SagaStore, WaitingStore
from spakky_saga.stores.memory import InMemorySagaStore
from spakky_saga.testing._crash_invariants import (
    Recovered,
    Reference,
    check_recovery,
    check_stored,
    outcome_of,
)
from spakky_saga.testing._injection import Faults, Recorder, Shape, Site, instrument
from spakky_saga.testing._process import ProcessStore, WaitingProcessStore, Wakes
from spakky_saga.testing._source import SagaSource, Source
from spakky_saga.testing.explore import InjectedFault, Plan, ScenarioRunner, WaitObserver
from spakky_saga.testing.report import (
    CrashOutcome,
    CrashReport,
    CrashScenario,
    Scenario,
    ScenarioOutcome,
)
from spakky_saga.testing.virtual_time import VirtualClock

type StoreFactory = Callable[[Callable[[], float]], SagaStore]
"""Builds an empty store whose leases run on the clock it is given (`clock=`): every run of
`explore_crashes` gets a fresh one."""

_LEASE: Final = timedelta(seconds=30)
_NAMELESS: Final = "explore_crashes"
"""The saga name of a flow explored without `saga_name` (durable runs need one)."""
_SETTLE_ROUNDS: Final = 1000
"""Loop iterations the killed engine's calls in flight get to end before recovery starts."""
_WAKE_ROUNDS: Final = 100
"""Wake-ups a recovered saga with waits gets before the explorer stops moving time on."""


async def explore_crashes[D: AbstractSagaData](
    saga: SagaSource[D],
    data: D,
    *,
    failing_step: str | None = None,
    step_failures: int | None = None,
    failing_compensation: str | None = None,
    compensation_failures: int | None = None,
    policies: Sequence[RecoveryPolicy] = (RecoveryPolicy.COMPENSATE, RecoveryPolicy.RESUME),
    lost_writes: bool = True,
    error: Callable[[str], Exception] = InjectedFault,
    saga_name: str | None = None,
    store: StoreFactory | None = None,
    signals: Sequence[object] = (),
    late_signals: bool = False,
) -> CrashReport[D]:
    """Kill a durable engine running `saga` at each of its writes, recover with a new engine
    under each of `policies`, and check the promises of recovery each time.

    `saga` is what `explore_failures` takes: a flow, a saga instance or a function building
    either, called once per crash point (the killed engine and the recovering one share its
    services: they are the outside world, which outlives the process). The runs are named
    `saga_name` (default: the saga's class name, or "explore_crashes" for a flow).

    Faults, the same in every run: `failing_step` (a step's label, as in the report) raises
    on its first `step_failures` attempts (None: every attempt; a repeated attempt fails
    again, as the participant would answer the repeat); `failing_compensation` raises on its
    first `compensation_failures` calls (None: every call). `error(message)` builds them.

    Each write is a crash point twice with `lost_writes=True`: killed after it reached the
    store, and killed just before it (the engine had acted; the write is lost, which is how
    a step that ran ends up in doubt). Returns a `CrashReport`; never raises for a broken
    promise.

    `store(clock)` builds each run's store (default: `InMemorySagaStore(clock=clock)`); give
    `lambda clock: SqliteSagaStore(path, clock=clock)` with a fresh path to explore the real
    thing. Its leases must run on `clock`: that is how the dead engine's lease expires without
    waiting.

    A flow with waits runs on virtual loop time, its deadlines on the store's `clock` (which
    then follows the virtual time). `signals` are payloads for its waits, as for
    `explore_failures`: each `wait_for` is sent the one of its signal type when it starts (a
    signal with an id of its own per attempt, as an idempotent webhook would send it, stored
    before the wait looks). That is the first scenario explored; then, as in
    `explore_failures`, each `wait_for` with a timeout gets one of its own in which it is
    sent no signal and times out (`Scenario(unsignalled_wait=label)`, the other waits still
    signalled), each explored at every crash point: `report.scenarios` holds them all, in
    that order. The writes around a wait are crash points like any other (its attempt, the
    signal's entry written with its commit, the suspension, the wake-up); after each crash,
    recovery runs until the saga no longer waits, time moving on to each wake-up, and
    `signal-once` checks that each signal sent was taken exactly once over both processes,
    never lost.

    `late_signals=True` sends each signal late instead: after its wait looked and found
    none, just before the saga's suspension is written (the race a webhook can win against
    a suspending engine; the store's `suspend(..., seen)` must make such a saga due at once,
    or the signal waits for the deadline, or forever).
    """
    started = time.perf_counter()
    source = Source(saga, saga_name, "explore_crashes")
    if source.anonymous:
        source.name = _NAMELESS
    policies = tuple(policies)
    if not policies or not all(isinstance(p, RecoveryPolicy) for p in policies):
        raise ValueError(
            f"explore_crashes(policies={policies!r}): give one or more RecoveryPolicy values"
        )
    faults, scenario = _faults(
        source.shape,
        error,
        failing_step,
        step_failures,
        failing_compensation,
        compensation_failures,
    )
    clock = VirtualClock()
    notes: list[str] = []
    scenarios: list[CrashScenario[D]] = []
    with _virtual_time(clock, source.shape):
        for asked, withheld in _scenarios(source.shape, scenario, faults):
            explorer = _CrashExplorer(
                source, data, withheld, clock, store or _in_memory, signals, late=late_signals
            )
            scenarios.append(await explorer.explore(asked, policies, lost_writes, notes))
    return CrashReport(
        saga_name=source.name,
        scenarios=tuple(scenarios),
        notes=tuple(notes),
        elapsed=timedelta(seconds=time.perf_counter() - started),
    )


def _scenarios(
    shape: Shape, scenario: Scenario, faults: Faults
) -> Iterator[tuple[Scenario, Faults]]:
    """The scenarios to explore: the one asked for (every wait sent its signal), then one per
    `wait_for` with a timeout in which that wait gets none, as `explore_failures` names them."""
    yield scenario, faults
    for site in shape.waits:
        if site.can_time_out:
            yield (
                dataclasses.replace(scenario, unsignalled_wait=site.label),
                dataclasses.replace(faults, withhold_signal=site.key),
            )


class _StoreTime:
    """The shared store's wall clock: leases expire when `expire()` says, never by waiting.
    For a flow with waits it also follows `follow` (the virtual time), and is the engines'
    wall clock too: a wait's deadline and its wake-up are on it."""

    def __init__(self, follow: VirtualClock | None = None) -> None:
        self.skew = 1_000_000.0
        self.follow = follow

    def __call__(self) -> float:
        return self.skew + (self.follow.now if self.follow is not None else 0.0)

    @property
    def now(self) -> float:
        return self()

    def expire(self) -> None:
        """Move past every lease (the dead engine's heartbeat renews no more)."""
        self.skew += _LEASE.total_seconds() * 100


class _CrashExplorer[D: AbstractSagaData]:
    """Runs the uncrashed reference, and each crash with its recovery."""

    def __init__(  # noqa: PLR0917 - what explore_crashes was asked, passed on as it came
        self,
        source: Source[D],
        data: D,
        faults: Faults,
        clock: VirtualClock,
        new_store: StoreFactory,
        signals: Sequence[object],
        *,
        late: bool = False,
    ) -> None:
        self.new_store = new_store
        self.late = late
        self.source = source
        self.data = data
        self.faults = faults
        self.clock = clock
        self.saga_id = str(data.saga_id)
        self.waits = bool(source.shape.waits)
        self.signals = signals
        # refuses a missing payload now, before any run (a runner that can signal: the default)
        self.payloads = ScenarioRunner(
            source, _Resuming.probe(), data, faults.make_error, signals
        ).payloads
        self.sent = {k: p for k, p in self.payloads.items() if k != faults.withhold_signal}

    async def explore(
        self,
        scenario: Scenario,
        policies: Sequence[RecoveryPolicy],
        lost_writes: bool,
        notes: list[str],
    ) -> CrashScenario[D]:
        """`scenario` uncrashed, then killed at each of its writes and recovered under each
        policy (what could not be explored goes to `notes`)."""
        uncrashed, writes, reference = await self.uncrashed(scenario, policies[0])
        crashes: list[CrashOutcome[D]] = []
        for policy in policies:
            for write in range(1, len(writes) + 1):
                for lost in (True, False) if lost_writes else (False,):
                    point = dataclasses.replace(
                        scenario, crashed_at=write, write_lost=lost, recovery=policy
                    )
                    crashed = await self.crash(point, reference, writes[write - 1])
                    if crashed is None:
                        notes.append(
                            f"{point}: the run made fewer writes than the uncrashed one (it is "
                            "not deterministic), so it was never killed"
                        )
                        continue
                    crashes.append(crashed[0])
                    notes += [
                        f"{point}: resumed-as-uncrashed not checked: {answer} (the saga may "
                        "then take another path than the uncrashed run)"
                        for answer in crashed[1]
                    ]
        return CrashScenario(uncrashed, tuple(writes), tuple(crashes))

    def engine(self, store: ProcessStore, policy: RecoveryPolicy, wall: _StoreTime) -> SagaEngine:
        if not self.waits:
            return self.clock.engine(store=store, log=False, recovery=policy, lease=_LEASE)
        return self.clock.engine(
            store=store, log=False, recovery=policy, lease=_LEASE, wall_clock=wall
        )

    def process(self, store: SagaStore, world: _World | None, **kill: Any) -> ProcessStore:
        """One process's view of `store` (a waiting one, for a flow with waits): the signals
        reach the store before a wait looks, or, `late`, between its look and its suspension."""
        if world is None or not isinstance(store, WaitingStore):
            return ProcessStore(store, **kill)
        if not self.late:
            return WaitingProcessStore(store, world.wakes, on_look=world.mailbox.deliver, **kill)

        async def late() -> float | None:
            return world.time() if await world.mailbox.deliver() else None

        return WaitingProcessStore(store, world.wakes, on_suspend=late, **kill)

    def world(self, store: SagaStore, wall: _StoreTime) -> _World | None:
        """The outside world of a flow with waits: who sends its signals, when it wakes."""
        if not (self.waits and isinstance(store, WaitingStore)):
            return None
        wakes = Wakes()
        sender = self.engine(WaitingProcessStore(store, wakes), RecoveryPolicy.RESUME, wall)
        return _World(wakes, _Mailbox(sender, self.sent), wall)

    async def uncrashed(
        self, scenario: Scenario, policy: RecoveryPolicy
    ) -> tuple[ScenarioOutcome[D], list[str], Reference]:
        """The run without a crash, checked as `explore_failures` checks a run, and its store."""
        wall = _StoreTime(self.clock if self.waits else None)
        store = self.new_store(wall)
        world = self.world(store, wall)
        process = self.process(store, world)
        engine = self.engine(process, policy, wall)
        resuming = _Resuming(engine, world)
        runner = ScenarioRunner(
            self.source,
            resuming,
            self.data,
            self.faults.make_error,
            self.signals,
            post=world.mailbox.post if world is not None else None,
            reloads=world is not None,
        )
        try:
            outcome, recorder = await runner.run(
                Plan(scenario, self.faults, virtual=self.waits), baseline=scenario == Scenario()
            )
            record = await store.load(self.saga_id)
        finally:
            await engine.aclose()
            if world is not None:
                await world.mailbox.sender.aclose()
            await store.close()
        stored = check_stored(scenario, record, type(self.data), outcome.result)
        outcome = dataclasses.replace(outcome, violations=outcome.violations + tuple(stored))
        return outcome, process.writes, Reference(outcome.result, record, recorder.calls)

    async def crash(
        self, scenario: Scenario, reference: Reference, write: str
    ) -> tuple[CrashOutcome[D], list[str]] | None:
        """Kill a run at `scenario.crashed_at`, recover it, check; None if it never got there.
        Also the repeated calls a participant answered otherwise (see `check_recovery`)."""
        store_time = _StoreTime(self.clock if self.waits else None)
        store = self.new_store(store_time)
        world = self.world(store, store_time)
        try:
            return await self._crash(scenario, reference, write, store, store_time, world)
        finally:
            if world is not None:
                await world.mailbox.sender.aclose()
            await store.close()

    async def _crash(  # noqa: PLR0917 - one crash and its recovery, observed
        self,
        scenario: Scenario,
        reference: Reference,
        write: str,
        store: SagaStore,
        store_time: _StoreTime,
        world: _World | None,
    ) -> tuple[CrashOutcome[D], list[str]] | None:
        assert scenario.crashed_at is not None
        assert scenario.recovery is not None
        policy = scenario.recovery
        recorder = Recorder()
        killed_at = 0

        def killed() -> None:
            nonlocal killed_at
            killed_at = recorder.mark()

        dying = self.process(
            store,
            world,
            kill_at=scenario.crashed_at,
            lose_write=scenario.write_lost,
            on_kill=killed,
        )
        flow, subject = self.source.next()
        shape = self.source.shape
        observers = [self.observer(recorder, world, process) for process in (1, 2)]
        seen: list[Sequence[WaitObserver]] = (
            [observers[:1], observers[1:]] if self.waits else [(), ()]
        )  # a flow without waits runs without them, as before
        engine = self.engine(dying, policy, store_time)
        try:  # for a flow with waits, it resumes the saga itself after each wake-up
            await _abandon(
                _Resuming(engine, world).run(
                    instrument(flow, shape, self.faults, recorder, process=1),
                    self.data,
                    saga_name=self.source.name,
                    listeners=seen[0],
                )
            )
        finally:
            await engine.aclose()
        observers[0].cut_off()  # its waits end with the process
        await _settle(recorder)
        if not dying.killed:
            return None
        if world is not None:
            await world.mailbox.deliver()  # a signal sent as it died reaches the store
        at_crash = await store.load(self.saga_id)

        store_time.expire()
        recovering = self.engine(self.process(store, world), policy, store_time)
        recovering.register(
            self.source.name,
            instrument(flow, shape, self.faults, recorder, process=2),
            recovery=policy,
        )
        report: RecoveryReport | None = None
        recover_error: BaseException | None = None
        try:
            report = await _recover(recovering, self.saga_id, seen[1], world)
        except Exception as raised:  # a broken recovery: reported, not raised
            recover_error = raised
        finally:
            await recovering.aclose()
        await _settle(recorder)
        final = await store.load(self.saga_id)

        run = Recovered(
            policy=policy,
            saga_id=self.saga_id,
            data_class=type(self.data),
            calls=recorder.calls,
            killed_at=killed_at,
            at_crash=at_crash,
            report=report,
            recover_error=recover_error,
            final=final,
            signals_sent=world.mailbox.delivered if world is not None else {},
            signals_taken={
                key: [s for o in observers for s in o.taken.get(key, [])]
                for o in observers
                for key in o.taken
            },
        )
        entry = next(
            (s for s in (report.sagas if report else ()) if s.saga_id == self.saga_id), None
        )
        result: SagaResult[D] | None = entry.result if entry is not None else None
        undo = [c for c in recorder.calls if c.kind == "compensation" and c.site is not None]
        violations, diverged = check_recovery(scenario, shape, run, reference)
        return CrashOutcome(
            scenario=scenario,
            write=write,
            at_crash=outcome_of(at_crash),
            outcome=outcome_of(final),
            recovered=entry,
            result=result,
            record=final,
            ran=_ran(recorder, killed_at),
            compensated=tuple(c.site.label for c in undo if c.site is not None),
            failed_compensations=tuple(
                c.site.label for c in undo if c.site is not None and c.raised is not None
            ),
            violations=tuple(violations),
            subject=subject,
        ), diverged

    def observer(self, recorder: Recorder, world: _World | None, process: int) -> WaitObserver:
        """What sees one process's waits (and sends their signals)."""
        return WaitObserver(
            self.source.shape,
            recorder,
            None,
            self.sent,
            self.data,
            post=world.mailbox.post if world is not None else None,
            process=process,
        )


@dataclasses.dataclass(slots=True)
class _World:
    """What outlives the processes of one run of a flow with waits: the store's clock, who
    sends the signals, and when the saga last suspended to wake."""

    wakes: Wakes
    mailbox: _Mailbox
    time: _StoreTime


class _Mailbox:
    """The explorer's signals on their way: posted when a wait starts, sent (through an
    engine of their own: the webhook's process, never killed) before a wait looks for them,
    each with the id of the wait's attempt, so a repeat stores nothing new."""

    def __init__(self, sender: SagaEngine, sent: dict[str, object]) -> None:
        self.sender = sender
        self.pending: list[tuple[UUID, str, object]] = []
        self.delivered: dict[str, object] = {}
        """By wait site key: the signal stored for it."""
        self.sent = sent

    def post(self, saga_id: UUID, signal_id: str, payload: object) -> None:
        self.pending.append((saga_id, signal_id, payload))

    async def deliver(self) -> bool:
        """Send the signals posted; whether one of them was new to the store."""
        fresh = False
        while self.pending:
            saga_id, signal_id, payload = self.pending.pop(0)
            with contextlib.suppress(SagaSignalError):  # the saga moved on (compensating)
                receipt = await self.sender.signal(saga_id, payload, signal_id=signal_id)
                self.delivered[signal_id.partition("#")[0]] = payload
                fresh = fresh or not receipt.duplicate
        return fresh


class _Resuming:
    """An engine's `run` that, for a flow with waits, goes on until the saga no longer waits
    (each pass of `recover()` after time moved on to its wake-up): the uncrashed run."""

    def __init__(self, engine: SagaEngine | None, world: _World | None) -> None:
        self.engine = engine
        self.world = world
        self.registered = False

    @classmethod
    def probe(cls) -> _Resuming:
        """One that only shows it can signal (what checking `signals=` needs)."""
        return cls(None, None)

    async def signal(self, saga_id: UUID, payload: object, /) -> object:
        assert self.engine is not None
        return await self.engine.signal(saga_id, payload)

    async def run[T: AbstractSagaData](
        self,
        flow: SagaFlow[T],
        data: T,
        *,
        saga_name: str = "",
        listeners: Iterable[object] = (),
    ) -> SagaResult[T]:
        engine = self.engine
        assert engine is not None
        result = await engine.run(flow, data, saga_name=saga_name, listeners=listeners)
        if result.status is not SagaStatus.WAITING or self.world is None:
            return result
        if not self.registered:
            engine.register(saga_name, flow)
            self.registered = True
        report = await _recover(engine, str(data.saga_id), list(listeners), self.world)
        entry = next((s for s in report.sagas if s.saga_id == str(data.saga_id)), None)
        if entry is None or entry.result is None:
            return result
        if isinstance(entry.error, SagaCompensationFailedError):
            raise entry.error  # as run() raises it
        return entry.result


async def _recover(
    engine: SagaEngine, saga_id: str, listeners: Sequence[object], world: _World | None
) -> RecoveryReport:
    """`recover()` the saga; for a flow with waits, again until it no longer waits, time
    moving on to each wake-up (the report of the pass that took it up last)."""
    report = last = await engine.recover(listeners=listeners)
    if world is None:
        return report
    for _ in range(_WAKE_ROUNDS):
        entry = next((s for s in report.sagas if s.saga_id == saga_id), None)
        if entry is not None:
            last = report
            if entry.outcome is not RecoveryOutcome.WAITING:
                break
        wake = world.wakes.at
        if wake is None or not world.wakes.suspended:
            break  # not suspended, or only a signal wakes it, and none comes
        world.wakes.suspended = False
        await asyncio.sleep(max(0.0, wake - world.time()))
        report = await engine.recover(listeners=listeners)
    return last


def _in_memory(clock: Callable[[], float]) -> SagaStore:
    return InMemorySagaStore(clock=clock)


def _faults(  # noqa: PLR0917 - the explorer's fault parameters, passed on as they came
    shape: Shape,
    error: Callable[[str], Exception],
    failing_step: str | None,
    step_failures: int | None,
    failing_compensation: str | None,
    compensation_failures: int | None,
) -> tuple[Faults, Scenario]:
    """The faults asked for, by site key, and the scenario describing them."""
    sites = {site.label: site for site in shape.sites}

    def site(label: str | None, parameter: str, compensable: bool) -> Site | None:
        if label is None:
            return None
        found = sites.get(label)
        if found is None or (compensable and not found.compensable):
            kind = "steps with a compensation" if compensable else "steps"
            known = [s.label for s in shape.sites if s.compensable or not compensable]
            raise ValueError(
                f"explore_crashes({parameter}={label!r}): no such step; its {kind} are "
                f"{', '.join(known) or 'none'} (a name shared by several steps is name@key)"
            )
        return found

    for count, parameter in (
        (step_failures, "step_failures"),
        (compensation_failures, "compensation_failures"),
    ):
        if count is not None and count < 1:
            raise ValueError(f"explore_crashes({parameter}={count!r}): give a count >= 1, or None")
    action = site(failing_step, "failing_step", compensable=False)
    undo = site(failing_compensation, "failing_compensation", compensable=True)
    faults = Faults(
        error,
        fail_action=action.key if action else None,
        fail_compensation=undo.key if undo else None,
        action_failures=step_failures,
        compensation_failures=compensation_failures,
    )
    scenario = Scenario(
        failing_step=failing_step,
        failing_compensation=failing_compensation,
        step_failures=step_failures if failing_step is not None else None,
        compensation_failures=compensation_failures if failing_compensation is not None else None,
    )
    return faults, scenario


@contextlib.contextmanager
def _virtual_time(clock: VirtualClock, shape: Shape) -> Iterator[None]:
    """Virtual loop time for a flow with timeouts or waits (they would wait for real
    otherwise)."""
    if shape.saga_timeout or shape.waits or any(site.timeout for site in shape.sites):
        with clock.virtual_loop():
            yield
    else:
        yield


async def _abandon(run: Coroutine[Any, Any, object]) -> None:
    """Await the killed engine's run and drop whatever it ended with (it was killed: its
    outcome reaches nobody); only the explorer's own cancellation goes through."""
    try:
        await run
    except (Exception, asyncio.CancelledError) as raised:
        task = asyncio.current_task()
        if isinstance(raised, asyncio.CancelledError) and task is not None and task.cancelling():
            raise


async def _settle(recorder: Recorder) -> None:
    """Let calls still in flight end (a killed group's siblings, concurrent compensations),
    so that the next process's calls never interleave with the dead one's."""
    for _ in range(_SETTLE_ROUNDS):
        if all(call.ended is not None for call in recorder.calls):
            return
        await asyncio.sleep(0)


def _ran(recorder: Recorder, killed_at: int) -> tuple[str, ...]:
    ran: list[str] = []
    marked = False
    for call in recorder.calls:
        if not marked and call.started > killed_at:
            ran.append("| killed |")
            marked = True
        ran.append(call.label)
    if not marked:
        ran.append("| killed |")
    return tuple(ran)
