"""A saga run as a timeline: one row per attempt or compensation, from a result's history or
from a durable saga's log, rendered as text or as a Mermaid gantt chart.

The same renderer serves `SagaResult.format_timeline()`, the demo, and the operations CLI's
`show`, so a run looks the same whether it is in memory or read back from a store.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import NamedTuple, Protocol

from spakky_saga._text import error_text
from spakky_saga.events import SagaEventKind
from spakky_saga.status import StepStatus


class LoggedEvent(Protocol):
    """What a timeline reads of a saga log's entry (`store.StoredEvent` has it)."""

    @property
    def kind(self) -> str: ...
    @property
    def at(self) -> float: ...
    @property
    def step_key(self) -> str | None: ...
    @property
    def step(self) -> str | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


class HistoryRecord(Protocol):
    """What a timeline reads of a history record (`StepRecord` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> StepStatus: ...
    @property
    def attempt(self) -> int: ...
    @property
    def compensation(self) -> bool: ...
    @property
    def error(self) -> BaseException | None: ...
    @property
    def offset_seconds(self) -> float: ...
    @property
    def elapsed_seconds(self) -> float: ...


class TimelineRow(NamedTuple):
    """One attempt or compensation: where it started (seconds from the saga's start), how long
    it took, and how it ended ("COMMITTED", "FAILED", "COMPENSATED"; for one whose outcome the
    log does not have, "RUNNING" while the saga is unfinished and "IN_DOUBT" once it finished:
    it may or may not have happened)."""

    step: str
    status: str
    attempt: int
    start: float
    elapsed: float
    error: str = ""
    compensation: bool = False

    @property
    def label(self) -> str:
        return f"undo {self.step}" if self.compensation else self.step


def rows_from_history(history: Iterable[HistoryRecord]) -> list[TimelineRow]:
    """A result's history as timeline rows."""
    return [
        TimelineRow(
            record.name,
            record.status.value,
            record.attempt,
            record.offset_seconds,
            record.elapsed_seconds,
            "" if record.error is None else error_text(record.error),
            record.compensation,
        )
        for record in history
    ]


_ENDS = {
    SagaEventKind.STEP_COMMITTED.value: ("COMMITTED", False),
    SagaEventKind.STEP_FAILED.value: ("FAILED", False),
    SagaEventKind.COMPENSATION_DONE.value: ("COMPENSATED", True),
    SagaEventKind.COMPENSATION_FAILED.value: ("FAILED", True),
}
_STARTS = {
    SagaEventKind.STEP_STARTED.value: False,
    SagaEventKind.COMPENSATION_STARTED.value: True,
}


def rows_from_events(events: Sequence[LoggedEvent], *, finished: bool = False) -> list[TimelineRow]:
    """A durable saga's log as timeline rows. An attempt or compensation that started and has
    no outcome is a RUNNING row while the saga is unfinished (it may still be running), and an
    IN_DOUBT row once the saga `finished` (its engine died while it ran: it may or may not have
    happened, and nothing runs it any more)."""
    if not events:
        return []
    unended = "IN_DOUBT" if finished else "RUNNING"
    origin = events[0].at
    rows: list[TimelineRow] = []
    open_rows: dict[tuple[str | None, int, bool], tuple[int, float]] = {}
    for event in events:
        if event.kind in _STARTS:
            compensation = _STARTS[event.kind]
            key = (event.step_key, event.attempt, compensation)
            open_rows[key] = (len(rows), event.at - origin)
            rows.append(
                TimelineRow(
                    event.step or "-",
                    unended,
                    event.attempt,
                    event.at - origin,
                    0.0,
                    compensation=compensation,
                )
            )
        elif event.kind in _ENDS:
            status, compensation = _ENDS[event.kind]
            error = "" if event.error_type is None else f"{event.error_type}: {event.error}"
            key = (event.step_key, event.attempt, compensation)
            start = event.at - origin - event.elapsed
            row = TimelineRow(
                event.step or "-",
                status,
                event.attempt,
                max(0.0, start),
                event.elapsed,
                error,
                compensation,
            )
            opened = open_rows.pop(key, None)
            if opened is None:
                rows.append(row)
            else:
                rows[opened[0]] = row._replace(start=opened[1])
    return rows


def format_timeline(rows: Sequence[TimelineRow], *, pivot: Collection[str] = ()) -> str:
    """The rows as a plain-text table: step, status, attempt, start offset, elapsed, error.
    The attempts of the steps named in `pivot` (the flow's point of no return: a step, or a
    group's members) say `(pivot)`."""
    table = [("#", "step", "status", "attempt", "start", "elapsed", "error")]
    for index, row in enumerate(rows, start=1):
        marked = row.step in pivot and not row.compensation
        table.append(
            (
                str(index),
                f"{row.label} (pivot)" if marked else row.label,
                row.status.lower().replace("_", " "),
                str(row.attempt),
                f"+{format_duration(row.start)}",
                format_duration(row.elapsed),
                row.error,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_duration(seconds: float) -> str:
    """A duration a reader takes in at a glance: `12.50ms` under a second, `46.75s` under a
    minute, `2min 3s` under an hour, `1h 2min` beyond."""
    if seconds < 1:
        return f"{seconds * 1000:.2f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}min {whole % 60}s"
    return f"{whole // 3600}h {whole % 3600 // 60}min"


def mermaid_gantt(rows: Sequence[TimelineRow], title: str = "saga") -> str:
    """The rows as a Mermaid gantt chart (milliseconds from the saga's start)."""
    lines = ["gantt", f"    title {_clean(title)}", "    dateFormat x", "    axisFormat %L ms"]
    section = None
    for index, row in enumerate(rows, start=1):
        wanted = "compensation" if row.compensation else "forward"
        if wanted != section:
            section = wanted
            lines.append(f"    section {section}")
        tag = {"FAILED": "crit, ", "RUNNING": "active, ", "IN_DOUBT": "active, "}.get(
            row.status, ""
        )
        start = round(row.start * 1000)
        end = max(start + 1, round((row.start + row.elapsed) * 1000))
        name = _clean(f"{row.label} attempt {row.attempt}" if row.attempt > 1 else row.label)
        lines.append(f"    {name} ({row.status.lower()}) :{tag}r{index}, {start}, {end}")
    return "\n".join(lines)


def _clean(text: str) -> str:
    """Mermaid treats `:`, `;` and `#` specially in task names; keep the text readable."""
    return text.replace(":", " ").replace(";", " ").replace("#", " ")
