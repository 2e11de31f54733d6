"""Mermaid flowchart text from a flow's outline: boxes in order, forks and joins, and a
dotted edge from each action to its compensation.

This module knows Mermaid, not flows: `flow.py` says what each box shows (a `Box` per step,
a `Fork` per parallel group) and `flowchart()` writes the text. A node's id comes from its
item's position in the flow (`s2_1` is the first member of the group in second place, `c2_1`
its compensation), so ids are valid and unique whatever the steps are called; names appear
only in labels, escaped so that no name can break or inject Mermaid syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

type Direction = Literal["TD", "LR"]
"""Top-down (the default) or left-to-right."""

DIRECTIONS: Final[tuple[Direction, ...]] = ("TD", "LR")


@dataclass(frozen=True, slots=True)
class Box:
    """A step's box: its lines (the name first), a hexagon for a wait; and the lines of its
    compensation's box, () when it has none."""

    lines: tuple[str, ...]
    wait: bool = False
    pivot: bool = False
    compensation: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fork:
    """A parallel group: the fork's lines, the members' boxes and the join's lines (a
    group's pivot is drawn on its join)."""

    lines: tuple[str, ...]
    members: tuple[Box, ...]
    join: tuple[str, ...]
    pivot: bool = False


def flowchart(start: Sequence[str], items: Sequence[Box | Fork], direction: Direction) -> str:
    """The flowchart (the text, without a ```mermaid fence): a `start` node showing `start`,
    the items in order, then a `completed` node. The same outline always gives the same
    text."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'TD' or 'LR' (left to right), got {direction!r}")
    chart = _Chart()
    chart.node("start", "([", "])", *start)
    previous = "start"
    for position, item in enumerate(items, start=1):
        if isinstance(item, Fork):
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

    def step(self, box: Box, key: str) -> str:
        """Add a step's box (and its compensation's); return the step's node id."""
        step_id = f"s{key}"
        lines = box.lines
        if box.pivot:
            lines = (*lines, _PIVOT_LINE)
            self.pivot = step_id
        if box.wait:
            self.node(step_id, "{{", "}}", *lines)
        else:
            self.node(step_id, "[", "]", *lines)
        if box.compensation:
            undo_id = f"c{key}"
            self.node(undo_id, "(", ")", *box.compensation)
            self.compensation_edges.append(f"{step_id} -.->|compensate| {undo_id}")
            self.compensations.append(undo_id)
        return step_id

    def group(self, fork: Fork, key: str, previous: str) -> str:
        """Add a fork, the members and a join after `previous`; return the join's node id."""
        fork_id, join_id = f"fork{key}", f"join{key}"
        self.node(fork_id, "[/", "\\]", *fork.lines)
        self.edge(previous, fork_id)
        members = [
            self.step(member, f"{key}_{index}") for index, member in enumerate(fork.members, 1)
        ]
        for member_id in members:
            self.edge(fork_id, member_id)
        join_lines = fork.join
        if fork.pivot:
            join_lines = (*join_lines, _PIVOT_LINE)
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
