"""A saga's flow as the console draws it, with this run's path marked.

Drawn from the structure the saga recorded when it started (`SagaRecord.structure`: each
item's step and compensation names, group members, the pivot), so it is the flow this run
follows even when the application's flow changed since, and needs no `--app`. Each step is
marked by what its log says happened to it: committed, failed, skipped, compensated (or its
compensation failed), running (started, no outcome yet, the saga unfinished), in doubt
(started, no outcome, the saga finished: it may or may not have happened) or not run. The
console renders it as HTML boxes (no script, nothing fetched).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from spakky_saga.events import SagaEventKind
from spakky_saga.timeline import LoggedEvent

MARKS: Final = (
    "committed",
    "failed",
    "skipped",
    "compensated",
    "compensation-failed",
    "running",
    "in-doubt",
    "not-run",
)
"""Every mark a step can have, in the order the legend lists them."""

_FORWARD: Final = {
    SagaEventKind.STEP_STARTED.value: "started",
    SagaEventKind.STEP_COMMITTED.value: "committed",
    SagaEventKind.STEP_FAILED.value: "failed",
    SagaEventKind.STEP_SKIPPED.value: "skipped",
}
_BACKWARD: Final = {
    SagaEventKind.COMPENSATION_STARTED.value: "started",
    SagaEventKind.COMPENSATION_DONE.value: "compensated",
    SagaEventKind.COMPENSATION_FAILED.value: "compensation-failed",
}


@dataclass(frozen=True, slots=True)
class FlowBox:
    """One step of the flow: its names, whether it is the pivot, and this run's mark."""

    key: str
    step: str
    compensation: str | None
    mark: str
    attempts: int
    pivot: bool = False


@dataclass(frozen=True, slots=True)
class FlowItem:
    """One item of the flow: a step (one box) or a parallel group (its members' boxes)."""

    key: str
    boxes: tuple[FlowBox, ...]
    group: bool
    pivot: bool


def flow_items(
    structure: str, events: Sequence[LoggedEvent], *, finished: bool
) -> list[FlowItem] | None:
    """The flow the saga recorded (`structure`, its JSON), each step marked by `events` (its
    log); None when the structure cannot be read (a store written by hand)."""
    try:
        items = json.loads(structure)
        return [_item(item, _Marks(events, finished)) for item in items]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


class _Marks:
    """What the log says of each step key: its last forward and compensation outcome."""

    def __init__(self, events: Iterable[LoggedEvent], finished: bool) -> None:
        self.unended = "in-doubt" if finished else "running"
        self.forward: dict[str, str] = {}
        self.backward: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        for event in events:
            key = event.step_key
            if key is None:
                continue
            if event.kind in _FORWARD:  # the last one says (a skip follows a failure)
                self.forward[key] = _FORWARD[event.kind]
                self.attempts[key] = max(self.attempts.get(key, 0), event.attempt)
            elif event.kind in _BACKWARD:
                self.backward[key] = _BACKWARD[event.kind]

    def of(self, key: str) -> str:
        mark = self.backward.get(key) or self.forward.get(key) or "not-run"
        return self.unended if mark == "started" else mark


def _box(item: dict[str, Any], marks: _Marks) -> FlowBox:
    key = str(item["key"])
    compensation = item.get("compensation")
    return FlowBox(
        key=key,
        step=str(item["step"]),
        compensation=None if compensation is None else str(compensation),
        mark=marks.of(key),
        attempts=marks.attempts.get(key, 0),
        pivot=bool(item.get("pivot")),
    )


def _item(item: dict[str, Any], marks: _Marks) -> FlowItem:
    pivot = bool(item.get("pivot"))
    if "group" in item:
        members = tuple(_box(member, marks) for member in item["group"])
        return FlowItem(str(item["key"]), members, True, pivot)
    box = _box(item, marks)
    return FlowItem(box.key, (box,), False, pivot)
