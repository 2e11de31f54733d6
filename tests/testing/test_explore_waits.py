"""`explore_failures` on flows that wait: each `wait_for` is sent its signal when it starts,
and, if it has a timeout, gets a scenario of its own in which no signal comes (it times out
into its `on_timeout`). A wait's attempts are seen through its events, so every check applies
to it as to a step (compensation after a timeout under Compensate, forward progress under
Skip), plus `Check.SIGNAL_ONCE`: a committed wait took its signal exactly once. Planted bugs
show that the checks fail."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from spakky_saga import (
    Compensate,
    ErrorStrategy,
    SagaEngine,
    SagaFlow,
    SagaResult,
    Skip,
    saga_flow,
    sleep,
    step,
    wait_for,
)
from spakky_saga.data import AbstractSagaData
from spakky_saga.events import SagaEvent
from spakky_saga.testing import Check, explore_failures
from spakky_saga.testing.virtual_time import VirtualClock
from tests.testing.flows import Order, Services

pytest.importorskip("looptime")


@dataclass(frozen=True)
class Confirmed:
    reference: str


@dataclass(frozen=True)
class Unused:
    reference: str


def confirm(data: Order, signal: Confirmed) -> Order:
    return dataclasses.replace(data, charged=signal.reference == "ok")


COMPENSATE = Compensate()


def waiting_flow(services: Services, on_timeout: ErrorStrategy = COMPENSATE) -> SagaFlow[Order]:
    """reserve >> release, wait 48 h for Confirmed, sleep an hour, ship >> unship."""
    return saga_flow(
        step(services.reserve, compensate=services.release),
        wait_for(Confirmed, merge=confirm, timeout=timedelta(hours=48), on_timeout=on_timeout),
        sleep(timedelta(hours=1)),
        step(services.ship, compensate=services.unship),
    )


WAIT = "wait_for(Confirmed)"


async def test_a_wait_that_gets_its_signal_or_times_out_into_compensate_keeps_every_promise() -> (
    None
):
    report = await explore_failures(
        waiting_flow(Services()), Order(), signals=[Confirmed("ok")], cancellation=True
    )

    assert report.ok, str(report)
    baseline = report.scenario("no fault")
    assert baseline.outcome == "COMPLETED"
    assert baseline.ran == ("reserve", WAIT, "sleep(1h)", "ship")
    assert baseline.result is not None
    assert baseline.result.data.charged
    timed_out = report.scenario(f"{WAIT} gets no signal")
    assert timed_out.outcome == "FAILED"  # failed, and compensated
    assert timed_out.compensated == ("reserve",)
    assert report.scenario("ship fails").compensated == ("reserve",)
    assert report.scenario(f"undo reserve fails, {WAIT} gets no signal").outcome == (
        "SagaCompensationFailedError"
    )
    assert any("cancelled at await" in str(s.scenario) for s in report.scenarios)


async def test_a_wait_that_times_out_under_skip_goes_on_without_its_signal() -> None:
    report = await explore_failures(
        waiting_flow(Services(), on_timeout=Skip()), Order(), signals=[Confirmed("ok")]
    )

    assert report.ok, str(report)
    skipped = report.scenario(f"{WAIT} gets no signal")
    assert skipped.outcome == "COMPLETED"
    assert skipped.ran == ("reserve", WAIT, "sleep(1h)", "ship")
    assert skipped.result is not None
    assert skipped.result.skipped == (WAIT,)
    assert not skipped.result.data.charged


async def test_a_flow_waiting_for_a_signal_needs_its_payload_and_an_engine_that_signals() -> None:
    with pytest.raises(ValueError, match=r"no signal for wait_for\(Confirmed\) \(Confirmed\)"):
        await explore_failures(waiting_flow(Services()), Order(), signals=[Unused("x")])

    class RunOnly:
        async def run[D: AbstractSagaData](
            self,
            flow: SagaFlow[D],
            data: D,
            *,
            saga_name: str = "",
            listeners: Iterable[object] = (),
        ) -> SagaResult[D]:
            raise AssertionError("never run")

    with pytest.raises(ValueError, match="has no signal"):
        await explore_failures(
            waiting_flow(Services()), Order(), engine=RunOnly(), signals=[Confirmed("ok")]
        )


# --- planted bugs ---------------------------------------------------------------------------


class _Twice:
    """Forwards every event to `inner`, SIGNAL_RECEIVED twice: an engine that reports (and
    merges) the signal of a wait twice."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def signal_received(self, event: SagaEvent) -> None:
        handler = getattr(self.inner, "signal_received", None)
        if callable(handler):
            handler(event)
            handler(event)


