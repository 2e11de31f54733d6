"""Timeouts the runtime rejects: a zero or negative `timedelta(...)` literal (check 8).

A timeout is checked only when it is written as `timedelta(...)` whose every argument is a
number literal (`3`, `0.5`, `-1`): a computed or named value is never guessed.
"""

from datetime import timedelta
from typing import Final

from mypy.nodes import (
    ARG_NAMED,
    ARG_POS,
    CallExpr,
    Expression,
    FloatExpr,
    IntExpr,
    RefExpr,
    UnaryExpr,
)
from mypy.plugin import CheckerPluginInterface, MethodContext
from mypy.types import Type

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes

_PARAMETERS: Final = (
    "days",
    "seconds",
    "microseconds",
    "milliseconds",
    "minutes",
    "hours",
    "weeks",
)
"""`timedelta`'s parameters, in positional order."""


def literal_timedelta(expr: Expression) -> timedelta | None:
    """The value of `timedelta(...)` when every argument is a number literal, else None."""
    if not (
        isinstance(expr, CallExpr)
        and isinstance(expr.callee, RefExpr)
        and expr.callee.fullname == names.TIMEDELTA
    ):
        return None
    arguments: dict[str, int | float] = {}
    for position, (arg, kind, name) in enumerate(
        zip(expr.args, expr.arg_kinds, expr.arg_names, strict=True)
    ):
        if kind == ARG_POS and position < len(_PARAMETERS):
            key = _PARAMETERS[position]
        elif kind == ARG_NAMED and name in _PARAMETERS:
            key = name
        else:
            return None  # *args, **kwargs, an unknown keyword: mypy reports what it must
        value = _number_literal(arg)
        if value is None or key in arguments:
            return None
        arguments[key] = value
    try:
        return timedelta(**arguments)
    except (OverflowError, ValueError):
        return None


def _number_literal(expr: Expression) -> int | float | None:
    """`3`, `0.5`, `-1`, `+2.0`: a number written out, not a name or a computation."""
    if isinstance(expr, IntExpr | FloatExpr):
        return expr.value
    if isinstance(expr, UnaryExpr) and expr.op in ("-", "+"):
        inner = _number_literal(expr.expr)
        if inner is not None:
            return -inner if expr.op == "-" else inner
    return None


def check_timeout(
    api: CheckerPluginInterface, expr: Expression, where: str, *, none_allowed: bool
) -> bool:
    """Report a zero or negative literal timeout; False after an error."""
    value = literal_timedelta(expr)
    if value is None or value > timedelta(0):
        return True
    sign = "zero" if value == timedelta(0) else f"negative ({value.total_seconds():g} seconds)"
    alternative = ", or None for no timeout" if none_allowed else ""
    errorcodes.definition(
        api,
        expr,
        f"{where}: the timeout is {sign}; a timeout must be positive, e.g. "
        f"timedelta(seconds=30){alternative}",
    )
    return False


def flow_timeout_callback(ctx: MethodContext) -> Type:
    """`flow.timeout(timedelta(...))`: the saga-wide timeout must be positive."""
    if len(ctx.args) == 1 and len(ctx.args[0]) == 1:
        check_timeout(ctx.api, ctx.args[0][0], "SagaFlow.timeout(...)", none_allowed=False)
    return ctx.default_return_type  # the flow's type does not depend on its timeout
