"""What to do when a step (or a compensation) fails: small frozen strategy objects.

A strategy decides; the engine acts. Each strategy answers one question,
`decide(failure) -> Decision`: given a read-only snapshot of the attempt that just failed
(`FailedAttempt`: the step, the attempt number counted across crashes, the error), retry after
a delay, skip the step, or fail. `Compensate`, `Skip` and `Retry` are such strategies; a
user-defined one (retry only while a circuit breaker is closed, say) is a subclass with its own
`decide`, and the engine, recovery, the testing tools and the mypy plugin treat it like ours.
Decisions are pure and never reach I/O, so backoff and error filtering are tested without
sleeping and the engine stays the one place with side effects.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Final, Literal, overload

from typing_extensions import deprecated

from spakky_saga._text import safe_repr, type_repr
from spakky_saga.errors import SagaFlowDefinitionError

MYPY: Final = False
"""False at run time and for pyright; mypy always takes a name `MYPY` as true, which keeps
it out of pyright-only declarations (Retry's constructor overloads)."""


def _is_number(value: object) -> bool:
    """True for int and float, but not bool (a common slip: `ExponentialBackoff(True)`)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """What a strategy decides on: the attempt that just failed, read-only.

    `attempt` is 1 for the first attempt and counts every attempt of the step, including
    those a crashed process made before recovery took the saga over; `compensation` is True
    when the failed call was the step's compensation (its own policy decides then).
    """

    step: str
    attempt: int
    error: BaseException
    compensation: bool = False


class Verdict(Enum):
    """What a `Decision` tells the engine to do."""

    RETRY = "retry"
    """Run another attempt, after `Decision.delay` seconds."""
    SKIP = "skip"
    """Give up and go on as if the step had returned None (a compensation cannot be skipped:
    for a compensation it means the same as FAIL)."""
    FAIL = "fail"
    """Give up: the saga compensates (or, for a compensation, the rollback reports it)."""
    ESCALATE = "escalate"
    """Ask an operator: the saga waits at the failed step for a decision (`engine.resolve`:
    retry, skip or compensate). For a compensation it means the same as FAIL."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A strategy's answer for one failed attempt. Build it with `Decision.retry(after)`,
    or use `Decision.SKIP` / `Decision.FAIL`."""

    verdict: Verdict
    delay: float = 0.0
    """Seconds to wait before the next attempt (RETRY only)."""

    SKIP: ClassVar[Decision]
    FAIL: ClassVar[Decision]
    ESCALATE: ClassVar[Decision]

    def __post_init__(self) -> None:
        if not isinstance(self.verdict, Verdict):
            raise TypeError(f"Decision(verdict={safe_repr(self.verdict)}): expected a Verdict")
        delay = self.delay
        if not (_is_number(delay) and 0.0 <= delay < math.inf):
            raise ValueError(
                f"Decision: a retry delay must be a finite number of seconds >= 0, "
                f"got {safe_repr(delay)}"
            )

    @staticmethod
    def retry(after: float = 0.0) -> Decision:
        """Retry after `after` seconds."""
        return Decision(Verdict.RETRY, float(after) if _is_number(after) else after)


Decision.SKIP = Decision(Verdict.SKIP)
Decision.FAIL = Decision(Verdict.FAIL)
Decision.ESCALATE = Decision(Verdict.ESCALATE)


@dataclass(frozen=True, slots=True)
class ErrorStrategy:
    """Base of the strategies a step's `on_error=` (or `|`) accepts.

    Subclass it (a frozen dataclass, like ours) and implement `decide`. The engine calls
    `decide` once per failed attempt, never concurrently for one step, and never lets its
    errors escape: a `decide` that raises (or returns something that is not a `Decision`)
    fails the step, with the strategy named in the error.
    """

    fails_at_once: ClassVar[bool] = False
    """True when every failure is a FAIL without asking (`Compensate`): the engine's fast
    path then skips the call."""

    def decide(self, failure: FailedAttempt, /) -> Decision:
        """Retry, skip or fail after `failure`; see `Decision`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement decide(failure) -> Decision"
        )

    @property
    def skips(self) -> bool:
        """Whether a failure this strategy gives up on is skipped rather than compensated:
        what diagrams and `explore_failures` expect of the step. Override it in a strategy
        whose `decide` returns `Decision.SKIP`."""
        return False


