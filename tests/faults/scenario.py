"""What a fault scenario is, and how a random one is drawn.

A scenario is plain data: the flow's shape (sequential steps and parallel groups, members
that may conflict on a shared field, steps that may share a name), each step's strategy,
timeout, and what each of its attempts and its compensation will do (return after some
yields and some virtual time, raise, hang, raise CancelledError on its own, turn a
cancellation into its own error, return something that is not the saga's data), the saga
timeout, the compensation timeout, the failure handler, when the caller cancels, and whether
raising observers are attached.

Times are in virtual seconds (see virtual_loop.py), chosen on grids that never meet: step
delays, step timeouts and backoffs are multiples of a quarter second, the saga timeout is an
odd number of eighths, and the caller cancels at 0 or an odd number of sixteenths. So two
different causes never fire at the same instant, and the checker can tell from the time of an
interruption what caused it.

`draw_scenario` takes a `Choices`: hypothesis draws (which shrink towards the first option,
and every option list below starts with the harmless one) or a seeded `random.Random` (for
the mass run, where hypothesis would be too slow).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from hypothesis import strategies as st

QUARTER = 0.25
"""Step delays, step timeouts, backoffs and compensation timeouts are multiples of this."""
EIGHTH = 0.125
"""The saga timeout is an odd multiple of this."""
SIXTEENTH = 0.0625
"""The caller waits an odd multiple of this (or nothing) before a cancellation."""

MAX_ITEMS = 5
MAX_MEMBERS = 4
MAX_STEPS = MAX_ITEMS * MAX_MEMBERS

type ActionOutcome = Literal["ok", "raise", "hang", "cancel_self", "stubborn", "wrong_type"]
type UndoOutcome = Literal["ok", "raise", "cancel_self", "hang"]
type ErrorKind = Literal["boom", "other", "timeout"]
type StrategyKind = Literal["compensate", "skip", "retry"]
type RetryOn = Literal["any", "boom", "predicate", "raising_predicate"]
type HandlerKind = Literal["none", "sync", "async", "sync_raises", "async_raises"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt of an action does: yield `ticks` times, sleep `delay` quarters, then
    return (new data when `returns_data`), raise (a `Boom`, another error, or a TimeoutError of
    its own), hang until cancelled, raise CancelledError on its own (`cancel_self`), hang and
    turn its cancellation into a RuntimeError (`stubborn`), or return something that is not
    the saga's data (`wrong_type`)."""

    outcome: ActionOutcome = "ok"
    ticks: int = 0
    delay: int = 0
    error: ErrorKind = "boom"
    returns_data: bool = True


@dataclass(frozen=True, slots=True)
class Undo:
    """What a compensation does: yield, sleep `delay` quarters, then succeed, raise, raise
    CancelledError on its own, or hang (only drawn with a compensation timeout)."""

    outcome: UndoOutcome = "ok"
    ticks: int = 0
    delay: int = 0


