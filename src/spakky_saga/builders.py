"""Builder functions: the same flows as the operators, for plain async functions.

Overloads make `step(f)` a `SagaStep[D]` and `step(f, compensate=g)` a `Transaction[D]`
for every type checker, and the signatures show that `parallel` needs two members and
`saga_flow` one item.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast, overload

from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaFlowDefinitionError
from spakky_saga.flow import (
    ActionFn,
    CompensateFn,
    CompensationOrder,
    FlowItem,
    MergeFn,
    Parallel,
    SagaFlow,
    SagaStep,
    Transaction,
)
from spakky_saga.strategy import DEFAULT_STRATEGY, ErrorStrategy


@overload
def step[D: AbstractSagaData](
    action: ActionFn[D] | SagaStep[D],
    /,
    *,
    on_error: ErrorStrategy = ...,
    timeout: timedelta | None = ...,
    name: str = ...,
) -> SagaStep[D]: ...
@overload
def step[D: AbstractSagaData](
    action: ActionFn[D] | SagaStep[D],
    /,
    *,
    compensate: CompensateFn[D] | SagaStep[D],
    on_error: ErrorStrategy = ...,
    timeout: timedelta | None = ...,
    name: str = ...,
) -> Transaction[D]: ...
def step[D: AbstractSagaData](
    action: ActionFn[D] | SagaStep[D],
    /,
    *,
    compensate: CompensateFn[D] | SagaStep[D] | None = None,
    on_error: ErrorStrategy = DEFAULT_STRATEGY,
    timeout: timedelta | None = None,
    name: str = "",
) -> SagaStep[D] | Transaction[D]:
    """Build a step from an async function, or a transaction when `compensate=` is given."""
    if isinstance(action, Transaction | Parallel):
        raise SagaFlowDefinitionError(
            f'step({type(action).__name__} "{action.name}"): step() takes an action '
            "(an async function or a @saga_step); a transaction already has its compensation"
        )
    base_name = name
    if isinstance(action, SagaStep):
        base_name = name or action.name
        action_fn: ActionFn[D] = action.action
        if on_error is DEFAULT_STRATEGY:
            on_error = action.on_error
        if timeout is None:
            timeout = action.timeout
    else:
        action_fn = action
    built = SagaStep(action=action_fn, name=base_name, on_error=on_error, timeout=timeout)
    if compensate is None:
        return built
    if not callable(compensate):
        # `>>` answers NotImplemented here (a TypeError about operands); a builder names it.
        raise SagaFlowDefinitionError(
            f'transaction "{built.name}": compensate= must be an async function taking the '
            f"saga data, or a @saga_step, got {compensate!r}"
        )
    return built >> compensate


def parallel[D: AbstractSagaData](
    first: FlowItem[D] | ActionFn[D],
    second: FlowItem[D] | ActionFn[D],
    /,
    *rest: FlowItem[D] | ActionFn[D],
    merge: MergeFn[D] | None = None,
    compensate: CompensationOrder = "reverse",
) -> Parallel[D]:
    """Build a group whose members run concurrently (at least two; nested groups flatten).

    `merge=` replaces the default field-by-field merge of the members' results;
    `compensate="concurrent"` undoes committed members together instead of in
    reverse declaration order.
    """
    return Parallel(
        members=cast(Any, (first, second, *rest)),
        merge=merge,
        compensation_order=compensate,
    )


def saga_flow[D: AbstractSagaData](
    first: FlowItem[D] | ActionFn[D], /, *rest: FlowItem[D] | ActionFn[D]
) -> SagaFlow[D]:
    """Build a flow from items run in order (at least one)."""
    return SagaFlow(items=cast(Any, (first, *rest)))
