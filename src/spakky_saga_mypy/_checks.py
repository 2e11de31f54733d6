"""The checks operators and builders share: unified data types (check 1), step and
compensation signatures (checks 3 and 4), what may stand in a group or flow (check 8), the
strategies `|` and `on_error=` attach (checks 7 and 10), a compensation's own strategy
(check 11) and no pivot inside a group (check 15, from `pivot`).

Each reports through `errorcodes` at the operand's node and returns False after an error,
so that the hook can degrade its result and stop.
"""

from collections.abc import Mapping, Sequence

from mypy.nodes import (
    ARG_OPT,
    ARG_POS,
    ARG_STAR,
    CallExpr,
    Context,
    Expression,
    LambdaExpr,
    MemberExpr,
    NameExpr,
    StrExpr,
)
from mypy.plugin import CheckerPluginInterface
from mypy.subtypes import is_subtype
from mypy.types import (
    AnyType,
    CallableType,
    Instance,
    NoneType,
    ProperType,
    TypeVarType,
    UnionType,
    get_proper_type,
)

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes, pivot, waits
from spakky_saga_mypy._items import (
    FlowOperand,
    ItemKind,
    awaited_result,
    constructed_class,
    defining_class,
    first_argument,
    most_specific,
    quoted,
    skipping_strategy,
    step_function,
    step_name,
    strategy_class,
)


def check_same_data(
    api: CheckerPluginInterface, where: str, operands: Sequence[FlowOperand]
) -> tuple[ProperType | None, bool]:
    """Unify the operands' data types, reporting check 1; returns (type, ok)."""
    data, clash = most_specific(operands)
    if clash is None:
        return data, True
    first, second = clash
    assert first.data is not None  # most_specific only pairs operands with a data type
    assert second.data is not None
    errorcodes.data_mismatch(
        api, second.node, where, (first.label, first.data), (second.label, second.data)
    )
    return None, False


def _derives_from_saga_data(typ: ProperType) -> bool:
    if isinstance(typ, Instance):
        return typ.type.has_base(names.ABSTRACT_SAGA_DATA)
    if isinstance(typ, TypeVarType):
        bound = get_proper_type(typ.upper_bound)
        return isinstance(bound, Instance) and bound.type.has_base(names.ABSTRACT_SAGA_DATA)
    return isinstance(typ, AnyType)


def _positional_count(function: CallableType) -> tuple[int, bool]:
    """(number of positional parameters, whether it has *args)."""
    count = sum(1 for kind in function.arg_kinds if kind in (ARG_POS, ARG_OPT))
    return count, ARG_STAR in function.arg_kinds


def check_signature(
    api: CheckerPluginInterface,
    operand: FlowOperand,
    function: CallableType,
    *,
    role: str,
) -> bool:
    """Check 3 (and the shape half of check 4): report and return False if malformed.

    `role` is "Action", "Compensation" or "Saga step"; `function` excludes any `self`.
    """
    what = f'{role} "{operand.label}"'
    required = function.min_args
    count, star = _positional_count(function)
    has_required_keyword = any(
        kind.is_required() and kind.is_named() for kind in function.arg_kinds
    )
    if required > 1 or (count < 1 and not star) or has_required_keyword:
        errorcodes.step_signature(
            api,
            operand.node,
            what,
            "must take exactly one argument, the saga data"
            + (" (after self)" if role == "Saga step" else "")
            + f', but its signature is "{errorcodes.show(api, function)}"',
        )
        return False
    data = first_argument(function)
    param = get_proper_type(function.arg_types[0]) if function.arg_types else None
    if param is not None and not _derives_from_saga_data(param):
        errorcodes.step_signature(
            api,
            operand.node,
            what,
            f'takes "{errorcodes.show(api, param)}", which does not derive from '
            "AbstractSagaData; the data argument must be a saga-data class",
        )
        return False
    result = awaited_result(function)
    if result is None:
        errorcodes.step_signature(
            api,
            operand.node,
            what,
            "is a regular function; declare it with `async def` so the engine can await it",
        )
        return False
    if role == "Compensation":
        return True
    return check_action_result(api, operand, what, data, result)


def check_action_result(
    api: CheckerPluginInterface,
    operand: FlowOperand,
    what: str,
    data: ProperType | None,
    result: ProperType,
) -> bool:
    """An action returns its data type (or a subclass) or None."""
    if data is None or isinstance(result, AnyType):
        return True
    items = result.items if isinstance(result, UnionType) else [result]
    for item in items:
        proper = get_proper_type(item)
        if isinstance(proper, NoneType | AnyType) or is_subtype(proper, data):
            continue
        if isinstance(proper, Instance) and proper.type.has_base(names.ABSTRACT_SAGA_DATA):
            problem = (
                f'takes "{errorcodes.show(api, data)}" but returns '
                f'"{errorcodes.show(api, proper)}"; an action returns its own saga-data type '
                "(or a subclass) or None"
            )
        else:
            problem = (
                f'returns "{errorcodes.show(api, result)}"; an action returns its saga data '
                f'("{errorcodes.show(api, data)}") or None'
            )
        errorcodes.step_signature(api, operand.node, what, problem)
        return False
    return True