class PlantedEngine:
    """The library's engine (on a VirtualClock) with a planted bug: `strategy` replaces every
    wait's `on_timeout` (a timeout compensated instead of skipped, or the reverse), it
    announces each signal a wait takes twice, or it delivers another signal than the one
    sent (`forge`)."""

    def __init__(
        self, *, strategy: ErrorStrategy | None = None, twice: bool = False, forge: bool = False
    ) -> None:
        self.engine: SagaEngine = VirtualClock().engine(log=False)
        self.strategy = strategy
        self.twice = twice
        self.forge = forge

    async def run[D: AbstractSagaData](
        self,
        flow: SagaFlow[D],
        data: D,
        *,
        saga_name: str = "",
        listeners: Iterable[object] = (),
    ) -> SagaResult[D]:
        strategy = self.strategy
        if strategy is not None:
            items = tuple(
                dataclasses.replace(item, on_error=strategy) if item.waits else item  # type: ignore[union-attr,arg-type] # no group in these flows
                for item in flow.items
            )
            flow = dataclasses.replace(flow, items=items)
        if self.twice:
            listeners = [_Twice(listener) for listener in listeners]
        return await self.engine.run(flow, data, saga_name=saga_name, listeners=listeners)

    async def signal(self, saga_id: object, payload: object, /) -> object:
        if self.forge:
            payload = Confirmed("forged")
        return await self.engine.signal(saga_id, payload)  # type: ignore[arg-type] # a UUID


def _messages(report: object, scenario: str, check: Check) -> list[str]:
    return [
        v.message
        for v in report.violations  # type: ignore[attr-defined] # an ExplorationReport
        if v.check is check and str(v.scenario) == scenario
    ]


async def test_a_timeout_skipped_instead_of_compensated_is_reported() -> None:
    report = await explore_failures(
        waiting_flow(Services()),
        Order(),
        engine=PlantedEngine(strategy=Skip()),
        signals=[Confirmed("ok")],
    )

    assert not report.ok
    assert _messages(report, f"{WAIT} gets no signal", Check.STATUS)[0].startswith(
        f"COMPLETED although {WAIT} failed (SagaWaitTimeoutError"
    )


async def test_a_timeout_compensated_instead_of_skipped_is_reported() -> None:
    report = await explore_failures(
        waiting_flow(Services(), on_timeout=Skip()),
        Order(),
        engine=PlantedEngine(strategy=Compensate()),
        signals=[Confirmed("ok")],
    )

    assert not report.ok
    messages = _messages(report, f"{WAIT} gets no signal", Check.STATUS)
    assert messages[0].startswith("FAILED at wait_for(Confirmed) (SagaWaitTimeoutError: ")
    assert messages[0].endswith("although every step that ran committed or was skipped")


async def test_a_signal_taken_twice_is_reported() -> None:
    report = await explore_failures(
        waiting_flow(Services()),
        Order(),
        engine=PlantedEngine(twice=True),
        signals=[Confirmed("ok")],
    )

    assert _messages(report, "no fault", Check.SIGNAL_ONCE) == [
        f"{WAIT} took 2 signals but committed once"
    ]
    assert _messages(report, f"{WAIT} gets no signal", Check.SIGNAL_ONCE) == []


async def test_a_wait_that_took_another_signal_than_the_one_sent_is_reported() -> None:
    report = await explore_failures(
        waiting_flow(Services()),
        Order(),
        engine=PlantedEngine(forge=True),
        signals=[Confirmed("ok")],
    )

    assert _messages(report, "no fault", Check.SIGNAL_ONCE) == [
        f"{WAIT} took 1 signal the explorer never sent it"
    ]
