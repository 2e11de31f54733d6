"""Operator hooks: `>>` (bind a compensation), `&` (parallel group), `|` (error strategy).

The signature hooks accept any right operand (lambdas keep their context), so the method
hooks, not mypy's generic "Unsupported operand types", explain what is wrong; the method
hooks unify the saga-data types of both sides to the more specific one.
"""

from collections.abc import Callable
from typing import Final

from mypy.nodes import Expression, LambdaExpr, OpExpr
from mypy.plugin import MethodContext, MethodSigContext
from mypy.types import AnyType, FunctionLike, Type, TypeOfAny

from spakky_saga_mypy import errorcodes, pivot, waits
from spakky_saga_mypy._checks import (
    check_compensation,
    check_group_member,
    check_same_data,
    check_strategy_instance,
    report_strategy_class,
)
from spakky_saga_mypy._items import FlowOperand, ItemKind, describe, errored, with_data


def operand_signature_callback(ctx: MethodSigContext) -> FunctionLike:
    """Accept any right operand, so the method hook can report a precise error."""
    signature = ctx.default_signature
    if len(signature.arg_types) != 1 or [len(actuals) for actuals in ctx.args] != [1]:
        return signature
    if isinstance(ctx.args[0][0], LambdaExpr):
        return signature
    return signature.copy_modified(arg_types=[AnyType(TypeOfAny.special_form)])


def any_operand_signature_callback(ctx: MethodSigContext) -> FunctionLike:
    """Accept any right operand, a lambda too: `transaction >> x` is declared to take
    nothing (so that pyright reports it), and check 5 is the one report of it."""
    signature = ctx.default_signature
    if len(signature.arg_types) != 1:
        return signature
    return signature.copy_modified(arg_types=[AnyType(TypeOfAny.special_form)])


def _operands(ctx: MethodContext) -> tuple[FlowOperand, FlowOperand] | None:
    if len(ctx.args) != 1 or len(ctx.args[0]) != 1:
        return None
    left_expr: Expression = ctx.context.left if isinstance(ctx.context, OpExpr) else ctx.args[0][0]
    left = describe(left_expr, ctx.type)
    right = describe(ctx.args[0][0], ctx.arg_types[0][0])
    return left, right


def _compose(
    ctx: MethodContext, where: str, check_right: Callable[[FlowOperand, FlowOperand], bool]
) -> Type:
    """Check the right operand (knowing the left), unify both sides' data; the default over
    the unified D."""
    operands = _operands(ctx)
    if operands is None:
        return ctx.default_return_type
    left, right = operands
    if not check_right(left, right):
        return errored(ctx.default_return_type)
    data, ok = check_same_data(ctx.api, where, [left, right])
    if not ok:
        return errored(ctx.default_return_type)
    return with_data(ctx.default_return_type, data)


def bind_compensation_callback(ctx: MethodContext) -> Type:
    """`step >> compensation`: checks 1, 3, 4, 8 and 11; `Transaction[D]` over the unified D
    (also when the compensation carries its own policy, `step >> (undo | Retry(5))`)."""

    def check(left: FlowOperand, right: FlowOperand) -> bool:
        return waits.check_bound(ctx.api, left, right) and check_compensation(
            ctx.api, right, action=left
        )

    return _compose(ctx, '">>"', check)


def second_compensation_callback(ctx: MethodContext) -> Type:
    """`transaction >> anything`: check 5 (the runtime always raises)."""
    operands = _operands(ctx)
    if operands is None:
        return ctx.default_return_type
    left, right = operands
    errorcodes.double_compensation(ctx.api, right.node, left.label, right.label)
    return errored(ctx.default_return_type)


def parallel_callback(ctx: MethodContext) -> Type:
    """`x & y`: members must be flow items over related data types; `Parallel[D]`."""

    def check(left: FlowOperand, right: FlowOperand) -> bool:
        # the right one: check_group_member
        left_ok = pivot.check_group_member(ctx.api, left) and waits.check_group_member(
            ctx.api, left, where='Parallel member "&"'
        )
        return check_group_member(ctx.api, right, where='Parallel member "&"') and left_ok

    return _compose(ctx, '"&"', check)


def strategy_callback(ctx: MethodContext) -> Type:
    """`x | strategy`: checks 7 and 10 on the right operand; the result is the type of `x`
    (with our strategies and with a user's `ErrorStrategy` subclass alike)."""
    operands = _operands(ctx)
    if operands is None:
        return ctx.default_return_type
    left, right = operands
    if right.kind is ItemKind.UNKNOWN:
        return ctx.default_return_type
    if right.kind is ItemKind.STRATEGY_CLASS:
        report_strategy_class(ctx.api, right, _attach_lead(left))
        return errored(ctx.default_return_type)
    if right.kind is not ItemKind.STRATEGY:
        errorcodes.strategy(
            ctx.api,
            right.node,
            f'"|" attaches an error strategy to "{left.label}", but "{right.label}" is '
            f'"{errorcodes.show(ctx.api, right.typ)}"; {errorcodes.USE_A_STRATEGY}',
        )
        return errored(ctx.default_return_type)
    if not check_strategy_instance(ctx.api, right, _attach_lead(left)):
        return errored(ctx.default_return_type)
    return ctx.default_return_type


def group_strategy_callback(ctx: MethodContext) -> Type:
    """`(a & b) | strategy`: a group has no strategy of its own (the runtime refuses it)."""
    operands = _operands(ctx)
    if operands is None:
        return ctx.default_return_type
    left, right = operands
    if right.kind is ItemKind.UNKNOWN:
        return ctx.default_return_type
    _report_group_strategy(ctx, left, right)
    return errored(ctx.default_return_type)


def _report_group_strategy(ctx: MethodContext, group: FlowOperand, right: FlowOperand) -> None:
    errorcodes.strategy(
        ctx.api,
        right.node,
        f'"|" on the parallel group "{group.label}": a group has no error strategy of its '
        "own; attach one to each member that needs it, e.g. (a | Retry()) & b",
    )


def reflected_strategy_class_callback(ctx: MethodContext) -> Type:
    """`step | Skip`, second try: mypy calls the class's `type.__ror__` (the runtime union
    operator) when `__or__` fails. Fail it too, with the same message, so that mypy reports
    the error instead of typing the expression as a `types.UnionType`."""
    if not isinstance(ctx.context, OpExpr) or len(ctx.args) != 1 or len(ctx.args[0]) != 1:
        return ctx.default_return_type
    right = describe(ctx.context.right, ctx.type)
    left = describe(ctx.args[0][0], ctx.arg_types[0][0])
    if right.kind is not ItemKind.STRATEGY_CLASS:
        return ctx.default_return_type
    if left.kind is ItemKind.PARALLEL:
        _report_group_strategy(ctx, left, right)
    elif left.kind in _STRATEGY_TAKERS:
        report_strategy_class(ctx.api, right, _attach_lead(left))
    else:
        return ctx.default_return_type
    return errored(ctx.default_return_type)


_STRATEGY_TAKERS: Final = (ItemKind.STEP, ItemKind.TRANSACTION)
"""What `|` attaches a strategy to."""


def _attach_lead(left: FlowOperand) -> str:
    return f'"|" attaches an error strategy to "{left.label}", but '
