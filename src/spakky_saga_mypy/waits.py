"""Waits: `wait_for(Signal, merge=...)` and where a wait may stand (checks 16 and 17).

`wait_for(PaymentConfirmed, merge=apply_payment, timeout=timedelta(hours=48))` folds the
signal into the saga data with `merge(data, signal) -> data`. The annotations alone let mypy
say "Cannot infer value of type parameter" when `merge` returns the wrong type; the signature
hook accepts any function in `merge=` so that `wait_for_callback` can say which parameter or
result is wrong, naming the wait and the types (check 16), and type the wait over the saga
data `merge` takes. A wait changes nothing: it cannot run in a parallel group or serve as a
compensation (check 17), and after the pivot a `wait_for` whose timeout fails at once is
reported by the pivot checks (`failing_timeout_strategy`).
"""

from typing import Final

from mypy.nodes import (
    ARG_NAMED,
    ARG_POS,
    CallExpr,
    Expression,
    LambdaExpr,
    NameExpr,
    OpExpr,
)
from mypy.plugin import CheckerPluginInterface, FunctionContext, FunctionSigContext
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
    get_proper_type,
)

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes
from spakky_saga_mypy._items import (
    DEFAULT_STRATEGY_SHOWN,
    FlowOperand,
    attached_strategy,
    awaited_result,
    calls,
    errored,
    fails_at_once,
    label_of,
    step_name,
    with_data,
)

_MERGE: Final = "merge"
_SIGNAL_TYPE: Final = 0
"""`wait_for`'s first (positional-only) parameter: the signal class."""
_ANY: Final = AnyType(TypeOfAny.special_form)


def wait_for_signature_callback(ctx: FunctionSigContext) -> FunctionLike:
    """Accept any `merge=` function except a lambda (which needs the declared type as
    context for its parameters): `wait_for_callback` checks it and explains a mismatch."""
    signature = ctx.default_signature
    merge = _merge_argument(ctx.args, signature.arg_names)
    if merge is None or isinstance(merge, LambdaExpr):
        return signature
    return signature.copy_modified(
        arg_types=[
            _ANY if name == _MERGE else arg_type
            for name, arg_type in zip(signature.arg_names, signature.arg_types, strict=True)
        ]
    )


def wait_for_callback(ctx: FunctionContext) -> Type:
    """Check 16: `merge` takes the saga data and the signal, and returns the saga data; the
    wait is typed over that data (`SagaWait[Order]`)."""
    merge_node = _merge_argument(ctx.args, ctx.callee_arg_names)
    if merge_node is None or isinstance(merge_node, LambdaExpr):
        return ctx.default_return_type
    merge = _merge_type(ctx)
    if merge is None:
        return _not_a_function(ctx, merge_node)
    wait = _wait_name(ctx)
    shown = f'merge "{merge.name or "function"}" of wait "{wait}"'
    positional = [
        arg_type
        for kind, arg_type in zip(merge.arg_kinds, merge.arg_types, strict=True)
        if kind.is_positional()
    ]
    if len(positional) < 2:
        errorcodes.wait_merge(
            ctx.api,
            merge_node,
            f"{shown} takes {len(positional)} positional parameter(s); a merge takes two, "
            "the saga data and the signal: def merge(data, signal) -> data",
        )
        return errored(ctx.default_return_type)
    data, signal = _bound(positional[0], merge), _bound(positional[1], merge)
    problems = _merge_problems(ctx.api, shown, merge, data, signal, _signal_instance(ctx))
    if problems:
        for problem in problems:
            errorcodes.wait_merge(ctx.api, merge_node, problem)
        return errored(ctx.default_return_type)
    return with_data(ctx.default_return_type, data)


