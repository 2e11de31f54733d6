"""VirtualClock: backoff without waiting, and (with looptime) timeouts without waiting."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import timedelta

import pytest

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaStatus,
    SagaStepTimeoutError,
    SagaTimeoutError,
    saga_flow,
    step,
)
from spakky_saga.testing import VirtualClock
from tests.testing.flows import Order, Services
from tests.testing.support import needs_looptime


async def hang(data: Order) -> None:
    await asyncio.get_running_loop().create_future()


async def test_sleep_moves_the_clock_at_once_and_records_the_delay() -> None:
    clock = VirtualClock(start=100.0)

    await clock.sleep(10)
    await clock.sleep(2.5)

    assert clock.now == clock() == 112.5
    assert clock.sleeps == (10, 2.5)
    assert not clock.loop_is_virtual


async def test_retry_backoff_on_a_virtual_clock_takes_no_real_time() -> None:
    clock = VirtualClock()
    attempts = 0

    async def flaky(data: Order) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            raise ConnectionError("down")

    flow = saga_flow(step(flaky) | Retry(4, ExponentialBackoff(base=10)))
    started = time.perf_counter()

    result = await clock.engine(log=False).run(flow, Order())

    assert time.perf_counter() - started < 0.5
    assert result.status is SagaStatus.COMPLETED
    assert clock.sleeps == (10.0, 20.0, 40.0)
    assert result.elapsed == timedelta(seconds=70)


@needs_looptime
async def test_a_retried_30_second_timeout_with_10_second_backoff_takes_milliseconds() -> None:
    clock = VirtualClock()
    flow = saga_flow(
        step(hang, timeout=timedelta(seconds=30)) | Retry(3, ExponentialBackoff(base=10))
    )
    started = time.perf_counter()

    with clock.virtual_loop():
        result = await clock.engine(log=False).run(flow, Order())

    assert time.perf_counter() - started < 0.5
    assert result.status is SagaStatus.FAILED
    assert isinstance(result.error, SagaStepTimeoutError)
    assert clock.sleeps == (10.0, 20.0)
    assert result.elapsed == timedelta(seconds=30 + 10 + 30 + 20 + 30)
    assert [record.offset for record in result.history] == [
        timedelta(0),
        timedelta(seconds=40),
        timedelta(seconds=90),
    ]


@needs_looptime
async def test_a_saga_timeout_fires_at_once_on_virtual_loop_time() -> None:
    clock = VirtualClock()
    services = Services()
    flow = saga_flow(step(services.reserve, compensate=services.release), step(hang)).timeout(
        timedelta(minutes=5)
    )
    started = time.perf_counter()

    with clock.virtual_loop():
        result = await clock.engine(log=False).run(flow, Order())

    assert time.perf_counter() - started < 0.5
    assert result.status is SagaStatus.TIMED_OUT
    assert isinstance(result.error, SagaTimeoutError)
    assert result.elapsed == timedelta(minutes=5)
    assert services.log == ["reserve", "release"]


@needs_looptime
async def test_the_clock_follows_a_virtual_loop_from_where_it_was() -> None:
    clock = VirtualClock()
    await clock.sleep(5)

    with clock.virtual_loop():
        assert clock.loop_is_virtual
        assert clock.now == 5
        await asyncio.sleep(60)  # the loop's own sleep moves the clock too
        assert clock.now == pytest.approx(65)
        await clock.sleep(10)
        assert clock.now == pytest.approx(75)

    assert not clock.loop_is_virtual
    assert clock.now == pytest.approx(75)  # never backwards, whatever the real loop time is
    await clock.sleep(1000)
    assert clock.now == pytest.approx(1075)

    with clock.virtual_loop():  # the same loop again: followed from where the clock is
        assert clock.now == pytest.approx(1075)
        await asyncio.sleep(5)
        assert clock.now == pytest.approx(1080)


@needs_looptime
def test_run_runs_a_coroutine_on_a_new_virtual_loop() -> None:
    clock = VirtualClock(start=3)

    async def main() -> float:
        await asyncio.sleep(3600)
        return clock.now

    started = time.perf_counter()
    assert clock.run(main()) == pytest.approx(3603)
    assert time.perf_counter() - started < 0.5


def test_virtual_loop_outside_a_running_loop_says_how_to_run_instead() -> None:
    with (
        pytest.raises(RuntimeError, match=r"from synchronous code, run the coroutine with"),
        VirtualClock().virtual_loop(),
    ):
        pass  # pragma: no cover - never entered


async def test_without_looptime_virtual_loop_time_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "looptime", None)  # import looptime -> ImportError

    with (
        pytest.raises(RuntimeError, match=r"pip install 'spakky-saga-typed\[testing\]'"),
        VirtualClock().virtual_loop(),
    ):
        pass  # pragma: no cover - never entered


async def test_the_clocks_engine_takes_the_other_engine_options() -> None:
    clock = VirtualClock()

    engine = clock.engine(log=False, compensation_timeout=timedelta(seconds=1))

    assert engine.listeners == ()
    result = await engine.run(saga_flow(step(Services().ship)), Order())
    assert result.succeeded


def test_a_clock_shows_its_time() -> None:
    assert repr(VirtualClock(start=2)) == "VirtualClock(now=2.0)"


@needs_looptime
def test_virtual_loop_refuses_a_loop_looptime_cannot_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    class ForeignLoop:  # e.g. uvloop's, which is no asyncio.BaseEventLoop
        def __repr__(self) -> str:
            return "<ForeignLoop>"

    monkeypatch.setattr(asyncio, "get_running_loop", ForeignLoop)

    with (
        pytest.raises(RuntimeError, match=r"the running loop <ForeignLoop> is not an asyncio"),
        VirtualClock().virtual_loop(),
    ):
        pass  # pragma: no cover - never entered


@needs_looptime
async def test_virtual_loop_inside_virtual_loop_changes_nothing() -> None:
    clock = VirtualClock()

    with clock.virtual_loop(), clock.virtual_loop():
        await asyncio.sleep(10)
        assert clock.now == pytest.approx(10)
    assert not clock.loop_is_virtual


@needs_looptime
def test_timers_still_fire_after_a_hundred_days_of_virtual_time() -> None:
    # Past 2**23 s (about 97 days) a float cannot hold asyncio's 1 ns timer granularity: a
    # timer due exactly now was never run and the loop spun (explore_crashes on flows whose
    # waits moved time on by days). Run in a thread, so that a spinning loop fails the test.
    clock = VirtualClock()
    done: list[int] = []

    async def sleeps() -> None:
        with clock.virtual_loop():
            for i in range(2000):
                await asyncio.sleep(3 * 86400 + i * 0.37)  # days, with uneven fractions
                done.append(i)

    worker = threading.Thread(target=asyncio.run, args=(sleeps(),), daemon=True)
    worker.start()
    worker.join(timeout=30)

    assert len(done) == 2000, f"the loop stopped running timers after {len(done)} sleeps"
