"""What a flow operand is, seen from its expression and type: shared by every hook family.

`describe()` turns an argument or operand into a `FlowOperand` (its kind, the saga-data type
it works on, its function when known); `most_specific()` unifies the data types of items
composed together; `with_data()` and `errored()` build the hooks' results;
`skipping_strategy()` and `constructed_class()` tell what an attached strategy visibly is.
The checks built on these live in `_checks.py`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final, TypeGuard

from mypy.checker import TypeChecker
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import (
    ARG_NAMED,
    ARG_OPT,
    ARG_POS,
    ARG_STAR,
    CallExpr,
    Context,
    Decorator,
    Expression,
    FloatExpr,
    IntExpr,
    LambdaExpr,
    MemberExpr,
    NameExpr,
    OpExpr,
    RefExpr,
    StrExpr,
    TypeInfo,
    UnaryExpr,
)
from mypy.plugin import CheckerPluginInterface
from mypy.subtypes import is_subtype
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    LiteralType,
    NoneType,
    ProperType,
    Type,
    TypeOfAny,
    TypeType,
    TypeVarType,
    UninhabitedType,
    get_proper_type,
)

from spakky_saga_mypy import _fullnames as names


class ItemKind(Enum):
    """What an operand is, as far as a flow is concerned."""

    STEP = auto()
    TRANSACTION = auto()
    PARALLEL = auto()
    FLOW = auto()
    FUNCTION = auto()
    STRATEGY = auto()
    STRATEGY_CLASS = auto()
    """A strategy class where an instance belongs (`step | Skip` for `step | Skip()`)."""
    OTHER = auto()
    UNKNOWN = auto()
    """Any, unions, overloads, callable objects: the plugin checks nothing about them."""


_KIND_OF_CLASS: Final = (
    (names.SAGA_STEP, ItemKind.STEP),
    (names.TRANSACTION, ItemKind.TRANSACTION),
    (names.PARALLEL, ItemKind.PARALLEL),
    (names.SAGA_FLOW, ItemKind.FLOW),
)

_KIND_NAMES: Final = {
    ItemKind.STEP: "SagaStep",
    ItemKind.TRANSACTION: "Transaction",
    ItemKind.PARALLEL: "Parallel group",
    ItemKind.FLOW: "SagaFlow",
    ItemKind.STRATEGY: "error strategy",
    ItemKind.STRATEGY_CLASS: "error strategy class",
}


@dataclass(frozen=True, slots=True)
class FlowOperand:
    """One operand of `>>`/`&`/`|` or one argument of a builder, as the plugin sees it."""

    kind: ItemKind
    data: ProperType | None
    """The saga-data type it works on; None when unknown (Any, a callable object, ...)."""
    function: CallableType | None
    """A plain function's signature (for a step, `step_function()` finds it on demand)."""
    node: Context
    typ: ProperType
    name: str | None = None
    """How messages name it, when its expression does not say (see `label`)."""

    @property
    def label(self) -> str:
        """The step or function name, or an expression like `a >> b`; built only for errors."""
        if self.name is not None:
            return self.name
        return label_of(self.node) if isinstance(self.node, Expression) else "item"

    @property
    def kind_name(self) -> str:
        """`SagaStep`, `Transaction`, ... or the type as written, for messages."""
        return _KIND_NAMES.get(self.kind, "")


def label_of(expr: Expression) -> str:
    """A short readable name for an operand expression."""
    if isinstance(expr, NameExpr | MemberExpr):
        return expr.name
    if isinstance(expr, OpExpr):
        return f"{label_of(expr.left)} {expr.op} {label_of(expr.right)}"
    if isinstance(expr, LambdaExpr):
        return "<lambda>"
    if isinstance(expr, IntExpr | FloatExpr | StrExpr):
        return repr(expr.value)
    if isinstance(expr, CallExpr) and isinstance(expr.callee, NameExpr | MemberExpr):
        if expr.callee.fullname == names.STEP_BUILDER and expr.args:
            return label_of(expr.args[0])
        if expr.callee.fullname in names.WAIT_BUILDERS:
            return _wait_label(expr)
        return f"{expr.callee.name}(...)"
    return "item"


