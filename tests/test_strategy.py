"""Error strategies: small frozen values, validated when built; backoff delays are pure."""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Callable
from datetime import timedelta

import pytest

from spakky_saga import (
    Compensate,
    ExponentialBackoff,
    Retry,
    SagaFlowDefinitionError,
    Skip,
)
from spakky_saga.strategy import MAX_DELAY_SECONDS
from tests.support import wrong


def test_retry_takes_its_arguments_positionally_as_documented() -> None:
    retry = Retry(3, ExponentialBackoff(1.0), Compensate())

    assert retry.max_attempts == 3
    assert retry.backoff == ExponentialBackoff(base=1.0)
    assert retry.then == Compensate()


def test_retry_with_no_arguments_uses_the_documented_defaults() -> None:
    retry = Retry()

    assert retry == Retry(3, ExponentialBackoff(1.0), Compensate())
    assert (retry.max_attempts, retry.backoff.base, retry.then) == (3, 1.0, Compensate())
    assert retry.retry_on is None
    assert [retry.delay_before(attempt) for attempt in (2, 3)] == [1.0, 2.0]


def test_retry_repr_shows_the_attempts_and_only_what_differs_from_the_defaults() -> None:
    assert repr(Retry()) == "Retry(3)"
    assert repr(Retry(5, ExponentialBackoff(1.0), Compensate())) == "Retry(5)"
    assert repr(Retry(3, ExponentialBackoff(0.5, max_delay=5.0))) == (
        "Retry(3, ExponentialBackoff(0.5, max_delay=5.0))"
    )
    assert repr(Retry(2, ExponentialBackoff(0.5, max_delay=4.0, jitter=0.5), Skip())) == (
        "Retry(2, ExponentialBackoff(0.5, max_delay=4.0, jitter=0.5), then=Skip())"
    )
    assert repr(Retry(2, then=Skip())) == "Retry(2, then=Skip())"
    assert repr(Retry(retry_on=(TimeoutError, ConnectionError))) == (
        "Retry(3, retry_on=(TimeoutError, ConnectionError))"
    )


def test_backoff_repr_shows_the_base_and_only_what_differs_from_the_defaults() -> None:
    assert repr(ExponentialBackoff()) == "ExponentialBackoff(1.0)"
    assert repr(ExponentialBackoff(0.25, jitter=0.1)) == "ExponentialBackoff(0.25, jitter=0.1)"


def test_skip_and_compensate_repr_as_they_are_written() -> None:
    assert (repr(Skip()), repr(Compensate())) == ("Skip()", "Compensate()")


def test_strategies_are_equal_by_value() -> None:
    assert Retry(3, then=Skip()) == Retry(3, then=Skip())
    assert Retry(3) != Retry(4)
    assert ExponentialBackoff() == ExponentialBackoff(1.0)
    assert len({Retry(), Retry(), Skip(), Skip(), Compensate()}) == 3


@pytest.mark.parametrize(
    ("strategy", "field_name"),
    [
        (Retry(), "max_attempts"),
        (Retry(), "retry_on"),
        (ExponentialBackoff(), "base"),
        (ExponentialBackoff(), "jitter"),
    ],
)
def test_assigning_a_strategy_field_raises_frozen_instance_error(
    strategy: object, field_name: str
) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(strategy, field_name, 4)


