"""Strategy constructor hooks: `Retry(...)` and `ExponentialBackoff(...)` arguments the
runtime rejects, when they are literals (check 7)."""

from collections.abc import Callable
from typing import Final

from mypy.nodes import Expression
from mypy.plugin import FunctionContext, FunctionSigContext
from mypy.types import AnyType, FunctionLike, Instance, Type, TypeOfAny, get_proper_type

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes
from spakky_saga_mypy._checks import report_strategy_class
from spakky_saga_mypy._items import describe, literal_number, strategy_class

_THEN: Final = "then"


def retry_signature_callback(ctx: FunctionSigContext) -> FunctionLike:
    """Accept any `then=`, so the function hook explains `then=Retry(...)`."""
    signature = ctx.default_signature
    if _THEN not in signature.arg_names:
        return signature
    arg_types = list(signature.arg_types)
    arg_types[signature.arg_names.index(_THEN)] = AnyType(TypeOfAny.special_form)
    return signature.copy_modified(arg_types=arg_types)


def _argument(ctx: FunctionContext, name: str) -> tuple[Expression, Type] | None:
    if name not in ctx.callee_arg_names:
        return None
    index = ctx.callee_arg_names.index(name)
    if len(ctx.args[index]) != 1:
        return None
    return ctx.args[index][0], ctx.arg_types[index][0]


def _literal(ctx: FunctionContext, name: str) -> tuple[Expression, int | float] | None:
    argument = _argument(ctx, name)
    if argument is None:
        return None
    value = literal_number(*argument)
    return None if value is None else (argument[0], value)


def retry_callback(ctx: FunctionContext) -> Type:
    """`Retry(max_attempts < 1)`, `Retry(True)`, `then=` anything but Compensate()/Skip()."""
    attempts = _literal(ctx, "max_attempts")
    if attempts is not None:
        node, value = attempts
        if isinstance(value, bool) or value < 1:
            errorcodes.strategy(
                ctx.api,
                node,
                f"Retry(max_attempts={value!r}): max_attempts counts every attempt, the first "
                "included, so it must be an int >= 1 (use Retry(1) for no retry)",
            )
    then = _argument(ctx, _THEN)
    if then is not None:
        _check_then(ctx, *then)
    return ctx.default_return_type  # a strategy is not generic: nothing to degrade


def _check_then(ctx: FunctionContext, node: Expression, then_type: Type) -> None:
    """`then=` must be Compensate() or Skip(): not a retry, not a class, nothing else."""
    proper = get_proper_type(then_type)
    cls = strategy_class(proper)
    if (cls is not None and cls.has_base(names.RETRY)) or (
        isinstance(proper, Instance) and proper.type.has_base(names.RETRY)
    ):
        errorcodes.strategy(
            ctx.api,
            node,
            "Retry(then=Retry(...)): a retry cannot be followed by another retry; raise "
            "max_attempts instead",
        )
    elif cls is not None:
        operand = describe(node, proper)
        report_strategy_class(ctx.api, operand, "Retry(then=...): ")
    elif not isinstance(proper, AnyType) and not _is_final_strategy(proper):
        errorcodes.strategy(
            ctx.api,
            node,
            f'Retry(then=...): got "{errorcodes.show(ctx.api, proper)}"; then must be '
            "Compensate() or Skip()",
        )


def _is_final_strategy(typ: Type) -> bool:
    proper = get_proper_type(typ)
    if isinstance(proper, Instance):
        return proper.type.has_base(names.COMPENSATE) or proper.type.has_base(names.SKIP)
    items = getattr(proper, "items", None)
    return isinstance(items, list) and bool(items) and all(map(_is_final_strategy, items))


_BACKOFF_RULES: Final[tuple[tuple[str, str, Callable[[float], bool]], ...]] = (
    ("base", "base must be a number of seconds >= 0", lambda value: value >= 0),
    ("max_delay", "max_delay must be >= 0 seconds, or None for no cap", lambda value: value >= 0),
    ("jitter", "jitter must be a fraction between 0.0 and 1.0", lambda value: 0 <= value <= 1),
)


def backoff_callback(ctx: FunctionContext) -> Type:
    """`ExponentialBackoff` with a negative base or max_delay, or a jitter outside [0, 1]."""
    for name, rule, valid in _BACKOFF_RULES:
        literal = _literal(ctx, name)
        if literal is not None and not valid(literal[1]):
            errorcodes.strategy(
                ctx.api, literal[0], f"ExponentialBackoff({name}={literal[1]!r}): {rule}"
            )
    return ctx.default_return_type  # a strategy is not generic: nothing to degrade