def _not_a_function(ctx: FunctionContext, merge_node: Expression) -> Type:
    """A `merge=` that is no plain function: reported when it cannot be called at all (a
    string, a number), left to the runtime when it may be (Any, an overload, an object with
    `__call__`); the wait is typed over Any data then."""
    given = _merge_argument_type(ctx)
    if given is None or _may_be_called(given):
        return with_data(ctx.default_return_type, None)
    errorcodes.wait_merge(
        ctx.api,
        merge_node,
        f'merge of wait "{_wait_name(ctx)}" is "{errorcodes.show(ctx.api, given)}", not a '
        "function; give a function (data, signal) -> data",
    )
    return errored(ctx.default_return_type)


def _may_be_called(typ: ProperType) -> bool:
    """Whether a value of type `typ` may be callable (anything but a plain value)."""
    if isinstance(typ, Instance):
        return typ.type.get("__call__") is not None
    return not isinstance(typ, LiteralType | NoneType)


def _merge_problems(  # noqa: PLR0917 - one call site, each argument a different role
    api: CheckerPluginInterface,
    shown: str,
    merge: CallableType,
    data: ProperType,
    signal: ProperType,
    received: ProperType | None,
) -> list[str]:
    show = errorcodes.show
    problems = []
    if isinstance(data, Instance) and not data.type.has_base(names.ABSTRACT_SAGA_DATA):
        problems.append(
            f'{shown} takes "{show(api, data)}" as the saga data; its first parameter must '
            "be the saga's data class (an AbstractSagaData subclass)"
        )
    if received is not None and not is_subtype(received, signal):
        problems.append(
            f'{shown} takes "{show(api, signal)}" as the signal, but the wait receives '
            f'"{show(api, received)}"; declare its second parameter as "{show(api, received)}" '
            "(or a base class of it), or wait for the signal type the merge expects"
        )
    returned = get_proper_type(merge.ret_type)
    if awaited_result(merge) is not None and not isinstance(returned, AnyType):
        problems.append(
            f'{shown} is `async def` (it returns "{show(api, returned)}"); a merge folds the '
            "signal into the data in memory: declare it with `def` and do any I/O in a step "
            "after the wait"
        )
    elif not is_subtype(returned, data):
        problems.append(
            f'{shown} returns "{show(api, returned)}"; a merge returns the saga data '
            f'("{show(api, data)}") with the signal folded in'
        )
    return problems


def _bound(typ: Type, function: CallableType) -> ProperType:
    """`typ`, or its upper bound when it is one of `function`'s own type variables (a
    generic merge, `def merge[D: AbstractSagaData](data: D, signal: Paid) -> D`, takes
    anything within it)."""
    proper = get_proper_type(typ)
    if isinstance(proper, TypeVarType) and proper.id in {v.id for v in function.variables}:
        return get_proper_type(proper.upper_bound)
    return proper


def _merge_argument(args: list[list[Expression]], arg_names: list[str | None]) -> Expression | None:
    """The expression passed as `merge=`, if one is."""
    for name, actuals in zip(arg_names, args, strict=False):
        if name == _MERGE and len(actuals) == 1:
            return actuals[0]
    return None


def _merge_argument_type(ctx: FunctionContext) -> ProperType | None:
    """The type of the argument passed as `merge=`, if one is."""
    for name, types in zip(ctx.callee_arg_names, ctx.arg_types, strict=False):
        if name == _MERGE and len(types) == 1:
            return get_proper_type(types[0])
    return None


def _merge_type(ctx: FunctionContext) -> CallableType | None:
    """`merge=`'s signature, when it is a plain function (not a class, not an overload)."""
    proper = _merge_argument_type(ctx)
    if isinstance(proper, CallableType) and not proper.is_type_obj():
        return proper
    return None


def _signal_instance(ctx: FunctionContext) -> ProperType | None:
    """The type of the signals the wait receives (instances of its first argument)."""
    if not ctx.arg_types or len(ctx.arg_types[_SIGNAL_TYPE]) != 1:
        return None
    proper = get_proper_type(ctx.arg_types[_SIGNAL_TYPE][0])
    if isinstance(proper, FunctionLike) and proper.is_type_obj():
        info = proper.type_object()
        return Instance(info, [_ANY] * len(info.defn.type_vars))
    if isinstance(proper, TypeType):
        return proper.item
    return None


