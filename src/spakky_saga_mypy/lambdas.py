"""Lambda steps: the saga-data type their argument takes, and check 9 when nothing tells it.

mypy types a lambda from its context. A builder's signature hook gives lambdas the data type
known around the call (the saga's, the call's other items', the flow type the call is
expected to build) and passes it on to a nested `step(lambda d: ...)`. When nothing tells
the type, the lambda's argument would be `Any` and its body unchecked: check 9 says which
annotation to add, but only for a call that is a statement's whole expression: an outer
call may still give it a type (and mypy first checks the arguments of an overloaded call
without any context); an outer builder reports a nested `step(lambda d: ...)` itself.
"""

from collections.abc import Iterator, Sequence
from typing import Final

from mypy.checker import TypeChecker
from mypy.nodes import CallExpr, Expression, LambdaExpr, RefExpr, TupleExpr
from mypy.plugin import CheckerPluginInterface
from mypy.types import (
    AnyType,
    CallableType,
    Instance,
    ProperType,
    Type,
    TypeVarType,
    UninhabitedType,
    UnionType,
    get_proper_type,
)

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes
from spakky_saga_mypy._items import FlowOperand, data_argument

_FLOW_TYPES: Final = (names.SAGA_FLOW, names.PARALLEL, names.SAGA_STEP, names.TRANSACTION)
_BUILDERS: Final = (names.STEP_BUILDER, names.PARALLEL_BUILDER, names.SAGA_FLOW_BUILDER)


def has_lambda(expr: Expression) -> bool:
    """A lambda, or a tuple holding one (`items=(lambda d: ..., step(f))`)."""
    if isinstance(expr, TupleExpr):
        return any(has_lambda(item) for item in expr.items)
    return isinstance(expr, LambdaExpr)


def builds_with_lambda(expr: Expression) -> bool:
    """`step(lambda d: ...)` or `parallel(f, lambda d: ...)`: a builder call with a lambda."""
    return _builder_call(expr) is not None and next(_lambdas(expr), None) is not None


def _builder_call(expr: Expression) -> CallExpr | None:
    if (
        isinstance(expr, CallExpr)
        and isinstance(expr.callee, RefExpr)
        and expr.callee.fullname in _BUILDERS
    ):
        return expr
    return None


def _lambdas(expr: Expression) -> Iterator[LambdaExpr]:
    """The lambdas of `expr`, also inside tuples and nested builder calls."""
    if isinstance(expr, LambdaExpr):
        yield expr
    elif isinstance(expr, TupleExpr):
        for item in expr.items:
            yield from _lambdas(item)
    elif (call := _builder_call(expr)) is not None:
        for arg in call.args:
            yield from _lambdas(arg)


def expected_data(api: CheckerPluginInterface) -> ProperType | None:
    """`D` of the flow type the call is expected to build (`x: SagaFlow[D] = saga_flow(...)`,
    a function returning `SagaStep[D]`, an item of an outer builder over `D`, a generic
    saga's `flow() -> SagaFlow[D]` over its type variable), if any."""
    if not isinstance(api, TypeChecker):  # the type context stack is a checker internal
        return None
    contexts = api.expr_checker.type_context
    if not contexts or contexts[-1] is None:
        return None
    found: list[Instance | TypeVarType] = []
    for option in _alternatives(contexts[-1]):
        if not isinstance(option, Instance):
            continue
        for flow_type in _FLOW_TYPES:
            data = data_argument(option, flow_type)
            if isinstance(data, Instance | TypeVarType) and data not in found:
                found.append(data)
    return found[0] if len(found) == 1 else None


def _alternatives(typ: Type) -> Iterator[ProperType]:
    """The members of a (nested, aliased) union, such as an outer builder's item type
    `FlowItem[D] | ActionFn[D]`; the type itself if it is not a union."""
    proper = get_proper_type(typ)
    if isinstance(proper, UnionType):
        for item in proper.items:
            yield from _alternatives(item)
    else:
        yield proper


def check_lambda_data(
    api: CheckerPluginInterface, operands: Sequence[FlowOperand], *, where: str, result: Type
) -> bool:
    """Check 9: a lambda whose data type nothing tells: no other item of the call, no type
    context (an annotated variable, a typed return, a saga's method), no enclosing
    expression."""
    if any(operand.data is not None for operand in operands):
        return True
    untyped = next(
        (lam for operand in operands if (lam := _untyped_lambda(operand)) is not None), None
    )
    if untyped is None or not _is_a_statements_expression(api):
        return True
    proper = get_proper_type(result)
    kind = proper.type.name if isinstance(proper, Instance) else "SagaStep"
    errorcodes.untyped_lambda(
        api,
        untyped,
        where=where,
        parameter=untyped.arg_names[0] or "data",
        example=f"x: {kind}[YourData] = {where.partition('(')[0]}(...)",
    )
    return False


def _is_a_statements_expression(api: CheckerPluginInterface) -> bool:
    """Whether the call being checked is a statement's whole expression, with no expected
    type (`x = step(...)`, `step(...)` alone): not an argument or operand of another
    expression, which may still give it a type.

    The expression checker's stack of type contexts starts with one None; a statement's
    expression pushes its expected type, each enclosing expression one more.
    """
    if not isinstance(api, TypeChecker):  # the type context stack is a checker internal
        return False
    contexts = api.expr_checker.type_context
    return len(contexts) == _STATEMENT_DEPTH and contexts[-1] is None


_STATEMENT_DEPTH: Final = 2


def _untyped_lambda(operand: FlowOperand) -> LambdaExpr | None:
    """The lambda typed Any in `operand`: the lambda itself, or one in a nested builder."""
    node = operand.node
    if isinstance(node, LambdaExpr):
        function = operand.function
        if function is None or not function.arg_types or not _is_unknown(function):
            return None
        return node if node.arg_names else None
    if isinstance(node, Expression) and builds_with_lambda(node):  # over an unknown type
        return next((lam for lam in _lambdas(node) if lam.arg_names), None)
    return None


def _is_unknown(function: CallableType) -> bool:
    return isinstance(get_proper_type(function.arg_types[0]), AnyType | UninhabitedType)
