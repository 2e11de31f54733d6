"""What a flow is: immutable steps, transactions, parallel groups and the top-level flow.

These types know nothing of the engine. Operators build them (`>>` binds a compensation,
`&` makes a parallel group, `|` attaches an error strategy) and every constructor validates,
so a malformed flow fails where it is written, never in the middle of a run.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Never, Protocol, Self, TypeVar, cast

from typing_extensions import deprecated

from spakky_saga._text import safe_repr
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import (
    SagaFlowDefinitionError,
    SagaFlowOperatorError,
    SagaNotRetriableAfterPivotError,
    SagaPivotError,
    SagaPivotMemberError,
    SagaSecondPivotError,
    SagaUncompensatedBeforePivotError,
    SagaWaitDefinitionError,
)
from spakky_saga.flowchart import Box, Fork, flowchart
from spakky_saga.strategy import (
    DEFAULT_STRATEGY,
    MYPY,
    ErrorStrategy,
    Escalate,
    check_compensation_strategy,
    check_strategy,
)

SagaDataT = TypeVar("SagaDataT", bound=AbstractSagaData)
"""The saga data type a flow item works on."""

type ActionFn[D: AbstractSagaData] = Callable[[D], Awaitable[D | None]]
"""A step's action: takes the data, returns new data (replacing it) or None (keeping it)."""

type CompensateFn[D: AbstractSagaData] = Callable[[D], Awaitable[None]]
"""A compensation: undoes a committed action, given the latest data; returns nothing."""

type MergeFn[D: AbstractSagaData] = Callable[[D, tuple[D | None, ...]], D]
"""Combines a parallel group's results (input data, then each member's result in declaration
order, None for members that returned nothing or were skipped) into the group's output."""

type CompensationOrder = Literal["reverse", "concurrent"]

type FlowItem[D: AbstractSagaData] = SagaStep[D] | Transaction[D] | Parallel[D]
"""Anything that can stand in a flow's items."""


class ActionItem[D: AbstractSagaData](Protocol):
    """A step or transaction whose action can take `D`: one over `D`, or over a base class
    of it (a shared `audit(data: AbstractSagaData) -> None` in a flow over `OrderData`).

    Contravariant in `D`, unlike the flow types themselves: operators and builders take
    their operands as this, so that type checkers without our mypy plugin (pyright, plain
    mypy) accept a step over a base class beside steps over `D`."""

    @property
    def name(self) -> str: ...

    def __call__(self, data: D, /) -> Awaitable[object]: ...


class CompensationStep[D: AbstractSagaData](Protocol):
    """A `SagaStep` (not a transaction or group) whose action can take `D`: what `>>` and
    `compensate=` accept besides a function, a compensation over `D` or a base class of it."""

    def __call__(self, data: D, /) -> Awaitable[object]: ...

    # A transaction's `|` returns a transaction, a group's accepts nothing: only a SagaStep's
    # result fits. Any: the step's own data type is `D` or any base class of it.
    def __or__(self, strategy: ErrorStrategy, /) -> SagaStep[Any]: ...


type Operand[D: AbstractSagaData] = FlowItem[D] | ActionItem[D] | ActionFn[D]
"""What `&`, `parallel()` and `saga_flow()` take: a flow item over `D` (or, for steps and
transactions, a base class of it) or an async function."""


def callable_name(fn: object) -> str:
    """A readable name for a step built from `fn`: the function or method name."""
    if isinstance(fn, _AwaitableCheck):
        return callable_name(fn.function)
    name = getattr(fn, "__name__", None)
    if isinstance(name, str):
        return name
    inner = getattr(fn, "func", None)  # functools.partial
    if inner is not None:
        return callable_name(inner)
    return type(fn).__name__


type _Awaitability = Literal["async", "unknown", "sync"]


def _awaitability(fn: object) -> _Awaitability:
    """Whether calling `fn` returns an awaitable: known ("async": an `async def`, a partial or
    bound method of one, an object with an async `__call__`), knowable only by calling it
    ("unknown": a lambda, or a plain function decorating an async one), or not ("sync")."""
    if fn.__class__ is types.FunctionType and fn.__code__.co_flags & inspect.CO_COROUTINE:
        return "async"  # the common case, without inspect's unwrapping
    if isinstance(fn, _AwaitableCheck):
        return "unknown"
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - want the class's __call__
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call):
        return "async"
    inner = fn
    while isinstance(inner, functools.partial | types.MethodType):
        inner = inner.func if isinstance(inner, functools.partial) else inner.__func__
    if not isinstance(inner, types.FunctionType):
        return "sync"
    if inner.__code__.co_name == "<lambda>":  # a lambda cannot be async, but can return a
        return "unknown"  # coroutine: `lambda data: reserve(data)`
    try:
        wrapped = inspect.unwrap(inner)
    except ValueError:  # a __wrapped__ cycle
        return "sync"
    if wrapped is not inner and _awaitability(wrapped) == "async":
        return "unknown"  # a plain decorator's wrapper around an async function
    return "sync"


