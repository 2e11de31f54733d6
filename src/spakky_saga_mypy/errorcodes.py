"""The plugin's error codes, one per kind of mistake, and one helper per message.

Every code lives in the "spakky-saga" category so that `disable_error_code` can target each
one. A helper names the step(s) or item position, what is wrong and how to fix it, and
reports at the node the user has to change.
"""

from typing import Final

from mypy.errorcodes import ErrorCode
from mypy.messages import format_type_bare
from mypy.nodes import Context
from mypy.plugin import CheckerPluginInterface, SemanticAnalyzerPluginInterface
from mypy.types import Type

_CATEGORY: Final = "spakky-saga"

DATA_MISMATCH: Final = ErrorCode(
    "saga-data-mismatch", "Flow items combined over unrelated saga-data types", _CATEGORY
)
FLOW_DATA: Final = ErrorCode(
    "saga-flow-data",
    "A saga's flow() contains an item over a type incompatible with the saga's data",
    _CATEGORY,
)
STEP_SIGNATURE: Final = ErrorCode(
    "saga-step-signature",
    "A step is not an async function taking one saga-data argument and returning it or None",
    _CATEGORY,
)
COMPENSATION_RETURN: Final = ErrorCode(
    "saga-compensation-return", "A compensation returns something other than None", _CATEGORY
)
DOUBLE_COMPENSATION: Final = ErrorCode(
    "saga-double-compensation", "A second compensation bound to a transaction", _CATEGORY
)
GROUP_SIZE: Final = ErrorCode(
    "saga-group-size",
    "parallel() with fewer than two members, or a flow with no item",
    _CATEGORY,
)
STRATEGY: Final = ErrorCode(
    "saga-strategy",
    "An error strategy the runtime rejects, or `|` with something that is not a strategy",
    _CATEGORY,
)
DEFINITION: Final = ErrorCode(
    "saga-definition", "Another flow definition the runtime rejects when it is built", _CATEGORY
)
UNTYPED_LAMBDA: Final = ErrorCode(
    "saga-untyped-lambda",
    "A lambda step whose saga-data type nothing tells (its data argument would be Any)",
    _CATEGORY,
)
STRATEGY_DECIDE: Final = ErrorCode(
    "saga-strategy-decide",
    "An ErrorStrategy subclass used as a strategy without implementing decide()",
    _CATEGORY,
)
COMPENSATION_SKIP: Final = ErrorCode(
    "saga-compensation-skip",
    "A compensation whose own error strategy skips its failure (a compensation cannot skip)",
    _CATEGORY,
)
PIVOT_UNCOMPENSATED: Final = ErrorCode(
    "saga-pivot-uncompensated",
    "A step before the flow's pivot has no compensation and is not declared read-only",
    _CATEGORY,
)
PIVOT_NOT_RETRIABLE: Final = ErrorCode(
    "saga-pivot-not-retriable",
    "A step after the flow's pivot fails at once (Compensate, the default) instead of "
    "retrying or skipping",
    _CATEGORY,
)
PIVOT_TWICE: Final = ErrorCode("saga-pivot-twice", "A flow with more than one pivot", _CATEGORY)
PIVOT_MEMBER: Final = ErrorCode(
    "saga-pivot-member",
    "A member of a parallel group marked as the pivot, or a pivot group extended with &",
    _CATEGORY,
)
WAIT_MERGE: Final = ErrorCode(
    "saga-wait-merge",
    "A wait_for() merge function that does not take the saga data and the signal, or does "
    "not return the saga data",
    _CATEGORY,
)
WAIT_PLACEMENT: Final = ErrorCode(
    "saga-wait-placement",
    "A wait (wait_for, sleep, sleep_until) in a parallel group or used as a compensation",
    _CATEGORY,
)

ALL_CODES: Final = (
    DATA_MISMATCH,
    FLOW_DATA,
    STEP_SIGNATURE,
    COMPENSATION_RETURN,
    DOUBLE_COMPENSATION,
    GROUP_SIZE,
    STRATEGY,
    DEFINITION,
    UNTYPED_LAMBDA,
    STRATEGY_DECIDE,
    COMPENSATION_SKIP,
    PIVOT_UNCOMPENSATED,
    PIVOT_NOT_RETRIABLE,
    PIVOT_TWICE,
    PIVOT_MEMBER,
    WAIT_MERGE,
    WAIT_PLACEMENT,
)


