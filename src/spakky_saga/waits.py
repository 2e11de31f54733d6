"""What a wait is: flow items that pause a saga for a signal or a time.

`wait_for(SignalType, merge=fn, timeout=..., on_timeout=...)` waits for a typed message sent
to the saga (`engine.signal(saga_id, payload)`) and folds it into the data with
`merge(data, signal) -> data`; `sleep(timedelta)` and `sleep_until(datetime)` wait for a
time. Each is a `SagaWait`, a step the engine runs itself (there is no action to call): its
deadline is absolute (the wall-clock time its attempt started, plus its timeout), so a saga
recovered after a crash waits only for what is left. A `wait_for` that times out fails with
`SagaWaitTimeoutError`, which its `on_timeout` strategy handles as any step failure
(`Compensate()` by default, `Skip()` goes on without the signal, `Retry(n)` waits again).

Like every flow type, these know nothing of the engine. See docs/waits.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal, Never

from pydantic import TypeAdapter

from spakky_saga._names import type_name
from spakky_saga._text import error_text, safe_repr
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaFlowDefinitionError, SagaWaitDefinitionError
from spakky_saga.flow import SagaStep, callable_name, check_name, format_duration
from spakky_saga.strategy import DEFAULT_STRATEGY, ErrorStrategy, check_strategy

__all__ = ["Resolution", "SagaWait", "WaitSpec", "sleep", "sleep_until", "wait_for"]

type Decided = Literal["retry", "skip", "compensate"]


@dataclass(frozen=True)
class Resolution:
    """An operator's decision on a step that escalated (`Escalate()`): a signal, sent by
    `engine.resolve(saga_id, decision, by=...)`; recorded, with who made it, in the log."""

    decision: Decided
    by: str

    def log_fields(self) -> dict[str, str]:
        """What the saga's log records of it with its signal id (store.LoggedSignal): the
        decision and who made it."""
        return {"resolution": self.decision, "by": self.by}


RESOLUTION_NAME: Final = type_name(Resolution)
"""How signals name `Resolution` (`module:QualName`)."""


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """What a wait waits for: a signal type (None for a sleep), how to merge it, and when it
    gives up (`timeout` seconds after its attempt started, or at `until`, epoch seconds)."""

    signal_type: type | None
    merge: Callable[[Any, Any], Any] | None
    timeout: float | None = None
    until: float | None = None

    @property
    def signal_name(self) -> str:
        """`module:QualName` of the signal type, as signals are stored ("" for a sleep)."""
        return "" if self.signal_type is None else type_name(self.signal_type)

    def deadline(self, started: float) -> float | None:
        """When the wait whose attempt started at `started` (epoch seconds) ends; None:
        never (a `wait_for` without a timeout)."""
        if self.until is not None:
            return self.until
        return None if self.timeout is None else started + self.timeout


class _NoAction:
    """A wait's action: the engine runs waits itself; calling one alone is a mistake."""

    __slots__ = ()
    __name__ = "wait"

    async def __call__(self, data: object, /) -> Never:
        raise RuntimeError(
            "a wait (wait_for, sleep, sleep_until) has no action to call: it runs inside a "
            "saga engine, which waits for its signal or time"
        )


_NO_ACTION = _NoAction()


@dataclass(frozen=True, slots=True, eq=False)
class SagaWait[D: AbstractSagaData](SagaStep[D]):
    """A step that waits (for a signal or a time) instead of acting. Built by `wait_for`,
    `sleep` and `sleep_until`; `| strategy` sets what a timeout means. It needs no
    compensation (it changes nothing) and stands in a flow on its own: not in a parallel
    group, not bound to a compensation, not used as one."""

    wait: WaitSpec = field(kw_only=True, default=WaitSpec(None, None))
    waits: ClassVar[bool] = True

    def __post_init__(self) -> None:
        SagaStep.__post_init__(self)  # slots dataclass: the base named explicitly
        object.__setattr__(self, "read_only", True)  # a wait changes nothing

    # Typed to accept nothing, so that type checkers report `wait >> undo` as an error.
    def __rshift__(self, compensate: Never, /) -> Never:  # type: ignore[override] # see above
        """Always an error: a wait changes nothing, so it has nothing to compensate."""
        raise SagaWaitDefinitionError(
            f'wait "{self.name}" >> {_shown(compensate)}: a wait changes nothing and takes no '
            "compensation; bind the compensation to the step whose effect it undoes"
        )

    @property
    def can_fail(self) -> bool:
        """Whether the wait can fail: a `wait_for` with a timeout (a sleep never fails)."""
        return self.wait.signal_type is not None and self.wait.timeout is not None

    @property
    def wait_details(self) -> tuple[str, ...]:
        if not self.can_fail:
            return ()
        assert self.wait.timeout is not None
        timeout = format_duration(timedelta(seconds=self.wait.timeout))
        return (f"timeout {timeout}", f"then {safe_repr(self.on_error)}")

    def __repr__(self) -> str:
        return f"SagaWait({self.name})"