def check_callable(fn: object, role: str, where: str, *, bound_args: int = 1) -> _Awaitability:
    """Raise a definition error unless `fn` is an async callable taking the saga data.

    Callables whose async-ness only a call can tell (lambdas) pass as "unknown";
    `guard_awaitable` makes their first call that returns no awaitable fail clearly.
    """
    if not callable(fn):
        raise SagaFlowDefinitionError(
            f"{where}: {role} must be an async function taking the saga data, got {safe_repr(fn)}"
        )
    awaitability = _awaitability(fn)
    if awaitability == "sync":
        if inspect.isasyncgenfunction(fn):
            raise SagaFlowDefinitionError(
                f'{where}: {role} "{callable_name(fn)}" is an async generator (it contains '
                "`yield`); the engine awaits a step once, so return the result instead"
            )
        raise SagaFlowDefinitionError(
            f'{where}: {role} "{callable_name(fn)}" is a regular function; '
            "declare it with `async def` so the engine can await it"
        )
    if isinstance(fn, _AwaitableCheck):
        fn = fn.function  # its own signature was checked when it was wrapped
    problem = _signature_problem(fn, bound_args)
    if problem is not None:
        expected = "the saga data" if bound_args == 1 else "self and the saga data"
        raise SagaFlowDefinitionError(
            f'{where}: {role} "{callable_name(fn)}" must take exactly one argument, '
            f"{expected}, but its signature is {problem}"
        )
    return awaitability


class _AwaitableCheck:
    """Calls a callable whose async-ness only a call can tell (a lambda) and fails clearly,
    naming the step, when it returned something that cannot be awaited.

    `async def` functions and objects with an async `__call__` are never wrapped, so the
    engine's calls to them cost nothing extra.
    """

    __slots__ = ("function", "label")

    def __init__(self, function: Callable[[Any], object], label: str) -> None:
        self.function = function
        self.label = label

    def __call__(self, data: Any, /) -> Awaitable[Any]:
        result = self.function(data)
        if inspect.isawaitable(result):
            return result
        raise SagaFlowDefinitionError(
            f"{self.label} returned {safe_repr(result)} ({type(result).__name__}) instead of "
            "an awaitable; it must return one, e.g. `lambda data: do_it(data)` with an "
            "`async def do_it`, or be declared with `async def` itself"
        )

    def __repr__(self) -> str:
        return safe_repr(self.function)


def guard_awaitable[F](fn: F, label: str, awaitability: _Awaitability | None = None) -> F:
    """`fn`, or, when only a call can tell whether it returns an awaitable (a lambda), `fn`
    wrapped so that a call returning none raises SagaFlowDefinitionError naming `label`.
    `awaitability` is `check_callable`'s answer, when the caller has it."""
    if (awaitability or _awaitability(fn)) != "unknown":
        return fn
    if isinstance(fn, _AwaitableCheck):
        if fn.label == label:
            return fn
        fn = cast(F, fn.function)
    return cast(F, _AwaitableCheck(cast(Callable[[Any], object], fn), label))


def check_name(name: object, where: str, field_name: str = "name") -> None:
    """Raise a definition error unless `name` is a str that is empty (use the function's name)
    or not blank."""
    if not isinstance(name, str):
        raise SagaFlowDefinitionError(
            f'{where}: {field_name} must be a str (or "" for the function\'s name), got '
            f"{safe_repr(name)} ({type(name).__name__})"
        )
    if name and not name.strip():
        raise SagaFlowDefinitionError(
            f"{where}: {field_name} {name!r} is blank; give a name that shows in logs and "
            'history, or "" for the function\'s name'
        )


# Whether a call shape binds, keyed by code object and argument count: flows are rebuilt
# often (every operator validates), and inspect.signature costs tens of microseconds.
_SHAPE_BINDS: dict[tuple[object, ...], bool] = {}


def _signature_problem(fn: object, bound_args: int) -> str | None:
    """None if `fn` accepts `bound_args` positional arguments, else its signature as text."""
    key = _call_shape(fn, bound_args)
    if key is not None and _SHAPE_BINDS.get(key):
        return None
    try:
        signature = inspect.signature(fn)  # type: ignore[arg-type] # checked callable by caller
    except (TypeError, ValueError):  # builtins without signatures: trust them
        return None
    try:
        signature.bind(*([None] * bound_args))
    except TypeError:
        return str(signature)
    if key is not None:
        _SHAPE_BINDS[key] = True
    return None


