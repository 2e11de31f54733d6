"""The point of no return: `pivot(...)` in a flow (checks 12 to 15).

`saga_flow(reserve >> release, pivot(capture), ship | Retry(10))`: before the pivot every
step must have a compensation or be declared read-only (check 12); after it every step must
retry or skip (check 13); a flow has one pivot (check 14); a parallel group is the pivot only
as a whole (check 15). The runtime makes the same checks when the flow is built.

The checks read the flow's expressions: what a step visibly is (a plain async function, a
`@saga_step` method, `step(f, ...)`, with `|` strategies), never a guess. A step held in a
variable shows neither its strategy nor its markers, so it is left to the runtime, as is
anything whose type the plugin cannot see: no false positives.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from mypy.nodes import (
    ARG_NAMED,
    ARG_POS,
    CallExpr,
    Decorator,
    Expression,
    MemberExpr,
    NameExpr,
    OpExpr,
)
from mypy.plugin import CheckerPluginInterface
from mypy.types import Instance

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes, waits
from spakky_saga_mypy._items import (
    DEFAULT_STRATEGY_SHOWN,
    FlowOperand,
    ItemKind,
    attached_strategy,
    calls,
    checked_type,
    describe,
    fails_at_once,
    step_function,
    step_name,
)


def marked(expr: Expression) -> Expression | None:
    """`x` when `expr` is an item marked as the pivot, `pivot(x)` (also with a strategy or a
    compensation attached after it, or passed through `step(...)`, which keeps the mark),
    else None."""
    while True:
        if isinstance(expr, OpExpr) and expr.op in ("|", ">>"):
            expr = expr.left
        elif calls(expr, names.STEP_BUILDER) and expr.args and expr.arg_kinds[0] == ARG_POS:
            expr = expr.args[0]
        elif calls(expr, names.PIVOT_BUILDER) and len(expr.args) == 1:
            return expr.args[0]
        else:
            return None


def check_group_member(api: CheckerPluginInterface, member: FlowOperand) -> bool:
    """Check 15 on one member of a group being built (`&` or `parallel(...)`)."""
    node = member.node
    inner = marked(node) if isinstance(node, Expression) else None
    if inner is None:
        return True
    assert isinstance(node, Expression)
    if _group_members(inner) is not None:
        message = (
            f'The parallel group "{_item_name(node)}" is the pivot and cannot be extended '
            "with &; build the whole group first, then mark it: pivot(a & b & c)"
        )
    else:
        message = (
            f'Parallel group member "{_item_name(node)}" is marked as the pivot; a group can '
            "be the pivot only as a whole: write pivot(a & b), or put the pivot step in the "
            "flow on its own"
        )
    errorcodes.pivot_member(api, node, message)
    return False


@dataclass(frozen=True, slots=True)
class _Item:
    """A flow item: its position, expression, and its steps (a group's members, or itself)."""

    position: int
    node: Expression
    members: Sequence[Expression]


def check_flow(api: CheckerPluginInterface, operands: Sequence[FlowOperand]) -> bool:
    """Checks 12 to 14 on a flow's items; True when there is no pivot or nothing to report."""
    items = [
        _Item(position, operand.node, _steps_of(operand.node))
        for position, operand in enumerate(operands, start=1)
        if isinstance(operand.node, Expression)
    ]
    pivots = [item for item in items if marked(item.node) is not None]
    if not pivots:
        return True
    first = pivots[0]
    pivot = _item_name(first.node)
    ok = True
    for item in pivots[1:]:
        errorcodes.pivot_twice(
            api,
            item.node,
            item=_item_name(item.node),
            position=item.position,
            first=pivot,
        )
        ok = False
    for item in items:
        for member in item.members:
            if item.position < first.position and _uncompensated(api, member):
                errorcodes.pivot_uncompensated(
                    api, member, step=step_name(member), position=item.position, pivot=pivot
                )
                ok = False
            elif item.position > first.position:
                strategy = _failing_strategy(api, member)
                if strategy is not None:
                    errorcodes.pivot_not_retriable(
                        api,
                        member,
                        step=step_name(member),
                        position=item.position,
                        pivot=pivot,
                        strategy=strategy,
                    )
                    ok = False
    return ok


def _item_name(expr: Expression) -> str:
    """How messages name a pivot item: its step's name, or `a & b` for a group."""
    inner = marked(expr) or expr
    members = _group_members(inner)
    if members is None:
        return step_name(inner)
    return " & ".join(step_name(member) for member in members)


def _steps_of(expr: Expression) -> list[Expression]:
    """A flow item's steps: a group's members, or the item itself."""
    return _group_members(marked(expr) or expr) or [expr]


def _group_members(expr: Expression) -> list[Expression] | None:
    """The members of a group written out (`a & b & c`, `parallel(a, b)`), else None."""
    if isinstance(expr, OpExpr) and expr.op == "&":
        left = _group_members(expr.left) or [expr.left]
        return [*left, expr.right]
    if calls(expr, names.PARALLEL_BUILDER) and all(k == ARG_POS for k in expr.arg_kinds):
        return list(expr.args)
    return None


def _shown(api: CheckerPluginInterface, expr: Expression) -> FlowOperand | None:
    """What a step expression is, when its expression shows it (a plain function, a
    `@saga_step` method, `step(f)`); None for a variable, whose markers are not visible."""
    typ = checked_type(api, expr)
    if typ is None:
        return None
    operand = describe(expr, typ)
    if operand.kind is ItemKind.FUNCTION or operand.kind is ItemKind.TRANSACTION:
        return operand
    if operand.kind is ItemKind.STEP and step_function(api, expr) is not None:
        return operand
    return None


def _uncompensated(api: CheckerPluginInterface, member: Expression) -> bool:
    """Whether a step visibly has no compensation and no read-only marker."""
    operand = _shown(api, member)
    return (
        not waits.written_wait(member)  # a wait changes nothing
        and operand is not None
        and operand.kind is not ItemKind.TRANSACTION
        and not _read_only(api, member)
    )


def _read_only(api: CheckerPluginInterface, expr: Expression) -> bool:
    """Whether `step(..., read_only=True)` or `@saga_step(read_only=True)` marks the step
    (through `|` and `step(...)`)."""
    while True:
        if isinstance(expr, OpExpr) and expr.op == "|":
            expr = expr.left
        elif calls(expr, names.STEP_BUILDER):
            marked = _read_only_argument(expr)
            if marked is not None:
                return marked
            if not expr.args or expr.arg_kinds[0] != ARG_POS:
                return False
            expr = expr.args[0]
        elif isinstance(expr, MemberExpr):
            return _decorated_read_only(api, expr)
        else:
            return False


def _read_only_argument(call: CallExpr) -> bool | None:
    """What `read_only=` a call writes: True or False (anything but `True` counts as False),
    None when it has none."""
    for name, kind, arg in zip(call.arg_names, call.arg_kinds, call.args, strict=True):
        if kind == ARG_NAMED and name == names.READ_ONLY:
            return isinstance(arg, NameExpr) and arg.fullname == names.TRUE
    return None


def _decorated_read_only(api: CheckerPluginInterface, expr: MemberExpr) -> bool:
    """Whether `self.check` is a method decorated `@saga_step(read_only=True)`."""
    owner = checked_type(api, expr.expr)
    symbol = owner.type.get(expr.name) if isinstance(owner, Instance) else None
    if symbol is None or not isinstance(symbol.node, Decorator):
        return False
    return any(
        calls(decorator, names.SAGA_STEP_DECORATOR) and _read_only_argument(decorator) is True
        for decorator in symbol.node.original_decorators
    )


def _failing_strategy(api: CheckerPluginInterface, member: Expression) -> str | None:
    """How a message shows the strategy of a step after the pivot when it visibly fails at
    once (`Compensate()`, also by default), else None."""
    if waits.written_wait(member):  # a wait fails only by its timeout
        return waits.failing_timeout_strategy(api, member)
    strategy = attached_strategy(member)
    if strategy is None:
        return DEFAULT_STRATEGY_SHOWN if _shown(api, member) is not None else None
    return fails_at_once(api, strategy)
