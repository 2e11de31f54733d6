"""Builder functions: the same flows as the operators, for plain async functions.

Overloads make `step(f)` a `SagaStep[D]` and `step(f, compensate=g)` a `Transaction[D]`
for every type checker, and the signatures show that `parallel` needs two members and
`saga_flow` one item; at run time, fewer raise `SagaFlowDefinitionError`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, cast, overload

from spakky_saga._text import safe_repr
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaFlowDefinitionError
from spakky_saga.flow import (
    ActionFn,
    CompensateFn,
    CompensationOrder,
    CompensationStep,
    FlowItem,
    MergeFn,
    Operand,
    Parallel,
    SagaFlow,
    SagaStep,
    Transaction,
    callable_name,
    check_name,
)
from spakky_saga.strategy import DEFAULT_STRATEGY, MYPY, ErrorStrategy


@overload
def step[D: AbstractSagaData](
    action: ActionFn[D] | SagaStep[D],
    /,
    *,
    on_error: ErrorStrategy = ...,
    timeout: timedelta | None = ...,
    name: str = ...,
    read_only: bool = ...,
) -> SagaStep[D]: ...
@overload
def step[D: AbstractSagaData](
    action: ActionFn[D] | SagaStep[D],
    /,
    *,
    compensate: CompensateFn[D] | CompensationStep[D],
    on_error: ErrorStrategy = ...,
    timeout: timedelta | None = ...,
    name: str = ...,
    read_only: bool = ...,
) -> Transaction[D]: ...
def step[D: AbstractSagaData](
    action: ActionFn[D] | SagaStep[D],
    /,
    *,
    compensate: CompensateFn[D] | CompensationStep[D] | None = None,
    on_error: ErrorStrategy = DEFAULT_STRATEGY,
    timeout: timedelta | None = None,
    name: str = "",
    read_only: bool = False,
) -> SagaStep[D] | Transaction[D]:
    """Build a step from an async function, or a transaction when `compensate=` is given.

    `read_only=True` declares that the step changes nothing (a query, a validation), so it
    needs no compensation before the flow's pivot (see `pivot`)."""
    if isinstance(action, Transaction | Parallel):
        raise SagaFlowDefinitionError(
            f'step({type(action).__name__} "{action.name}"): step() takes an action '
            "(an async function or a @saga_step); a transaction already has its compensation"
        )
    check_name(name, f'step "{_name_of(action)}"')  # before `name or ...` hides a falsy non-str
    base_name = name
    pivot_mark = False
    if isinstance(action, SagaStep):
        pivot_mark = action.pivot
        read_only = read_only or action.read_only
        base_name = name or action.name
        action_fn: ActionFn[D] = action.action
        if on_error is DEFAULT_STRATEGY:
            on_error = action.on_error
        if timeout is None:
            timeout = action.timeout
    else:
        action_fn = action
    built = SagaStep(
        action=action_fn,
        name=base_name,
        on_error=on_error,
        timeout=timeout,
        read_only=read_only,
        pivot=pivot_mark,
    )
    if compensate is None:
        return built
    if not callable(compensate):
        # `>>` answers NotImplemented here (a TypeError about operands); a builder names it.
        raise SagaFlowDefinitionError(
            f'transaction "{built.name}": compensate= must be an async function taking the '
            f"saga data, or a @saga_step, got {safe_repr(compensate)}"
        )
    return built >> compensate


type _Item[D: AbstractSagaData] = FlowItem[D] | ActionFn[D]


# `parallel` and `saga_flow` show type checkers the documented arity (two members, one item),
# while at run time any number of arguments reaches the validation, so `parallel(a)` and
# `saga_flow()` raise SagaFlowDefinitionError instead of a bare TypeError.
#
# Their overloads accept the same calls but type them differently: `_Item` takes items over
# one data type, `Operand` also steps and transactions over a base class of it. mypy must try
# `_Item` first: from `Operand` it infers no `D` for a lone step (which fits two of its
# members in different ways). pyright must try `Operand` first: it picks the first overload
# whose arguments fit, and `_Item` would type a flow of base-class steps over the base class
# even where the expected type (`flow() -> SagaFlow[OrderData]`) says the subclass. mypy takes
# the name MYPY as true, so it skips the `Operand` overload written first for pyright.
if not MYPY:

    @overload
    def parallel[D: AbstractSagaData](
        first: Operand[D],
        second: Operand[D],
        /,
        *rest: Operand[D],
        merge: MergeFn[D] | None = ...,
        compensate: CompensationOrder = ...,
    ) -> Parallel[D]: ...