def _call_shape(fn: object, bound_args: int) -> tuple[object, ...] | None:
    """A key that determines whether a call binds, or None when it cannot be cached."""
    extra = 0
    if isinstance(fn, functools.partial) and not fn.keywords:
        extra, fn = len(fn.args), fn.func
    elif isinstance(fn, types.MethodType):
        extra, fn = 1, fn.__func__
    if (
        not isinstance(fn, types.FunctionType)
        or hasattr(fn, "__wrapped__")
        or hasattr(fn, "__signature__")
    ):
        return None
    return (
        fn.__code__,
        len(fn.__defaults__ or ()),
        frozenset(fn.__kwdefaults__ or ()),
        bound_args + extra,
    )


def check_timeout(timeout: object, where: str) -> timedelta | None:
    """Return a valid step timeout or raise a definition error naming `where`."""
    if timeout is None:
        return None
    if not isinstance(timeout, timedelta):
        raise SagaFlowDefinitionError(
            f"{where}: timeout must be a datetime.timedelta, got {safe_repr(timeout)}"
        )
    if timeout <= timedelta(0):
        raise SagaFlowDefinitionError(
            f"{where}: timeout must be positive, got {safe_repr(timeout)}"
        )
    return timeout


@dataclass(frozen=True, slots=True, eq=False)
class _Action[D: AbstractSagaData]:
    """What steps and transactions share: an action, its name, strategy and timeout."""

    action: ActionFn[D]
    name: str = ""
    on_error: ErrorStrategy = DEFAULT_STRATEGY
    timeout: timedelta | None = None
    read_only: bool = field(default=False, kw_only=True)
    """Declared to change nothing (a query, a validation): it needs no compensation before
    the flow's pivot. See docs/runtime.md, "The point of no return"."""
    pivot: bool = field(default=False, kw_only=True)
    """The flow's point of no return (`pivot(capture)`): once it commits, nothing is
    compensated."""
    waits: ClassVar[bool] = False
    """True for a wait (`wait_for`, `sleep`: waits.SagaWait), which the engine runs itself."""

    @property
    def can_fail(self) -> bool:
        """Whether the item can fail at all (an action can; a sleep cannot)."""
        return True

    @property
    def wait_details(self) -> tuple[str, ...]:
        """For a wait, what diagrams show under its name (its timeout, what a timeout
        means); () for an action."""
        return ()

    def __post_init__(self) -> None:
        action, name = self.action, self.name
        if not callable(action):  # no name to give: say what was passed instead
            check_callable(action, "action", f"step({safe_repr(action)})")
        if not isinstance(name, str) or name.isspace():
            check_name(name, f'step "{callable_name(action)}"')  # raises, explaining
        if not name:
            name = callable_name(action)
            object.__setattr__(self, "name", name)
        where = f'step "{name}"'
        awaitability = check_callable(action, "action", where)
        if awaitability == "unknown":
            object.__setattr__(self, "action", guard_awaitable(action, where, awaitability))
        check_strategy(self.on_error, where)
        check_timeout(self.timeout, where)
        _check_flags(self, where)

    def __call__(self, data: D, /) -> Awaitable[D | None]:
        """Run the action alone (outside any saga): handy in unit tests of a step."""
        return self.action(data)

    def __or__(self, strategy: ErrorStrategy, /) -> Self:
        """Attach an error strategy: `step | Retry(3)` is the same kind of item."""
        if not isinstance(strategy, ErrorStrategy):
            try:
                check_strategy(strategy, f'step "{self.name}"')  # always raises: says what
            except SagaFlowDefinitionError as error:
                raise SagaFlowOperatorError(*error.problems) from None
        return dataclasses.replace(self, on_error=strategy)

    def __and__(self, other: Operand[D], /) -> Parallel[D]:
        """Run both concurrently: `a & b & c` is one flat group (an async function on the
        right is promoted to a step)."""
        return _parallel_of(self, other)

    if TYPE_CHECKING and not MYPY:
        # For pyright, never called: the left operand of `x & y` here is a step or
        # transaction, whose own `__and__` runs. It types `base_step & step_over_subclass`
        # over the subclass, which `__and__` (over the left's data type) cannot. mypy skips
        # it (MYPY is true to mypy): it would try it after our plugin reported `__and__`,
        # and could accept what the plugin rejected.
        def __rand__(self, other: ActionItem[D], /) -> Parallel[D]: ...