def _wait_label(call: CallExpr) -> str:
    """A wait's name as the runtime gives it: its `name=`, else `wait_for(Signal)`."""
    for name, arg in zip(call.arg_names, call.args, strict=True):
        if name == "name" and isinstance(arg, StrExpr) and arg.value:
            return arg.value
    assert isinstance(call.callee, NameExpr | MemberExpr)
    first = call.args[0] if call.args and call.arg_kinds[0] == ARG_POS else None
    if call.callee.fullname == names.WAIT_FOR and isinstance(first, NameExpr | MemberExpr):
        return f"{call.callee.name}({first.name})"
    return f"{call.callee.name}(...)"


def quoted(label: str) -> str:
    """`label` in double quotes for a message, unless it is a literal's repr already
    (`'release'`): one pair of quotes, never two."""
    return label if label[:1] in ("'", '"') else f'"{label}"'


def step_name(expr: Expression) -> str:
    """The name a step expression gives its step: `refund` for `step(refund) | Retry(3)`,
    `self.refund | Skip()` or `step(refund, on_error=...)`, as the runtime names it."""
    while True:
        if isinstance(expr, OpExpr) and expr.op == "|":
            expr = expr.left
        elif calls(expr, names.STEP_BUILDER) and expr.args:
            expr = expr.args[0]
        else:
            return label_of(expr)


def calls(expr: Expression, fullname: str) -> TypeGuard[CallExpr]:
    """Whether `expr` is a call of the function or class `fullname`."""
    return (
        isinstance(expr, CallExpr)
        and isinstance(expr.callee, RefExpr)
        and expr.callee.fullname == fullname
    )


def constructed_class(expr: Context) -> TypeInfo | None:
    """The class `expr` calls, when it is a constructor call written out (`Skip()`): then the
    object's class is exactly that one, not a subclass a variable of its type may hold."""
    if (
        isinstance(expr, CallExpr)
        and isinstance(expr.callee, RefExpr)
        and isinstance(expr.callee.node, TypeInfo)
    ):
        return expr.callee.node
    return None


def defining_class(info: TypeInfo, name: str) -> str | None:
    """The full name of the class in `info`'s MRO that defines `name` (where lookup finds it)."""
    for ancestor in info.mro:
        if name in ancestor.names:
            return ancestor.fullname
    return None


def skipping_strategy(
    api: CheckerPluginInterface, step: Expression
) -> tuple[Expression, str] | None:
    """The error strategy of the step `step` when it visibly skips a failure it gives up on:
    (its expression, how a message shows it: `Skip()`, `Retry(..., then=Skip())`).

    The strategy is the last one attached (`x | s`, or `step(x, on_error=s)`, which keeps `x`'s
    own when it has no `on_error=`). Whether it skips is what its class's `skips` says: a
    `Skip` (or a subclass keeping Skip's `skips`) always, a `Retry` when `then=` is written as
    a `Skip`. None when it does not skip or nothing shows it (a variable of type `Retry`, a
    user strategy with its own `skips`): the runtime checks those when the flow is built.
    """
    strategy = attached_strategy(step)
    if strategy is None:
        return None
    shown = _skips(api, strategy)
    return None if shown is None else (strategy, shown)


def attached_strategy(step: Expression) -> Expression | None:
    """The expression of the error strategy last attached to the step `step` (`x | s`, or
    `step(x, on_error=s)`, which keeps `x`'s own when it has no `on_error=`), if it shows one."""
    if isinstance(step, OpExpr) and step.op == "|":
        return step.right
    if calls(step, names.STEP_BUILDER):
        for name, arg in zip(step.arg_names, step.args, strict=True):
            if name == "on_error":
                return arg
        if step.args and step.arg_kinds[0] == ARG_POS:
            return attached_strategy(step.args[0])  # step(x) keeps x's strategy
    return None


DEFAULT_STRATEGY_SHOWN: Final = "Compensate()"
"""How messages show the strategy of a step that has none attached."""


def fails_at_once(api: CheckerPluginInterface, strategy: Expression) -> str | None:
    """`Compensate()` (as a message shows it) when the strategy `strategy` visibly fails at
    once without retrying, else None (another strategy, or nothing shows which)."""
    typ = checked_type(api, strategy)
    if not isinstance(typ, Instance):
        return None
    if defining_class(typ.type, names.FAILS_AT_ONCE) != names.COMPENSATE:
        return None
    return f"{typ.type.name}()"


