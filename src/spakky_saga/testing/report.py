"""What `explore_failures` found: one outcome per failure point, and the broken promises.

An `ExplorationReport` is a frozen value a test asserts on (`report.ok`, `report.violations`,
`report.scenarios`) and prints: `str(report)` is a table of every scenario (what was injected,
how the run ended, which compensations ran, in order) followed by every violation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from spakky_saga._text import error_text
from spakky_saga.data import AbstractSagaData
from spakky_saga.flow import SagaFlow
from spakky_saga.result import SagaResult
from spakky_saga.saga import AbstractSaga


class Check(StrEnum):
    """The promises `explore_failures` checks after every run (see docs/testing.md)."""

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
    LEFT_RUNNING = "left-running"
    """Nothing the saga started is still running when the caller gets its outcome."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One failure point: what `explore_failures` injected into a run.

    `failing_step` raises on every attempt; `failing_compensation` names the step whose
    compensation raises; `hanging_step` never returns (until a timeout cuts it off);
    `cancelled_at` is the await point (1 = the first time the run suspends) at which the
    caller cancels. None everywhere is the baseline: the run without faults.
    """

    failing_step: str | None = None
    failing_compensation: str | None = None
    hanging_step: str | None = None
    cancelled_at: int | None = None

    @property
    def description(self) -> str:
        parts = []
        if self.failing_compensation is not None:
            parts.append(f"undo {self.failing_compensation} fails")
        if self.failing_step is not None:
            parts.append(f"{self.failing_step} fails")
        if self.hanging_step is not None:
            parts.append(f"{self.hanging_step} hangs")
        if self.cancelled_at is not None:
            parts.append(f"cancelled at await {self.cancelled_at}")
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

    `outcome` is the result's status (COMPLETED, FAILED, TIMED_OUT) or the name of what the
    run raised (SagaCompensationFailedError, CancelledError, ...). `result` is the run's
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
            f"{len(violations)} violation{'s' if len(violations) != 1 else ''}, "
            f"{self.elapsed.total_seconds() * 1000:.0f} ms"
        )
        rows = [("#", "scenario", "outcome", "compensated", "check")]
        for index, outcome in enumerate(self.scenarios, start=1):
            ended = outcome.outcome
            if outcome.failed_step is not None and ended in {"FAILED", "TIMED_OUT"}:
                ended = f"{ended} at {outcome.failed_step}"
            checks = sorted({str(v.check) for v in outcome.violations})
            rows.append(
                (
                    str(index),
                    outcome.scenario.description,
                    ended,
                    _compensations(outcome) or "-",
                    "ok" if outcome.ok else "VIOLATED " + ", ".join(checks),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [header, ""]
        for number, row in enumerate(rows):
            lines.append(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            )
            if number == 0:
                lines.append("  ".join("-" * width for width in widths))
        if violations:
            lines += ["", "Violations:"]
            lines += [f"- {violation}" for violation in violations]
        if self.notes:
            lines += ["", "Not explored:"]
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(line.rstrip() for line in lines)


def _compensations(outcome: ScenarioOutcome[Any]) -> str:
    failed = list(outcome.failed_compensations)
    shown = []
    for name in outcome.compensated:
        if name in failed:
            failed.remove(name)
            shown.append(f"{name} (failed)")
        else:
            shown.append(name)
    return ", ".join(shown)


def describe_error(error: BaseException | None) -> str:
    """`ValueError: text`, safe against a raising __str__; `-` for None."""
    return "-" if error is None else error_text(error)
