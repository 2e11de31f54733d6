"""Flows drawn as Mermaid flowcharts, as a function of the flow (what `spakky-saga graph`
calls): the same text as `SagaFlow.to_mermaid()`.

Drawn from the flow's definition alone: nothing runs and no engine is involved. The flow says
what each box shows (`flow.py`) and `flowchart.py` writes the Mermaid text, knowing nothing of
flows, so that `SagaFlow.to_mermaid` needs nothing from this module.
"""

from __future__ import annotations

from typing import Any

from spakky_saga._text import safe_repr
from spakky_saga.flow import SagaFlow
from spakky_saga.flowchart import Direction


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
    return flow.to_mermaid(direction=direction)
