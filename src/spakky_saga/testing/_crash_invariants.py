"""The promises a crashed and recovered saga keeps (see `Check`, from `write-ahead` on, and
docs/testing.md for the reasons).

The checks read what the instrumented actions and compensations recorded (in the killed
process and in the recovering one), the saga's log as the store had it when the process
died, what `recover()` reported, and the stored saga afterwards: never the engine's
internals, so a broken recovery is caught however it is written. The uncrashed run with the
same faults is the reference: a saga resumed after a crash must end as it did.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from spakky_saga.codec import decode
from spakky_saga.data import AbstractSagaData
from spakky_saga.events import SagaEventKind
from spakky_saga.recovery import RecoveredSaga, RecoveryPolicy, RecoveryReport
from spakky_saga.result import SagaResult
from spakky_saga.status import SagaStatus
from spakky_saga.store import SagaRecord, StoredStatus, signal_of
from spakky_saga.testing._injection import Call, Group, Shape
from spakky_saga.testing._invariants import (
    check_compensation_order,
    committed,
    fold_retried,
    same_data,
)
from spakky_saga.testing.report import Check, Scenario, Violation, describe_error

_OUTCOME_OF: dict[StoredStatus, str] = {
    StoredStatus.COMPLETED: "completed",
    StoredStatus.FAILED: "compensated",
    StoredStatus.TIMED_OUT: "compensated",
    StoredStatus.COMPENSATION_FAILED: "compensation_failed",
    StoredStatus.STUCK: "stuck",
}
"""The outcome `recover()` reports for a saga it left in each final status."""

_STORED_AS: dict[SagaStatus, tuple[StoredStatus, ...]] = {
    SagaStatus.COMPLETED: (StoredStatus.COMPLETED,),
    SagaStatus.FAILED: (StoredStatus.FAILED, StoredStatus.COMPENSATION_FAILED),
    SagaStatus.TIMED_OUT: (StoredStatus.TIMED_OUT, StoredStatus.COMPENSATION_FAILED),
    SagaStatus.STUCK: (StoredStatus.STUCK,),
}

_ENDS_ATTEMPT = frozenset(
    kind.value
    for kind in (
        SagaEventKind.STEP_COMMITTED,
        SagaEventKind.STEP_FAILED,
        SagaEventKind.STEP_SKIPPED,
    )
)
_RESOLVES_STEP = frozenset(
    kind.value for kind in (SagaEventKind.STEP_COMMITTED, SagaEventKind.STEP_SKIPPED)
)
_SIGNAL_RECEIVED = SagaEventKind.SIGNAL_RECEIVED.value
_GAVE_UP = frozenset(kind.value for kind in (SagaEventKind.STEP_FAILED, SagaEventKind.STEP_SKIPPED))
_NOT_SENT: Any = object()

_ENDS_COMPENSATION = frozenset(
    kind.value for kind in (SagaEventKind.COMPENSATION_DONE, SagaEventKind.COMPENSATION_FAILED)
)


@dataclass(slots=True)
class Reference:
    """The uncrashed run with the same faults: what a resumed saga must end like."""

    result: SagaResult[Any] | None
    record: SagaRecord | None
    calls: list[Call]


@dataclass(slots=True)
class Recovered:
    """One crash and its recovery, as observed."""

    policy: RecoveryPolicy
    saga_id: str
    data_class: type[AbstractSagaData]
    calls: list[Call]
    """Both processes' calls, in the order they started (`Call.process` says whose)."""
    killed_at: int
    """The recorder's position when the process died."""
    at_crash: SagaRecord | None
    """The saga, with its log, as the store had it when the process died."""
    report: RecoveryReport | None
    recover_error: BaseException | None
    final: SagaRecord | None
    """The saga after recovery."""
    signals_sent: dict[str, object] = field(default_factory=dict)
    """By wait site key: the signal the explorer stored for that `wait_for` (either process's
    attempt of it started)."""
    signals_taken: dict[str, list[object]] = field(default_factory=dict)
    """By wait site key: the signals both processes' SIGNAL_RECEIVED events said it took."""


