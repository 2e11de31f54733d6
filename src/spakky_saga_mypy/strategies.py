"""Strategy constructor hooks: `Retry(...)` and `ExponentialBackoff(...)` arguments the
runtime rejects, when literals or types show it (check 7)."""

from collections.abc import Callable
from typing import Final

from mypy.nodes import ARG_NAMED, ARG_POS, Context, Expression, LambdaExpr, TupleExpr
from mypy.plugin import CheckerPluginInterface, FunctionContext, FunctionSigContext
from mypy.subtypes import is_subtype
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    NoneType,
    ProperType,
    TupleType,
    Type,
    TypeOfAny,
    TypeType,
    UnionType,
    get_proper_type,
)

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import errorcodes
from spakky_saga_mypy._checks import report_strategy_class
from spakky_saga_mypy._items import describe, label_of, literal_number, strategy_class

_RETRY_ON: Final = "retry_on"
_EXCEPTION: Final = "builtins.BaseException"


def retry_signature_callback(ctx: FunctionSigContext) -> FunctionLike:
    """Accept any `then=` and `retry_on=` (but a lambda, which keeps its context), so that
    the function hook explains what is wrong with them."""
    signature = ctx.default_signature
    arg_types = list(signature.arg_types)
    for index, name in enumerate(signature.arg_names):
        if name == names.THEN or (
            name == _RETRY_ON and not any(isinstance(arg, LambdaExpr) for arg in ctx.args[index])
        ):
            arg_types[index] = AnyType(TypeOfAny.special_form)
    return signature.copy_modified(arg_types=arg_types)


def _argument(ctx: FunctionContext, name: str) -> tuple[Expression, Type] | None:
    if name not in ctx.callee_arg_names:
        return None
    index = ctx.callee_arg_names.index(name)
    if len(ctx.args[index]) != 1 or ctx.arg_kinds[index][0] not in (ARG_POS, ARG_NAMED):
        return None  # `*args` or `**options`: what reaches the parameter is not known
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
    then = _argument(ctx, names.THEN)
    if then is not None:
        _check_then(ctx, *then)
    retry_on = _argument(ctx, _RETRY_ON)
    if retry_on is not None:
        _check_retry_on(ctx.api, *retry_on)
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


def _check_retry_on(api: CheckerPluginInterface, node: Expression, typ: Type) -> None:
    """`retry_on=` must be an exception class, a tuple of them, or a predicate; a lambda is
    left to mypy, which checks it against the declared predicate type."""
    proper = get_proper_type(typ)
    if isinstance(node, LambdaExpr):
        return
    if isinstance(proper, TupleType):
        exprs: list[Expression] = node.items if isinstance(node, TupleExpr) else []
        if len(exprs) != len(proper.items):
            exprs = [node] * len(proper.items)
        for position, (expr, item) in enumerate(zip(exprs, proper.items, strict=True), start=1):
            problem = _not_an_exception_class(api, item)
            if problem is not None:
                _fail_retry_on(api, expr, f"item {position} of the tuple is", problem)
        return
    if isinstance(proper, Instance) and proper.type.fullname == "builtins.tuple" and proper.args:
        problem = _not_an_exception_class(api, proper.args[0])
        if problem is not None:
            _fail_retry_on(api, node, "the tuple's items are", problem)
        return
    if isinstance(proper, Instance) and proper.type.fullname in _COLLECTIONS:
        _fail_retry_on(api, node, "got", (f"a {proper.type.name}", _USE_A_TUPLE))
        return
    if _is_callable_value(proper):  # a predicate: a function, a partial, a callable object
        if not is_subtype(proper, _predicate_type(api)):
            shown = errorcodes.show(api, proper)
            _fail_retry_on(
                api,
                node,
                f'the predicate "{label_of(node)}"',
                (f'has type "{shown}"', _PREDICATE_FIX),
            )
        return
    if isinstance(proper, UnionType):  # a variable that may hold any of the accepted kinds
        for item in proper.items:
            if not isinstance(get_proper_type(item), NoneType):  # None: the default
                _check_retry_on(api, node, item)
        return
    problem = None if isinstance(proper, NoneType) else _not_an_exception_class(api, proper)
    if problem is not None:
        _fail_retry_on(api, node, "got", problem)


_COLLECTIONS: Final = frozenset({"builtins.list", "builtins.set", "builtins.frozenset"})
_USE_A_TUPLE: Final = (
    "write the exception classes as a tuple, e.g. retry_on=(ConnectionError, TimeoutError)"
)
_PREDICATE_FIX: Final = "a predicate must accept any error (BaseException) and return bool"
_RETRY_ON_FIX: Final = (
    "retry_on takes an exception class, a tuple of them, or a predicate (BaseException) -> bool"
)


def _is_callable_value(typ: ProperType) -> bool:
    """A function or an object with `__call__` (not a class, which is called to build one)."""
    if isinstance(typ, CallableType):
        return not typ.is_type_obj()
    return (
        isinstance(typ, Instance)
        and typ.type.fullname != "builtins.type"  # a class of unknown kind: not told apart
        and typ.type.get("__call__") is not None
    )


def _not_an_exception_class(api: CheckerPluginInterface, typ: Type) -> tuple[str, str] | None:
    """(what `typ` is, how to fix it) when it is not (the type of) an exception class; None
    if it is one, or if its type does not tell (Any, `type`, `type[T]`)."""
    proper = get_proper_type(typ)
    if isinstance(proper, UnionType):
        problems = (_not_an_exception_class(api, item) for item in proper.items)
        return next((problem for problem in problems if problem is not None), None)
    if isinstance(proper, FunctionLike) and proper.is_type_obj():
        info = proper.type_object()
    elif isinstance(proper, TypeType) and isinstance(proper.item, Instance):
        info = proper.item.type
    elif isinstance(proper, AnyType | TypeType) or (
        isinstance(proper, Instance) and proper.type.fullname == "builtins.type"
    ):
        return None
    elif isinstance(proper, Instance) and proper.type.has_base(_EXCEPTION):
        name = proper.type.name
        return f'an instance of "{name}"', f"pass the class itself, {name}, without calling it"
    else:
        return f'"{errorcodes.show(api, proper)}", not an exception class', _RETRY_ON_FIX
    if info.has_base(_EXCEPTION):
        return None
    return f'the class "{info.name}", which does not derive from BaseException', _RETRY_ON_FIX


def _predicate_type(api: CheckerPluginInterface) -> CallableType:
    """`(BaseException) -> bool`."""
    return CallableType(
        [api.named_generic_type(_EXCEPTION, [])],
        [ARG_POS],
        [None],
        api.named_generic_type("builtins.bool", []),
        api.named_generic_type("builtins.function", []),
    )


def _fail_retry_on(
    api: CheckerPluginInterface, node: Context, subject: str, problem: tuple[str, str]
) -> None:
    what, fix = problem
    errorcodes.strategy(api, node, f"Retry(retry_on=...): {subject} {what}; {fix}")


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