def show(api: CheckerPluginInterface | SemanticAnalyzerPluginInterface, typ: Type) -> str:
    """A type as mypy prints it in messages, without the quotes."""
    return format_type_bare(typ, api.options)


def data_mismatch(
    api: CheckerPluginInterface,
    context: Context,
    where: str,
    first: tuple[str, Type],
    second: tuple[str, Type],
) -> None:
    """Check 1: two items of one composition work on unrelated saga-data types."""
    (first_name, first_type), (second_name, second_type) = first, second
    api.fail(
        f'Saga-data mismatch in {where}: "{first_name}" works on "{show(api, first_type)}" '
        f'but "{second_name}" works on "{show(api, second_type)}"; items combined together '
        "must take the same saga-data type (or a base class of it)",
        context,
        code=DATA_MISMATCH,
    )


def flow_data(
    api: CheckerPluginInterface,
    context: Context,
    *,
    saga: str,
    saga_data: Type,
    item: str,
    item_data: Type,
) -> None:
    """Check 2: an item of a saga's flow() cannot take the saga's data."""
    api.fail(
        f'Saga "{saga}" runs on "{show(api, saga_data)}" but its flow item {item} works on '
        f'"{show(api, item_data)}"; every item of flow() must take "{show(api, saga_data)}" '
        "or a base class of it",
        context,
        code=FLOW_DATA,
    )


def flow_annotation(
    api: CheckerPluginInterface | SemanticAnalyzerPluginInterface,
    context: Context,
    *,
    saga: str,
    saga_data: Type,
    returned: Type,
    returned_data: Type,
) -> None:
    """Check 2 on the `def flow` line: flow() is declared over another data type."""
    data, other = show(api, saga_data), show(api, returned_data)
    api.fail(
        f'Saga "{saga}" runs on "{data}" but its flow() is declared to return '
        f'"{show(api, returned)}"; declare it "-> SagaFlow[{data}]", or derive "{saga}" from '
        f'AbstractSaga[{other}] if the saga runs on "{other}"',
        context,
        code=FLOW_DATA,
    )


def step_signature(api: CheckerPluginInterface, context: Context, what: str, problem: str) -> None:
    """Check 3: an action or compensation does not have the shape the engine calls."""
    api.fail(f"{what} {problem}", context, code=STEP_SIGNATURE)


def compensation_return(
    api: CheckerPluginInterface, context: Context, name: str, returned: Type
) -> None:
    """Check 4: a compensation returns a value."""
    api.fail(
        f'Compensation "{name}" returns "{show(api, returned)}"; a compensation undoes a '
        "committed step and must return None (declare it `-> None`)",
        context,
        code=COMPENSATION_RETURN,
    )


def double_compensation(
    api: CheckerPluginInterface, context: Context, transaction: str, extra: str
) -> None:
    """Check 5: a compensation bound to something that already has one."""
    api.fail(
        f'Transaction "{transaction}" already has a compensation; cannot bind "{extra}" as a '
        "second one. Bind one compensation per action, or put the extra undo work inside "
        "the existing compensation",
        context,
        code=DOUBLE_COMPENSATION,
    )


def group_size(api: CheckerPluginInterface, context: Context, message: str) -> None:
    """Check 6: parallel() with fewer than two members, a flow without items."""
    api.fail(message, context, code=GROUP_SIZE)


def strategy(api: CheckerPluginInterface, context: Context, message: str) -> None:
    """Check 7: a strategy the runtime rejects, or `|` with a non-strategy."""
    api.fail(message, context, code=STRATEGY)


USE_A_STRATEGY: Final = "use Compensate(), Skip(), Retry(...) or your own ErrorStrategy subclass"
"""How messages say what a strategy may be."""


def strategy_class(
    api: CheckerPluginInterface, context: Context, lead: str, name: str, *, is_base: bool
) -> None:
    """Check 7: a strategy class where a strategy instance belongs (`step | Skip`)."""
    if is_base:
        problem = f'"{name}" is the base class of the strategies; {USE_A_STRATEGY}'
    else:
        problem = f'"{name}" is the strategy class itself, not an instance; did you mean {name}()?'
    api.fail(f"{lead}{problem}", context, code=STRATEGY)