@dataclass(frozen=True, slots=True)
class InDoubt:
    """What the log at the crash left open: attempts and compensation attempts (step key,
    attempt) that started without a recorded outcome."""

    attempts: frozenset[tuple[str, int]]
    compensations: frozenset[tuple[str, int]]
    ended: frozenset[tuple[str, int]] = frozenset()
    """The attempts whose outcome the log had."""

    @classmethod
    def of(cls, record: SagaRecord | None) -> InDoubt:
        attempts: set[tuple[str, int]] = set()
        compensations: set[tuple[str, int]] = set()
        ended: set[tuple[str, int]] = set()
        for event in record.events if record is not None else ():
            key = event.step_key
            if key is None:
                continue
            if event.kind == SagaEventKind.STEP_STARTED.value:
                attempts.add((key, event.attempt))
            elif event.kind in _ENDS_ATTEMPT:
                attempts.discard((key, event.attempt))
                ended.add((key, event.attempt))
            elif event.kind == SagaEventKind.COMPENSATION_STARTED.value:
                compensations.add((key, event.attempt))
            elif event.kind in _ENDS_COMPENSATION:
                compensations.discard((key, event.attempt))
        return cls(frozenset(attempts), frozenset(compensations), frozenset(ended))

    def step(self, key: str) -> bool:
        return any(step == key for step, _ in self.attempts)


def attempt_of(call: Call) -> int:
    """The engine's attempt number of an action call (the call count without one)."""
    return call.step_attempt if call.step_attempt is not None else call.attempt


def outcome_of(record: SagaRecord | None) -> str:
    """A stored saga's status as the report shows it (`-`: not in the store)."""
    return "-" if record is None else record.status.value


