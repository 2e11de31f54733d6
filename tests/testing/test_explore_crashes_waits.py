"""`explore_crashes` on flows that wait: each `wait_for` is sent its signal when it starts
(`signals=`), and each one with a timeout also gets a scenario in which it is sent none; the
engine is killed at each of its writes, the ones around a wait included
(the wait's attempt, the signal's entry written with its commit, the suspension, the
wake-up), and recovery finishes the saga on virtual time: the signal taken exactly once, a
sleep at its first deadline, a timeout that passed while no process ran into its
`on_timeout`; a signal stored late (after its wait looked, before the saga suspended) is
taken once. Stores with planted bugs show that the new checks fail."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import (
    InMemorySagaStore,
    SagaFlow,
    SqliteSagaStore,
    saga_flow,
    sleep,
    step,
    wait_for,
)
from spakky_saga.store import SagaRecord, SagaStore, StoredSignal
from spakky_saga.testing import Check, CrashReport, Scenario, explore_crashes
from tests.testing.flows import Order, Services
from tests.testing.test_explore_waits import WAIT, Confirmed, Unused, confirm, waiting_flow

pytest.importorskip("looptime")

type Stores = Callable[[Callable[[], float]], SagaStore]


def sqlite(tmp_path: Path) -> Stores:
    numbers = itertools.count()
    return lambda clock: SqliteSagaStore(tmp_path / f"{next(numbers)}.db", clock=clock)


def in_memory(_: Path) -> Stores:
    return lambda clock: InMemorySagaStore(clock=clock)


STORES = pytest.mark.parametrize("stores", [in_memory, sqlite], ids=["memory", "sqlite"])


def _messages(report: CrashReport[Order], check: Check) -> list[str]:
    return [v.message for v in report.violations if v.check is check]


@STORES
async def test_a_signalled_wait_and_a_sleep_recover_from_a_crash_at_every_write(
    stores: Callable[[Path], Stores], tmp_path: Path
) -> None:
    report = await explore_crashes(
        lambda: waiting_flow(Services()), Order(), signals=[Confirmed("ok")], store=stores(tmp_path)
    )

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "COMPLETED"
    assert report.uncrashed.result is not None
    assert report.uncrashed.result.data.charged
    assert any(w.startswith("append: signal_received") for w in report.writes)
    assert any(w.startswith("suspend: -> WAITING") for w in report.writes)  # the sleep
    assert any(w.startswith("append: saga_recovered, step_started sleep") for w in report.writes)
    for scenario in report.scenarios:  # every write, both policies, before and after it
        assert len(scenario.crashes) == 2 * 2 * len(scenario.writes)
    for crash in report.scenario("no fault").crashes:
        assert crash.outcome in {"-", "COMPLETED", "FAILED"}, crash
        if crash.result is not None and crash.outcome == "COMPLETED":
            assert crash.result.data.charged  # the signal, merged once


def sleeping_flow(services: Services) -> SagaFlow[Order]:
    return saga_flow(
        step(services.reserve, compensate=services.release),
        sleep(timedelta(hours=1)),
        step(services.ship, compensate=services.unship),
    )


@STORES
async def test_a_sleep_resumes_at_its_first_deadline_after_every_crash(
    stores: Callable[[Path], Stores], tmp_path: Path
) -> None:
    report = await explore_crashes(
        lambda: sleeping_flow(Services()),
        Order(),
        store=stores(tmp_path),
    )

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "COMPLETED"
    assert any(w.startswith("suspend: -> WAITING") for w in report.writes)


@STORES
async def test_a_timeout_that_passed_while_no_process_ran_compensates_on_recovery(
    stores: Callable[[Path], Stores], tmp_path: Path
) -> None:
    # Ten minutes: the dead engine's lease takes longer to run out (the store's clock jumps
    # past it), so recovery finds the deadline passed.
    def flow() -> SagaFlow[Order]:
        services = Services()
        return saga_flow(
            step(services.reserve, compensate=services.release),
            wait_for(Confirmed, merge=confirm, timeout=timedelta(minutes=10)),
            step(services.ship, compensate=services.unship),
        )

    report = await explore_crashes(flow, Order(), signals=[Confirmed("ok")], store=stores(tmp_path))

    assert report.ok, str(report)
    timed_out = report.scenario(f"{WAIT} gets no signal")
    assert timed_out.uncrashed.outcome == "FAILED"
    assert timed_out.uncrashed.compensated == ("reserve",)
    suspended = [c for c in timed_out.crashes if c.at_crash == "WAITING"]
    assert suspended
    assert all(c.outcome == "FAILED" and c.compensated == ("reserve",) for c in suspended)


@dataclass(frozen=True)
class Shipped:
    reference: str


def shipped(data: Order, signal: Shipped) -> Order:
    return dataclasses.replace(data, shipped=signal.reference == "ok")


def two_waits_flow() -> SagaFlow[Order]:
    """reserve >> release, then two waits with a timeout each."""
    services = Services()
    return saga_flow(
        step(services.reserve, compensate=services.release),
        wait_for(Confirmed, merge=confirm, timeout=timedelta(hours=48)),
        wait_for(Shipped, merge=shipped, timeout=timedelta(hours=2)),
    )


async def test_each_wait_with_a_timeout_gets_a_scenario_without_its_signal_at_every_crash() -> None:
    report = await explore_crashes(
        two_waits_flow, Order(), signals=[Confirmed("ok"), Shipped("ok")], saga_name="waits"
    )

    assert report.ok, str(report)
    assert [s.uncrashed.scenario for s in report.scenarios] == [
        Scenario(),
        Scenario(unsignalled_wait=WAIT),
        Scenario(unsignalled_wait="wait_for(Shipped)"),
    ]
    assert [s.uncrashed.outcome for s in report.scenarios] == ["COMPLETED", "FAILED", "FAILED"]
    for scenario in report.scenarios:
        assert scenario.writes
        assert len(scenario.crashes) == 2 * 2 * len(scenario.writes), scenario.uncrashed.scenario
        assert {c.scenario.unsignalled_wait for c in scenario.crashes} == {
            scenario.uncrashed.scenario.unsignalled_wait
        }
    assert report.crashes == tuple(c for s in report.scenarios for c in s.crashes)
    assert any(w.startswith("suspend: -> WAITING") for w in report.scenarios[2].writes)
    assert not any(w.startswith("suspend:") for w in report.scenarios[0].writes)
    crash = report.crash("wait_for(Shipped) gets no signal, killed after write 1, RESUME")
    assert crash.outcome == "FAILED"
    assert "wait_for(Shipped) gets no signal" in str(report)


class ForgetsWakeUps(InMemorySagaStore):
    """Suspends a saga without its wake-up time: a wait that gets no signal never times out.
    A wait that gets its signal never suspends, so only the timeout scenarios show it."""

    async def suspend(self, saga_id: str, owner: str, wake_at: float | None, seen: int) -> None:
        await super().suspend(saga_id, owner, None, seen)


async def test_a_bug_only_a_timeout_scenario_reaches_is_found() -> None:
    report = await explore_crashes(
        two_waits_flow,
        Order(),
        signals=[Confirmed("ok"), Shipped("ok")],
        saga_name="waits",
        store=lambda clock: ForgetsWakeUps(clock=clock),
    )

    assert not report.ok
    signalled = report.scenario("no fault")
    assert signalled.uncrashed.ok
    assert all(crash.ok for crash in signalled.crashes), str(report)
    for label in (WAIT, "wait_for(Shipped)"):
        timed_out = report.scenario(f"{label} gets no signal")
        assert timed_out.uncrashed.outcome == "WAITING"  # it never woke to time out
        assert "a finished run has status WAITING" in [
            v.message for v in timed_out.uncrashed.violations if v.check is Check.STATUS
        ], str(report)
        assert any(not crash.ok for crash in timed_out.crashes)


async def test_a_missing_payload_is_refused_at_call_time() -> None:
    with pytest.raises(
        ValueError,
        match=r"explore_crashes\(saga, signals=\.\.\.\): no signal for wait_for\(Confirmed\) "
        r"\(Confirmed\); pass one payload of each type",
    ):
        await explore_crashes(waiting_flow(Services()), Order(), signals=[Unused("x")])


async def test_a_flow_without_waits_makes_no_suspension_write() -> None:
    services = Services()
    flow = saga_flow(step(services.reserve, compensate=services.release), services.ship)

    report = await explore_crashes(flow, Order(), saga_name="order")

    assert report.ok, str(report)
    assert not any("suspend" in w for w in report.writes)


# --- the checks can fail: stores with planted bugs ----------------------------------------------


class ForgetsTheTakenSignal(InMemorySagaStore):
    """Hands recovery a log without the wait's SIGNAL_RECEIVED and commit entries: the
    recovered saga runs the wait again and takes its signal a second time."""

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        claimed = await super().claim(owner, lease_seconds, limit, saga_ids)
        return [
            dataclasses.replace(
                r,
                events=tuple(
                    e
                    for e in r.events
                    if not (e.step_key == "2" and e.kind in {"signal_received", "step_committed"})
                ),
            )
            for r in claimed
        ]


class LosesSignalsOnRecovery(InMemorySagaStore):
    """Shows no signal to a process that recovered a saga: a signal sent before the crash
    and not yet taken is lost."""

    claimed = False

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        found = await super().claim(owner, lease_seconds, limit, saga_ids)
        self.claimed = self.claimed or bool(found)
        return found

    async def signals(self, saga_id: str) -> list[StoredSignal]:
        return [] if self.claimed else await super().signals(saga_id)


class RestartsDeadlines(InMemorySagaStore):
    """Hands another process's recovery a log whose entries are stamped now: a wait
    recovered after a crash restarts its deadline at every wake-up (a sleep never ends)."""

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        claimed = await super().claim(owner, lease_seconds, limit, saga_ids)
        now = self._clock()
        return [
            dataclasses.replace(r, events=tuple(e._replace(at=now) for e in r.events))
            if r.events and r.events[0].owner != owner
            else r
            for r in claimed
        ]


async def test_a_signal_taken_twice_over_a_crash_is_reported() -> None:
    report = await explore_crashes(
        waiting_flow(Services()),
        Order(),
        signals=[Confirmed("ok")],
        store=lambda clock: ForgetsTheTakenSignal(clock=clock),
    )

    assert not report.ok
    assert any(
        m.startswith(f"{WAIT} took signal 2#1 twice over the crash and recovery")
        for m in _messages(report, Check.SIGNAL_ONCE)
    ), str(report)


async def test_a_signal_lost_over_a_crash_is_reported() -> None:
    report = await explore_crashes(
        waiting_flow(Services()),
        Order(),
        signals=[Confirmed("ok")],
        store=lambda clock: LosesSignalsOnRecovery(clock=clock),
    )

    assert not report.ok
    assert (
        f"{WAIT} ended without the signal sent to it (stored before it gave up): the signal "
        "was lost" in _messages(report, Check.SIGNAL_ONCE)
    ), str(report)


async def test_a_deadline_restarted_by_recovery_is_reported() -> None:
    report = await explore_crashes(
        lambda: sleeping_flow(Services()),
        Order(),
        saga_name="slept",
        store=lambda clock: RestartsDeadlines(clock=clock),
    )

    assert not report.ok
    assert "the saga is still WAITING in the store after recovery" in _messages(
        report, Check.FINISHED_IN_STORE
    ), str(report)


# --- the late signal: stored after the wait looked, before the saga suspends -------------------


def forever_flow() -> SagaFlow[Order]:
    """reserve >> release, a wait without a timeout (only its signal wakes it), ship."""
    services = Services()
    return saga_flow(
        step(services.reserve, compensate=services.release),
        wait_for(Confirmed, merge=confirm),
        step(services.ship, compensate=services.unship),
    )


@STORES
@pytest.mark.parametrize("flow", [forever_flow, lambda: waiting_flow(Services())])
async def test_a_signal_stored_between_the_look_and_the_suspension_is_taken_once(
    stores: Callable[[Path], Stores], tmp_path: Path, flow: Callable[[], SagaFlow[Order]]
) -> None:
    report = await explore_crashes(
        flow,
        Order(),
        signals=[Confirmed("ok")],
        saga_name="late",
        store=stores(tmp_path),
        late_signals=True,
    )

    assert report.ok, str(report)
    signalled = report.scenario("no fault")
    assert signalled.uncrashed.outcome == "COMPLETED"
    assert signalled.uncrashed.result is not None
    assert signalled.uncrashed.result.data.charged  # the signal, merged
    writes = list(signalled.writes)
    suspended = writes.index(f"append: saga_suspended {WAIT}")  # it looked, found none
    assert writes[suspended + 1].startswith("suspend: -> WAITING")
    assert writes[suspended + 2] == f"append: saga_recovered, step_started {WAIT}#1"
    assert writes[suspended + 3].startswith(f"append: signal_received {WAIT}")
    recovered = [c.result for c in signalled.crashes if c.outcome == "COMPLETED" and c.result]
    assert recovered  # completed by recovery: the late signal reached the recovered saga
    assert all(result.data.charged for result in recovered)


class IgnoresLateSignals(InMemorySagaStore):
    """Suspends a saga as if the wait had seen every signal: one stored after the wait looked
    does not make the saga due, so a wait without a timeout never takes it."""

    async def suspend(self, saga_id: str, owner: str, wake_at: float | None, seen: int) -> None:
        await super().suspend(saga_id, owner, wake_at, 1_000_000)


async def test_a_late_signal_that_does_not_wake_the_saga_is_reported() -> None:
    report = await explore_crashes(
        forever_flow,
        Order(),
        signals=[Confirmed("ok")],
        saga_name="late",
        store=lambda clock: IgnoresLateSignals(clock=clock),
        late_signals=True,
    )

    assert not report.ok
    assert report.uncrashed.outcome == "WAITING"  # the signal is in the store, unseen
    assert "a finished run has status WAITING" in [
        v.message for v in report.uncrashed.violations if v.check is Check.STATUS
    ], str(report)
