"""What to do when a step fails: small frozen value objects, validated when built.

A strategy decides; the engine acts. `Retry.delay_before(attempt)` is pure, so backoff is
tested without sleeping and the engine stays the one place with side effects.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final

from spakky_saga.errors import SagaFlowDefinitionError


@dataclass(frozen=True, slots=True)
class ErrorStrategy:
    """Base of the strategies a step's `on_error=` (or `|`) accepts."""


@dataclass(frozen=True, slots=True)
class Compensate(ErrorStrategy):
    """The default: stop the saga and compensate committed steps in reverse order."""


@dataclass(frozen=True, slots=True)
class Skip(ErrorStrategy):
    """Record the failure and continue with the next item, as if the step had returned None."""


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
                f"ExponentialBackoff(base={self.base!r}): base must be a finite number of "
                "seconds >= 0"
            )
        if self.max_delay is not None and not (_is_number(self.max_delay) and self.max_delay >= 0):
            problems.append(
                f"ExponentialBackoff(max_delay={self.max_delay!r}): max_delay must be >= 0 "
                "seconds, or None for no cap"
            )
        if not (_is_number(self.jitter) and 0.0 <= self.jitter <= 1.0):
            problems.append(
                f"ExponentialBackoff(jitter={self.jitter!r}): jitter must be a fraction "
                "between 0.0 and 1.0"
            )
        if problems:
            raise SagaFlowDefinitionError(*problems)

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry_number` (the first retry is 1)."""
        delay = self.base * (2.0 ** (retry_number - 1))
        if self.max_delay is not None and delay > self.max_delay:
            delay = self.max_delay
        if self.jitter:
            low = delay * (1.0 - self.jitter)
            delay = (rng or _JITTER_RANDOM).uniform(low, delay)
        return delay


def _is_number(value: object) -> bool:
    """True for int and float, but not bool (a common slip: `ExponentialBackoff(True)`)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


_JITTER_RANDOM: Final = random.Random()
_NO_BACKOFF: Final = ExponentialBackoff(base=0.0)


@dataclass(frozen=True, slots=True)
class Retry(ErrorStrategy):
    """Run the step up to `max_attempts` times in total, waiting `backoff` between attempts,
    then apply `then` (Compensate or Skip) if every attempt failed.

    `Retry(3, ExponentialBackoff(1.0), Compensate())` works positionally, as documented.
    """

    max_attempts: int
    backoff: ExponentialBackoff = field(default=_NO_BACKOFF)
    then: Compensate | Skip = field(default_factory=Compensate)

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            problems.append(
                f"Retry(max_attempts={self.max_attempts!r}): max_attempts must be an int >= 1"
            )
        elif self.max_attempts < 1:
            problems.append(
                f"Retry(max_attempts={self.max_attempts}): max_attempts counts every attempt, "
                "the first included, so it must be >= 1 (use Retry(1) for no retry)"
            )
        if not isinstance(self.backoff, ExponentialBackoff):
            problems.append(
                f"Retry(backoff={self.backoff!r}): backoff must be an ExponentialBackoff"
            )
        if isinstance(self.then, Retry):
            problems.append(
                "Retry(then=Retry(...)): a retry cannot be followed by another retry; "
                "raise max_attempts instead"
            )
        elif not isinstance(self.then, Compensate | Skip):
            problems.append(f"Retry(then={self.then!r}): then must be Compensate() or Skip()")
        if problems:
            raise SagaFlowDefinitionError(*problems)

    def should_retry(self, error: BaseException) -> bool:
        """Whether `error` is worth another attempt."""
        return True

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 is the first retry)."""
        return self.backoff.delay(attempt - 1)


DEFAULT_STRATEGY: Final = Compensate()


def check_strategy(strategy: object, where: str) -> ErrorStrategy:
    """Return `strategy` if it is one, else raise a definition error naming `where`."""
    if isinstance(strategy, ErrorStrategy) and type(strategy) is not ErrorStrategy:
        return strategy
    hint = ""
    if isinstance(strategy, type) and issubclass(strategy, ErrorStrategy):
        hint = f" (the class itself; did you mean {strategy.__name__}(...)?)"
    raise SagaFlowDefinitionError(
        f"{where}: on_error must be Compensate(), Skip() or Retry(...), got {strategy!r}{hint}"
    )