@dataclass(frozen=True, slots=True, eq=False)
class SagaStep[D: AbstractSagaData](_Action[D]):
    """A single action without compensation."""

    def __rshift__(self, compensate: CompensationStep[D] | CompensateFn[D], /) -> Transaction[D]:
        """Bind a compensation: `action >> compensation` is a Transaction."""
        if isinstance(compensate, _Action) and compensate.waits:
            raise SagaWaitDefinitionError(
                f'step "{self.name}" >> wait "{compensate.name}": a wait cannot be a '
                "compensation; a compensation undoes an effect, so make it a step that acts"
            )
        if isinstance(compensate, _Action | Parallel) and not isinstance(compensate, SagaStep):
            raise SagaFlowOperatorError(
                f'step "{self.name}" >> {type(compensate).__name__} "{_item_name(compensate)}": '
                "a compensation must be a single step or async function, not a "
                f"{type(compensate).__name__}"
            )
        if not callable(compensate):  # a definition error, as in the documented package
            raise SagaFlowDefinitionError(
                f'step "{self.name}" >> {safe_repr(compensate)}: a compensation must be an async '
                f"function taking the saga data, or a step; got {_kind(compensate)}"
            )
        policy = compensate if isinstance(compensate, SagaStep) else None
        return Transaction(
            action=self.action,
            compensate=_compensation_fn(compensate),
            name=self.name,
            compensation_name=_compensation_name(compensate),
            on_error=self.on_error,
            timeout=self.timeout,
            compensation_strategy=DEFAULT_STRATEGY if policy is None else policy.on_error,
            compensation_timeout=None if policy is None else policy.timeout,
            read_only=self.read_only,
            pivot=self.pivot,
        )

    def __repr__(self) -> str:
        """`SagaStep(reserve | Retry(3), timeout=2s)`: as it is written in a flow."""
        return f"SagaStep({_action_text(self, standalone=True)})"


def _compensation_fn[D: AbstractSagaData](
    compensate: CompensationStep[D] | CompensateFn[D],
) -> CompensateFn[D]:
    # A CompensationStep is a SagaStep at run time; everything else is the function itself.
    return cast(
        CompensateFn[D], compensate.action if isinstance(compensate, SagaStep) else compensate
    )


def _compensation_name(compensate: object) -> str:
    if isinstance(compensate, SagaStep):
        return compensate.name
    return callable_name(compensate)


@dataclass(frozen=True, slots=True, eq=False)
class Transaction[D: AbstractSagaData](_Action[D]):
    """An action paired with the compensation that undoes it."""

    compensate: CompensateFn[D] = field(kw_only=True)
    compensation_name: str = field(default="", kw_only=True)
    compensation_strategy: ErrorStrategy = field(default=DEFAULT_STRATEGY, kw_only=True)
    """The compensation's own policy: `action >> (undo | Retry(5))`. The default runs it
    once; a failure is reported (see SagaCompensationFailedError)."""
    compensation_timeout: timedelta | None = field(default=None, kw_only=True)
    """Bounds each attempt of the compensation: `action >> step(undo, timeout=...)`. None:
    the engine's `compensation_timeout`, if any."""

    def __post_init__(self) -> None:
        _Action.__post_init__(self)
        where = f'transaction "{self.name}"'
        check_name(self.compensation_name, where, "compensation_name")
        if not self.compensation_name:
            object.__setattr__(self, "compensation_name", callable_name(self.compensate))
        label = f'compensation "{self.compensation_name}" of {where}'
        check_compensation_strategy(self.compensation_strategy, label)
        check_timeout(self.compensation_timeout, label)
        awaitability = check_callable(self.compensate, "compensation", where)
        if awaitability == "unknown":
            label = f'compensation "{self.compensation_name}" of {where}'
            guarded = guard_awaitable(self.compensate, label, awaitability)
            object.__setattr__(self, "compensate", guarded)

    # category=None: type checkers (pyright too) report the call, while at run time the
    # SagaFlowOperatorError below says it all, with no DeprecationWarning before it.
    @deprecated("a Transaction already has a compensation; bind one per action", category=None)
    def __rshift__(self, compensate: Never, /) -> Never:
        """Always an error: a compensation is bound once (the mypy plugin reports it too).

        Typed to accept nothing, so type checkers without the plugin report `a >> b >> c`
        as an error, not only as a use of something deprecated."""
        raise SagaFlowOperatorError(
            f'transaction "{self.name}" already has compensation "{self.compensation_name}"; '
            f'cannot bind "{_item_name(compensate)}" as a second one. Bind one compensation '
            "per action, or put the extra undo work inside the existing compensation"
        )

    def __repr__(self) -> str:
        """`Transaction(reserve >> release | Retry(3))`: as it is written in a flow."""
        return f"Transaction({_action_text(self, standalone=True)})"


type ParallelMember[D: AbstractSagaData] = SagaStep[D] | Transaction[D]


