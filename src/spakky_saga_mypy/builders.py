"""Builder hooks: `step()`, `parallel()`, `saga_flow()` and the `SagaFlow`/`Parallel`
constructors.

The signature hooks accept any item (so the function hooks explain mistakes instead of
mypy's "Cannot infer value of type parameter"), keep lambdas typed from context (the saga's
data type inside a saga method), and let `parallel(a)` / `saga_flow()` through to check 6.
The function hooks compute the result over the most specific data type.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from mypy.expandtype import expand_type
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import (
    ARG_OPT,
    ARG_POS,
    ARG_STAR,
    ARG_STAR2,
    ArgKind,
    Expression,
    MemberExpr,
    NameExpr,
    RefExpr,
    TupleExpr,
    TypeInfo,
)
from mypy.plugin import CheckerPluginInterface, FunctionContext, FunctionSigContext
from mypy.subtypes import is_subtype
from mypy.types import (
    AnyType,
    FunctionLike,
    Instance,
    ProperType,
    TupleType,
    Type,
    TypeOfAny,
    TypeVarId,
    get_proper_type,
)

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes
from spakky_saga_mypy._checks import (
    check_action,
    check_compensation,
    check_flow_item,
    check_group_member,
    check_same_data,
    check_strategy_instance,
    describe_kind,
    report_strategy_class,
)
from spakky_saga_mypy._items import (
    FlowOperand,
    ItemKind,
    base_info,
    describe,
    errored,
    most_specific,
    quoted,
    with_data,
)
from spakky_saga_mypy.lambdas import (
    builds_with_lambda,
    check_lambda_data,
    expected_data,
    has_lambda,
)
from spakky_saga_mypy.pivot import check_flow as check_pivot
from spakky_saga_mypy.saga_class import check_flow_items, enclosing_saga
from spakky_saga_mypy.timeouts import check_timeout

type Formal = int | str
"""A parameter: its position (positional-only ones have no name in mypy) or its name."""


@dataclass(frozen=True, slots=True)
class BuilderSpec:
    """Which parameters of a builder hold items, and which may be left out for check 6."""

    where: str
    items: tuple[Formal, ...]
    widened: frozenset[Formal]
    optional: frozenset[Formal] = frozenset()
    container: bool = False
    """True when the item parameter takes a tuple of items (the classes' `items=`)."""
    strategies: frozenset[Formal] = frozenset()
    """Parameters taking an error strategy: widened only where a strategy class is passed,
    so that the function hook can say "did you mean Skip()?" instead of mypy's arg-type."""
    timeouts: tuple[tuple[str, str], ...] = ()
    """(parameter, how messages name it) of the timeouts a literal may make invalid."""


STEP: Final = BuilderSpec(
    "step()",
    (0,),
    frozenset({0, "compensate"}),
    strategies=frozenset({"on_error"}),
    timeouts=(("timeout", "step(timeout=...)"),),
)
PARALLEL: Final = BuilderSpec(
    "parallel()", (0, 1, "rest"), frozenset({0, 1, "rest", "merge"}), frozenset({1})
)
SAGA_FLOW: Final = BuilderSpec("saga_flow()", (0, "rest"), frozenset({0, "rest"}), frozenset({0}))
SAGA_FLOW_CLASS: Final = BuilderSpec(
    "SagaFlow(items=...)",
    ("items",),
    frozenset({"items"}),
    container=True,
    timeouts=(("saga_timeout", "SagaFlow(saga_timeout=...)"),),
)
PARALLEL_CLASS: Final = BuilderSpec(
    "Parallel(items=...)", ("items",), frozenset({"items", "merge"}), container=True
)


def formal_index(arg_names: Sequence[str | None], formal: Formal) -> int | None:
    """The index of `formal` among a signature's parameters, if it has it."""
    if isinstance(formal, int):
        return formal if formal < len(arg_names) else None
    return arg_names.index(formal) if formal in arg_names else None


def _formals_of(arg_names: Sequence[str | None]) -> list[set[Formal]]:
    """For each parameter, every way a spec can refer to it."""
    return [{index, name} if name else {index} for index, name in enumerate(arg_names)]


_ANY: Final = AnyType(TypeOfAny.special_form)


def signature_callback(spec: BuilderSpec) -> Callable[[FunctionSigContext], FunctionLike]:
    """The signature hook of the builder described by `spec`."""

    def callback(ctx: FunctionSigContext) -> FunctionLike:
        return _widen(ctx, spec)

    return callback


def _widen(ctx: FunctionSigContext, spec: BuilderSpec) -> FunctionLike:
    signature = ctx.default_signature
    arg_types: list[Type] = []
    arg_kinds: list[ArgKind] = []
    formals = _formals_of(signature.arg_names)
    found: list[dict[TypeVarId, Type]] = []

    def lambda_data() -> dict[TypeVarId, Type]:
        """The builder's type variable bound to the lambdas' data type, computed once."""
        if not found:
            data = _lambda_data(ctx, spec, formals)
            found.append({v.id: data for v in signature.variables} if data else {})
        return found[0]

    for keys, kind, arg_type, actuals in zip(
        formals, signature.arg_kinds, signature.arg_types, ctx.args, strict=True
    ):
        arg_kinds.append(ARG_OPT if keys & spec.optional and kind == ARG_POS else kind)
        if keys & spec.strategies and any(map(_names_strategy_class, actuals)):
            arg_types.append(_ANY)
        elif not keys & spec.widened:
            arg_types.append(arg_type)
        elif actuals and all(has_lambda(actual) for actual in actuals):
            # Keep the context a lambda needs, with the data type known around it.
            arg_types.append(expand_type(arg_type, lambda_data()))
        elif actuals and all(builds_with_lambda(actual) for actual in actuals) and lambda_data():
            # `saga_flow(step(lambda d: ...))`: pass the data type on to the inner builder.
            arg_types.append(expand_type(arg_type, lambda_data()))
        else:
            arg_types.append(_ANY)
    return signature.copy_modified(arg_types=arg_types, arg_kinds=arg_kinds)


def _lambda_data(
    ctx: FunctionSigContext, spec: BuilderSpec, formals: Sequence[set[Formal]]
) -> ProperType | None:
    """The data type lambdas of this call work on: the saga's inside a saga, else the one of
    the other arguments that name a step or function (`step(reserve, compensate=lambda
    d: ...)`) when they agree, else the one the call is expected to build; None leaves the
    lambda to mypy's own context."""
    saga = enclosing_saga(ctx.api)
    if saga is not None:
        return saga.data
    siblings = [
        describe(actual, ctx.api.get_expression_type(actual))
        for keys, actuals in zip(formals, ctx.args, strict=True)
        if keys & spec.widened
        for actual in actuals
        if isinstance(actual, NameExpr | MemberExpr)
    ]
    data, clash = most_specific(siblings)
    if clash is None and isinstance(data, Instance):
        return data
    return expected_data(ctx.api)


def _names_strategy_class(expr: Expression) -> bool:
    """`Skip` or `strategies.Retry`: a reference to an error strategy class."""
    return (
        isinstance(expr, RefExpr)
        and isinstance(expr.node, TypeInfo)
        and expr.node.has_base(names.ERROR_STRATEGY)
    )


@dataclass(frozen=True, slots=True)
class _Items:
    operands: list[FlowOperand]
    counted: bool
    """False when star-args or a non-literal tuple hide how many items there are."""


def _collect(ctx: FunctionContext, spec: BuilderSpec) -> _Items:
    operands: list[FlowOperand] = []
    indexes = [formal_index(ctx.callee_arg_names, formal) for formal in spec.items]
    # No item parameter at all: not this library version's signature, so count nothing.
    # (One overload of parallel() has no *rest: its two items still count.)
    counted = any(index is not None for index in indexes)
    for index in indexes:
        if index is None:
            continue
        for expr, typ, kind in zip(
            ctx.args[index], ctx.arg_types[index], ctx.arg_kinds[index], strict=True
        ):
            if kind not in (ARG_STAR, ARG_STAR2) and not spec.container:
                operands.append(describe(expr, typ))
                continue
            literal = _tuple_items(expr, typ) if kind not in (ARG_STAR, ARG_STAR2) else None
            if literal is not None:
                operands.extend(describe(item, item_type) for item, item_type in literal)
                continue
            counted = False  # a star-arg or a sequence of unknown length
            element = _iterated(typ) if kind != ARG_STAR2 else None
            if element is not None:
                operands.append(describe(expr, element))
    return _Items(operands, counted)


def _iterated(typ: Type) -> Type | None:
    """The element type of what `*expr` unpacks, when it is a plain iterable."""
    proper = get_proper_type(typ)
    if not isinstance(proper, Instance):
        return None
    iterable = base_info(proper.type, "typing.Iterable")
    if iterable is None or isinstance(proper, TupleType):
        return None
    return map_instance_to_supertype(proper, iterable).args[0]


def _tuple_items(expr: Expression, typ: Type) -> list[tuple[Expression, Type]] | None:
    """[(expr, type)] of each item of a fixed-length tuple; None if the length is unknown."""
    proper = get_proper_type(typ)
    if not isinstance(proper, TupleType):
        return None
    if isinstance(expr, TupleExpr) and len(expr.items) == len(proper.items):
        return list(zip(expr.items, proper.items, strict=True))
    return [(expr, item) for item in proper.items]


def _single(ctx: FunctionContext, formal: Formal) -> FlowOperand | None:
    index = formal_index(ctx.callee_arg_names, formal)
    if index is None or len(ctx.args[index]) != 1:
        return None
    return describe(ctx.args[index][0], ctx.arg_types[index][0])


def _check_timeouts(ctx: FunctionContext, spec: BuilderSpec) -> None:
    """Check 8 for timeouts written as literals; the result's type does not depend on them."""
    for formal, where in spec.timeouts:
        index = formal_index(ctx.callee_arg_names, formal)
        if index is not None and len(ctx.args[index]) == 1:
            check_timeout(ctx.api, ctx.args[index][0], where, none_allowed=True)


def step_callback(ctx: FunctionContext) -> Type:
    """`step(f)` / `step(f, compensate=g)`: checks 1, 3, 4, 5, 7, 8, 10 and 11 (`g` may be a
    step with its own policy: `compensate=step(g) | Retry(5)`)."""
    _check_timeouts(ctx, STEP)
    action = _single(ctx, 0)
    if action is None:
        return ctx.default_return_type
    compensation = _single(ctx, "compensate")
    if action.kind is ItemKind.TRANSACTION and compensation is not None:
        errorcodes.double_compensation(ctx.api, compensation.node, action.label, compensation.label)
        return errored(ctx.default_return_type)
    if action.kind not in (ItemKind.STEP, ItemKind.FUNCTION, ItemKind.UNKNOWN):
        errorcodes.definition(
            ctx.api,
            action.node,
            "step() takes an action (an async function or a @saga_step), but "
            f"{quoted(action.label)} is {describe_kind(ctx.api, action)}",
        )
        return errored(ctx.default_return_type)
    if not check_action(ctx.api, action):
        return errored(ctx.default_return_type)
    on_error = _single(ctx, "on_error")
    if on_error is not None and on_error.kind is ItemKind.STRATEGY_CLASS:
        report_strategy_class(ctx.api, on_error, _ON_ERROR_LEAD)
        return errored(ctx.default_return_type)
    if on_error is not None and not check_strategy_instance(ctx.api, on_error, _ON_ERROR_LEAD):
        return errored(ctx.default_return_type)
    operands = [action]
    if compensation is not None:
        if not check_compensation(ctx.api, compensation, action=action):
            return errored(ctx.default_return_type)
        # Named as written, so that a mismatch says which argument it is.
        operands.append(replace(compensation, name=f"compensate={compensation.label}"))
    data, ok = check_same_data(ctx.api, "step()", operands)
    if not ok or not check_lambda_data(
        ctx.api, operands, where=STEP.where, result=ctx.default_return_type
    ):
        return errored(ctx.default_return_type)
    return with_data(ctx.default_return_type, _as_expected(ctx.api, data))


_ON_ERROR_LEAD: Final = "step(on_error=...): "


def _as_expected(api: CheckerPluginInterface, data: ProperType | None) -> ProperType | None:
    """The data type the call is expected to build over, when every item takes it (items over
    `AbstractSagaData` assigned to `SagaFlow[OrderData]`, or returned from a generic saga's
    `flow() -> SagaFlow[D]`); else the items' own most specific type, `data`."""
    expected = expected_data(api)
    if data is not None and expected is not None and is_subtype(expected, data):
        return expected
    return data


def parallel_callback(spec: BuilderSpec) -> Callable[[FunctionContext], Type]:
    """The function hook of `parallel()` or `Parallel(items=...)`: checks 1, 3, 6, 8."""

    def callback(ctx: FunctionContext) -> Type:
        items = _collect(ctx, spec)
        if items.counted and len(items.operands) < 2:
            errorcodes.group_size(
                ctx.api,
                ctx.context,
                f"{spec.where} needs at least two members, got {len(items.operands)}; put a "
                "single step directly in the flow instead",
            )
            return errored(ctx.default_return_type)
        if not _check_items(ctx.api, spec, items.operands, check=check_group_member):
            return errored(ctx.default_return_type)
        operands = list(items.operands)
        merge = _single(ctx, "merge")
        if merge is not None and merge.kind is ItemKind.FUNCTION:
            operands.append(replace(merge, name=f"merge={merge.label}"))
        data, ok = check_same_data(ctx.api, spec.where, operands)
        if not ok or not check_lambda_data(
            ctx.api, operands, where=spec.where, result=ctx.default_return_type
        ):
            return errored(ctx.default_return_type)
        return with_data(ctx.default_return_type, _as_expected(ctx.api, data))

    return callback


def flow_callback(spec: BuilderSpec) -> Callable[[FunctionContext], Type]:
    """The function hook of `saga_flow()` or `SagaFlow(items=...)`: checks 1, 2, 3, 6, 8 and
    the pivot's, 12 to 14."""

    def callback(ctx: FunctionContext) -> Type:
        _check_timeouts(ctx, spec)
        items = _collect(ctx, spec)
        if items.counted and not items.operands:
            errorcodes.group_size(
                ctx.api,
                ctx.context,
                f"{spec.where} needs at least one item; a saga without steps has nothing to run",
            )
            return errored(ctx.default_return_type)
        if not _check_items(ctx.api, spec, items.operands):
            return errored(ctx.default_return_type)
        if not check_pivot(ctx.api, items.operands):
            return errored(ctx.default_return_type)
        saga = enclosing_saga(ctx.api)
        if saga is not None and saga.in_flow:
            if saga.wrong_flow_type is not None:  # reported on the `def flow` line, not per item
                return errored(ctx.default_return_type)
            if not check_flow_items(ctx.api, saga, items.operands):
                return errored(ctx.default_return_type)
            return with_data(ctx.default_return_type, saga.data)
        data, ok = check_same_data(ctx.api, spec.where, items.operands)
        if not ok or not check_lambda_data(
            ctx.api, items.operands, where=spec.where, result=ctx.default_return_type
        ):
            return errored(ctx.default_return_type)
        return with_data(ctx.default_return_type, _as_expected(ctx.api, data))

    return callback


class _ItemCheck(Protocol):
    def __call__(
        self, api: CheckerPluginInterface, operand: FlowOperand, /, *, where: str
    ) -> bool: ...


def _check_items(
    api: CheckerPluginInterface,
    spec: BuilderSpec,
    operands: Sequence[FlowOperand],
    *,
    check: _ItemCheck = check_flow_item,
) -> bool:
    ok = True
    for position, operand in enumerate(operands, start=1):
        ok = check(api, operand, where=f"{spec.where} item {position}") and ok
    return ok