def _shown(value: object) -> str:
    name = getattr(value, "name", None)
    return f'"{name}"' if isinstance(name, str) else safe_repr(value)


def wait_for[D: AbstractSagaData, S](
    signal_type: type[S],
    /,
    *,
    merge: Callable[[D, S], D],
    timeout: timedelta | None = None,
    on_timeout: ErrorStrategy = DEFAULT_STRATEGY,
    name: str = "",
) -> SagaWait[D]:
    """Wait for a `signal_type` signal sent to the saga, then continue with
    `merge(data, signal)`.

    `timeout` (a positive timedelta, or None: wait as long as it takes) counts from when the
    wait starts, in wall-clock time that survives a restart; when it passes,
    `SagaWaitTimeoutError` goes to `on_timeout` (Compensate() by default; Skip() continues
    without the signal; Retry(n) waits again). `signal_type` is a class pydantic can
    validate (a dataclass, a pydantic model); signals of other types wait for another wait.
    """
    label = f"wait_for({_type_label(signal_type)})"
    where = f'wait "{name or label}"'
    problems: list[str] = []
    if not isinstance(signal_type, type):
        problems.append(
            f"{where}: the signal type must be a class (a dataclass or pydantic model), got "
            f"{safe_repr(signal_type)}"
        )
    else:
        try:  # (the codec caches adapters for the runs; here it is built once, to check)
            TypeAdapter(signal_type)
        except Exception as error:
            problems.append(
                f"{where}: the signal type {signal_type.__qualname__} cannot be validated by "
                f"pydantic ({error_text(error)}); use a dataclass or a pydantic model with "
                "typed fields"
            )
    problems.extend(_merge_problems(merge, where))
    problems.extend(_timeout_problems(timeout, where))
    try:
        check_strategy(on_timeout, where)
    except SagaFlowDefinitionError as error:
        problems.extend(error.problems)
    if problems:
        raise SagaWaitDefinitionError(*problems)
    spec = WaitSpec(signal_type, merge, None if timeout is None else timeout.total_seconds(), None)
    return _wait_item(spec, name or label, on_timeout)


def sleep(duration: timedelta, /, *, name: str = "") -> SagaWait[AbstractSagaData]:
    """Wait `duration` (a positive timedelta) from when the saga reaches this item; the
    deadline is absolute, so a saga recovered after a restart sleeps only what is left."""
    problems = _timeout_problems(duration, "sleep", required=True)
    if problems:
        raise SagaWaitDefinitionError(*problems)
    spec = WaitSpec(None, None, duration.total_seconds(), None)
    return _wait_item(spec, name or f"sleep({format_duration(duration)})", DEFAULT_STRATEGY)


def sleep_until(when: datetime, /, *, name: str = "") -> SagaWait[AbstractSagaData]:
    """Wait until `when` (an aware datetime); a time already past does not wait."""
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise SagaWaitDefinitionError(
            f"sleep_until({safe_repr(when)}): give an aware datetime "
            "(datetime(..., tzinfo=UTC)); a naive one means a different instant on each host"
        )
    spec = WaitSpec(None, None, None, when.timestamp())
    return _wait_item(spec, name or f"sleep_until({when.isoformat()})", DEFAULT_STRATEGY)


def _wait_item[D: AbstractSagaData](
    spec: WaitSpec, name: str, strategy: ErrorStrategy
) -> SagaWait[D]:
    check_name(name, f'wait "{name}"')
    action: Callable[[D], Awaitable[D | None]] = _NO_ACTION
    return SagaWait(action=action, name=name, on_error=strategy, wait=spec)


def _type_label(signal_type: object) -> str:
    return signal_type.__name__ if isinstance(signal_type, type) else type(signal_type).__name__


def _merge_problems(merge: object, where: str) -> list[str]:
    if not callable(merge):
        return [f"{where}: merge must be a function (data, signal) -> data, got {safe_repr(merge)}"]
    if inspect.iscoroutinefunction(merge):
        return [
            f'{where}: merge "{callable_name(merge)}" is `async def`; a merge folds the signal '
            "into the data in memory, so declare it with `def` (do I/O in a step after the wait)"
        ]
    try:
        inspect.signature(merge).bind(None, None)
    except TypeError:
        return [
            f'{where}: merge "{callable_name(merge)}" must take two arguments, the saga data '
            f"and the signal, but its signature is {inspect.signature(merge)}"
        ]
    except ValueError:  # no signature to read (a builtin): trust it
        pass
    return []


def _timeout_problems(timeout: object, where: str, *, required: bool = False) -> list[str]:
    if timeout is None and not required:
        return []
    if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
        return [
            f"{where}: the time must be a positive datetime.timedelta, got {safe_repr(timeout)}"
        ]
    return []