@dataclass(frozen=True, slots=True, eq=False)
class Parallel[D: AbstractSagaData]:
    """Members that run concurrently on the same input data.

    When a member fails, the group waits for its siblings, then the committed members (and
    every earlier committed step) are compensated. Members' returned data is merged: see
    `merge` and docs/parallel.md.
    """

    items: tuple[ParallelMember[D], ...]
    merge: MergeFn[D] | None = None
    compensation_order: CompensationOrder = "reverse"
    pivot: bool = field(default=False, kw_only=True)
    """The whole group is the flow's point of no return (`pivot(a & b)`): once every member
    finished, nothing is compensated."""

    def __post_init__(self) -> None:
        items = self.items
        if isinstance(items, str | bytes) or not isinstance(items, Sequence):
            raise SagaFlowDefinitionError(
                f"parallel group: items must be a tuple of steps, got {safe_repr(items)}"
            )
        flat: tuple[ParallelMember[D], ...] = _flatten_members(tuple(items), "parallel group")
        object.__setattr__(self, "items", flat)
        problems: list[str] = []
        if len(flat) < 2:
            problems.append(
                f"parallel group with {len(flat)} member(s): a group needs at least two; "
                "put a single step directly in the flow instead"
            )
        if self.merge is not None and not callable(self.merge):
            problems.append(
                f"parallel group: merge must be a function, got {safe_repr(self.merge)}"
            )
        elif self.merge is not None and inspect.iscoroutinefunction(self.merge):
            problems.append(
                f'parallel group: merge function "{callable_name(self.merge)}" is `async def`; '
                "a merge combines results in memory between steps, so declare it with `def` "
                "(do I/O in a step instead)"
            )
        if self.compensation_order not in ("reverse", "concurrent"):
            problems.append(
                f"parallel group: compensation_order must be 'reverse' or 'concurrent', "
                f"got {safe_repr(self.compensation_order)}"
            )
        if problems:
            raise SagaFlowDefinitionError(*problems)
        _check_flags(self, f'parallel group "{self.name}"')
        pivots = [member.name for member in flat if member.pivot]
        if pivots:
            raise SagaPivotMemberError(
                *(
                    f'parallel group "{self.name}": member "{name}" is marked as the pivot; a '
                    "group can be the pivot only as a whole: write `pivot(a & b)`, or put "
                    "the pivot step in the flow on its own"
                    for name in pivots
                )
            )

    @property
    def members(self) -> tuple[ParallelMember[D], ...]:
        """The same as `items` (this field's name before upstream's `items` was adopted)."""
        return self.items

    @property
    def name(self) -> str:
        """`a & b & c`: the members' names, used in logs and error messages."""
        return " & ".join(member.name for member in self.items)

    def __and__(self, other: Operand[D], /) -> Parallel[D]:
        """Add to the group: nested groups flatten, async functions are promoted to steps."""
        return _parallel_of(self, other)

    def __or__(self, strategy: Never, /) -> Never:
        """Always an error: a group has no strategy of its own; each member keeps its own.

        Typed to accept nothing, so type checkers report `(a & b) | Retry()` too.
        """
        given = safe_repr(strategy)
        raise SagaFlowOperatorError(
            f'parallel group "{self.name}" | {given}: a parallel group takes no error strategy; '
            "attach strategies to its members instead, e.g. `(a | Retry()) & b`"
        )

    def __repr__(self) -> str:
        """`Parallel(a & b & c)`, with `merge=` and `compensation_order=` when given."""
        text = " & ".join(_member_text(member) for member in self.items)
        if self.merge is not None:
            text += f", merge={_shown_name(callable_name(self.merge))}"
        if self.compensation_order != "reverse":
            text += f", compensation_order={self.compensation_order!r}"
        if self.pivot:
            text += ", pivot=True"
        return f"Parallel({text})"


def _flatten_members[D: AbstractSagaData](
    items: Sequence[object], where: str
) -> tuple[ParallelMember[D], ...]:
    flat: list[ParallelMember[D]] = []
    problems: list[str] = []
    for position, item in enumerate(items, start=1):
        if isinstance(item, Parallel):
            if item.pivot:
                raise SagaPivotMemberError(
                    f'{where}, member {position}: the group "{item.name}" is the pivot and '
                    "cannot be extended with `&`; build the whole group first, then mark it: "
                    "`pivot(a & b & c)`"
                )
            if item.merge is not None or item.compensation_order != "reverse":
                problems.append(
                    f"{where}, member {position}: a nested group with its own merge= or "
                    "compensation order cannot be flattened; keep it as a separate flow item"
                )
            flat.extend(cast(Parallel[D], item).items)
        elif isinstance(item, SagaStep) and item.waits:
            raise SagaWaitDefinitionError(
                f'{where}, member {position}: wait "{item.name}" cannot run in a parallel '
                "group; put it in the flow on its own, before or after the group"
            )
        elif isinstance(item, _Action) and isinstance(item.on_error, Escalate):
            raise SagaWaitDefinitionError(
                f'{where}, member {position}: step "{item.name}" cannot escalate in a parallel '
                "group (its siblings would wait for the operator too); give it Retry(...) "
                "or put it in the flow on its own"
            )
        elif isinstance(item, SagaStep | Transaction):
            flat.append(cast(ParallelMember[D], item))
        elif callable(item):
            try:
                flat.append(SagaStep(action=cast(ActionFn[D], item)))
            except SagaFlowDefinitionError as error:
                problems.append(f"{where}, member {position}: {error}")
        else:
            problems.append(
                f"{where}, member {position}: expected a step, transaction, parallel group or "
                f"async function, got {safe_repr(item)}"
            )
    if problems:
        raise SagaFlowDefinitionError(*problems)
    return tuple(flat)