@dataclass(slots=True)
class _Checker:
    scenario: Scenario
    shape: Shape
    run: Recovered
    reference: Reference
    found: list[Violation] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    """Repeated calls a participant answered otherwise than the first time."""

    def add(self, check: Check, message: str) -> None:
        self.found.append(Violation(check, self.scenario, message))

    def check(self) -> list[Violation]:
        run = self.run
        self.write_ahead()
        entry = self.recovered()
        self.finished_in_store()
        if entry is not None and entry.result is not None:
            self.stored_data(entry.result.data, "the recovered result's data")
        elif (
            run.at_crash is not None
            and not run.at_crash.status.unfinished
            and self.reference.result is not None
        ):  # it finished before the crash, as the uncrashed run did
            self.stored_data(self.reference.result.data, "the uncrashed run's result data")
        if run.at_crash is None:  # it never reached the store: no saga to finish or compare
            return self.found
        undo = self.repeats()
        self.compensations(undo)
        self.signals()
        if run.policy is RecoveryPolicy.RESUME and not self.diverged:
            self.as_uncrashed(entry)
        return self.found

    # --- the checks ---------------------------------------------------------------------------

    def write_ahead(self) -> None:
        for call in self.run.calls:
            if call.process == 1 and call.started > self.run.killed_at:
                self.add(
                    Check.WRITE_AHEAD,
                    f"the killed engine ran {call.label} after its last write (the store "
                    "refused it): an action or compensation ran that the log does not show",
                )

    def recovered(self) -> RecoveredSaga | None:
        run = self.run
        if run.recover_error is not None:
            self.add(Check.RECOVERED, f"recover() raised {describe_error(run.recover_error)}")
            return None
        assert run.report is not None
        entries = [saga for saga in run.report.sagas if saga.saga_id == run.saga_id]
        at_crash = run.at_crash
        if at_crash is None or not at_crash.status.unfinished:
            if entries:
                self.add(
                    Check.RECOVERED,
                    f"recover() took up the saga ({entries[0].outcome}) though it was "
                    f"{outcome_of(at_crash)} at the crash",
                )
            return None
        if len(entries) != 1:
            self.add(
                Check.RECOVERED,
                f"the saga was {at_crash.status.value} at the crash, but recover() reported it "
                f"{len(entries)} times",
            )
            if not entries:
                return None
        entry = entries[0]
        if entry.outcome in {"refused", "stopped"}:
            self.add(
                Check.RECOVERED,
                f"recover() {entry.outcome} the saga: {describe_error(entry.error)}",
            )
            return entry
        final = run.final
        if final is not None and _OUTCOME_OF.get(final.status, "-") != entry.outcome:
            self.add(
                Check.RECOVERED,
                f"recover() reported {entry.outcome!r}, but the saga is {final.status.value} in "
                "the store",
            )
        if entry.result is None:
            self.add(Check.RECOVERED, f"recover() reported {entry.outcome!r} without a result")
        elif final is not None and final.status not in _STORED_AS.get(entry.result.status, ()):
            self.add(
                Check.RECOVERED,
                f"the recovered result is {entry.result.status.name}, but the saga is "
                f"{final.status.value} in the store",
            )
        if (
            run.policy is RecoveryPolicy.COMPENSATE
            and entry.outcome == "completed"
            and not self.past_pivot()
            and not self.in_wait()
        ):
            self.add(
                Check.RECOVERED,
                f"under COMPENSATE the saga, {at_crash.status.value} at the crash, was completed "
                "instead of compensated",
            )
        return entry

    def in_wait(self) -> bool:
        """Whether the saga was in a wait at the crash (suspended, or a wait's attempt in
        doubt): it goes on waiting whatever its recovery policy (docs/waits.md)."""
        at_crash = self.run.at_crash
        if at_crash is not None and at_crash.status is StoredStatus.WAITING:
            return True
        waits = {site.key for site in self.shape.waits}
        return any(key in waits for key, _ in InDoubt.of(at_crash).attempts)

    def finished_in_store(self) -> None:
        run, final = self.run, self.run.final
        if final is None:
            if run.at_crash is not None:
                self.add(Check.FINISHED_IN_STORE, "the saga is gone from the store after recovery")
            return
        if final.status.unfinished:
            self.add(
                Check.FINISHED_IN_STORE,
                f"the saga is still {final.status.value} in the store after recovery",
            )
        elif final.owner is not None:
            self.add(
                Check.FINISHED_IN_STORE,
                f"the saga is {final.status.value} but still owned by {final.owner}",
            )

    def stored_data(self, expected: object, what: str) -> None:
        final = self.run.final
        if final is None:
            return
        found = stored_data_violation(final, self.run.data_class, expected, what)
        if found is not None:
            self.add(Check.STORED_DATA, found)

    def as_uncrashed(self, entry: RecoveredSaga | None) -> None:
        reference, final = self.reference, self.run.final
        if (
            final is not None
            and reference.record is not None
            and final.status is not reference.record.status
        ):
            self.add(
                Check.RESUMED_AS_UNCRASHED,
                f"the saga ended {final.status.value}, the uncrashed run "
                f"{reference.record.status.value}",
            )
        expected = reference.result
        result = entry.result if entry is not None else None
        if result is not None and expected is not None:
            if result.status is not expected.status:
                self.add(
                    Check.RESUMED_AS_UNCRASHED,
                    f"the recovered result is {result.status.name}, the uncrashed run's "
                    f"{expected.status.name}",
                )
            if result.failed_step != expected.failed_step:
                self.add(
                    Check.RESUMED_AS_UNCRASHED,
                    f"failed_step is {result.failed_step!r}, the uncrashed run's "
                    f"{expected.failed_step!r}",
                )
            if not same_data(result.data, expected.data):
                self.add(
                    Check.RESUMED_AS_UNCRASHED,
                    f"the recovered data differs from the uncrashed run's: "
                    f"{differences(result.data, expected.data, 'recovered', 'uncrashed')}",
                )
            if Counter(result.skipped) != Counter(expected.skipped):
                self.add(
                    Check.RESUMED_AS_UNCRASHED,
                    f"skipped {list(result.skipped)}, the uncrashed run {list(expected.skipped)}",
                )
        attempts, uncrashed = _attempts(self.run.calls), _attempts(reference.calls)
        for label in sorted(attempts.keys() | uncrashed.keys()):
            if attempts.get(label, []) != uncrashed.get(label, []):
                self.add(
                    Check.RESUMED_AS_UNCRASHED,
                    f"{label} ran attempts {attempts.get(label, [])}, the uncrashed run "
                    f"{uncrashed.get(label, [])}",
                )
        given, expected_data = (
            _compensation_data(self.run.calls),
            _compensation_data(reference.calls),
        )
        for label in sorted(given.keys() & expected_data.keys()):
            if not same_data(given[label], expected_data[label]):
                self.add(
                    Check.RESUMED_AS_UNCRASHED,
                    f"undo {label} got other data than in the uncrashed run: "
                    f"{differences(given[label], expected_data[label], 'recovered', 'uncrashed')}",
                )
        undone = _compensated(self.run.calls)
        if undone != _compensated(reference.calls):
            self.add(
                Check.RESUMED_AS_UNCRASHED,
                f"compensated {sorted(undone) or 'nothing'}, the uncrashed run "
                f"{sorted(_compensated(reference.calls)) or 'nothing'}",
            )

    def signals(self) -> None:
        """Each signal the explorer sent a `wait_for` was taken exactly once over both
        processes (the final log's SIGNAL_RECEIVED entries), and it was the one sent; a wait
        that ended without it (timed out, skipped) lost it."""
        final = self.run.final
        events = final.events if final is not None else ()
        for site in self.shape.waits:
            if site.signal_type is None:
                continue
            sent = self.run.signals_sent.get(site.key, _NOT_SENT)
            wrong = [
                s for s in self.run.signals_taken.get(site.key, []) if s is not sent and s != sent
            ]
            if wrong:
                self.add(
                    Check.SIGNAL_ONCE,
                    f"{site.label} took {_times(len(wrong))} a signal the explorer never sent it",
                )
            taken = Counter(
                signal_of(e)["signal_id"]
                for e in events
                if e.step_key == site.key and e.kind == _SIGNAL_RECEIVED
            )
            for signal_id, count in sorted(taken.items()):
                if count > 1:
                    self.add(
                        Check.SIGNAL_ONCE,
                        f"{site.label} took signal {signal_id} {_times(count)} over the crash and "
                        "recovery (its log lists it each time), not once",
                    )
            ended = any(e.step_key == site.key and e.kind in _GAVE_UP for e in events)
            if sent is not _NOT_SENT and not taken and ended:
                self.add(
                    Check.SIGNAL_ONCE,
                    f"{site.label} ended without the signal sent to it (stored before it gave up): "
                    "the signal was lost",
                )

    def past_pivot(self) -> bool:
        """Whether the saga got past its pivot: in the log at the crash (every step of the
        pivot item committed or skipped), or by what ran (an action after it started)."""
        shape, at_crash = self.shape, self.run.at_crash
        if shape.pivot is None:
            return False
        if shape.past_pivot(self.run.calls) is not None:
            return True
        item = shape.items[shape.pivot]
        keys = {site.key for site in (item.members if isinstance(item, Group) else (item,))}
        done = {
            event.step_key
            for event in (at_crash.events if at_crash is not None else ())
            if event.kind in _RESOLVES_STEP
        }
        return keys <= done

    def repeats(self) -> list[Call]:
        """Check repeated calls; return the compensation calls with an allowed repeat counted
        once (its last call), in the order they started."""
        doubt = InDoubt.of(self.run.at_crash)
        actions: dict[tuple[str, int], list[Call]] = defaultdict(list)
        undo: dict[tuple[str, int], list[Call]] = defaultdict(list)
        for call in self.run.calls:
            if call.site is None:
                continue
            if call.kind == "action":
                actions[(call.site.key, attempt_of(call))].append(call)
            elif call.kind == "compensation":
                undo[(call.site.key, attempt_of(call))].append(call)
        waits = {site.key for site in self.shape.waits}
        for (key, attempt), calls in actions.items():
            # a wait's attempt is seen when the engine announces it, which may be before its
            # STEP_STARTED is written: it may run again unless the log had its outcome
            doubted = (key, attempt) in doubt.attempts or (
                key in waits and (key, attempt) not in doubt.ended
            )
            self.repeated(calls, doubted, f"attempt {attempt} of ")
        kept: list[Call] = []
        for (key, attempt), calls in undo.items():
            what = "" if attempt == 1 else f"attempt {attempt} of "
            allowed = self.repeated(calls, (key, attempt) in doubt.compensations, what)
            kept.extend(calls[-1:] if allowed else calls)
        kept.sort(key=lambda call: call.started)
        return fold_retried(kept)

    def repeated(self, calls: list[Call], in_doubt: bool, what: str) -> bool:
        """Whether `calls` (of one attempt, or one compensation) are the one call they should
        be, or an allowed repeat: the call in flight at the crash, once more after it."""
        if len(calls) < 2:
            return False
        first = calls[0]
        label = f"{what}{first.label}"
        where = _where(calls)
        if not (len(calls) == 2 and first.process == 1 and calls[1].process == 2 and in_doubt):
            why = (
                ""
                if in_doubt or first.process != 1
                else "; its outcome was in the log at the crash"
            )
            self.add(Check.REPEATED_CALL, f"{label} ran {where}{why}")
            return False
        if first.key != calls[1].key:
            self.add(
                Check.IDEMPOTENCY_KEY,
                f"{label} ran again after the crash with idempotency key {calls[1].key!r}, not "
                f"{first.key!r}",
            )
        answer, again = _answer(first), _answer(calls[1])
        if answer is not None and answer != again:
            self.diverged.append(f"{label} answered {answer} first, {again} when repeated")
        return True

    def compensations(self, undo: list[Call]) -> None:
        final = self.run.final
        if final is None or final.status.unfinished:
            return
        counts = Counter(call.site.key for call in undo if call.site is not None)
        if self.past_pivot():
            for call in undo:
                self.add(
                    Check.PIVOT,
                    f"{call.label} ran though the pivot had committed: past the point of no "
                    "return nothing is compensated, after a crash as without one",
                )
            return
        if final.status is StoredStatus.COMPLETED:
            for call in undo:
                self.add(Check.UNCOMMITTED_COMPENSATED, f"the saga COMPLETED but ran {call.label}")
            return
        done = {
            c.site.key for c in self.run.calls if c.kind == "action" and c.site and committed(c)
        }
        doubt = InDoubt.of(self.run.at_crash)
        exact = True
        for site in self.shape.sites:
            count = counts.get(site.key, 0)
            if site.key in done:
                if site.compensable and count != 1:
                    exact = False
                    self.add(
                        Check.COMPENSATED_ONCE,
                        f"{site.label} committed and was compensated {_times(count)}, not once",
                    )
                continue
            maybe = self.run.policy is RecoveryPolicy.COMPENSATE and doubt.step(site.key)
            if count > (1 if maybe else 0):
                exact = False
                why = "its action never committed" + (
                    " (once would do: its attempt was in doubt at the crash)" if maybe else ""
                )
                self.add(
                    Check.UNCOMMITTED_COMPENSATED,
                    f"undo {site.label} ran {_times(count)} though {why}",
                )
        if exact:
            due = [site for site in self.shape.sites if counts.get(site.key, 0) == 1]
            self.found += check_compensation_order(self.scenario, self.shape, undo, due)