def _skips(api: CheckerPluginInterface, strategy: Expression) -> str | None:
    """`Skip()` or `Retry(..., then=Skip())` if `strategy` visibly skips, else None."""
    typ = checked_type(api, strategy)
    if not isinstance(typ, Instance):
        return None
    owner = defining_class(typ.type, names.SKIPS)
    if owner == names.SKIP:
        return f"{typ.type.name}()"
    if owner == names.RETRY:
        then = _then_argument(strategy)
        shown = None if then is None else _skips(api, then)
        if shown is not None:
            return f"{typ.type.name}(..., {names.THEN}={shown})"
    return None


def _then_argument(strategy: Expression) -> Expression | None:
    """The `then=` of a `Retry(...)` call written out, by keyword or third position."""
    if not isinstance(strategy, CallExpr):
        return None
    for position, (arg, kind, name) in enumerate(
        zip(strategy.args, strategy.arg_kinds, strategy.arg_names, strict=True)
    ):
        by_name = kind == ARG_NAMED and name == names.THEN
        if by_name or (kind == ARG_POS and position == names.THEN_POSITION):
            return arg
        if kind not in (ARG_POS, ARG_NAMED):
            return None  # *args or **options: what reaches `then` is not known
    return None


def checked_type(api: CheckerPluginInterface, expr: Expression) -> ProperType | None:
    """The type mypy already inferred for `expr` (an operand's part), or None if it has none.

    Read from the checker's type map rather than inferred again, which would run hooks on
    it twice."""
    if not isinstance(api, TypeChecker):  # the type map is a checker internal
        return None
    typ = api.lookup_type_or_none(expr)
    return None if typ is None else get_proper_type(typ)


def base_info(info: TypeInfo, fullname: str) -> TypeInfo | None:
    """The TypeInfo of `fullname` among `info`'s ancestors, if it is one."""
    for ancestor in info.mro:
        if ancestor.fullname == fullname:
            return ancestor
    return None


def data_argument(typ: Instance, fullname: str) -> ProperType | None:
    """`D` of `typ` seen as its ancestor `fullname[D]` (works for user subclasses too)."""
    ancestor = base_info(typ.type, fullname)
    if ancestor is None or not ancestor.type_vars:
        return None
    base = map_instance_to_supertype(typ, ancestor)
    if not base.args:
        return None
    return _known(base.args[0])


def _known(typ: Type) -> ProperType | None:
    proper = get_proper_type(typ)
    if isinstance(proper, AnyType | UninhabitedType):
        return None
    return proper


def describe(expr: Expression, typ: Type) -> FlowOperand:
    """What `expr` (of type `typ`) is as a flow operand."""
    proper = get_proper_type(typ)
    if isinstance(proper, Instance):
        for fullname, kind in _KIND_OF_CLASS:
            if proper.type.has_base(fullname):
                return FlowOperand(kind, data_argument(proper, fullname), None, expr, proper)
        if proper.type.has_base(names.ERROR_STRATEGY):
            return FlowOperand(ItemKind.STRATEGY, None, None, expr, proper)
        if proper.type.get("__call__") is not None:
            return FlowOperand(ItemKind.UNKNOWN, None, None, expr, proper)
        return FlowOperand(ItemKind.OTHER, None, None, expr, proper)
    if strategy_class(proper) is not None:
        return FlowOperand(ItemKind.STRATEGY_CLASS, None, None, expr, proper)
    if isinstance(proper, CallableType) and not proper.is_type_obj():
        return FlowOperand(ItemKind.FUNCTION, first_argument(proper), proper, expr, proper)
    if isinstance(proper, NoneType | LiteralType):
        return FlowOperand(ItemKind.OTHER, None, None, expr, proper)
    return FlowOperand(ItemKind.UNKNOWN, None, None, expr, proper)


def strategy_class(typ: ProperType) -> TypeInfo | None:
    """The error strategy class `typ` is the type of (`Skip`, `type[Retry]`), if it is one."""
    if isinstance(typ, FunctionLike) and typ.is_type_obj():
        info = typ.type_object()
    elif isinstance(typ, TypeType) and isinstance(typ.item, Instance):
        info = typ.item.type
    else:
        return None
    return info if info.has_base(names.ERROR_STRATEGY) else None


def first_argument(function: CallableType) -> ProperType | None:
    """The type of the data argument of an action (None if it takes no positional one)."""
    for kind, arg_type in zip(function.arg_kinds, function.arg_types, strict=True):
        if kind in (ARG_POS, ARG_OPT, ARG_STAR):
            proper = _known(arg_type)
            if isinstance(proper, TypeVarType) and proper.id in {
                variable.id for variable in function.variables
            }:
                # A generic action (`async def f[D: AbstractSagaData](data: D) -> D`) takes
                # anything within its bound, like a step over that base class.
                return _known(proper.upper_bound)
            return proper
    return None