@dataclass(frozen=True, slots=True)
class Strategy:
    """`Compensate()`, `Skip()`, or `Retry(max_attempts, ExponentialBackoff(backoff quarters),
    then)`, with `retry_on` and, when `broken`, a `delay_before` that raises."""

    kind: StrategyKind = "compensate"
    max_attempts: int = 1
    then_skip: bool = False
    retry_on: RetryOn = "any"
    backoff: int = 0
    broken: bool = False

    @property
    def attempts(self) -> int:
        return self.max_attempts if self.kind == "retry" else 1

    @property
    def skips(self) -> bool:
        return self.kind == "skip" or (self.kind == "retry" and self.then_skip)


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: named `s<index>`, writing field `f<index>` of the data when it returns data."""

    index: int
    attempts: tuple[Attempt, ...]
    """Attempt n behaves as `attempts[n - 1]` (the last one repeats)."""
    undo: Undo | None
    """None: a plain step without compensation."""
    strategy: Strategy = Strategy()
    timeout: int | None = None
    """Quarters of a second, or None."""
    shared: bool = False
    """A group member that also writes the data's `shared` field when it returns data (two
    such members committing in one group conflict: SagaParallelMergeConflictError)."""
    dup: bool = False
    """Named "dup" instead of `s<index>`: steps may share a name (the engine tells their
    failed compensations apart as "dup", "dup #2", ...)."""

    @property
    def name(self) -> str:
        return "dup" if self.dup else f"s{self.index}"

    @property
    def field(self) -> str:
        return f"f{self.index}"

    def attempt(self, number: int) -> Attempt:
        return self.attempts[min(number, len(self.attempts)) - 1]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    members: tuple[StepSpec, ...]
    concurrent: bool = False
    """compensation_order="concurrent"."""

    @property
    def name(self) -> str:
        return " & ".join(member.name for member in self.members)


type Item = StepSpec | GroupSpec


@dataclass(frozen=True, slots=True)
class CancelPoint:
    """When the caller cancels: it waits until virtual time `at` sixteenths (0 or odd: never
    the instant anything else happens), or, with `on_undo`, until that many compensations
    have started (a cancel during the rollback), or until the handler was called
    (`on_handler`); then yields `ticks` times, then cancels (if the saga is still running)."""

    at: int = 0
    ticks: int = 0
    on_undo: int = 0
    on_handler: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    items: tuple[Item, ...]
    saga_timeout: int | None = None
    """Eighths of a second (odd), or None."""
    compensation_timeout: int | None = None
    """Quarters of a second, or None."""
    handler: HandlerKind = "none"
    cancels: tuple[CancelPoint, ...] = ()
    observers: bool = False
    """Attach a raising listener, a raising log handler and a raising log filter."""

    @property
    def steps(self) -> tuple[StepSpec, ...]:
        return tuple(
            step
            for item in self.items
            for step in (item.members if isinstance(item, GroupSpec) else (item,))
        )


class Choices(Protocol):
    """A source of choices; every choice shrinks towards `low` / the first option."""

    def integer(self, low: int, high: int) -> int: ...


def pick[T](choices: Choices, options: Sequence[tuple[T, int]]) -> T:
    """One of `options` (value, weight), by weight; shrinks to the first."""
    roll = choices.integer(0, sum(weight for _, weight in options) - 1)
    for value, weight in options:
        if roll < weight:
            return value
        roll -= weight
    raise AssertionError("unreachable: the roll is below the total weight")


def chance(choices: Choices, percent: int) -> bool:
    """True with probability `percent`%; shrinks to False."""
    return choices.integer(0, 99) >= 100 - percent


@dataclass(frozen=True, slots=True)
class Limits:
    """How big a drawn scenario can get: items in the flow, yields per attempt or
    compensation, and yields of the caller before a cancel."""

    items: int = MAX_ITEMS
    ticks: int = 3
    caller_ticks: int = 40


def draw_scenario(choices: Choices, limits: Limits = Limits()) -> Scenario:
    saga_timeout = 2 * choices.integer(0, 60) + 1 if chance(choices, 35) else None
    compensation_timeout = choices.integer(1, 4) if chance(choices, 30) else None
    dups = 50 if chance(choices, 20) else 0  # percent of steps named "dup"
    knobs = _Knobs(saga_timeout, compensation_timeout, limits, dups)
    items: list[Item] = []
    index = 0
    for _ in range(choices.integer(1, limits.items)):
        if chance(choices, 35):
            members = []
            for _ in range(choices.integer(2, MAX_MEMBERS)):
                index += 1
                member = _draw_step(choices, index, knobs)
                if chance(choices, 35):
                    member = dataclasses.replace(member, shared=True)
                members.append(member)
            items.append(GroupSpec(tuple(members), concurrent=chance(choices, 40)))
        else:
            index += 1
            items.append(_draw_step(choices, index, knobs))
    cancels: tuple[CancelPoint, ...] = ()
    if chance(choices, 50):
        cancels = tuple(_draw_cancel(choices, limits) for _ in range(choices.integer(1, 2)))
    handler: HandlerKind = pick(
        choices,
        [("none", 3), ("sync", 2), ("async", 2), ("sync_raises", 1), ("async_raises", 1)],
    )
    return Scenario(
        items=tuple(items),
        saga_timeout=saga_timeout,
        compensation_timeout=compensation_timeout,
        handler=handler,
        cancels=cancels,
        observers=chance(choices, 25),
    )


def _draw_cancel(choices: Choices, limits: Limits) -> CancelPoint:
    ticks = choices.integer(0, limits.caller_ticks)
    trigger = pick(choices, [("ticks", 3), ("time", 3), ("undo", 3), ("handler", 1)])
    if trigger == "time":
        return CancelPoint(at=2 * choices.integer(0, 60) + 1, ticks=ticks)
    if trigger == "undo":
        return CancelPoint(
            on_undo=choices.integer(1, 4), ticks=choices.integer(0, 2 * limits.ticks)
        )
    if trigger == "handler":
        return CancelPoint(on_handler=True, ticks=choices.integer(0, limits.ticks))
    return CancelPoint(ticks=ticks)


@dataclass(frozen=True, slots=True)
class _Knobs:
    """What a scenario decided before drawing its steps."""

    saga_timeout: int | None
    compensation_timeout: int | None
    limits: Limits
    dups: int
    """Percent of steps named "dup"."""


def _draw_step(choices: Choices, index: int, knobs: _Knobs) -> StepSpec:
    timeout = choices.integer(1, 8) if chance(choices, 30) else None
    kind: StrategyKind = pick(choices, [("compensate", 40), ("skip", 15), ("retry", 45)])
    strategy = Strategy(kind)
    if kind == "retry":
        strategy = Strategy(
            "retry",
            max_attempts=choices.integer(2, 4),
            then_skip=chance(choices, 30),
            retry_on=pick(
                choices, [("any", 5), ("boom", 2), ("predicate", 2), ("raising_predicate", 1)]
            ),
            backoff=choices.integer(0, 3),
            broken=chance(choices, 5),
        )
    # A hanging attempt needs something to end it: its own timeout or the saga's.
    can_hang = timeout is not None or knobs.saga_timeout is not None
    attempts = tuple(
        _draw_attempt(choices, can_hang, knobs.limits) for _ in range(strategy.attempts)
    )
    undo = None
    if chance(choices, 75):
        outcomes: list[tuple[UndoOutcome, int]] = [("ok", 40), ("raise", 8), ("cancel_self", 2)]
        if knobs.compensation_timeout is not None:
            outcomes.append(("hang", 3))
        undo = Undo(
            outcome=pick(choices, outcomes),
            ticks=choices.integer(0, knobs.limits.ticks),
            delay=choices.integer(0, 4) if chance(choices, 25) else 0,
        )
    return StepSpec(index, attempts, undo, strategy, timeout, dup=chance(choices, knobs.dups))


def _draw_attempt(choices: Choices, can_hang: bool, limits: Limits) -> Attempt:
    outcomes: list[tuple[ActionOutcome, int]] = [
        ("ok", 55),
        ("raise", 30),
        ("cancel_self", 4),
        ("wrong_type", 2),
    ]
    if can_hang:
        outcomes += [("hang", 8), ("stubborn", 3)]
    return Attempt(
        outcome=pick(choices, outcomes),
        ticks=choices.integer(0, limits.ticks),
        delay=choices.integer(1, 6) if chance(choices, 30) else 0,
        error=pick(choices, [("boom", 6), ("other", 2), ("timeout", 1)]),
        returns_data=chance(choices, 70),
    )


class RandomChoices:
    """Choices from a seeded `random.Random`."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)


class _DrawChoices:
    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        return self._draw(st.integers(low, high))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Random scenarios, shrinking towards fewer items and fewer faults."""
    return draw_scenario(_DrawChoices(draw))
