"""Error strategies: small frozen values, validated when built; backoff delays are pure."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from spakky_saga import (
    Compensate,
    ExponentialBackoff,
    Retry,
    SagaFlowDefinitionError,
    Skip,
)
from tests.support import wrong


def test_retry_takes_its_arguments_positionally_as_documented() -> None:
    retry = Retry(3, ExponentialBackoff(1.0), Compensate())

    assert retry.max_attempts == 3
    assert retry.backoff == ExponentialBackoff(base=1.0)
    assert retry.then == Compensate()


def test_retry_defaults_to_no_backoff_then_compensate() -> None:
    retry = Retry(max_attempts=2)

    assert retry.then == Compensate()
    assert retry.delay_before(2) == 0.0


def test_strategies_are_frozen_values() -> None:
    assert Retry(3, then=Skip()) == Retry(3, then=Skip())
    assert Retry(3) != Retry(4)
    with pytest.raises(AttributeError):
        Retry(3).max_attempts = 4  # type: ignore[misc] # the point of the test: frozen


def test_exponential_backoff_doubles_from_base() -> None:
    backoff = ExponentialBackoff(0.5)

    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_exponential_backoff_default_base_is_one_second() -> None:
    assert [ExponentialBackoff().delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_retry_waits_base_before_the_second_attempt() -> None:
    retry = Retry(4, ExponentialBackoff(1.0))

    assert [retry.delay_before(attempt) for attempt in (2, 3, 4)] == [1.0, 2.0, 4.0]


def test_backoff_cap_limits_every_delay() -> None:
    backoff = ExponentialBackoff(1.0, max_delay=3.0)

    assert [backoff.delay(n) for n in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_jitter_draws_each_delay_between_its_lower_bound_and_the_full_delay() -> None:
    backoff = ExponentialBackoff(2.0, jitter=0.25)
    rng = random.Random(42)

    draws = [backoff.delay(3, rng) for _ in range(500)]

    assert all(6.0 <= draw <= 8.0 for draw in draws)
    assert min(draws) < 6.2
    assert max(draws) > 7.8


def test_full_jitter_can_go_down_to_zero_and_is_applied_after_the_cap() -> None:
    backoff = ExponentialBackoff(4.0, max_delay=5.0, jitter=1.0)
    rng = random.Random(7)

    draws = [backoff.delay(4, rng) for _ in range(500)]

    assert all(0.0 <= draw <= 5.0 for draw in draws)
    assert min(draws) < 0.2


def test_jitter_without_a_random_source_stays_in_bounds() -> None:
    backoff = ExponentialBackoff(1.0, jitter=0.5)

    assert all(0.5 <= backoff.delay(1) <= 1.0 for _ in range(50))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Retry(wrong(0)), "Retry(max_attempts=0): max_attempts counts every attempt"),
        (lambda: Retry(wrong(-2)), "Retry(max_attempts=-2)"),
        (lambda: Retry(wrong(1.5)), "Retry(max_attempts=1.5): max_attempts must be an int >= 1"),
        (lambda: Retry(wrong(True)), "Retry(max_attempts=True): max_attempts must be an int >= 1"),
        (lambda: Retry(2, wrong(1.0)), "Retry(backoff=1.0): backoff must be an ExponentialBackoff"),
        (lambda: Retry(2, then=wrong(Retry(2))), "a retry cannot be followed by another retry"),
        (
            lambda: Retry(2, then=wrong("skip")),
            "Retry(then='skip'): then must be Compensate() or Skip()",
        ),
        (lambda: ExponentialBackoff(wrong(-1.0)), "ExponentialBackoff(base=-1.0): base must be"),
        (lambda: ExponentialBackoff(float("nan")), "ExponentialBackoff(base=nan)"),
        (lambda: ExponentialBackoff(float("inf")), "base must be a finite number of seconds"),
        (lambda: ExponentialBackoff(wrong("1")), "ExponentialBackoff(base='1')"),
        (lambda: ExponentialBackoff(1.0, max_delay=wrong(-1.0)), "max_delay must be >= 0 seconds"),
        (
            lambda: ExponentialBackoff(1.0, max_delay=wrong("2")),
            "ExponentialBackoff(max_delay='2')",
        ),
        (lambda: ExponentialBackoff(1.0, jitter=wrong(1.5)), "ExponentialBackoff(jitter=1.5)"),
        (lambda: ExponentialBackoff(1.0, jitter=wrong(-0.1)), "jitter must be a fraction"),
        (lambda: ExponentialBackoff(1.0, jitter=wrong("x")), "ExponentialBackoff(jitter='x')"),
    ],
)
def test_invalid_strategy_values_are_rejected_at_construction(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        build()

    assert message in str(raised.value)


def test_every_problem_of_a_strategy_is_reported_at_once() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        ExponentialBackoff(wrong(-1.0), max_delay=wrong(-2.0), jitter=wrong(3.0))

    assert len(raised.value.problems) == 3
    assert str(raised.value).startswith("3 problems in saga flow definition:")
    assert "base=-1.0" in str(raised.value)
    assert "max_delay=-2.0" in str(raised.value)
    assert "jitter=3.0" in str(raised.value)