def step_function(api: CheckerPluginInterface, expr: Expression) -> CallableType | None:
    """The function behind a step expression, when the expression shows it.

    `self.reserve` (a `@saga_step` method) gives the decorated method's signature without
    `self`; `step(f)` gives `f`'s; `x | Retry(3)` looks through the strategy.
    """
    if isinstance(expr, OpExpr) and expr.op == "|":
        return step_function(api, expr.left)
    if isinstance(expr, CallExpr) and isinstance(expr.callee, NameExpr | MemberExpr):
        if expr.callee.fullname == names.STEP_BUILDER and expr.args:
            proper = get_proper_type(api.get_expression_type(expr.args[0]))
            if isinstance(proper, CallableType):
                return proper
            return step_function(api, expr.args[0])
        return None
    if isinstance(expr, MemberExpr) and isinstance(expr.expr, NameExpr | MemberExpr):
        owner = get_proper_type(api.get_expression_type(expr.expr))
        if isinstance(owner, Instance):
            symbol = owner.type.get(expr.name)
            if symbol is not None and isinstance(symbol.node, Decorator):
                function = symbol.node.func.type
                if isinstance(function, CallableType) and function.arg_types:
                    return function.copy_modified(
                        arg_types=function.arg_types[1:],
                        arg_kinds=function.arg_kinds[1:],
                        arg_names=function.arg_names[1:],
                    )
    return None


def awaited_result(function: CallableType) -> ProperType | None:
    """What awaiting the function's result gives, or None if it does not return an awaitable."""
    returned = get_proper_type(function.ret_type)
    if isinstance(returned, AnyType):
        return returned
    if isinstance(returned, Instance):
        awaitable = base_info(returned.type, "typing.Awaitable")
        if awaitable is not None:
            return get_proper_type(map_instance_to_supertype(returned, awaitable).args[0])
    return None


def most_specific(
    operands: Sequence[FlowOperand],
) -> tuple[ProperType | None, tuple[FlowOperand, FlowOperand] | None]:
    """The most specific saga-data type of `operands`, or the first unrelated pair.

    Items over `D1` and `D2` compose when one derives from the other; the result works on
    the subclass (a step over a base class accepts subclass data).
    """
    best: FlowOperand | None = None
    best_data: ProperType | None = None
    for operand in operands:
        data = operand.data
        if data is None:
            continue
        if best is None or best_data is None:
            best, best_data = operand, data
        elif not is_subtype(best_data, data):
            if not is_subtype(data, best_data):
                return None, (best, operand)
            best, best_data = operand, data  # strictly more specific
    return best_data, None


def errored(default: Type) -> Type:
    """The result after a reported error: the default's class over Any, so that the mistake
    is reported once (no "Returning Any" or incompatible-type cascade)."""
    proper = get_proper_type(default)
    if isinstance(proper, Instance) and proper.args:
        return proper.copy_modified(args=[AnyType(TypeOfAny.from_error)] * len(proper.args))
    return AnyType(TypeOfAny.from_error)


def with_data(default: Type, data: ProperType | None) -> Type:
    """`default` (e.g. `Transaction[D]`) over the unified data type (Any when unknown)."""
    proper = get_proper_type(default)
    if not isinstance(proper, Instance) or len(proper.args) != 1:
        return default
    return proper.copy_modified(
        args=[data if data is not None else AnyType(TypeOfAny.special_form)]
    )


def literal_number(expr: Expression, typ: Type) -> int | float | None:
    """The numeric value of a literal argument (`3`, `-1.5`, a Final constant), if visible."""
    if isinstance(expr, IntExpr | FloatExpr):
        return expr.value
    if isinstance(expr, UnaryExpr) and expr.op in ("-", "+"):
        inner = literal_number(expr.expr, AnyType(TypeOfAny.special_form))
        if inner is not None:
            return -inner if expr.op == "-" else inner
    proper = get_proper_type(typ)
    literal = proper.last_known_value if isinstance(proper, Instance) else proper
    if isinstance(literal, LiteralType) and isinstance(literal.value, int | float):
        return literal.value
    return None
