"""`@saga_step` hook: the decorated method must be `async def step(self, data)` over a
saga-data type, returning that type (or a subclass) or None (check 3)."""

from mypy.nodes import Decorator, FuncDef
from mypy.plugin import FunctionContext
from mypy.types import CallableType, Instance, Type, get_proper_type

from spakky_saga_mypy._checks import check_signature
from spakky_saga_mypy._items import FlowOperand, ItemKind, errored, first_argument


def saga_step_callback(ctx: FunctionContext) -> Type:
    """Check the decorated method's signature; on a mistake the attribute becomes Any."""
    if len(ctx.arg_types) != 1 or len(ctx.arg_types[0]) != 1:
        return ctx.default_return_type
    method = get_proper_type(ctx.arg_types[0][0])
    if not isinstance(method, CallableType) or not method.arg_types:
        return ctx.default_return_type
    without_self = method.copy_modified(
        arg_types=method.arg_types[1:],
        arg_kinds=method.arg_kinds[1:],
        arg_names=method.arg_names[1:],
    )
    node = ctx.context.func if isinstance(ctx.context, Decorator) else ctx.context
    name = node.name if isinstance(node, FuncDef) else (method.name or "step").split(" ")[0]
    operand = FlowOperand(ItemKind.FUNCTION, None, without_self, node, method, name=name)
    if not check_signature(ctx.api, operand, without_self, role="Saga step"):
        return errored(ctx.default_return_type)
    # mypy solves D from both the parameter and the return, so a method taking OrderData
    # and returning SpecialOrder would be a step over SpecialOrder: the parameter decides.
    default = get_proper_type(ctx.default_return_type)
    data = first_argument(without_self)
    if data is None or not isinstance(default, Instance) or len(default.args) != 2:
        return ctx.default_return_type
    return default.copy_modified(args=[default.args[0], data])