def _parallel_of[D: AbstractSagaData](left: _Action[D] | Parallel[D], right: object) -> Parallel[D]:
    if not (isinstance(right, _Action | Parallel) or callable(right)):
        what = "parallel group" if isinstance(left, Parallel) else "step"
        raise SagaFlowOperatorError(
            f'{what} "{left.name}" & {safe_repr(right)}: a parallel member must be a step, '
            f"transaction, parallel group or async function; got {_kind(right)}"
        )
    return Parallel(items=cast(Any, (left, right)))


def _kind(value: object) -> str:
    """`a str`, `an int`, `the strategy Retry(...)`: what a wrong operand is, for messages."""
    if isinstance(value, ErrorStrategy):
        return f"the strategy {safe_repr(value)} (attach strategies with `|`)"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _item_name(item: object) -> str:
    if isinstance(item, _Action | Parallel):
        return item.name
    return callable_name(item)


def as_flow_item[D: AbstractSagaData](item: object, where: str) -> FlowItem[D]:
    """Accept a flow item, or promote a plain async function to a step; else explain."""
    if isinstance(item, SagaStep | Transaction | Parallel):
        return cast(FlowItem[D], item)
    if isinstance(item, ErrorStrategy):
        raise SagaFlowDefinitionError(
            f"{where}: got the strategy {safe_repr(item)} on its own; attach it to a step with "
            "`step | strategy` or step(..., on_error=strategy)"
        )
    if callable(item):
        try:
            return SagaStep(action=cast(ActionFn[D], item))
        except SagaFlowDefinitionError as error:
            raise SagaFlowDefinitionError(*(f"{where}: {p}" for p in error.problems)) from None
    raise SagaFlowDefinitionError(
        f"{where}: expected a step, transaction, parallel group or async function, "
        f"got {safe_repr(item)}"
    )


type CompensationFailureHandler[D: AbstractSagaData] = Callable[[D], Awaitable[None] | None]
"""Called with the saga data after a rollback in which a compensation failed, to escalate
(alert, open a ticket): `async def handler(data) -> None`, or a plain function."""


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class SagaFlow[D: AbstractSagaData]:
    """The whole saga: items run in order, with an optional saga-wide timeout and a handler
    for failed compensations. Immutable: `timeout()` and `on_compensation_failure()` return
    a new flow."""

    items: tuple[FlowItem[D], ...]
    saga_timeout: timedelta | None = None
    compensation_failure_handler: CompensationFailureHandler[D] | None = None
    _plan: object = field(default=None, init=False, repr=False, compare=False)
    """The engine's compiled plan of this flow, cached here on its first run (plan.py).

    Kept on the flow rather than in a side table: a plan references the saga instance (through
    its bound steps) that may hold the flow, and such a cycle must stay collectable."""

    def __post_init__(self) -> None:
        if isinstance(self.items, str | bytes) or not isinstance(self.items, Sequence):
            raise SagaFlowDefinitionError(
                f"SagaFlow(items=...): expected a tuple of flow items, got {safe_repr(self.items)}"
            )
        if not self.items:
            raise SagaFlowDefinitionError("SagaFlow(items=()): a saga needs at least one step")
        items: list[FlowItem[D]] = []
        problems: list[str] = []
        for position, item in enumerate(self.items, start=1):
            try:
                items.append(as_flow_item(item, f"SagaFlow item {position}"))
            except SagaFlowDefinitionError as error:
                problems.extend(error.problems)
        try:
            check_timeout(self.saga_timeout, "SagaFlow")
        except SagaFlowDefinitionError as error:
            problems.extend(error.problems)
        handler = self.compensation_failure_handler
        if handler is not None and not callable(handler):
            problems.append(
                "SagaFlow: compensation_failure_handler must be a function taking the saga "
                f"data, got {safe_repr(handler)}"
            )
        elif handler is not None and (signature := _signature_problem(handler, 1)) is not None:
            problems.append(
                f'SagaFlow: compensation failure handler "{callable_name(handler)}" must take '
                f"exactly one argument, the saga data, but its signature is {signature}"
            )
        if problems:
            raise SagaFlowDefinitionError(*problems)
        object.__setattr__(self, "items", tuple(items))
        _check_pivot(self.items)

    @property
    def pivot(self) -> FlowItem[D] | None:
        """The flow's point of no return (`pivot(capture)`), if it has one."""
        return next((item for item in self.items if item.pivot), None)

    @property
    def pivot_steps(self) -> tuple[str, ...]:
        """The names of the pivot's steps (a group's members), for timelines; () without one."""
        pivot = self.pivot
        if pivot is None:
            return ()
        return tuple(m.name for m in pivot.items) if isinstance(pivot, Parallel) else (pivot.name,)

    def timeout(self, timeout: timedelta, /) -> SagaFlow[D]:
        """A copy of this flow that times out (status TIMED_OUT) after `timeout`."""
        return dataclasses.replace(self, saga_timeout=timeout)

    def on_compensation_failure(self, handler: CompensationFailureHandler[D], /) -> SagaFlow[D]:
        """A copy of this flow that calls `handler(data)` (awaited if it returns an awaitable)
        with the saga data when a compensation fails during rollback."""
        return dataclasses.replace(self, compensation_failure_handler=handler)

    def to_mermaid(self, *, direction: Literal["TD", "LR"] = "TD") -> str:
        """This flow as a Mermaid flowchart: steps in order, parallel groups as fork and
        join, a dotted edge from each action to its compensation, strategies and timeouts on
        the nodes (see docs/observability.md). Paste it into a ```mermaid block."""
        start = ["start"]
        if self.saga_timeout is not None:
            start.append(f"saga timeout {format_duration(self.saga_timeout)}")
        handler = self.compensation_failure_handler
        if handler is not None:
            start.append(f"on compensation failure → {callable_name(handler)}")
        return flowchart(start, [_item_box(item) for item in self.items], direction)

    def __repr__(self) -> str:
        """`SagaFlow(reserve >> release, charge | Skip(), a & b, timeout=30s)`."""
        parts = [_item_text(item) for item in self.items]
        if self.saga_timeout is not None:
            parts.append(f"timeout={format_duration(self.saga_timeout)}")
        handler = self.compensation_failure_handler
        if handler is not None:
            parts.append(f"on_compensation_failure={_shown_name(callable_name(handler))}")
        return f"SagaFlow({', '.join(parts)})"