def check_compensation(
    api: CheckerPluginInterface, operand: FlowOperand, *, action: FlowOperand
) -> bool:
    """Checks 3, 4 and 11 for what stands right of `>>` or in `compensate=` of `action`.

    A step may carry its own retry strategy and timeout (`undo | Retry(5)`,
    `step(undo, timeout=...)`): they become the compensation's policy, which must not skip.
    """
    if not waits.check_compensation(api, operand, _action_name(action)):
        return False
    if operand.kind not in (ItemKind.STEP, ItemKind.FUNCTION, ItemKind.UNKNOWN):
        errorcodes.definition(
            api,
            operand.node,
            f"Compensation {quoted(operand.label)} is {describe_kind(api, operand)}; a "
            "compensation must be a single step or async function",
        )
        return False
    if operand.kind is ItemKind.STEP and isinstance(operand.node, Expression):
        skipping = skipping_strategy(api, operand.node)
        if skipping is not None:
            node, shown = skipping
            errorcodes.compensation_skip(
                api,
                node,
                compensation=step_name(operand.node),
                transaction=_action_name(action),
                strategy=shown,
            )
            return False
    function = operand.function
    if operand.kind is ItemKind.STEP and isinstance(operand.node, Expression):
        function = step_function(api, operand.node)
    if function is None or isinstance(operand.node, LambdaExpr):
        return True
    if operand.kind is ItemKind.FUNCTION and not check_signature(
        api, operand, function, role="Compensation"
    ):
        return False
    result = awaited_result(function)
    if result is not None and not isinstance(result, NoneType | AnyType):
        errorcodes.compensation_return(api, operand.node, operand.label, result)
        return False
    return True


def _action_name(action: FlowOperand) -> str:
    return step_name(action.node) if isinstance(action.node, Expression) else action.label


def check_strategy_instance(api: CheckerPluginInterface, operand: FlowOperand, lead: str) -> bool:
    """Checks 7 and 10 for a strategy built where it is attached: `ErrorStrategy()` itself,
    or a subclass whose class does not implement `decide` (the runtime rejects both when the
    flow is built). Only a constructor call shows the object's exact class: a variable typed
    as an intermediate base class may hold a subclass that implements `decide`."""
    info = constructed_class(operand.node)
    if info is None or not info.has_base(names.ERROR_STRATEGY):
        return True
    if info.fullname == names.ERROR_STRATEGY:
        errorcodes.base_strategy(api, operand.node, lead)
        return False
    if defining_class(info, names.DECIDE) == names.ERROR_STRATEGY:
        errorcodes.strategy_decide(api, operand.node, lead, info.name)
        return False
    return True


def check_action(api: CheckerPluginInterface, operand: FlowOperand) -> bool:
    """Check 3 for a plain function used as an action (steps are checked where declared).

    A lambda is left to mypy: the signature hooks give it its expected type as context.
    """
    if (
        operand.kind is not ItemKind.FUNCTION
        or operand.function is None
        or isinstance(operand.node, LambdaExpr)
    ):
        return True
    return check_signature(api, operand, operand.function, role="Action")


def _builder_options(node: Context, builder: str, options: Mapping[str, object]) -> list[str]:
    """The keyword `options` a literal call of `builder` passes with a value other than its
    default (`options` maps each name to its default, None or a string)."""
    if not (
        isinstance(node, CallExpr)
        and isinstance(node.callee, NameExpr | MemberExpr)
        and node.callee.fullname == builder
    ):
        return []
    return [
        name
        for name, value in zip(node.arg_names, node.args, strict=True)
        if name is not None and name in options and not _is_literal(value, options[name])
    ]


def _is_literal(expr: Expression, value: object) -> bool:
    if value is None:
        return isinstance(expr, NameExpr) and expr.fullname == "builtins.None"
    return isinstance(expr, StrExpr) and expr.value == value


def check_group_member(api: CheckerPluginInterface, operand: FlowOperand, *, where: str) -> bool:
    """Check 8 for a member of a parallel group: a nested group flattens into it, so it cannot
    have its own `merge=` or compensation order."""
    if not (
        check_flow_item(api, operand, where=where)
        and pivot.check_group_member(api, operand)
        and waits.check_group_member(api, operand, where=where)
    ):
        return False
    options = _builder_options(
        operand.node, names.PARALLEL_BUILDER, {"merge": None, "compensate": "reverse"}
    )
    if operand.kind is ItemKind.PARALLEL and options:
        errorcodes.definition(
            api,
            operand.node,
            f'{where}: the nested group "{operand.label}" has its own {options[0]}=; nested '
            "groups flatten into the enclosing one, so keep it as a separate flow item",
        )
        return False
    return True


def check_flow_item(api: CheckerPluginInterface, operand: FlowOperand, *, where: str) -> bool:
    """Check 8 for an item of a group or flow: it must be a step, group or async function."""
    if operand.kind in (ItemKind.STRATEGY, ItemKind.STRATEGY_CLASS):
        errorcodes.definition(
            api,
            operand.node,
            f'{where}: got the error strategy "{errorcodes.show(api, operand.typ)}" on its '
            "own; attach it to a step with `step | strategy` or step(..., on_error=strategy)",
        )
        return False
    if operand.kind in (ItemKind.FLOW, ItemKind.OTHER):
        errorcodes.definition(
            api,
            operand.node,
            f"{where}: {quoted(operand.label)} is {describe_kind(api, operand)}; expected a step, "
            "transaction, parallel group or async function",
        )
        return False
    return check_action(api, operand)


def report_strategy_class(api: CheckerPluginInterface, operand: FlowOperand, lead: str) -> None:
    """Check 7 for a strategy class given where an instance belongs; `lead` says where."""
    info = strategy_class(operand.typ)
    if info is None:  # the caller checked the kind: nothing else to say
        return
    errorcodes.strategy_class(
        api, operand.node, lead, info.name, is_base=info.fullname == names.ERROR_STRATEGY
    )


def describe_kind(api: CheckerPluginInterface, operand: FlowOperand) -> str:
    """`a Transaction`, `an error strategy`, ... or `a "<type>"`, for messages."""
    name = operand.kind_name or f'"{errorcodes.show(api, operand.typ)}"'
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
