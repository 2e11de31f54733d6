"""Saga classes: the data type an `AbstractSaga[D]` subclass runs on, and check 2.

`@Saga()` itself is not checked: it marks any orchestrator class (a spakky `Pod`), which may
derive from `AbstractSaga[D]` or drive `run_saga_flow` itself.

A `flow()` annotated with another data type than the saga's (`-> SagaFlow[PaymentData]` in
an `AbstractSaga[OrderData]`) is reported on its `def` line when the class is analysed.
Builders called inside a saga's `flow()` check every item against the saga's `D`, whether
or not `flow()` is annotated, and type lambdas' data parameter as `D`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from mypy.checker import TypeChecker
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import Decorator, FuncDef, TypeInfo
from mypy.plugin import CheckerPluginInterface, ClassDefContext, SemanticAnalyzerPluginInterface
from mypy.semanal_shared import has_placeholder
from mypy.subtypes import is_same_type, is_subtype
from mypy.types import CallableType, Instance, ProperType, Type, UnboundType, get_proper_type
from mypy.typevars import fill_typevars

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes
from spakky_saga_mypy._items import FlowOperand, base_info, data_argument


@dataclass(frozen=True, slots=True)
class EnclosingSaga:
    """The saga class whose method is being checked, and the data type it runs on."""

    info: TypeInfo
    data: Instance
    in_flow: bool
    """True inside `flow()` itself (check 2 applies), False in another method."""
    wrong_flow_type: Instance | None = None
    """`SagaFlow[X]` when `flow()` is declared over another type than `data`."""


def enclosing_saga(api: CheckerPluginInterface) -> EnclosingSaga | None:
    """The `AbstractSaga[D]` subclass around the current expression, if `D` is concrete."""
    if not isinstance(api, TypeChecker):  # the scope stack is a checker internal
        return None
    function = api.scope.top_level_function()
    if not isinstance(function, FuncDef):
        return None
    info = api.scope.enclosing_class(function)
    if info is None:
        return None
    data = saga_data(info)
    if data is None:
        return None
    if function.name != names.FLOW_METHOD_NAME:
        return EnclosingSaga(info, data, in_flow=False)
    declared = _declared_flow(function, data)
    if declared is not None:
        # Reported on the `def flow` line by the class hook; again here for annotations
        # that hook could not resolve by name (mypy de-duplicates the repeated message).
        report_flow_annotation(api, function, info, data, declared)
    return EnclosingSaga(info, data, in_flow=True, wrong_flow_type=declared)


def saga_data(info: TypeInfo) -> Instance | None:
    """`D` of a subclass of `AbstractSaga[D]`, when it is a concrete class."""
    ancestor = base_info(info, names.ABSTRACT_SAGA)
    if ancestor is None:
        return None
    self_type = fill_typevars(info)
    if not isinstance(self_type, Instance):
        return None
    base = map_instance_to_supertype(self_type, ancestor)
    data = get_proper_type(base.args[0]) if base.args else None
    if not isinstance(data, Instance) or has_placeholder(data):
        return None
    return data


def _declared_flow(
    function: FuncDef, data: Instance, api: SemanticAnalyzerPluginInterface | None = None
) -> Instance | None:
    """`SagaFlow[X]` when `flow()` is declared to return it and X is not the saga's data.

    During semantic analysis (`api` given) the method's annotation is not analysed yet: a
    plain `SagaFlow[Name]` is resolved by name, anything else is left to the checker.
    """
    signature = function.type
    if not isinstance(signature, CallableType):
        return None
    returned: ProperType | None = get_proper_type(signature.ret_type)
    if api is not None and isinstance(returned, UnboundType):
        returned = _resolve_by_name(api, returned)
    if not isinstance(returned, Instance) or has_placeholder(returned):
        return None
    declared = data_argument(returned, names.SAGA_FLOW)
    if declared is None or is_same_type(declared, data):
        return None
    return returned


def _resolve_by_name(api: SemanticAnalyzerPluginInterface, typ: Type) -> Instance | None:
    """`Name` or `Name[Args]` made only of class names, as an Instance; else None."""
    if not isinstance(typ, UnboundType):
        return None
    symbol = api.lookup_qualified(typ.name, typ, suppress_errors=True)
    info = symbol.node if symbol is not None else None
    if not isinstance(info, TypeInfo) or len(typ.args) != len(info.type_vars):
        return None
    args = [_resolve_by_name(api, arg) for arg in typ.args]
    resolved = [arg for arg in args if arg is not None]
    return Instance(info, resolved) if len(resolved) == len(args) else None


def report_flow_annotation(
    api: CheckerPluginInterface | SemanticAnalyzerPluginInterface,
    function: FuncDef,
    info: TypeInfo,
    data: Instance,
    declared: Instance,
) -> None:
    """Check 2 on the `def flow` line, naming the saga, both types and the fix."""
    declared_data = data_argument(declared, names.SAGA_FLOW)
    assert declared_data is not None  # _declared_flow only returns flows over a type
    errorcodes.flow_annotation(
        api,
        function,
        saga=info.name,
        saga_data=data,
        returned=declared,
        returned_data=declared_data,
    )


def flow_annotation_callback(ctx: ClassDefContext) -> None:
    """Check 2 on the `def flow` line: the flow must be declared over the saga's data.

    A base-class hook: it runs during semantic analysis, possibly several times (each
    report is the same, and mypy de-duplicates them); it keeps no state.
    """
    info = ctx.cls.info
    data = saga_data(info)
    symbol = info.names.get(names.FLOW_METHOD_NAME)
    node = symbol.node if symbol is not None else None
    function = node.func if isinstance(node, Decorator) else node
    if data is None or not isinstance(function, FuncDef):
        return
    declared = _declared_flow(function, data, ctx.api)
    if declared is not None:
        report_flow_annotation(ctx.api, function, info, data, declared)


def check_flow_items(
    api: CheckerPluginInterface, saga: EnclosingSaga, operands: Sequence[FlowOperand]
) -> bool:
    """Check 2: each item must accept the saga's data (its own type or a base class)."""
    ok = True
    for position, operand in enumerate(operands, start=1):
        data: ProperType | None = operand.data
        if data is None or is_subtype(saga.data, data):
            continue
        errorcodes.flow_data(
            api,
            operand.node,
            saga=saga.info.name,
            saga_data=saga.data,
            item=f'{position} "{operand.label}"',
            item_data=data,
        )
        ok = False
    return ok