def _check_flags(item: _Action[Any] | Parallel[Any], where: str) -> None:
    """Raise a definition error unless the item's `pivot` (and a step's `read_only`) is a
    bool: `step(f, read_only="yes")` must not read as a marker."""
    flags = [("pivot", item.pivot)]
    if isinstance(item, _Action):
        flags.append(("read_only", item.read_only))
    for flag, value in flags:
        if not isinstance(value, bool):
            raise SagaFlowDefinitionError(
                f"{where}: {flag} must be True or False, got {safe_repr(value)}"
            )


def _check_pivot(items: Sequence[FlowItem[Any]]) -> None:
    """The point of no return's rules, for a flow with a pivot: one pivot; before it, every
    step can be undone (a compensation) or needs no undo (read-only); after it, every step
    retries or may be skipped, since nothing is compensated any more.

    Raises the `SagaPivotError` subclass of the mistakes found (the base class when they are
    of several kinds), each naming the step and the fix. A flow without a pivot passes.
    """
    pivots = [position for position, item in enumerate(items) if item.pivot]
    if not pivots:
        return
    found: list[tuple[type[SagaPivotError], str]] = []
    first = items[pivots[0]].name
    found.extend(
        (
            SagaSecondPivotError,
            f'item {position + 1} "{items[position].name}" is marked as the pivot, but '
            f'"{first}" (item {pivots[0] + 1}) is the pivot already; a saga has one point of no '
            "return: keep one `pivot(...)`",
        )
        for position in pivots[1:]
    )
    for position, item in enumerate(items):
        members = item.items if isinstance(item, Parallel) else (item,)
        if position < pivots[0]:
            found.extend(
                (
                    SagaUncompensatedBeforePivotError,
                    f'step "{member.name}" (item {position + 1}) comes before the pivot '
                    f'"{first}" but has no compensation: if a later step fails before the pivot '
                    f"commits, nothing undoes it. Bind one (`{member.name} >> undo`), or declare "
                    f"it read-only (`step({member.name}, read_only=True)`) if it changes nothing",
                )
                for member in members
                if not isinstance(member, Transaction) and not member.read_only
            )
        elif position > pivots[0]:
            found.extend(
                (
                    SagaNotRetriableAfterPivotError,
                    f'step "{member.name}" (item {position + 1}) comes after the pivot '
                    f'"{first}" but its strategy {safe_repr(member.on_error)} fails at once: '
                    "after the point of no return nothing is compensated, so it must not fail "
                    f"for good. Retry it (`{member.name} | Retry(10)`), or skip its failure "
                    f"(`{member.name} | Skip()`) if the saga may complete without it",
                )
                for member in members
                if member.on_error.fails_at_once and member.can_fail
            )
    if found:
        kinds = {kind for kind, _ in found}
        error = kinds.pop() if len(kinds) == 1 else SagaPivotError
        raise error(*(problem for _, problem in found))


