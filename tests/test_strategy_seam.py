"""The strategy seam: a strategy decides (`ErrorStrategy.decide`), the engine carries it out.
User-defined strategies run exactly like ours; a strategy that breaks fails its step, clearly."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from spakky_saga import (
    Decision,
    ErrorStrategy,
    FailedAttempt,
    SagaEngine,
    SagaFlowDefinitionError,
    SagaStatus,
    StepStatus,
    Verdict,
    saga_flow,
    step,
)
from tests.support import Boom, Journal, ManualClock, OrderData, RecordingSleep


@dataclass
class Breaker:
    """A circuit breaker a test opens and closes."""

    closed: bool = True
    seen: list[FailedAttempt] = field(default_factory=list)


@dataclass(frozen=True)
class RetryWhileClosed(ErrorStrategy):
    """Retry every second while the breaker is closed, five attempts at most; else fail."""

    breaker: Breaker

    def decide(self, failure: FailedAttempt, /) -> Decision:
        self.breaker.seen.append(failure)
        if self.breaker.closed and failure.attempt < 5:
            return Decision.retry(1.0)
        return Decision.FAIL


@dataclass(frozen=True)
class Broken(ErrorStrategy):
    def decide(self, failure: FailedAttempt, /) -> Decision:
        raise KeyError("no such breaker")


@pytest.fixture
def engine(clock: ManualClock, sleep: RecordingSleep) -> SagaEngine:
    return SagaEngine(clock=clock, sleep=sleep, log=False)


async def test_a_user_strategy_decides_retries_with_its_own_delays(
    engine: SagaEngine, sleep: RecordingSleep, clock: ManualClock
) -> None:
    journal = Journal(clock)
    breaker = Breaker()
    flow = saga_flow(step(journal.fail("pay", times=2)) | RetryWhileClosed(breaker))

    result = await engine.run(flow, OrderData(order_id=1))

    assert result.status is SagaStatus.COMPLETED
    assert sleep.delays == [1.0, 1.0]
    assert [(f.step, f.attempt, type(f.error)) for f in breaker.seen] == [
        ("pay", 1, Boom),
        ("pay", 2, Boom),
    ]
    assert [(r.attempt, r.status) for r in result.history] == [
        (1, StepStatus.FAILED),
        (2, StepStatus.FAILED),
        (3, StepStatus.COMMITTED),
    ]


async def test_a_user_strategy_that_gives_up_compensates(
    engine: SagaEngine, clock: ManualClock
) -> None:
    journal = Journal(clock)
    breaker = Breaker(closed=False)
    flow = saga_flow(
        journal.transaction("reserve"), step(journal.fail("pay")) | RetryWhileClosed(breaker)
    )

    result = await engine.run(flow, OrderData(order_id=1))

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "pay"
    assert journal.events == ["reserve", "pay", "undo reserve"]


async def test_a_user_strategy_can_skip(engine: SagaEngine, clock: ManualClock) -> None:
    @dataclass(frozen=True)
    class SkipLookups(ErrorStrategy):
        def decide(self, failure: FailedAttempt, /) -> Decision:
            return Decision.SKIP if isinstance(failure.error, Boom) else Decision.FAIL

        @property
        def skips(self) -> bool:
            return True

    journal = Journal(clock)
    flow = saga_flow(step(journal.fail("lookup")) | SkipLookups(), journal.ok("ship"))

    result = await engine.run(flow, OrderData(order_id=1))

    assert result.status is SagaStatus.COMPLETED
    assert result.skipped == ("lookup",)
    assert journal.events == ["lookup", "ship"]


async def test_a_strategy_that_raises_fails_its_step_naming_the_strategy(
    engine: SagaEngine, clock: ManualClock
) -> None:
    journal = Journal(clock)
    flow = saga_flow(journal.transaction("reserve"), step(journal.fail("pay")) | Broken())

    result = await engine.run(flow, OrderData(order_id=1))

    assert result.status is SagaStatus.FAILED
    assert isinstance(result.error, RuntimeError)
    assert str(result.error) == (
        "the error strategy of step \"pay\" (Broken()) raised KeyError: 'no such breaker' while "
        "deciding on attempt 1; the step fails"
    )
    assert journal.events == ["reserve", "pay", "undo reserve"]


async def test_a_strategy_that_returns_no_decision_fails_its_step(
    engine: SagaEngine, clock: ManualClock
) -> None:
    @dataclass(frozen=True)
    class Sloppy(ErrorStrategy):
        def decide(self, failure: FailedAttempt, /) -> Decision:
            return True  # type: ignore[return-value] # the mistake under test

    journal = Journal(clock)
    result = await engine.run(
        saga_flow(step(journal.fail("pay")) | Sloppy()), OrderData(order_id=1)
    )

    assert result.status is SagaStatus.FAILED
    assert "decide() returned True; it must return a Decision" in str(result.error)


def test_a_strategy_without_decide_is_refused_when_the_step_is_built() -> None:
    @dataclass(frozen=True)
    class Forgetful(ErrorStrategy):
        pass

    async def pay(data: OrderData) -> None: ...

    with pytest.raises(SagaFlowDefinitionError) as raised:
        step(pay, on_error=Forgetful())  # type: ignore[saga-strategy-decide] # under test

    assert "does not implement decide(failure) -> Decision" in str(raised.value)


def test_a_retry_delay_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite number of seconds >= 0"):
        Decision.retry(float("inf"))
    assert Decision.retry(2).verdict is Verdict.RETRY
    assert Decision.retry(2).delay == 2.0
