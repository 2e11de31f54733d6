"""What the explorers found: one outcome per failure (or crash) point, and the broken promises.

An `ExplorationReport` (`explore_failures`) or `CrashReport` (`explore_crashes`) is a frozen
value a test asserts on (`report.ok`, `report.violations`, its outcomes) and prints:
`str(report)` is a table of every scenario (what was injected, how the run ended, which
compensations ran, in order) followed by every violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum

from spakky_saga._text import error_text
from spakky_saga.data import AbstractSagaData
from spakky_saga.flow import SagaFlow
from spakky_saga.recovery import RecoveredSaga, RecoveryPolicy
from spakky_saga.result import SagaResult
from spakky_saga.saga import AbstractSaga
from spakky_saga.store import SagaRecord


class Check(StrEnum):
    """The promises the explorers check (see docs/testing.md): `explore_failures` after every
    run; `explore_crashes` the uncrashed run's with them, and after every crash and recovery
    the compensation checks with its own (from `write-ahead` on)."""

    BASELINE = "baseline"
    """The saga completes when no fault is injected (the other scenarios start from there)."""
    OUTCOME = "outcome"
    """The caller gets a result, SagaCompensationFailedError exactly when a compensation
    failed, and CancelledError exactly when it cancelled."""
    STATUS = "status"
    """The result's status, failed step, error, skipped steps and data agree with what ran."""
    HISTORY = "history"
    """Every action and compensation call has its history record, and every record its call."""
    COMPENSATED_ONCE = "compensated-once"
    """A rolled-back saga compensates each committed compensable step exactly once."""
    UNCOMMITTED_COMPENSATED = "uncommitted-compensated"
    """Nothing uncommitted is compensated; a completed saga compensates nothing."""
    COMPENSATION_ORDER = "compensation-order"
    """Compensations run one at a time in reverse commit order (a parallel group's members in
    reverse declaration order, or together for compensation_order="concurrent")."""
    COMPENSATION_DATA = "compensation-data"
    """Every compensation gets the latest data: the data the saga had when rollback started."""
    FAILURE_REPORTED = "failure-reported"
    """A failed compensation reaches the caller in SagaCompensationFailedError.failures."""
    FAILURE_HANDLER = "failure-handler"
    """The flow's compensation-failure handler runs once, after the rollback, with the latest
    data, exactly when a compensation failed."""
    COMPENSATION_RAISED = "compensation-raised"
    """A compensation raised an error nobody injected: it fails on the data it is given."""
    SIGNAL_ONCE = "signal-once"
    """A `wait_for` takes the signal the explorer sent it exactly once if it committed,
    never if it timed out, and nothing when no signal was sent; over a crash, exactly once
    across both processes, and never lost (ended without it after it was stored)."""
    LEFT_RUNNING = "left-running"
    """Nothing the saga started is still running when the caller gets its outcome."""
    WRITE_AHEAD = "write-ahead"
    """A killed engine starts nothing after its last write: every action and compensation is
    in the log before it runs."""
    RECOVERED = "recovered"
    """`recover()` returns, and its report lists the saga exactly when it was unfinished at
    the crash, with the outcome it ended with (never refused or stopped); under COMPENSATE an
    unfinished saga is compensated, not completed."""
    FINISHED_IN_STORE = "finished-in-store"
    """After recovery the saga is finished in the store (not RUNNING or COMPENSATING) and
    nobody owns it."""
    STORED_DATA = "stored-data"
    """The stored row's data is the result's data."""
    RESUMED_AS_UNCRASHED = "resumed-as-uncrashed"
    """Under RESUME the saga ends as the uncrashed run did: status, failed step, data, skipped
    steps, attempts of each step, compensated steps."""
    REPEATED_CALL = "repeated-call"
    """No attempt or compensation runs twice, except the one in flight at the crash (its
    outcome was not in the log), once more after it."""
    IDEMPOTENCY_KEY = "idempotency-key"
    """An attempt or compensation run again after a crash has the same idempotency key."""
    PIVOT = "pivot"
    """Once the flow's pivot (its point of no return) committed, nothing is compensated, and
    a saga that cannot go on ends STUCK (never FAILED or TIMED_OUT); STUCK only past it."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One failure point: what `explore_failures` injected into a run.

    `failing_step` raises on every attempt; `failing_compensation` names the step whose
    compensation raises; `hanging_step` never returns (until a timeout cuts it off);
    `unsignalled_wait` names the `wait_for` whose signal is never sent (so it times out);
    `cancelled_at` is the await point (1 = the first time the run suspends) at which the
    caller cancels. None everywhere is the baseline: the run without faults.
    """

    failing_step: str | None = None
    failing_compensation: str | None = None
    hanging_step: str | None = None
    cancelled_at: int | None = None
    unsignalled_wait: str | None = None
    step_failures: int | None = None
    """`failing_step` fails its first attempts only (None: every attempt)."""
    compensation_failures: int | None = None
    """`failing_compensation` fails its first calls only (None: every call)."""
    crashed_at: int | None = None
    """`explore_crashes`: the engine was killed at its `crashed_at`th write to the store..."""
    write_lost: bool = False
    """...after that write (False), or just before it, the write lost (True)."""
    recovery: RecoveryPolicy | None = None
    """`explore_crashes`: the policy the saga was recovered by."""

    @property
    def description(self) -> str:
        parts = []
        if self.failing_compensation is not None:
            parts.append(
                f"undo {self.failing_compensation} fails{_times(self.compensation_failures)}"
            )
        if self.failing_step is not None:
            parts.append(f"{self.failing_step} fails{_times(self.step_failures)}")
        if self.hanging_step is not None:
            parts.append(f"{self.hanging_step} hangs")
        if self.unsignalled_wait is not None:
            parts.append(f"{self.unsignalled_wait} gets no signal")
        if self.cancelled_at is not None:
            parts.append(f"cancelled at await {self.cancelled_at}")
        if self.crashed_at is not None:
            when = "before" if self.write_lost else "after"
            parts.append(f"killed {when} write {self.crashed_at}")
        if self.recovery is not None:
            parts.append(self.recovery.name)
        return ", ".join(parts) or "no fault"

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken promise: which `check`, in which scenario, and what exactly was wrong."""

    check: Check
    scenario: Scenario
    message: str

    def __str__(self) -> str:
        return f"[{self.scenario}] {self.check}: {self.message}"


@dataclass(frozen=True, slots=True)
class ScenarioOutcome[D: AbstractSagaData]:
    """How one scenario's run ended.

    `outcome` is the result's status (COMPLETED, FAILED, TIMED_OUT, STUCK) or the name of what
    the run raised (SagaCompensationFailedError, CancelledError, ...). `result` is the run's
    `SagaResult` (the one a SagaCompensationFailedError carries, too), `raised` what the run
    raised, `ran` every call in the order it started (`undo NAME` for compensations),
    `compensated` the steps whose compensation ran, in order, and `failed_compensations` those
    whose compensation raised. `subject` is the saga (or flow) the run used: the factory's
    product for this run when `explore_failures` was given a factory, so a test can look at
    the services it held afterwards.
    """

    scenario: Scenario
    outcome: str
    result: SagaResult[D] | None
    raised: BaseException | None
    ran: tuple[str, ...]
    compensated: tuple[str, ...]
    failed_compensations: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    subject: SagaFlow[D] | AbstractSaga[D] | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def failed_step(self) -> str | None:
        return self.result.failed_step if self.result is not None else None


@dataclass(frozen=True, slots=True)
class ExplorationReport[D: AbstractSagaData]:
    """Everything `explore_failures` ran and found.

    `scenarios` holds each failure point's outcome, baseline first; `notes` the failure
    points that could not be explored (and why); `elapsed` the real time it all took.
    """

    saga_name: str
    scenarios: tuple[ScenarioOutcome[D], ...]
    notes: tuple[str, ...] = ()
    elapsed: timedelta = field(default=timedelta(0))

    @property
    def ok(self) -> bool:
        """True when no scenario broke a promise."""
        return all(outcome.ok for outcome in self.scenarios)

    @property
    def violations(self) -> tuple[Violation, ...]:
        """Every broken promise, scenario by scenario."""
        return tuple(v for outcome in self.scenarios for v in outcome.violations)

    def scenario(self, description: str) -> ScenarioOutcome[D]:
        """The outcome of the scenario described as `description` (as in the table)."""
        for outcome in self.scenarios:
            if outcome.scenario.description == description:
                return outcome
        known = ", ".join(repr(o.scenario.description) for o in self.scenarios[:8])
        raise KeyError(f"no scenario {description!r} was explored (first ones: {known}, ...)")

    def assert_ok(self) -> None:
        """Raise AssertionError showing the whole report unless every promise was kept."""
        if not self.ok:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        violations = self.violations
        header = (
            f"explore_failures({self.saga_name}): {len(self.scenarios)} scenarios, "
            f"{_count(len(violations), 'violation')}, {_ms(self.elapsed)}"
        )
        rows = [("#", "scenario", "outcome", "compensated", "check")]
        for index, outcome in enumerate(self.scenarios, start=1):
            ended = outcome.outcome
            if outcome.failed_step is not None and ended in {"FAILED", "TIMED_OUT"}:
                ended = f"{ended} at {outcome.failed_step}"
            rows.append(
                (
                    str(index),
                    outcome.scenario.description,
                    ended,
                    _compensations(outcome.compensated, outcome.failed_compensations) or "-",
                    _verdict(outcome.violations),
                )
            )
        return _table(header, rows, violations, self.notes)


@dataclass(frozen=True, slots=True)
class CrashOutcome[D: AbstractSagaData]:
    """One crash point, recovered by one policy: how the saga ended.

    `write` is what the engine's crash-point write held (`begin`/`append`, the log entries,
    the row's new status), `at_crash` the saga's stored status when the engine died (`-`
    when it was not in the store yet), `outcome` its stored status after recovery.
    `recovered` is what `recover()` reported for it (None when it had nothing to recover),
    `result` that saga's result, `record` the stored saga after recovery (with its log).
    `ran` is every call in the order it started, `| killed |` marking where the engine died
    and a new one took over; `compensated` the steps whose compensation ran (both engines).
    `subject` is the saga (or flow) both engines ran: its services are the outside world,
    which outlives the killed process, so a test can look at them afterwards.
    """

    scenario: Scenario
    write: str
    at_crash: str
    outcome: str
    recovered: RecoveredSaga | None
    result: SagaResult[D] | None
    record: SagaRecord | None
    ran: tuple[str, ...]
    compensated: tuple[str, ...]
    failed_compensations: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    subject: SagaFlow[D] | AbstractSaga[D] | None = None

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True, slots=True)
class CrashScenario[D: AbstractSagaData]:
    """One scenario `explore_crashes` explored: its run without a crash (checked with
    `explore_failures`'s promises, the reference every recovery under RESUME must end like),
    what each of that run's writes to the store held, in order (the crash points), and one
    outcome per crash point and recovery policy."""

    uncrashed: ScenarioOutcome[D]
    writes: tuple[str, ...]
    crashes: tuple[CrashOutcome[D], ...]


@dataclass(frozen=True, slots=True)
class CrashReport[D: AbstractSagaData]:
    """Everything `explore_crashes` ran and found.

    `scenarios` holds each scenario explored: the one asked for (every signal sent) first,
    then, for a flow with waits, one per `wait_for` with a timeout in which that wait gets no
    signal. `uncrashed` and `writes` are the first scenario's; `crashes` holds every crash
    outcome, scenario by scenario; `notes` what could not be explored; `elapsed` the real
    time it took.
    """

    saga_name: str
    scenarios: tuple[CrashScenario[D], ...]
    notes: tuple[str, ...] = ()
    elapsed: timedelta = field(default=timedelta(0))

    @property
    def uncrashed(self) -> ScenarioOutcome[D]:
        """The first scenario's run without a crash (every signal sent)."""
        return self.scenarios[0].uncrashed

    @property
    def writes(self) -> tuple[str, ...]:
        """What each write of the first scenario's uncrashed run held (its crash points)."""
        return self.scenarios[0].writes

    @property
    def crashes(self) -> tuple[CrashOutcome[D], ...]:
        """One outcome per crash point and recovery policy, of every scenario."""
        return tuple(outcome for scenario in self.scenarios for outcome in scenario.crashes)

    @property
    def ok(self) -> bool:
        """True when no uncrashed run and no crash broke a promise."""
        return not self.violations

    @property
    def violations(self) -> tuple[Violation, ...]:
        """Every broken promise, scenario by scenario: its uncrashed run's, then crash point
        by crash point."""
        return tuple(
            v
            for scenario in self.scenarios
            for v in scenario.uncrashed.violations
            + tuple(v for outcome in scenario.crashes for v in outcome.violations)
        )

    def scenario(self, description: str) -> CrashScenario[D]:
        """The scenario described as `description` ("no fault", "wait_for(Paid) gets no
        signal": its uncrashed run's scenario)."""
        for scenario in self.scenarios:
            if scenario.uncrashed.scenario.description == description:
                return scenario
        known = ", ".join(repr(s.uncrashed.scenario.description) for s in self.scenarios)
        raise KeyError(f"no scenario {description!r} was explored (they are: {known})")

    def crash(self, description: str) -> CrashOutcome[D]:
        """The outcome of the crash described as `description` (as in the table)."""
        crashes = self.crashes
        for outcome in crashes:
            if outcome.scenario.description == description:
                return outcome
        known = ", ".join(repr(o.scenario.description) for o in crashes[:4])
        raise KeyError(f"no crash {description!r} was explored (first ones: {known}, ...)")

    def assert_ok(self) -> None:
        """Raise AssertionError showing the whole report unless every promise was kept."""
        if not self.ok:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        violations = self.violations
        crashes = self.crashes
        several = len(self.scenarios) > 1
        totals = (
            f"{_count(len(crashes), 'crash')}, {_count(len(violations), 'violation')}, "
            f"{_ms(self.elapsed)}"
        )
        if several:
            header = [
                f"explore_crashes({self.saga_name}): {len(self.scenarios)} scenarios, {totals}"
            ]
        else:
            header = [
                f"explore_crashes({self.saga_name}): {self.uncrashed.scenario.description}, "
                f"{_count(len(self.writes), 'write')}, {totals}"
            ]
        for explored in self.scenarios:
            base = explored.uncrashed
            header.append(
                "uncrashed"
                + (f", {base.scenario.description}" if several else "")
                + f": {base.outcome}"
                + (f" at {base.failed_step}" if base.failed_step is not None else "")
                + f" ({_verdict(base.violations)})"
                + (f", {_count(len(explored.writes), 'write')}" if several else "")
            )
        columns = ("#", "crash", "write", "at crash", "recovered", "compensated", "check")
        rows: list[tuple[str, ...]] = [(("scenario",) if several else ()) + columns]
        for index, outcome in enumerate(crashes, start=1):
            point = outcome.scenario
            when = "before" if point.write_lost else "after"
            policy = point.recovery.name if point.recovery is not None else "-"
            asked = replace(point, crashed_at=None, write_lost=False, recovery=None)
            rows.append(
                ((asked.description,) if several else ())
                + (
                    str(index),
                    f"{when} {point.crashed_at}, {policy}",
                    outcome.write,
                    outcome.at_crash,
                    outcome.outcome,
                    _compensations(outcome.compensated, outcome.failed_compensations) or "-",
                    _verdict(outcome.violations),
                )
            )
        return _table("\n".join(header), rows, violations, self.notes)


def _table(
    header: str,
    rows: Sequence[tuple[str, ...]],
    violations: tuple[Violation, ...],
    notes: tuple[str, ...],
) -> str:
    """A report: its header, a table whose first row names the columns, the violations and
    the notes."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [header, ""]
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    if violations:
        lines += ["", "Violations:"]
        lines += [f"- {violation}" for violation in violations]
    if notes:
        lines += ["", "Not explored:"]
        lines += [f"- {note}" for note in notes]
    return "\n".join(line.rstrip() for line in lines)


def _verdict(violations: tuple[Violation, ...]) -> str:
    if not violations:
        return "ok"
    return "VIOLATED " + ", ".join(sorted({str(v.check) for v in violations}))


def _count(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 'es' if what.endswith('sh') else 's'}"


def _ms(elapsed: timedelta) -> str:
    return f"{elapsed.total_seconds() * 1000:.0f} ms"


def _times(count: int | None) -> str:
    if count is None:
        return ""
    return {1: " once", 2: " twice"}.get(count, f" {count} times")


def _compensations(compensated: tuple[str, ...], failed_ones: tuple[str, ...]) -> str:
    failed = list(failed_ones)
    shown = []
    for name in compensated:
        if name in failed:
            failed.remove(name)
            shown.append(f"{name} (failed)")
        else:
            shown.append(name)
    return ", ".join(shown)


def describe_error(error: BaseException | None) -> str:
    """`ValueError: text`, safe against a raising __str__; `-` for None."""
    return "-" if error is None else error_text(error)
