"""Error strategies inside parallel groups: each member keeps its own Retry, Skip and timeout.

A retrying member retries alone while its siblings run (shown with an injected sleep that
cannot end before a sibling has run); a skipped member lets the group succeed without it;
the history records every attempt.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaEngine,
    SagaFlow,
    SagaResult,
    SagaStatus,
    SagaStepTimeoutError,
    Skip,
    StepStatus,
    parallel,
    saga_flow,
    step,
)
from tests.parallel_support import Boom, Fanout, Trace, within_guard


class GatedSleep:
    """An engine `sleep=` that records each backoff and (when `gated`) ends it only once
    `gate` is set; it never really waits."""

    def __init__(self, trace: Trace, *, gated: bool = True) -> None:
        self.trace = trace
        self.gated = gated
        self.delays: list[float] = []
        self.backing_off = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.trace.events.append(f"backoff {seconds:g}s")
        self.backing_off.set()
        if self.gated:
            await self.gate.wait()
            self.gate.clear()


async def run(
    flow: SagaFlow[Fanout], sleep: GatedSleep | None = None, data: Fanout | None = None
) -> SagaResult[Fanout]:
    engine = SagaEngine(sleep=sleep) if sleep is not None else SagaEngine()
    return await within_guard(engine.run(flow, data or Fanout()))


def attempts(result: SagaResult[Fanout]) -> list[tuple[str, StepStatus, int]]:
    """(name, status, attempt) of every forward record, in the order they happened."""
    return [(r.name, r.status, r.attempt) for r in result.history if not r.compensation]


async def test_retried_member_retries_alone_while_its_siblings_run() -> None:
    trace = Trace()
    sleep = GatedSleep(trace)
    flow = saga_flow(
        (trace.fails("charge", times=1, payment="charged") | Retry(2, ExponentialBackoff(1.0)))
        & trace.sets("reserve", after=sleep.backing_off, done=sleep.gate, stock="reserved")
    )

    result = await run(flow, sleep)  # a retry holding up its siblings would never finish

    assert trace.events == [
        "charge#1 failed",
        "backoff 1s",
        "reserve waiting",
        "reserve",
        "charge#2",
    ]
    assert sleep.delays == [1.0]
    assert attempts(result) == [
        ("charge", StepStatus.FAILED, 1),
        ("reserve", StepStatus.COMMITTED, 1),
        ("charge", StepStatus.COMMITTED, 2),
    ]
    assert (result.data.payment, result.data.stock) == ("charged", "reserved")


async def test_retried_member_runs_each_attempt_on_the_group_input() -> None:
    trace = Trace()
    flow = saga_flow(
        (trace.fails("charge", times=2, payment="charged") | Retry(3, ExponentialBackoff(0.0)))
        & trace.sets("reserve", stock="reserved"),
    )
    data = Fanout()

    result = await run(flow, data=data)

    assert trace.seen["charge"] == [data, data, data]
    assert [a for n, _, a in attempts(result) if n == "charge"] == [1, 2, 3]
    assert result.succeeded


async def test_member_that_exhausts_its_retries_fails_the_group_after_every_attempt() -> None:
    trace = Trace()
    sleep = GatedSleep(trace, gated=False)
    flow = saga_flow(
        (trace.fails("charge") | Retry(3, ExponentialBackoff(0.5)))
        & (trace.sets("reserve", stock="reserved") >> trace.undo("reserve"))
    )

    result = await run(flow, sleep)

    assert [(n, a) for n, s, a in attempts(result) if s is StepStatus.FAILED] == [
        ("charge", 1),
        ("charge", 2),
        ("charge", 3),
    ]
    assert sleep.delays == [0.5, 1.0]
    assert result.failed_step == "charge"
    assert isinstance(result.error, Boom)
    assert str(result.error) == "charge failed (attempt 3)"
    assert trace.undo_counts() == {"reserve": 1}


async def test_skipped_member_lets_the_group_succeed_without_it() -> None:
    trace = Trace()
    flow = saga_flow(
        (trace.fails("notify", payment="never") | Skip())
        & trace.sets("charge", payment="charged")
        & trace.sets("reserve", stock="reserved"),
        trace.sets("ship"),
    )

    result = await run(flow)

    assert result.status is SagaStatus.COMPLETED
    assert (result.data.payment, result.data.stock) == ("charged", "reserved")
    assert attempts(result)[0] == ("notify", StepStatus.FAILED, 1)
    assert isinstance(result.history[0].error, Boom)
    assert "ship" in trace.events


async def test_skipped_member_gives_the_custom_merge_none() -> None:
    given: list[tuple[Fanout | None, ...]] = []

    def remember(data: Fanout, results: tuple[Fanout | None, ...]) -> Fanout:
        given.append(results)
        return data

    trace = Trace()
    flow = saga_flow(
        parallel(
            trace.sets("a", total=1),
            trace.fails("b", total=2) | Skip(),
            merge=remember,
        )
    )

    await run(flow)

    [results] = given
    assert results[0] is not None
    assert results[0].total == 1
    assert results[1] is None


async def test_retry_then_skip_records_each_attempt_and_the_group_succeeds() -> None:
    trace = Trace()
    flow = saga_flow(
        (trace.fails("notify") | Retry(2, ExponentialBackoff(0.0), Skip()))
        & trace.sets("charge", payment="P")
    )

    result = await run(flow)

    assert result.succeeded
    assert [(n, a) for n, s, a in attempts(result) if s is StepStatus.FAILED] == [
        ("notify", 1),
        ("notify", 2),
    ]
    assert result.data.payment == "P"


async def test_member_timeout_goes_through_its_own_strategy() -> None:
    trace = Trace()
    never = asyncio.Event()
    slow = step(
        trace.sets("slow", after=never, stock="never"),
        timeout=timedelta(milliseconds=1),
        on_error=Skip(),
    )
    flow = saga_flow(slow & trace.sets("charge", payment="P"))

    result = await run(flow)

    assert result.succeeded
    assert (result.data.stock, result.data.payment) == (None, "P")
    [timed_out] = [r for r in result.history if r.name == "slow"]
    assert isinstance(timed_out.error, SagaStepTimeoutError)
