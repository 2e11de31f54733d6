"""A flow compiled once into the flat, immutable plan the engine runs.

Compiling resolves everything a run would otherwise recompute per step: timeouts become
seconds, strategies become attempt counts, and steps that need no special handling are
marked for the engine's fast path. A flow's plan is cached on the flow object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from spakky_saga.flow import MergeFn, Parallel, SagaFlow, Transaction
from spakky_saga.strategy import Compensate, ErrorStrategy, Retry, Skip


@dataclass(frozen=True, slots=True)
class StepNode:
    """One action, with its compensation (if any) and resolved error handling."""

    name: str
    action: Any
    compensate: Any | None
    compensation_name: str
    strategy: ErrorStrategy
    max_attempts: int
    skip_on_failure: bool
    timeout: float | None
    simple: bool
    """True when the step has no timeout and compensates on failure: the engine's fast path."""
    key: str
    """Where the step stands in the flow: `3` for the third item, `2.1` for the first member
    of a group in second place. Stable for a given flow structure, unlike names, which may
    repeat."""


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


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    """Everything the engine needs to run a flow."""

    nodes: tuple[PlanNode, ...]
    timeout: float | None
    compensation_failure_handler: Any | None
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
    for position, item in enumerate(flow.items, start=1):
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
    return ExecutionPlan(
        nodes=tuple(nodes),
        timeout=timeout,
        compensation_failure_handler=flow.compensation_failure_handler,
    )


def _step_node(item: Any, key: str) -> StepNode:
    strategy = item.on_error
    final = strategy.then if isinstance(strategy, Retry) else strategy
    compensate = item.compensate if isinstance(item, Transaction) else None
    timeout = item.timeout.total_seconds() if item.timeout is not None else None
    return StepNode(
        name=item.name,
        action=item.action,
        compensate=compensate,
        compensation_name=item.compensation_name if compensate is not None else "",
        strategy=strategy,
        max_attempts=strategy.max_attempts if isinstance(strategy, Retry) else 1,
        skip_on_failure=isinstance(final, Skip),
        timeout=timeout,
        simple=isinstance(strategy, Compensate) and timeout is None,
        key=key,
    )