def test_exponential_backoff_doubles_from_base() -> None:
    backoff = ExponentialBackoff(0.5)

    assert [backoff.delay_for(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_exponential_backoff_default_base_is_one_second() -> None:
    assert [ExponentialBackoff().delay_for(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_delay_for_attempt_one_is_the_base_as_upstream_documents() -> None:
    backoff = ExponentialBackoff(2.0)  # upstream 8.5.0: delay_for(1) == 2.0, delay_for(3) == 8.0

    assert (backoff.delay_for(1), backoff.delay_for(3)) == (2.0, 8.0)
    assert isinstance(backoff.delay_for(1), float)


def test_retry_waits_base_before_the_second_attempt() -> None:
    retry = Retry(4, ExponentialBackoff(1.0))

    assert [retry.delay_before(attempt) for attempt in (2, 3, 4)] == [1.0, 2.0, 4.0]


def test_backoff_cap_limits_every_delay() -> None:
    backoff = ExponentialBackoff(1.0, max_delay=3.0)

    assert [backoff.delay_for(n) for n in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_jitter_draws_each_delay_between_its_lower_bound_and_the_full_delay() -> None:
    backoff = ExponentialBackoff(2.0, jitter=0.25)
    rng = random.Random(42)

    draws = [backoff.delay_for(3, rng) for _ in range(500)]

    assert all(6.0 <= draw <= 8.0 for draw in draws)
    assert min(draws) < 6.2
    assert max(draws) > 7.8


def test_full_jitter_can_go_down_to_zero_and_is_applied_after_the_cap() -> None:
    backoff = ExponentialBackoff(4.0, max_delay=5.0, jitter=1.0)
    rng = random.Random(7)

    draws = [backoff.delay_for(4, rng) for _ in range(500)]

    assert all(0.0 <= draw <= 5.0 for draw in draws)
    assert min(draws) < 0.2


def test_jitter_without_a_random_source_stays_in_bounds() -> None:
    backoff = ExponentialBackoff(1.0, jitter=0.5)

    assert all(0.5 <= backoff.delay_for(1) <= 1.0 for _ in range(50))


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


# Huge attempt numbers: a strategy never raises during a run.


@pytest.mark.parametrize("attempt", [1024, 1025, 1100, 5000, 10**6, 10**400])
def test_delay_for_a_huge_attempt_with_a_zero_cap_is_zero_instead_of_overflowing(
    attempt: int,
) -> None:
    assert ExponentialBackoff(0.0, max_delay=0.0).delay_for(attempt) == 0.0
    assert ExponentialBackoff(1.0, max_delay=0.0).delay_for(attempt) == 0.0


@pytest.mark.parametrize("attempt", [1024, 1025, 1100, 10**6, 10**400])
def test_delay_for_a_huge_attempt_is_capped_by_max_delay(attempt: int) -> None:
    assert ExponentialBackoff(1.0, max_delay=30.0).delay_for(attempt) == 30.0


@pytest.mark.parametrize("attempt", [60, 1024, 1025, 10**6, 10**400])
def test_an_uncapped_delay_saturates_at_a_finite_maximum_that_fits_a_timedelta(
    attempt: int,
) -> None:
    delay = ExponentialBackoff(1.0).delay_for(attempt)

    assert delay == MAX_DELAY_SECONDS
    assert timedelta(seconds=delay) == timedelta(days=999_999_999)


def test_a_delay_below_the_saturation_point_is_exact() -> None:
    assert ExponentialBackoff(1.0).delay_for(40) == 2.0**39


@pytest.mark.parametrize("attempt", [1025, 10**6])
def test_jitter_on_a_saturated_delay_stays_finite_and_in_bounds(attempt: int) -> None:
    backoff = ExponentialBackoff(1.0, jitter=0.5)
    rng = random.Random(3)

    draws = [backoff.delay_for(attempt, rng) for _ in range(100)]

    assert all(MAX_DELAY_SECONDS / 2 <= draw <= MAX_DELAY_SECONDS for draw in draws)
    assert all(math.isfinite(draw) for draw in draws)


def test_a_thousand_retries_without_backoff_compute_every_delay() -> None:
    retry = Retry(1100, ExponentialBackoff(0.0, max_delay=0.0))

    assert {retry.delay_before(attempt) for attempt in range(2, 1101)} == {0.0}


def test_attempts_below_one_follow_the_formula_like_upstream() -> None:
    backoff = ExponentialBackoff(1.0)

    assert backoff.delay_for(0) == 0.5  # upstream 8.5.0 gives the same
    assert backoff.delay_for(-(10**400)) == 0.0


# retry_on: which errors are worth another attempt.


class Transient(Exception):
    """An error worth retrying in these tests."""


class Permanent(Exception):
    """An error not worth retrying in these tests."""


def test_retry_without_retry_on_retries_every_error() -> None:
    retry = Retry()

    assert retry.should_retry(Transient())
    assert retry.should_retry(KeyError("x"))


def test_retry_on_an_exception_class_matches_it_and_its_subclasses() -> None:
    retry = Retry(retry_on=OSError)

    assert retry.should_retry(OSError())
    assert retry.should_retry(ConnectionResetError())
    assert not retry.should_retry(Permanent())


def test_retry_on_a_tuple_matches_any_of_its_classes() -> None:
    retry = Retry(retry_on=(Transient, TimeoutError))

    assert retry.should_retry(Transient())
    assert retry.should_retry(TimeoutError())
    assert not retry.should_retry(Permanent())


def test_retry_on_a_predicate_asks_it_about_each_error() -> None:
    seen: list[BaseException] = []

    def is_transient(error: BaseException) -> bool:
        seen.append(error)
        return "again" in str(error)

    retry = Retry(retry_on=is_transient)
    again, never = Permanent("try again"), Permanent("never")

    assert retry.should_retry(again)
    assert not retry.should_retry(never)
    assert seen == [again, never]


def test_retry_on_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Retry(3, ExponentialBackoff(), Compensate(), Transient)  # type: ignore[call-arg] # kw-only


def test_a_definition_error_is_never_retried_whatever_retry_on_says() -> None:
    error = SagaFlowDefinitionError('step "<lambda>" returned None')

    assert not Retry().should_retry(error)
    assert not Retry(retry_on=Exception).should_retry(error)
    assert not Retry(retry_on=lambda error: True).should_retry(error)


def test_a_predicate_that_raises_means_no_retry_and_notes_why_on_the_error() -> None:
    def is_transient(error: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    error = Transient("db down")

    assert Retry(retry_on=is_transient).should_retry(error) is False
    assert error.__notes__ == [
        "Retry(retry_on=test_a_predicate_that_raises_means_no_retry_and_notes_why_on_the_error."
        "<locals>.is_transient) raised RuntimeError: predicate bug; the error was treated as "
        "not retryable"
    ]


async def test_a_predicate_returning_a_coroutine_means_no_retry_without_a_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    async def check(error: BaseException) -> bool:
        return True

    error = Transient()
    retry = Retry(retry_on=wrong(lambda error: check(error)))  # noqa: PLW0108 - the mistake

    assert retry.should_retry(error) is False
    assert "returned an awaitable instead of a bool" in error.__notes__[0]
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_a_predicate_may_return_any_truthy_value() -> None:
    retry = Retry(retry_on=wrong(lambda error: error.args))  # a tuple: truthiness is enough

    assert retry.should_retry(Transient("x"))
    assert not retry.should_retry(Transient())


class WithTransientCall:
    def __call__(self, error: BaseException) -> bool:
        return isinstance(error, Transient)


def test_retry_on_accepts_a_callable_object_and_a_partial() -> None:
    def matches(kind: type[BaseException], error: BaseException) -> bool:
        return isinstance(error, kind)

    assert Retry(retry_on=WithTransientCall()).should_retry(Transient())
    assert Retry(retry_on=functools.partial(matches, Transient)).should_retry(Transient())
    assert not Retry(retry_on=functools.partial(matches, Transient)).should_retry(Permanent())


async def async_predicate(error: BaseException) -> bool:
    return True


@pytest.mark.parametrize(
    ("retry_on", "message"),
    [
        (
            int,
            "Retry(retry_on=int): int is not an exception class; retry_on takes an exception "
            "class, a tuple of exception classes, or a function (error) -> bool",
        ),
        (
            (),
            "Retry(retry_on=()): an empty tuple matches no error, so nothing would ever be "
            "retried; omit retry_on to retry every error",
        ),
        (
            (Transient, "x"),
            "Retry(retry_on=(Transient, 'x')): item 2, 'x', is not an exception class; "
            "retry_on takes an exception class, a tuple of exception classes, or a function "
            "(error) -> bool",
        ),
        (
            Transient("db down"),
            "Retry(retry_on=Transient('db down')): got an exception instance; pass its class, "
            "Transient, to retry every error of that type",
        ),
        (
            Transient | Permanent,
            "Retry(retry_on=tests.test_strategy.Transient | tests.test_strategy.Permanent): "
            "write a union of exception classes as a tuple, (Transient, Permanent)",
        ),
        (
            "Transient",
            "Retry(retry_on='Transient'): retry_on takes an exception class, a tuple of "
            "exception classes, or a function (error) -> bool",
        ),
        (
            async_predicate,
            "Retry(retry_on=async_predicate): the predicate is `async def`; it must return a "
            "bool right away, so declare it with `def`",
        ),
        (
            lambda: True,
            "Retry(retry_on=<lambda>): the predicate must take exactly one argument, the error",
        ),
    ],
    ids=["not-an-exception", "empty", "bad-item", "instance", "union", "str", "async", "arity"],
)
def test_an_invalid_retry_on_is_rejected_at_construction_saying_what_was_given(
    retry_on: object, message: str
) -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        Retry(retry_on=wrong(retry_on))

    assert str(raised.value) == message


def test_a_retry_on_problem_is_reported_with_the_other_problems() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        Retry(wrong(0), retry_on=wrong(int))

    assert len(raised.value.problems) == 2


def test_a_value_with_a_broken_repr_still_gets_its_definition_error() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(SagaFlowDefinitionError) as raised:
        Retry(wrong(Unprintable()))

    assert "Retry(max_attempts=<Unprintable object (repr raised RuntimeError)>)" in str(
        raised.value
    )