@dataclass(frozen=True, slots=True)
class Compensate(ErrorStrategy):
    """The default: stop the saga and compensate committed steps in reverse order."""

    fails_at_once: ClassVar[bool] = True

    def decide(self, failure: FailedAttempt, /) -> Decision:
        return Decision.FAIL


@dataclass(frozen=True, slots=True)
class Skip(ErrorStrategy):
    """Record the failure and continue with the next item, as if the step had returned None."""

    def decide(self, failure: FailedAttempt, /) -> Decision:
        return Decision.SKIP

    @property
    def skips(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Escalate(ErrorStrategy):
    """Ask an operator: when the step fails, the saga waits at it for a decision,
    `engine.resolve(saga_id, "retry" | "skip" | "compensate", by=...)` (or `spakky-saga
    resolve`); the decision and who made it are in the saga's log. After `timeout` (None:
    no limit) without one, `then` decides (Compensate() or Skip()). On a durable engine the
    waiting saga is suspended in the store (WAITING), as in a wait. See docs/waits.md."""

    timeout: timedelta | None = None
    then: Compensate | Skip = field(default_factory=Compensate)

    def __post_init__(self) -> None:
        problems = []
        timeout = self.timeout
        if timeout is not None and not (isinstance(timeout, timedelta) and timeout > timedelta(0)):
            problems.append(
                f"Escalate(timeout={safe_repr(timeout)}): timeout must be a positive "
                "datetime.timedelta, or None to wait for the decision as long as it takes"
            )
        if not isinstance(self.then, Compensate | Skip):
            problems.append(
                f"Escalate(then={safe_repr(self.then)}): then must be Compensate() or Skip() "
                "(what happens when nobody decides in time)"
            )
        if problems:
            raise SagaFlowDefinitionError(*problems)

    def decide(self, failure: FailedAttempt, /) -> Decision:
        return Decision.ESCALATE

    @property
    def skips(self) -> bool:
        return self.then.skips


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """Delay before retry `n` (n >= 1): `base * 2**(n-1)` seconds, optionally capped and jittered.

    `jitter` is a fraction in [0, 1]: the delay is drawn uniformly from
    `[delay * (1 - jitter), delay]`, which spreads retries of many sagas apart.
    """

    base: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not (_is_number(self.base) and 0 <= self.base < math.inf):  # also rejects NaN
            problems.append(
                f"ExponentialBackoff(base={safe_repr(self.base)}): base must be a finite number "
                "of seconds >= 0"
            )
        if self.max_delay is not None and not (_is_number(self.max_delay) and self.max_delay >= 0):
            problems.append(
                f"ExponentialBackoff(max_delay={safe_repr(self.max_delay)}): max_delay must be "
                ">= 0 seconds, or None for no cap"
            )
        if not (_is_number(self.jitter) and 0.0 <= self.jitter <= 1.0):
            problems.append(
                f"ExponentialBackoff(jitter={safe_repr(self.jitter)}): jitter must be a "
                "fraction between 0.0 and 1.0"
            )
        if problems:
            raise SagaFlowDefinitionError(*problems)

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-indexed: the first retry is 1).

        `base * 2**(attempt-1)`, capped at `max_delay`, then jittered. Never raises and is
        always finite: a delay too long to compute saturates at `MAX_DELAY_SECONDS` (about
        2.7 million years, the longest `datetime.timedelta`), so a run with a thousand
        retries and no cap waits "forever" rather than failing on a float overflow.
        """
        delay = _doubled(self.base, attempt - 1)
        if self.max_delay is not None:
            delay = min(delay, float(self.max_delay))
        delay = min(delay, MAX_DELAY_SECONDS)  # also turns inf (uncapped overflow) into a number
        if self.jitter:
            low = delay * (1.0 - self.jitter)
            delay = (rng or _JITTER_RANDOM).uniform(low, delay)
        return delay

    def __repr__(self) -> str:
        """`ExponentialBackoff(0.5, max_delay=5.0)`: the base, then only what differs from
        the defaults, as it would be written."""
        extras = "" if self.max_delay is None else f", max_delay={self.max_delay!r}"
        extras += f", jitter={self.jitter!r}" if self.jitter else ""
        return f"ExponentialBackoff({self.base!r}{extras})"


MAX_DELAY_SECONDS: Final = timedelta.max.days * 86_400.0
"""The longest backoff delay, in seconds: 999,999,999 days, the longest whole-day `timedelta`.
Longer delays saturate here, so every delay is finite and converts to a `timedelta`."""

_LARGEST_FINITE_EXPONENT: Final = sys.float_info.max_exp - 1
_SMALLEST_USEFUL_EXPONENT: Final = sys.float_info.min_exp - sys.float_info.mant_dig - 1


def _doubled(base: float, doublings: int) -> float:
    """`base * 2.0**doublings` without OverflowError: inf when it would not fit a float."""
    if base == 0:
        return 0.0
    if doublings > _LARGEST_FINITE_EXPONENT:  # 2.0**1024 raises; the product is inf anyway
        return math.inf
    # 2.0**n underflows to 0.0 quietly, but a huge negative int cannot become a float.
    return base * 2.0 ** max(doublings, _SMALLEST_USEFUL_EXPONENT)  # x * big -> inf, no raise


_JITTER_RANDOM: Final = random.Random()
_DEFAULT_BACKOFF: Final = ExponentialBackoff()

type RetryOn = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""Which errors `Retry` retries: an exception class, a tuple of them, or a predicate."""


