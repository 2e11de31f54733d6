"""What a run returns: a `SagaResult` (never an exception for a failed saga) and its history."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from spakky_saga.data import AbstractSagaData


class SagaStatus(Enum):
    """Where a saga run is, or how it ended."""

    STARTED = "started"
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class StepStatus(Enum):
    """What happened to one step attempt or compensation."""

    COMMITTED = "committed"
    """The action succeeded."""
    FAILED = "failed"
    """The action (or, with `compensation=True`, the compensation) raised."""
    COMPENSATED = "compensated"
    """The compensation of a committed action succeeded."""


class StepRecord(NamedTuple):
    """One entry of a run's history, in the order things happened.

    `attempt` counts retries (1 for the first try). `compensation` is True for records about
    running a compensation. `error` is the exception of a failed record. A named tuple, so
    the engine records a step for the cost of a tuple.
    """

    name: str
    status: StepStatus
    elapsed: float
    """Seconds the attempt took."""
    attempt: int = 1
    compensation: bool = False
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class SagaResult[D: AbstractSagaData]:
    """The outcome of a saga run.

    `data` is the latest data: the final data when COMPLETED, the data at the failure point
    otherwise. `failed_step` and `error` name the step that failed and why (None when
    COMPLETED). `elapsed` is the run's wall time in seconds.
    """

    saga_name: str
    status: SagaStatus
    data: D
    history: tuple[StepRecord, ...]
    elapsed: float
    failed_step: str | None = None
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        """True when the saga completed (every step committed or was skipped)."""
        return self.status is SagaStatus.COMPLETED

    @property
    def compensation_failures(self) -> tuple[StepRecord, ...]:
        """The compensations that raised during rollback, in the order they ran."""
        return tuple(r for r in self.history if r.compensation and r.status is StepStatus.FAILED)

    def format_history(self) -> str:
        """The history as a plain-text table, for logs and the demo."""
        rows = [("#", "step", "status", "attempt", "elapsed", "error")]
        for index, record in enumerate(self.history, start=1):
            name = f"undo {record.name}" if record.compensation else record.name
            rows.append(
                (
                    str(index),
                    name,
                    record.status.value,
                    str(record.attempt),
                    f"{record.elapsed * 1000:.2f}ms",
                    ""
                    if record.error is None
                    else f"{type(record.error).__name__}: {record.error}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(line.rstrip() for line in lines)