def _wait_name(ctx: FunctionContext) -> str:
    """How messages name the wait: its `name=`, else `wait_for(Signal)` as the runtime does."""
    return label_of(ctx.context) if isinstance(ctx.context, Expression) else "wait_for(...)"


def is_wait(operand: FlowOperand) -> bool:
    """Whether the operand is visibly a wait (`wait_for`, `sleep`, `sleep_until`)."""
    typ = operand.typ
    return isinstance(typ, Instance) and typ.type.has_base(names.SAGA_WAIT)


def wait_label(operand: FlowOperand) -> str:
    """How messages name a wait operand (a variable by its name: its type does not say)."""
    node = operand.node
    return step_name(node) if isinstance(node, Expression) else operand.label


def check_group_member(api: CheckerPluginInterface, operand: FlowOperand, *, where: str) -> bool:
    """Check 17 for a member of a parallel group: a wait stands in the flow on its own."""
    return not is_wait(operand) or _refuse(
        api,
        operand,
        f'{where}: wait "{wait_label(operand)}" cannot run in a parallel group; put it in the '
        "flow on its own, before or after the group",
    )


def check_bound(api: CheckerPluginInterface, left: FlowOperand, right: FlowOperand) -> bool:
    """Check 17 for `wait >> undo`: a wait changes nothing, so it takes no compensation."""
    return not is_wait(left) or _refuse(
        api,
        left,
        f'Wait "{wait_label(left)}" >> "{right.label}": a wait changes nothing and takes no '
        "compensation; bind the compensation to the step whose effect it undoes",
    )


def check_compensation(api: CheckerPluginInterface, operand: FlowOperand, action: str) -> bool:
    """Check 17 for a compensation: a wait undoes nothing."""
    return not is_wait(operand) or _refuse(
        api,
        operand,
        f'Wait "{wait_label(operand)}" cannot be the compensation of "{action}"; a '
        "compensation undoes an effect, so make it a step that acts",
    )


def _refuse(api: CheckerPluginInterface, operand: FlowOperand, message: str) -> bool:
    """Report check 17 at the wait; False (the item is refused)."""
    errorcodes.wait_placement(api, operand.node, message)
    return False


def failing_timeout_strategy(api: CheckerPluginInterface, member: Expression) -> str | None:
    """For a `wait_for(...)` written out after the pivot: how a message shows its timeout
    strategy when the wait visibly can time out (it has `timeout=`) and that strategy fails at
    once (`Compensate()`, the default), else None. A sleep never fails."""
    call = member
    while isinstance(call, OpExpr) and call.op == "|":
        call = call.left
    if not calls(call, names.WAIT_FOR) or not _keyword(call, "timeout", required=True):
        return None
    strategy = attached_strategy(member) or _keyword(call, "on_timeout")
    return DEFAULT_STRATEGY_SHOWN if strategy is None else fails_at_once(api, strategy)


def written_wait(expr: Expression) -> bool:
    """Whether `expr` is a wait call written out (`wait_for(...)`, `sleep(...)`), with any
    strategy attached: it needs no compensation before the pivot."""
    while isinstance(expr, OpExpr) and expr.op == "|":
        expr = expr.left
    return any(calls(expr, fullname) for fullname in names.WAIT_BUILDERS)


def _keyword(call: CallExpr, name: str, *, required: bool = False) -> Expression | None:
    """The argument passed by keyword `name`; with `required`, None also when it is `None`."""
    for arg_name, kind, arg in zip(call.arg_names, call.arg_kinds, call.args, strict=True):
        if kind == ARG_NAMED and arg_name == name:
            if required and isinstance(arg, NameExpr) and arg.fullname == "builtins.None":
                return None
            return arg
        if kind not in (ARG_POS, ARG_NAMED):
            return None  # **options: not visible
    return None