def check_recovery(
    scenario: Scenario, shape: Shape, run: Recovered, reference: Reference
) -> tuple[list[Violation], list[str]]:
    """Every broken promise of one crash and its recovery; and the repeated calls whose
    participant answered otherwise than the first time (the saga then legitimately takes
    another path than the uncrashed run, so `resumed-as-uncrashed` is not checked)."""
    checker = _Checker(scenario, shape, run, reference)
    return checker.check(), checker.diverged


def check_stored(
    scenario: Scenario,
    record: SagaRecord | None,
    data_class: type[AbstractSagaData],
    result: SagaResult[Any] | None,
) -> list[Violation]:
    """The uncrashed run's promises about the store: finished, released, with its data."""
    found: list[Violation] = []
    if record is None:
        return [Violation(Check.FINISHED_IN_STORE, scenario, "the saga is not in the store")]
    if record.status.unfinished or record.owner is not None:
        found.append(
            Violation(
                Check.FINISHED_IN_STORE,
                scenario,
                f"the run ended, but the saga is {record.status.value} in the store, owned by "
                f"{record.owner}",
            )
        )
    if result is not None:
        wrong = stored_data_violation(record, data_class, result.data, "the result's data")
        if wrong is not None:
            found.append(Violation(Check.STORED_DATA, scenario, wrong))
    return found