@dataclass(frozen=True, slots=True)
class Retry(ErrorStrategy):
    """Run the step up to `max_attempts` times in total, waiting `backoff` between attempts,
    then apply `then` (Compensate or Skip) if every attempt failed.

    `Retry()` is `Retry(3, ExponentialBackoff(1.0), Compensate())`, which also works
    positionally, as documented. `retry_on=` (keyword-only) limits which errors are retried:
    an exception class, a tuple of them, or a predicate `(error) -> bool`. An error it does
    not match skips the remaining attempts, and `then` applies at once.
    """

    max_attempts: int = 3
    backoff: ExponentialBackoff = _DEFAULT_BACKOFF
    then: Compensate | Skip = field(default_factory=Compensate)
    retry_on: RetryOn | None = field(default=None, kw_only=True)

    if TYPE_CHECKING and not MYPY:
        # For pyright only (at run time the dataclass's own __init__): it reports a deprecated
        # overload where it is called, so `Retry(0)` is flagged without our mypy plugin, which
        # reports it as saga-strategy. mypy skips this block (it takes MYPY as true): with an
        # overloaded constructor it would type `step | Retry` as a union type, not an error.
        @overload
        @deprecated(
            "Retry(0): max_attempts counts every attempt, the first included, so it must be "
            ">= 1 (use Retry(1) for no retry)"
        )
        def __init__(
            self,
            max_attempts: Literal[0],
            backoff: ExponentialBackoff = ...,
            then: Compensate | Skip = ...,
            *,
            retry_on: RetryOn | None = ...,
        ) -> None: ...
        @overload
        def __init__(
            self,
            max_attempts: int = ...,
            backoff: ExponentialBackoff = ...,
            then: Compensate | Skip = ...,
            *,
            retry_on: RetryOn | None = ...,
        ) -> None: ...
        def __init__(
            self,
            max_attempts: int = 3,
            backoff: ExponentialBackoff = _DEFAULT_BACKOFF,
            then: Compensate | Skip = ...,
            *,
            retry_on: RetryOn | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            problems.append(
                f"Retry(max_attempts={safe_repr(self.max_attempts)}): max_attempts must be an "
                "int >= 1"
            )
        elif self.max_attempts < 1:
            problems.append(
                f"Retry(max_attempts={self.max_attempts}): max_attempts counts every attempt, "
                "the first included, so it must be >= 1 (use Retry(1) for no retry)"
            )
        if not isinstance(self.backoff, ExponentialBackoff):
            problems.append(
                f"Retry(backoff={safe_repr(self.backoff)}): backoff must be an ExponentialBackoff"
            )
        if isinstance(self.then, Retry):
            problems.append(
                "Retry(then=Retry(...)): a retry cannot be followed by another retry; "
                "raise max_attempts instead"
            )
        elif not isinstance(self.then, Compensate | Skip):
            problems.append(
                f"Retry(then={safe_repr(self.then)}): then must be Compensate() or Skip()"
            )
        problems.extend(_retry_on_problems(self.retry_on))
        if problems:
            raise SagaFlowDefinitionError(*problems)

    def decide(self, failure: FailedAttempt, /) -> Decision:
        """Retry while attempts are left and `retry_on` matches the error, then `then`."""
        if failure.attempt < self.max_attempts and self.should_retry(failure.error):
            return Decision(Verdict.RETRY, self.delay_before(failure.attempt + 1))
        return self.then.decide(failure)

    @property
    def skips(self) -> bool:
        return self.then.skips

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 is the first retry)."""
        return self.backoff.delay_for(attempt - 1)

    def should_retry(self, error: BaseException) -> bool:
        """Whether a failed attempt's `error` is worth another attempt (if any are left).

        True when `retry_on` is None or matches `error`. Never raises: a `retry_on` predicate
        that raises (or returns an awaitable) counts as "no", since repeating an action
        nobody can vouch for is the riskier choice, and a note on `error` says why. A
        `SagaFlowDefinitionError` (a broken flow, such as a lambda step that returned no
        awaitable) is never retried: another attempt cannot fix it.
        """
        if isinstance(error, SagaFlowDefinitionError):
            return False
        retry_on = self.retry_on
        if retry_on is None:
            return True
        if isinstance(retry_on, type | tuple):
            return isinstance(error, retry_on)
        verdict, problem = _ask(retry_on, error)
        if problem is not None:
            _add_note(
                error,
                f"Retry(retry_on={_describe_retry_on(retry_on)}) {problem}; the error was "
                "treated as not retryable",
            )
        return verdict

    def __repr__(self) -> str:
        """`Retry(3)`, `Retry(3, ExponentialBackoff(0.5), then=Skip())`: the attempts, then
        only what differs from the defaults, as it would be written."""
        parts = [repr(self.max_attempts)]
        if self.backoff != _DEFAULT_BACKOFF:
            parts.append(repr(self.backoff))
        if type(self.then) is not Compensate:
            parts.append(f"then={self.then!r}")
        if self.retry_on is not None:
            parts.append(f"retry_on={_describe_retry_on(self.retry_on)}")
        return f"Retry({', '.join(parts)})"


def _retry_on_problems(retry_on: object) -> list[str]:
    """What is wrong with a `retry_on=` value, one message per problem (none when valid)."""
    if retry_on is None:
        return []
    where = f"Retry(retry_on={_describe_retry_on(retry_on)})"
    expected = (
        "retry_on takes an exception class, a tuple of exception classes, or a function "
        "(error) -> bool"
    )
    if isinstance(retry_on, type):
        if issubclass(retry_on, BaseException):
            return []
        return [f"{where}: {type_repr(retry_on)} is not an exception class; {expected}"]
    if isinstance(retry_on, tuple):
        if not retry_on:
            return [
                f"{where}: an empty tuple matches no error, so nothing would ever be retried; "
                "omit retry_on to retry every error"
            ]
        return [
            f"{where}: item {position}, {safe_repr(item)}, is not an exception class; {expected}"
            for position, item in enumerate(retry_on, start=1)
            if not (isinstance(item, type) and issubclass(item, BaseException))
        ]
    if isinstance(retry_on, BaseException):
        return [
            f"{where}: got an exception instance; pass its class, "
            f"{type_repr(type(retry_on))}, to retry every error of that type"
        ]
    if isinstance(retry_on, types.UnionType):
        written = ", ".join(_describe_retry_on(member) for member in typing.get_args(retry_on))
        return [f"{where}: write a union of exception classes as a tuple, ({written})"]
    if not callable(retry_on):
        return [f"{where}: {expected}"]
    call = getattr(type(retry_on), "__call__", None)  # noqa: B004 - want the class's __call__
    if inspect.iscoroutinefunction(retry_on) or inspect.iscoroutinefunction(call):
        return [
            f"{where}: the predicate is `async def`; it must return a bool right away, so "
            "declare it with `def`"
        ]
    try:
        inspect.signature(retry_on).bind(None)
    except TypeError:
        return [f"{where}: the predicate must take exactly one argument, the error"]
    except ValueError:  # builtins without a signature: trust them
        pass
    return []


def _describe_retry_on(retry_on: object) -> str:
    """`ValueError`, `(ValueError, KeyError)`, `is_transient`: as the user wrote it."""
    if isinstance(retry_on, type):
        return type_repr(retry_on)
    if isinstance(retry_on, tuple):
        inner = ", ".join(
            type_repr(item) if isinstance(item, type) else safe_repr(item) for item in retry_on
        )
        return f"({inner},)" if len(retry_on) == 1 else f"({inner})"
    name = getattr(retry_on, "__qualname__", None)
    if callable(retry_on) and isinstance(name, str):
        return name
    return safe_repr(retry_on)


def _ask(
    predicate: Callable[[BaseException], object], error: BaseException
) -> tuple[bool, str | None]:
    """The predicate's answer, or False and what went wrong; never raises."""
    try:
        verdict = predicate(error)
        if inspect.isawaitable(verdict):
            if inspect.iscoroutine(verdict):
                verdict.close()  # never awaited: spare the user a "never awaited" warning
            return False, (
                "returned an awaitable instead of a bool; declare the predicate with `def`, "
                "not `async def`"
            )
        return bool(verdict), None
    except Exception as problem:  # a strategy never raises during a run
        return False, f"raised {type(problem).__name__}: {_safe_str(problem)}"


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # formatting a user's error can raise
        return "<str() raised>"


