"""Flows drawn as Mermaid flowcharts: what runs in what order, and what undoes what.

Drawn from the flow's definition alone: nothing runs and no engine is involved. A node's id
comes from its item's position in the flow (`s2_1` is the first member of the group in second
place, `c2_1` its compensation), so ids are valid and unique whatever the steps are called;
names appear only in labels, escaped so that no name can break or inject Mermaid syntax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from spakky_saga._text import safe_repr
from spakky_saga.flow import (
    Parallel,
    SagaFlow,
    SagaStep,
    Transaction,
    callable_name,
    format_duration,
)
from spakky_saga.strategy import DEFAULT_STRATEGY

type Direction = Literal["TD", "LR"]
"""Top-down (the default) or left-to-right."""

DIRECTIONS: Final[tuple[Direction, ...]] = ("TD", "LR")


def to_mermaid(flow: SagaFlow[Any], *, direction: Direction = "TD") -> str:
    """`flow` as a Mermaid flowchart (the text, without a ```mermaid fence).

    From a `start` node (labelled with the saga timeout and compensation failure handler, when
    set) to a `completed` node: each step is a box showing its name and, when set, its error
    strategy (`Retry(3)`, `Skip()`) and timeout; a parallel group forks into its members and
    joins (or merges) after them; each action has a dotted `compensate` edge to a rounded,
    dashed box naming its compensation (and its own policy and timeout, when set). A
    read-only step says so; a wait (`wait_for`, `sleep`) is a hexagon, with its timeout and
    what a timeout means; the pivot (the point of no return) is drawn with a thick border
    and `pivot (point of no return)` (on a group, on its join). The same flow always
    gives the same text.
    """
    if not isinstance(flow, SagaFlow):
        raise TypeError(
            f"to_mermaid() draws a SagaFlow, got {safe_repr(flow)}; build one with "
            "saga_flow(...), or call a saga's flow()"
        )
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'TD' or 'LR' (left to right), got {direction!r}")
    chart = _Chart()
    start_lines = ["start"]
    if flow.saga_timeout is not None:
        start_lines.append(f"saga timeout {format_duration(flow.saga_timeout)}")
    handler = flow.compensation_failure_handler
    if handler is not None:
        start_lines.append(f"on compensation failure → {callable_name(handler)}")
    chart.node("start", "([", "])", *start_lines)
    previous = "start"
    for position, item in enumerate(flow.items, start=1):
        if isinstance(item, Parallel):
            previous = chart.group(item, str(position), previous)
        else:
            chart.edge(previous, chart.step(item, str(position)))
            previous = f"s{position}"
    chart.node("finish", "([", "])", "completed")
    chart.edge(previous, "finish")
    return chart.text(direction)


@dataclass
class _Chart:
    """The lines of a flowchart, collected in flow order."""

    nodes: list[str] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)
    compensation_edges: list[str] = field(default_factory=list)
    compensations: list[str] = field(default_factory=list)
    pivot: str | None = None
    """The node id of the pivot (a step, or a group's join)."""

    def node(self, node_id: str, opening: str, closing: str, *lines: str) -> None:
        self.nodes.append(f'{node_id}{opening}"{_label(lines)}"{closing}')

    def edge(self, source: str, target: str) -> None:
        self.edges.append(f"{source} --> {target}")

    def step(self, item: SagaStep[Any] | Transaction[Any], key: str) -> str:
        """Add a step's box (and its compensation's); return the step's node id."""
        step_id = f"s{key}"
        lines = [item.name]
        if item.waits:
            return self.wait(item, step_id)
        if item.on_error != DEFAULT_STRATEGY:
            lines.append(safe_repr(item.on_error))
        if item.timeout is not None:
            lines.append(f"timeout {format_duration(item.timeout)}")
        if item.read_only:
            lines.append("read-only")
        if item.pivot:
            lines.append(_PIVOT_LINE)
            self.pivot = step_id
        self.node(step_id, "[", "]", *lines)
        if isinstance(item, Transaction):
            undo_id = f"c{key}"
            undo_lines = [item.compensation_name]
            if item.compensation_strategy != DEFAULT_STRATEGY:
                undo_lines.append(safe_repr(item.compensation_strategy))
            if item.compensation_timeout is not None:
                undo_lines.append(f"timeout {format_duration(item.compensation_timeout)}")
            self.node(undo_id, "(", ")", *undo_lines)
            self.compensation_edges.append(f"{step_id} -.->|compensate| {undo_id}")
            self.compensations.append(undo_id)
        return step_id

    def wait(self, item: SagaStep[Any] | Transaction[Any], step_id: str) -> str:
        """A wait's box, a hexagon: what it waits for and, for a `wait_for` with a timeout,
        the timeout and what it means (its strategy)."""
        lines = [item.name, *item.wait_details]
        if item.pivot:
            lines.append(_PIVOT_LINE)
            self.pivot = step_id
        self.node(step_id, "{{", "}}", *lines)
        return step_id

    def group(self, group: Parallel[Any], key: str, previous: str) -> str:
        """Add a fork, the members and a join after `previous`; return the join's node id."""
        fork_id, join_id = f"fork{key}", f"join{key}"
        fork_lines = ["parallel"]
        if group.compensation_order == "concurrent":
            fork_lines.append("compensated concurrently")
        self.node(fork_id, "[/", "\\]", *fork_lines)
        self.edge(previous, fork_id)
        members = [
            self.step(member, f"{key}_{index}") for index, member in enumerate(group.items, 1)
        ]
        for member_id in members:
            self.edge(fork_id, member_id)
        join_lines = ["join"] if group.merge is None else ["merge", callable_name(group.merge)]
        if group.pivot:
            join_lines.append(_PIVOT_LINE)
            self.pivot = join_id
        self.node(join_id, "[\\", "/]", *join_lines)
        for member_id in members:
            self.edge(member_id, join_id)
        return join_id

    def text(self, direction: Direction) -> str:
        lines = [f"flowchart {direction}"]
        body = self.nodes + self.edges + self.compensation_edges
        if self.compensations:
            body.append("classDef compensation stroke-dasharray: 5 5")
            body.append(f"class {','.join(self.compensations)} compensation")
        if self.pivot is not None:
            body.append("classDef pivot stroke-width:4px")
            body.append(f"class {self.pivot} pivot")
        lines.extend(f"    {line}" for line in body)
        return "\n".join(lines)


_PIVOT_LINE: Final = "pivot (point of no return)"
"""What the pivot's node says: past it, the saga only goes forward."""

_ESCAPES: Final = {
    '"': "#34;",  # would end the label
    "#": "#35;",  # starts an entity code: `#quot;` in a name must stay text
    "%": "#37;",  # `%%{init: ...}%%` anywhere in the text is a directive
    "&": "#38;",  # an HTML entity in a label
    ":": "#58;",  # with `style` earlier on the line, Mermaid rewrites `:...#...;` as a style
    ";": "#59;",
    "<": "#60;",  # an HTML tag in a label: `<lambda>` would vanish
    ">": "#62;",
    "`": "#96;",  # "`...`" is a markdown label
    "\n": "<br/>",
}


def _escape(text: str) -> str:
    """`text` as the inside of a quoted Mermaid label, shown exactly as it is."""
    return "".join(
        _ESCAPES.get(char) or (f"#{ord(char)};" if char < " " or char == "\x7f" else char)
        for char in text
    )


def _label(lines: tuple[str, ...]) -> str:
    return "<br/>".join(_escape(line) for line in lines)