def stored_data_violation(
    record: SagaRecord, data_class: type[AbstractSagaData], expected: object, what: str
) -> str | None:
    """Why the record's data is not `expected`, or None when it is."""
    try:
        stored = decode(data_class, record.data)
    except Exception as error:
        return f"the stored data does not decode: {describe_error(error)}"
    if same_data(stored, expected):
        return None
    return f"the stored data is not {what}: {differences(stored, expected, 'stored', 'result')}"


def differences(got: object, expected: object, got_name: str, expected_name: str) -> str:
    """The fields in which two data objects differ: `ticket_id: stored None, result 1007`."""
    if not (dataclasses.is_dataclass(got) and dataclasses.is_dataclass(expected)):
        return f"{got_name} {got!r}, {expected_name} {expected!r}"
    names = [f.name for f in dataclasses.fields(got)]
    parts = [
        f"{name}: {got_name} {getattr(got, name, None)!r}, "
        f"{expected_name} {getattr(expected, name, None)!r}"
        for name in names
        if getattr(got, name, None) != getattr(expected, name, None)
    ]
    if type(got) is not type(expected):
        parts.insert(0, f"type: {type(got).__name__} vs {type(expected).__name__}")
    return "; ".join(parts) or "equal fields, unequal objects"


def _answer(call: Call) -> str | None:
    """How a call ended, to compare a repeat with: `returned`, `raised ValueError`; None when
    the crash cut it off (no answer to compare)."""
    if call.ended is None or isinstance(call.raised, asyncio.CancelledError):
        return None
    return "returned" if call.raised is None else f"raised {type(call.raised).__name__}"


def _attempts(calls: list[Call]) -> dict[str, list[int]]:
    """The attempt numbers each step ran (once each)."""
    attempts: dict[str, set[int]] = defaultdict(set)
    for call in calls:
        if call.kind == "action" and call.site is not None:
            attempts[call.site.label].add(attempt_of(call))
    return {label: sorted(numbers) for label, numbers in attempts.items()}


def _compensation_data(calls: list[Call]) -> dict[str, object]:
    """The data each compensation was last given, by step label."""
    return {c.site.label: c.data for c in calls if c.kind == "compensation" and c.site is not None}


def _compensated(calls: list[Call]) -> set[str]:
    return {c.site.label for c in calls if c.kind == "compensation" and c.site is not None}


def _where(calls: list[Call]) -> str:
    before = sum(call.process == 1 for call in calls)
    after = len(calls) - before
    parts = []
    if before:
        parts.append(f"{_times(before)} before the crash")
    if after:
        parts.append(f"{_times(after)} after it" if before else f"{_times(after)} after the crash")
    return " and ".join(parts)


def _times(count: int) -> str:
    return {0: "never", 1: "once", 2: "twice"}.get(count, f"{count} times")
