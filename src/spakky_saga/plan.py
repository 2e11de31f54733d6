"""A flow compiled once into the flat, immutable plan the engine runs.

Compiling resolves everything a run would otherwise recompute per step: timeouts become
seconds, and steps that need no special handling (no timeout, a strategy that fails at once)
are marked for the engine's fast path. Strategies stay objects: what a failure means is theirs
to decide (`ErrorStrategy.decide`). A flow's plan is cached on the flow object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from spakky_saga.flow import MergeFn, Parallel, SagaFlow, Transaction
from spakky_saga.strategy import DEFAULT_STRATEGY, ErrorStrategy, Escalate
from spakky_saga.waits import RESOLUTION_NAME, WaitSpec


@dataclass(frozen=True, slots=True)
class StepNode:
    """One action, with its compensation (if any) and resolved error handling."""

    name: str
    action: Any
    compensate: Any | None
    compensation_name: str
    strategy: ErrorStrategy
    timeout: float | None
    simple: bool
    """True when the step has no timeout and its strategy fails at once: the engine's fast
    path."""
    key: str
    """Where the step stands in the flow: `3` for the third item, `2.1` for the first member
    of a group in second place. Stable for a given flow structure, unlike names, which may
    repeat."""
    compensation_strategy: ErrorStrategy = DEFAULT_STRATEGY
    """The compensation's own policy (the default: one attempt)."""
    compensation_timeout: float | None = None
    """Bounds each attempt of the compensation, in seconds (None: the engine's bound)."""
    wait: WaitSpec | None = None
    """For a wait (`wait_for`, `sleep`): what it waits for; the engine runs it itself."""


@dataclass(frozen=True, slots=True)
class GroupNode:
    """Members run concurrently on the same input; their results are merged."""

    name: str
    members: tuple[StepNode, ...]
    merge: MergeFn[Any] | None
    concurrent_compensation: bool
    key: str
    """The group's position in the flow (its members' keys are `key.1`, `key.2`, ...)."""


type PlanNode = StepNode | GroupNode
type UndoEntry = StepNode | tuple[StepNode, ...]
"""What a rollback undoes in one go: a step, or group members compensated together."""


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    """Everything the engine needs to run a flow."""

    nodes: tuple[PlanNode, ...]
    timeout: float | None
    compensation_failure_handler: Any | None
    pivot: int | None = None
    """The index in `nodes` of the flow's pivot (its point of no return), if it has one: once
    the forward pass got past it, nothing is compensated."""
    accepts: frozenset[str] = frozenset()
    """The signal types (`module:QualName`) the flow's waits accept: what a signal to one of
    its sagas may be."""
    identity: Any = field(default=None, init=False, compare=False, repr=False)
    """What a durable run records of this plan (its structure and fingerprint), worked out on
    the first durable run and kept here: fingerprint.identity_of."""


def plan_for(flow: SagaFlow[Any]) -> ExecutionPlan:
    """The plan of `flow`, compiled on first use and cached on the flow."""
    try:
        plan = flow._plan
    except AttributeError:
        raise TypeError(
            f"expected a SagaFlow, got {flow!r}; build one with saga_flow(...) or "
            "SagaFlow(items=(...))"
        ) from None
    if plan is None:
        plan = compile_flow(flow)
        object.__setattr__(flow, "_plan", plan)  # a cache on a frozen flow
    return cast(ExecutionPlan, plan)


def compile_flow(flow: SagaFlow[Any]) -> ExecutionPlan:
    """Compile a validated flow into its plan."""
    nodes: list[PlanNode] = []
    pivot: int | None = None
    for position, item in enumerate(flow.items, start=1):
        if item.pivot:
            pivot = position - 1
        if isinstance(item, Parallel):
            nodes.append(
                GroupNode(
                    name=item.name,
                    members=tuple(
                        _step_node(member, f"{position}.{index}")
                        for index, member in enumerate(item.items, start=1)
                    ),
                    merge=item.merge,
                    concurrent_compensation=item.compensation_order == "concurrent",
                    key=str(position),
                )
            )
        else:
            nodes.append(_step_node(item, str(position)))
    timeout = flow.saga_timeout.total_seconds() if flow.saga_timeout is not None else None
    accepts = frozenset(
        node.wait.signal_name
        for node in nodes
        if isinstance(node, StepNode) and node.wait is not None and node.wait.signal_type
    ) | frozenset(
        RESOLUTION_NAME
        for node in nodes
        if isinstance(node, StepNode) and isinstance(node.strategy, Escalate)
    )
    return ExecutionPlan(
        nodes=tuple(nodes),
        timeout=timeout,
        compensation_failure_handler=flow.compensation_failure_handler,
        pivot=pivot,
        accepts=accepts,
    )


def _step_node(item: Any, key: str) -> StepNode:
    strategy: ErrorStrategy = item.on_error
    transaction = isinstance(item, Transaction)
    timeout = item.timeout.total_seconds() if item.timeout is not None else None
    undo_timeout = item.compensation_timeout if transaction else None
    wait: WaitSpec | None = item.wait if item.waits else None
    return StepNode(
        name=item.name,
        action=item.action,
        compensate=item.compensate if transaction else None,
        compensation_name=item.compensation_name if transaction else "",
        strategy=strategy,
        timeout=timeout,
        simple=strategy.fails_at_once and timeout is None and wait is None,
        key=key,
        compensation_strategy=item.compensation_strategy if transaction else DEFAULT_STRATEGY,
        compensation_timeout=None if undo_timeout is None else undo_timeout.total_seconds(),
        wait=wait,
    )