def format_duration(duration: timedelta) -> str:
    """A timeout as a person writes it: `250ms`, `1.5s`, `30s`, `5min`, `2h`."""
    micros = duration // timedelta(microseconds=1)
    for unit, size in (("h", 3_600_000_000), ("min", 60_000_000)):
        if micros >= size and micros % size == 0:
            return f"{micros // size}{unit}"
    if micros >= 1_000_000:
        return _decimal(micros, 1_000_000) + "s"
    return _decimal(micros, 1_000) + "ms"


def _decimal(micros: int, per_unit: int) -> str:
    """`micros` in units of `per_unit` microseconds, exactly, without trailing zeros."""
    whole, fraction = divmod(micros, per_unit)
    digits = len(str(per_unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0").rstrip(".")


_PLAIN_NAME = re.compile(r"(?:\w|\.|<\w+>)+")
"""Names shown bare in reprs: identifiers, `Class.method`, `<lambda>`. Others are quoted, so
that a name such as "a & b" cannot read as a group."""


def _shown_name(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else repr(name)


def _action_text(item: SagaStep[Any] | Transaction[Any], *, standalone: bool = False) -> str:
    """`reserve >> release | Retry(3)`; the timeout as `, timeout=2s` after it when the item
    stands alone, else as `step(reserve, timeout=2s)`, as a flow would be written."""
    text = _shown_name(item.name)
    timeout = None if item.timeout is None else format_duration(item.timeout)
    options = [f"timeout={timeout}"] if timeout is not None and not standalone else []
    if item.read_only:
        options.append("read_only=True")
    if options:
        text = f"step({', '.join([text, *options])})"
    if isinstance(item, Transaction):
        text += f" >> {_compensation_text(item)}"
    if item.on_error != DEFAULT_STRATEGY:
        text += f" | {safe_repr(item.on_error)}"
    if timeout is not None and standalone:
        text += f", timeout={timeout}"
    return f"pivot({text})" if item.pivot else text


def _compensation_text(item: Transaction[Any]) -> str:
    """`release`, `(release | Retry(5))`, `step(release, timeout=2s)`: the compensation with
    its own policy, as it is written after `>>`."""
    text = _shown_name(item.compensation_name)
    if item.compensation_timeout is not None:
        text = f"step({text}, timeout={format_duration(item.compensation_timeout)})"
    if item.compensation_strategy != DEFAULT_STRATEGY:
        text = f"({text} | {safe_repr(item.compensation_strategy)})"
    return text


def _member_text(member: ParallelMember[Any]) -> str:
    """A group member, parenthesized when it has a compensation or a strategy (`&` binds
    tighter than `|`): `(reserve >> release) & (charge | Retry(3)) & notify`."""
    text = _action_text(member)
    plain = isinstance(member, SagaStep) and member.on_error == DEFAULT_STRATEGY
    return text if plain else f"({text})"


def _item_text(item: FlowItem[Any]) -> str:
    """A flow item as it is written in `saga_flow(...)`."""
    if not isinstance(item, Parallel):
        return _action_text(item)
    if item.merge is not None or item.compensation_order != "reverse":
        return repr(item)
    text = " & ".join(_member_text(member) for member in item.items)
    return f"pivot({text})" if item.pivot else text


def _action_box(item: SagaStep[Any] | Transaction[Any]) -> Box:
    """A step's box in a diagram: its name, then its strategy and timeout when set and
    `read-only`; with its compensation's box (and its own policy and timeout). A wait shows
    what it waits for (`wait_details`)."""
    if item.waits:
        return Box((item.name, *item.wait_details), wait=True, pivot=item.pivot)
    lines = [item.name]
    if item.on_error != DEFAULT_STRATEGY:
        lines.append(safe_repr(item.on_error))
    if item.timeout is not None:
        lines.append(f"timeout {format_duration(item.timeout)}")
    if item.read_only:
        lines.append("read-only")
    undo: list[str] = []
    if isinstance(item, Transaction):
        undo.append(item.compensation_name)
        if item.compensation_strategy != DEFAULT_STRATEGY:
            undo.append(safe_repr(item.compensation_strategy))
        if item.compensation_timeout is not None:
            undo.append(f"timeout {format_duration(item.compensation_timeout)}")
    return Box(tuple(lines), pivot=item.pivot, compensation=tuple(undo))


def _item_box(item: FlowItem[Any]) -> Box | Fork:
    """A flow item as a diagram draws it: a step's box, or a group's fork, members and join."""
    if not isinstance(item, Parallel):
        return _action_box(item)
    fork = ["parallel"]
    if item.compensation_order == "concurrent":
        fork.append("compensated concurrently")
    join = ("join",) if item.merge is None else ("merge", callable_name(item.merge))
    members = tuple(_action_box(member) for member in item.items)
    return Fork(tuple(fork), members, join, pivot=item.pivot)