def _add_note(error: BaseException, note: str) -> None:
    with contextlib.suppress(Exception):  # a frozen or odd exception: the note is a courtesy
        error.add_note(note)


DEFAULT_STRATEGY: Final = Compensate()


def check_strategy(strategy: object, where: str) -> ErrorStrategy:
    """Return `strategy` if it is one, else raise a definition error naming `where`."""
    if isinstance(strategy, ErrorStrategy) and type(strategy) is not ErrorStrategy:
        if type(strategy).decide is ErrorStrategy.decide:
            raise SagaFlowDefinitionError(
                f"{where}: the strategy {type_repr(type(strategy))} does not implement "
                "decide(failure) -> Decision; define it to say when to retry, skip or fail"
            )
        return strategy
    hint = ""
    if isinstance(strategy, type) and issubclass(strategy, ErrorStrategy):
        hint = f" (the class itself; did you mean {strategy.__name__}(...)?)"
    raise SagaFlowDefinitionError(
        f"{where}: on_error must be Compensate(), Skip(), Retry(...) or an ErrorStrategy "
        f"subclass, got {safe_repr(strategy)}{hint}"
    )


def check_compensation_strategy(strategy: object, where: str) -> ErrorStrategy:
    """`check_strategy` for a compensation's own policy, which cannot skip: a compensation
    that gives up has failed, and the rollback reports it."""
    checked = check_strategy(strategy, where)
    if isinstance(checked, Escalate):
        raise SagaFlowDefinitionError(
            f"{where}: a compensation cannot escalate ({safe_repr(checked)}); a compensation "
            "that gives up has failed and is reported (retry-compensation repairs it). Use "
            "Retry(n)"
        )
    if checked.skips:
        raise SagaFlowDefinitionError(
            f"{where}: a compensation cannot skip its failure ({safe_repr(checked)}); a "
            "compensation that gives up has failed and is reported. Use Retry(n) (then "
            "Compensate(), the default), or handle the error inside the compensation"
        )
    return checked
