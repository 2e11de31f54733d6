"""A flow's structure, as recorded by a durable saga, and what changed in it since.

Recovery re-runs or compensates steps by their position in the flow, so it must refuse a flow
whose structure differs from the one the saga started with. The structure is what positions
mean: each item's step name and compensation name, the members of each group, and which item
is the pivot (recovery past it only goes forward; a flow without one records nothing of it).
Strategies and timeouts are not part of it (changing them is safe for an unfinished saga).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from spakky_saga.plan import ExecutionPlan, GroupNode, StepNode

type Structure = list[dict[str, Any]]


def structure_of(plan: ExecutionPlan) -> Structure:
    """The flow's items, in order: `{"key", "step", "compensation"}` or `{"key", "group"}`."""
    items: Structure = []
    for node in plan.nodes:
        if isinstance(node, GroupNode):
            items.append({"key": node.key, "group": [_step(m) for m in node.members]})
        else:
            items.append(_step(node))
    if plan.pivot is not None:
        items[plan.pivot]["pivot"] = True
    return items


def _step(node: StepNode) -> dict[str, Any]:
    return {"key": node.key, "step": node.name, "compensation": node.compensation_name or None}


def encode_structure(structure: Structure) -> str:
    return json.dumps(structure, separators=(",", ":"), sort_keys=True)


class Identity(NamedTuple):
    """A plan's structure, its JSON and its fingerprint: computed once per plan."""

    structure: Structure
    encoded: str
    fingerprint: str


def identity_of(plan: ExecutionPlan) -> Identity:
    """The plan's identity, cached on the plan (a durable run needs it at every start)."""
    identity = plan.identity
    if identity is None:
        structure = structure_of(plan)
        encoded = encode_structure(structure)
        fingerprint = hashlib.sha256(encoded.encode()).hexdigest()[:32]  # short, stable
        identity = Identity(structure, encoded, fingerprint)
        object.__setattr__(plan, "identity", identity)  # a cache on a frozen plan
    return identity  # type: ignore[no-any-return] # set just above or earlier: an Identity


def describe_changes(old: Structure, new: Structure) -> tuple[str, ...]:
    """What differs between two structures, item by item, in words."""
    changes: list[str] = []
    for position in range(max(len(old), len(new))):
        before = old[position] if position < len(old) else None
        after = new[position] if position < len(new) else None
        if before == after:
            continue
        label = f"item {position + 1}"
        if before is None:
            changes.append(f"{label} {_describe(after)} was added")
        elif after is None:
            changes.append(f"{label} {_describe(before)} was removed")
        else:
            changes.append(f"{label} was {_describe(before)}, is now {_describe(after)}")
    return tuple(changes)


def _describe(item: dict[str, Any] | None) -> str:
    if item is None:  # pragma: no cover - callers pass an item
        return "nothing"
    pivot = " (the pivot)" if item.get("pivot") else ""
    if "group" in item:
        return "group (" + " & ".join(_describe(m) for m in item["group"]) + ")" + pivot
    compensation = item.get("compensation")
    undo = f" >> {compensation}" if compensation else ""
    return f'"{item["step"]}{undo}"{pivot}'