def base_strategy(api: CheckerPluginInterface, context: Context, lead: str) -> None:
    """Check 7: `ErrorStrategy()` itself, which decides nothing, used as a strategy."""
    api.fail(
        f'{lead}"ErrorStrategy()" is the base class of the strategies, which decides nothing; '
        f"{USE_A_STRATEGY}",
        context,
        code=STRATEGY,
    )


def strategy_decide(api: CheckerPluginInterface, context: Context, lead: str, name: str) -> None:
    """Check 10: a user strategy whose class does not implement `decide` (it inherits the
    base's, which only raises), so the runtime rejects it when the flow is built."""
    api.fail(
        f'{lead}"{name}" does not implement decide(failure) -> Decision; define it in {name} '
        "to say when to retry, skip or fail (the runtime rejects the strategy when the flow is "
        "built)",
        context,
        code=STRATEGY_DECIDE,
    )


def compensation_skip(
    api: CheckerPluginInterface,
    context: Context,
    *,
    compensation: str,
    transaction: str,
    strategy: str,
) -> None:
    """Check 11: a compensation's own strategy skips its failure, which the runtime refuses
    when the transaction is built."""
    api.fail(
        f'Compensation "{compensation}" of transaction "{transaction}" cannot skip its failure, '
        f"but its strategy {strategy} skips it; a compensation that gives up has failed and is "
        "reported. Use Retry(n) (then Compensate(), the default), or handle the error inside "
        "the compensation",
        context,
        code=COMPENSATION_SKIP,
    )


def definition(api: CheckerPluginInterface, context: Context, message: str) -> None:
    """Check 8: anything else the runtime rejects when the flow is built."""
    api.fail(message, context, code=DEFINITION)


def untyped_lambda(
    api: CheckerPluginInterface, context: Context, *, where: str, parameter: str, example: str
) -> None:
    """Check 9: nothing gives a lambda step's data argument a type."""
    api.fail(
        f'Cannot tell which saga data the lambda in {where} receives: "{parameter}" would be '
        f"Any and the lambda unchecked; annotate the variable ({example}), or use an "
        "`async def` with a typed data parameter",
        context,
        code=UNTYPED_LAMBDA,
    )


def pivot_uncompensated(
    api: CheckerPluginInterface, context: Context, *, step: str, position: int, pivot: str
) -> None:
    """Check 12: a step before the pivot that nothing could undo."""
    api.fail(
        f'Step "{step}" (item {position}) comes before the pivot "{pivot}" but has no '
        "compensation: if a later step fails before the pivot commits, nothing undoes it. Bind "
        f"one ({step} >> undo), or declare it read-only (step({step}, read_only=True)) if it "
        "changes nothing",
        context,
        code=PIVOT_UNCOMPENSATED,
    )


def pivot_not_retriable(
    api: CheckerPluginInterface,
    context: Context,
    *,
    step: str,
    position: int,
    pivot: str,
    strategy: str,
) -> None:
    """Check 13: a step after the pivot whose strategy fails at once."""
    api.fail(
        f'Step "{step}" (item {position}) comes after the pivot "{pivot}" but its strategy '
        f"{strategy} fails at once: after the point of no return nothing is compensated, so it "
        f"must not fail for good. Retry it ({step} | Retry(10)), or skip its failure "
        f"({step} | Skip()) if the saga may complete without it",
        context,
        code=PIVOT_NOT_RETRIABLE,
    )


def pivot_twice(
    api: CheckerPluginInterface, context: Context, *, item: str, position: int, first: str
) -> None:
    """Check 14: a second pivot in one flow."""
    api.fail(
        f'Item {position} "{item}" is marked as the pivot, but "{first}" is the pivot already; '
        "a saga has one point of no return: keep one pivot(...)",
        context,
        code=PIVOT_TWICE,
    )


def pivot_member(api: CheckerPluginInterface, context: Context, message: str) -> None:
    """Check 15: a pivot inside a parallel group (a group is the pivot only as a whole)."""
    api.fail(message, context, code=PIVOT_MEMBER)


def wait_merge(api: CheckerPluginInterface, context: Context, message: str) -> None:
    """Check 16: a `wait_for` merge function of the wrong shape (message built by `waits`)."""
    api.fail(message, context, code=WAIT_MERGE)


def wait_placement(api: CheckerPluginInterface, context: Context, message: str) -> None:
    """Check 17: a wait where only an acting step may stand."""
    api.fail(message, context, code=WAIT_PLACEMENT)
