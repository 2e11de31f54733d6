"""Saga classes: the data type an `AbstractSaga[D]` subclass runs on, and check 2.

`@Saga()` itself is not checked: it marks any orchestrator class (a spakky `Pod`), which may
derive from `AbstractSaga[D]` or drive `run_saga_flow` itself.

Builders called inside a saga's `flow()` check every item against the saga's `D`, whether
or not `flow()` is annotated, and type lambdas' data parameter as `D`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from mypy.checker import TypeChecker
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import FuncDef, TypeInfo
from mypy.plugin import CheckerPluginInterface
from mypy.subtypes import is_subtype
from mypy.types import Instance, ProperType, get_proper_type
from mypy.typevars import fill_typevars

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes
from spakky_saga_mypy._items import FlowOperand, base_info


@dataclass(frozen=True, slots=True)
class EnclosingSaga:
    """The saga class whose method is being checked, and the data type it runs on."""

    info: TypeInfo
    data: Instance
    in_flow: bool
    """True inside `flow()` itself (check 2 applies), False in another method."""


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
    ancestor = base_info(info, names.ABSTRACT_SAGA)
    if ancestor is None:
        return None
    self_type = fill_typevars(info)
    if not isinstance(self_type, Instance):
        return None
    base = map_instance_to_supertype(self_type, ancestor)
    data = get_proper_type(base.args[0]) if base.args else None
    if not isinstance(data, Instance):
        return None
    return EnclosingSaga(info, data, function.name == names.FLOW_METHOD_NAME)


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
