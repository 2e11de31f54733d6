"""What a run returns: a `SagaResult` (never an exception for a failed saga) and its history.

Field names, order of the documented fields, defaults and enum values are those of the
documented package, so results built or read by code written for it work unchanged; our extra
fields come after, with defaults.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, NamedTuple

from spakky_saga._text import error_text
from spakky_saga.data import AbstractSagaData
from spakky_saga.status import SagaStatus, StepStatus
from spakky_saga.timeline import format_timeline, mermaid_gantt, rows_from_history

ANONYMOUS: Final = "<anonymous>"
"""The saga name when none is given, as in the documented package."""

_ZERO: Final = timedelta(0)


class _RecordFields(NamedTuple):
    name: str
    status: StepStatus
    elapsed_seconds: float
    attempt: int
    compensation: bool
    error: BaseException | None
    offset_seconds: float


class StepRecord(_RecordFields):
    """One entry of a run's history, in the order things happened.

    `StepRecord(name, status, elapsed)` as documented; `attempt` counts retries (1 for the
    first try), `compensation` is True for records about running a compensation, `error` is
    the exception of a failed record, and `offset` is when it started, relative to the start
    of the saga. A tuple underneath, holding seconds: the engine records a step for the cost
    of a tuple, and `elapsed` / `offset` become `timedelta`s when read.
    """

    __slots__ = ()

    def __new__(  # noqa: PLR0917 - the documented positional order
        cls,
        name: str,
        status: StepStatus,
        elapsed: timedelta = _ZERO,
        attempt: int = 1,
        compensation: bool = False,
        error: BaseException | None = None,
        offset: timedelta = _ZERO,
    ) -> StepRecord:
        return tuple.__new__(
            cls,
            (
                name,
                status,
                _seconds(elapsed, "elapsed"),
                attempt,
                compensation,
                error,
                _seconds(offset, "offset"),
            ),
        )

    @property
    def elapsed(self) -> timedelta:
        """How long the attempt or compensation took."""
        return timedelta(seconds=self.elapsed_seconds)

    @property
    def offset(self) -> timedelta:
        """When it started, counted from the start of the saga."""
        return timedelta(seconds=self.offset_seconds)

    def __repr__(self) -> str:
        return (
            f"StepRecord(name={self.name!r}, status={self.status!r}, elapsed={self.elapsed!r}, "
            f"attempt={self.attempt}, compensation={self.compensation}, "
            f"error={'None' if self.error is None else error_text(self.error)!s})"
        )


def _seconds(value: timedelta | float, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"StepRecord({what}={value!r}): expected a datetime.timedelta")


_new_tuple: Final = tuple.__new__


def record_of(  # noqa: PLR0917 - positional on purpose: called on every step
    name: str,
    status: StepStatus,
    elapsed_seconds: float,
    attempt: int,
    compensation: bool,
    error: BaseException | None,
    offset_seconds: float,
) -> StepRecord:
    """A record from the seconds the engine measures, without `StepRecord.__new__`'s
    conversions: the engine records every step, and this is the one place besides
    `__new__` that knows the field order."""
    return _new_tuple(
        StepRecord,
        (name, status, elapsed_seconds, attempt, compensation, error, offset_seconds),
    )


@dataclass(frozen=True, slots=True)
class SagaResult[D: AbstractSagaData]:
    """The outcome of a saga run.

    `data` is the latest data: the final data when COMPLETED, the data at the failure point
    otherwise. `failed_step` and `error` name the step that failed and why (None when
    COMPLETED). `elapsed` is the run's wall time. `saga_name` is the name it ran under and
    `skipped` the steps whose failure a `Skip` strategy let pass.
    """

    status: SagaStatus
    data: D
    failed_step: str | None = None
    error: BaseException | None = None
    history: tuple[StepRecord, ...] = ()
    elapsed: timedelta = _ZERO
    saga_name: str = ANONYMOUS
    skipped: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        """True when the saga completed (every step committed or was skipped)."""
        return self.status is SagaStatus.COMPLETED

    @property
    def compensation_failures(self) -> tuple[StepRecord, ...]:
        """The compensations that raised during rollback, in the order they ran."""
        return tuple(r for r in self.history if r.compensation and r.status is StepStatus.FAILED)

    def format_timeline(self, *, pivot: Collection[str] = ()) -> str:
        """The run as a timeline: step, status, attempt, start offset, elapsed, error; the
        attempts of the steps named in `pivot` (the flow's `pivot_steps`) say `(pivot)`."""
        return format_timeline(rows_from_history(self.history), pivot=pivot)

    def to_mermaid_gantt(self) -> str:
        """The run as a Mermaid gantt chart (GitHub renders it in Markdown)."""
        return mermaid_gantt(rows_from_history(self.history), self.saga_name)

    def format_history(self) -> str:
        """The history as a plain-text table, for logs and the demo."""
        rows = [("#", "step", "status", "attempt", "elapsed", "error")]
        for index, record in enumerate(self.history, start=1):
            name = f"undo {record.name}" if record.compensation else record.name
            rows.append(
                (
                    str(index),
                    name,
                    record.status.value.lower(),
                    str(record.attempt),
                    f"{record.elapsed_seconds * 1000:.2f}ms",
                    "" if record.error is None else error_text(record.error),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(line.rstrip() for line in lines)