@overload
def parallel[D: AbstractSagaData](
    first: _Item[D],
    second: _Item[D],
    /,
    *rest: _Item[D],
    merge: MergeFn[D] | None = ...,
    compensate: CompensationOrder = ...,
) -> Parallel[D]: ...
@overload
def parallel[D: AbstractSagaData](
    first: Operand[D],
    second: Operand[D],
    /,
    *rest: Operand[D],
    merge: MergeFn[D] | None = ...,
    compensate: CompensationOrder = ...,
) -> Parallel[D]: ...
def parallel[D: AbstractSagaData](
    *items: Operand[D],
    merge: MergeFn[D] | None = None,
    compensate: CompensationOrder = "reverse",
) -> Parallel[D]:
    """Build a group whose members run concurrently (at least two; nested groups flatten,
    plain async functions become steps).

    `merge=` replaces the default field-by-field merge of the members' results;
    `compensate="concurrent"` undoes committed members together instead of in
    reverse declaration order.
    """
    if len(items) < 2:
        given = ", ".join(f'"{_name_of(item)}"' for item in items)
        raise SagaFlowDefinitionError(
            f"parallel({given}): a parallel group needs at least two items, got {len(items)}; "
            + (
                "put a single step directly in the flow instead"
                if items
                else "pass the steps to run concurrently"
            )
        )
    return Parallel(items=cast(Any, items), merge=merge, compensation_order=compensate)


if not MYPY:  # see parallel()

    @overload
    def saga_flow[D: AbstractSagaData](first: Operand[D], /, *rest: Operand[D]) -> SagaFlow[D]: ...


@overload
def saga_flow[D: AbstractSagaData](first: _Item[D], /, *rest: _Item[D]) -> SagaFlow[D]: ...
@overload
def saga_flow[D: AbstractSagaData](first: Operand[D], /, *rest: Operand[D]) -> SagaFlow[D]: ...
def saga_flow[D: AbstractSagaData](*items: Operand[D]) -> SagaFlow[D]:
    """Build a flow from items run in order (at least one; plain async functions become
    steps)."""
    if not items:
        raise SagaFlowDefinitionError(
            "saga_flow(): a saga needs at least one item; pass the steps to run in order"
        )
    return SagaFlow(items=cast(Any, items))


@overload
def pivot[I: SagaStep[Any] | Transaction[Any] | Parallel[Any]](item: I, /) -> I: ...
@overload
def pivot[D: AbstractSagaData](item: ActionFn[D], /) -> SagaStep[D]: ...
def pivot[D: AbstractSagaData](item: _Item[D], /) -> FlowItem[D]:
    """Mark `item` as the flow's pivot, its point of no return: the step (or whole parallel
    group) after which the saga must complete, e.g. the payment capture.

    In `saga_flow(reserve >> release, pivot(capture), ship | Retry(10))`: before the pivot
    commits, a failure compensates as usual; once it committed, nothing is compensated, and
    a step that gives up ends the saga STUCK, for an operator. The flow is checked when it is
    built: every step before the pivot has a compensation or is `read_only`, every step after
    it retries (or skips), and there is one pivot (see `SagaPivotError`).
    """
    if isinstance(item, Parallel):
        return replace(item, pivot=True)
    if isinstance(item, SagaStep | Transaction):
        return replace(item, pivot=True)
    if isinstance(item, SagaFlow) or not callable(item):
        raise SagaFlowDefinitionError(
            f"pivot({safe_repr(item)}): the pivot must be a step, transaction, parallel group "
            "or async function"
        )
    return SagaStep(action=item, pivot=True)


def _name_of(item: object) -> str:
    """A member's name for a message: a flow item's name, else the callable's, else its repr."""
    if isinstance(item, SagaStep | Transaction | Parallel):
        return item.name
    return callable_name(item) if callable(item) else safe_repr(item)
