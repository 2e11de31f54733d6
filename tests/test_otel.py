"""OpenTelemetry: the spans and metrics SagaTelemetryListener makes of saga runs.

Spans go to the SDK's in-memory exporter; a span processor also tracks which spans were
started and not ended, so every test checks that a run leaves no span open, and that the
context current in the caller is the same after the run as before it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import spakky_saga
from spakky_saga import (
    InMemorySagaStore,
    Retry,
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaEngine,
    SagaEvent,
    SagaEventKind,
    SagaListenerWarning,
    SagaStatus,
    Skip,
    parallel,
    saga_flow,
    step,
    wait_for,
)
from spakky_saga.otel import SagaTelemetryListener
from tests.durable_support import Crash, Ledger, StoreClock, Ticket, bump, engines
from tests.support import Boom, Journal, ManualClock, OrderData, RecordingSleep


class OpenSpans(SpanProcessor):
    """The spans started and not yet ended."""

    def __init__(self) -> None:
        self.open: dict[int, str] = {}

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        self.open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.open.pop(span.context.span_id, None)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def open_spans() -> OpenSpans:
    return OpenSpans()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter, open_spans: OpenSpans) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(open_spans)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def listener(
    tracer_provider: TracerProvider, reader: InMemoryMetricReader
) -> SagaTelemetryListener:
    return SagaTelemetryListener(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )


@pytest.fixture
def engine(
    clock: ManualClock, sleep: RecordingSleep, listener: SagaTelemetryListener
) -> SagaEngine:
    return SagaEngine(clock=clock, sleep=sleep, listeners=[listener])


@pytest.fixture(autouse=True)
def no_leaks(open_spans: OpenSpans, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After every test: no span left open, the test's own context unchanged, and no
    complaint from OpenTelemetry (a context detached in the wrong task, an ended span
    changed)."""
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    before = otel_context.get_current()
    yield
    assert open_spans.open == {}, "spans left open"
    assert otel_context.get_current() is before, "a context was left attached"
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    complaints = [r.getMessage() for r in records if r.name.startswith("opentelemetry")]
    assert complaints == []


def spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)


def named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def exception_types(span: ReadableSpan) -> list[object]:
    return [
        (e.attributes or {}).get("exception.type") for e in span.events if e.name == "exception"
    ]


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[Any, ...], Any]:
    """A metric's data points, keyed by their sorted attribute values."""
    data = reader.get_metrics_data()
    found: dict[tuple[Any, ...], Any] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        found[key] = point
    return found


def counts(reader: InMemoryMetricReader, name: str) -> dict[tuple[Any, ...], float]:
    result: dict[tuple[Any, ...], float] = {}
    for key, point in points(reader, name).items():
        assert isinstance(point, NumberDataPoint)
        result[key] = point.value
    return result


# --- span trees -------------------------------------------------------------------------------


async def test_a_sequential_saga_is_a_saga_span_with_one_child_span_per_step(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(journal.transaction("reserve"), journal.ok("charge"))

    result = await engine.run(flow, order, saga_name="order")

    assert result.status is SagaStatus.COMPLETED
    saga, reserve, charge = spans(exporter)
    assert [saga.name, reserve.name, charge.name] == [
        "saga order",
        "saga step reserve",
        "saga step charge",
    ]
    assert parent_of(reserve) == parent_of(charge) == span_id(saga)
    assert attrs(saga) == {
        "saga.name": "order",
        "saga.id": str(order.saga_id),
        "saga.outcome": "completed",
    }
    assert attrs(reserve) == {
        "saga.name": "order",
        "saga.id": str(order.saga_id),
        "saga.step": "reserve",
        "saga.step.key": "1",
        "saga.step.attempt": 1,
        "saga.outcome": "committed",
    }
    assert attrs(charge)["saga.step.key"] == "2"
    assert all(s.status.status_code is StatusCode.UNSET for s in (saga, reserve, charge))
    assert all(s.kind is trace.SpanKind.INTERNAL for s in (saga, reserve, charge))


async def test_the_saga_span_is_a_child_of_the_span_current_in_the_caller(
    engine: SagaEngine,
    journal: Journal,
    order: OrderData,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
) -> None:
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /orders") as request:
        await engine.run(saga_flow(journal.ok("reserve")), order, saga_name="order")
        assert trace.get_current_span() is request

    saga = named(exporter, "saga order")
    assert parent_of(saga) == request.get_span_context().span_id


async def test_spans_made_inside_a_step_or_a_compensation_are_children_of_its_span(
    engine: SagaEngine,
    order: OrderData,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
) -> None:
    tracer = tracer_provider.get_tracer("app")

    async def reserve(data: OrderData) -> None:
        with tracer.start_as_current_span("GET /stock"):
            await asyncio.sleep(0)

    async def release(data: OrderData) -> None:
        with tracer.start_as_current_span("DELETE /reservation"):
            await asyncio.sleep(0)

    async def charge(data: OrderData) -> None:
        with tracer.start_as_current_span("POST /payment"):
            raise Boom("card declined")

    flow = saga_flow(step(reserve, compensate=release), charge)

    await engine.run(flow, order, saga_name="order")

    assert parent_of(named(exporter, "GET /stock")) == span_id(named(exporter, "saga step reserve"))
    assert parent_of(named(exporter, "POST /payment")) == span_id(
        named(exporter, "saga step charge")
    )
    compensation = named(exporter, "saga compensation reserve")
    assert parent_of(named(exporter, "DELETE /reservation")) == span_id(compensation)
    assert parent_of(compensation) == span_id(named(exporter, "saga order"))


async def test_between_steps_and_in_the_failure_handler_the_saga_span_is_current(
    engine: SagaEngine,
    journal: Journal,
    order: OrderData,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
) -> None:
    tracer = tracer_provider.get_tracer("app")

    def page_someone(data: OrderData) -> None:
        tracer.start_span("page on-call").end()

    flow = saga_flow(
        step(journal.ok("reserve"), compensate=journal.undo_fail("reserve")),
        journal.ok("charge"),
        journal.fail("ship"),
    ).on_compensation_failure(page_someone)

    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, order, saga_name="order")

    assert parent_of(named(exporter, "page on-call")) == span_id(named(exporter, "saga order"))


async def test_a_failed_step_records_its_error_and_each_compensation_gets_a_span(
    engine: SagaEngine,
    journal: Journal,
    order: OrderData,
    exporter: InMemorySpanExporter,
) -> None:
    flow = saga_flow(
        journal.transaction("reserve"), journal.transaction("charge"), journal.fail("ship")
    )

    result = await engine.run(flow, order, saga_name="order")

    assert result.status is SagaStatus.FAILED
    saga = named(exporter, "saga order")
    ship = named(exporter, "saga step ship")
    assert attrs(ship)["saga.outcome"] == "failed"
    assert ship.status.status_code is StatusCode.ERROR
    assert exception_types(ship) == ["tests.support.Boom"]
    undo_charge = named(exporter, "saga compensation charge")
    undo_reserve = named(exporter, "saga compensation reserve")
    assert (undo_charge.start_time or 0) < (undo_reserve.start_time or 0)  # reverse order
    for undo in (undo_charge, undo_reserve):
        assert parent_of(undo) == span_id(saga)
        assert attrs(undo)["saga.outcome"] == "compensated"
        assert undo.status.status_code is StatusCode.UNSET
    assert attrs(undo_reserve)["saga.step.key"] == "1"
    assert attrs(saga)["saga.outcome"] == "failed"
    assert attrs(saga)["saga.failed_step"] == "ship"
    assert saga.status.status_code is StatusCode.ERROR
    assert saga.status.description == 'saga failed at step "ship": Boom: ship failed'
    assert exception_types(saga) == ["tests.support.Boom"]


async def test_a_failed_compensation_is_an_error_span_and_the_saga_ends_compensation_failed(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(
        step(journal.ok("reserve"), compensate=journal.undo_fail("reserve")), journal.fail("pay")
    )

    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, order, saga_name="order")

    undo = named(exporter, "saga compensation reserve")
    assert attrs(undo)["saga.outcome"] == "failed"
    assert undo.status.status_code is StatusCode.ERROR
    assert exception_types(undo) == ["tests.support.Boom"]
    saga = named(exporter, "saga order")
    assert attrs(saga)["saga.outcome"] == "compensation_failed"
    assert saga.status.status_code is StatusCode.ERROR


async def test_each_attempt_of_a_retried_step_is_its_own_span(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flaky = step(journal.fail("flaky", times=2), on_error=Retry(3))

    result = await engine.run(saga_flow(flaky), order, saga_name="order")

    assert result.status is SagaStatus.COMPLETED
    attempts = [s for s in spans(exporter) if s.name == "saga step flaky"]
    assert [(attrs(s)["saga.step.attempt"], attrs(s)["saga.outcome"]) for s in attempts] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "committed"),
    ]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [attrs(s).get("saga.step.retry_delay") for s in attempts] == [1.0, 2.0, None]
    saga = named(exporter, "saga order")
    assert {parent_of(s) for s in attempts} == {span_id(saga)}


async def test_a_skipped_step_span_says_skipped_and_the_saga_completes(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(step(journal.fail("notify"), on_error=Skip()), journal.ok("ship"))

    await engine.run(flow, order, saga_name="order")

    notify = named(exporter, "saga step notify")
    assert attrs(notify)["saga.outcome"] == "skipped"
    assert exception_types(notify) == ["tests.support.Boom"]
    assert attrs(named(exporter, "saga order"))["saga.outcome"] == "completed"


async def test_parallel_members_are_concurrent_children_of_the_saga_span(
    engine: SagaEngine,
    order: OrderData,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
) -> None:
    tracer = tracer_provider.get_tracer("app")
    arrived = {"hotel": asyncio.Event(), "flight": asyncio.Event()}

    def member(name: str, other: str) -> Any:
        async def book(data: OrderData) -> None:
            arrived[name].set()
            await arrived[other].wait()  # both run at once, or neither finishes
            with tracer.start_as_current_span(f"book {name}"):
                await asyncio.sleep(0)

        book.__name__ = name
        return book

    flow = saga_flow(parallel(member("hotel", "flight"), member("flight", "hotel")))

    await engine.run(flow, order, saga_name="trip")

    saga = named(exporter, "saga trip")
    hotel = named(exporter, "saga step hotel")
    flight = named(exporter, "saga step flight")
    assert parent_of(hotel) == parent_of(flight) == span_id(saga)
    assert [attrs(hotel)["saga.step.key"], attrs(flight)["saga.step.key"]] == ["1.1", "1.2"]
    assert (hotel.start_time or 0) < (flight.end_time or 0)
    assert (flight.start_time or 0) < (hotel.end_time or 0)
    assert parent_of(named(exporter, "book hotel")) == span_id(hotel)
    assert parent_of(named(exporter, "book flight")) == span_id(flight)


async def test_a_failing_parallel_member_compensates_its_committed_sibling(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(parallel(journal.transaction("hotel"), journal.fail("flight")))

    result = await engine.run(flow, order, saga_name="trip")

    assert result.failed_step == "flight"
    assert attrs(named(exporter, "saga step hotel"))["saga.outcome"] == "committed"
    assert attrs(named(exporter, "saga step flight"))["saga.outcome"] == "failed"
    assert attrs(named(exporter, "saga compensation hotel"))["saga.outcome"] == "compensated"


async def test_a_failed_merge_fails_the_saga_span_and_compensates_the_members(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    def merge(data: OrderData, results: Sequence[OrderData | None]) -> OrderData:
        raise Boom("conflicting bookings")

    flow = saga_flow(
        parallel(journal.transaction("hotel"), journal.transaction("flight"), merge=merge)
    )

    result = await engine.run(flow, order, saga_name="trip")

    assert result.failed_step == "hotel & flight"
    assert {attrs(s)["saga.outcome"] for s in spans(exporter) if "step" in s.name} == {"committed"}
    saga = named(exporter, "saga trip")
    assert attrs(saga)["saga.failed_step"] == "hotel & flight"
    assert exception_types(saga) == ["tests.support.Boom"]
    assert len([s for s in spans(exporter) if s.name.startswith("saga compensation")]) == 2


# --- runs that end early ----------------------------------------------------------------------


async def test_a_step_cut_off_by_the_saga_timeout_ends_timed_out(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(journal.transaction("reserve"), journal.hang("charge")).timeout(
        timedelta(milliseconds=5)
    )

    result = await engine.run(flow, order, saga_name="order")

    assert result.status is SagaStatus.TIMED_OUT
    charge = named(exporter, "saga step charge")
    assert attrs(charge)["saga.outcome"] == "timed_out"
    assert charge.status.status_code is StatusCode.ERROR
    assert exception_types(charge) == ["spakky_saga.errors.SagaTimeoutError"]
    assert attrs(named(exporter, "saga compensation reserve"))["saga.outcome"] == "compensated"
    saga = named(exporter, "saga order")
    assert attrs(saga)["saga.outcome"] == "timed_out"
    assert saga.status.status_code is StatusCode.ERROR


async def test_parallel_members_cut_off_by_the_saga_timeout_end_timed_out(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(parallel(journal.transaction("hotel"), journal.hang("flight"))).timeout(
        timedelta(milliseconds=5)
    )

    result = await engine.run(flow, order, saga_name="trip")

    assert result.status is SagaStatus.TIMED_OUT
    assert attrs(named(exporter, "saga step hotel"))["saga.outcome"] == "committed"
    flight = named(exporter, "saga step flight")
    assert attrs(flight)["saga.outcome"] == "timed_out"
    assert flight.status.status_code is StatusCode.ERROR
    assert attrs(named(exporter, "saga compensation hotel"))["saga.outcome"] == "compensated"


async def test_a_cancelled_saga_ends_its_running_step_cancelled_after_compensating(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(journal.transaction("reserve"), journal.hang("charge"))
    task = asyncio.create_task(engine.run(flow, order, saga_name="order"))
    await journal.reached("charge")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    charge = named(exporter, "saga step charge")
    assert attrs(charge)["saga.outcome"] == "cancelled"
    assert charge.status.status_code is StatusCode.ERROR
    assert charge.status.description == "cut off: the saga was cancelled while it ran"
    undo = named(exporter, "saga compensation reserve")
    assert attrs(undo)["saga.outcome"] == "compensated"
    assert (charge.end_time or 0) <= (undo.start_time or 0)  # ended when the rollback began
    saga = named(exporter, "saga order")
    assert attrs(saga)["saga.outcome"] == "cancelled"
    assert exception_types(saga) == ["asyncio.exceptions.CancelledError"]


async def test_a_saga_cancelled_in_a_parallel_group_ends_every_member_span(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    flow = saga_flow(parallel(journal.hang("hotel"), journal.hang("flight")))
    task = asyncio.create_task(engine.run(flow, order, saga_name="trip"))
    await journal.reached("hotel")
    await journal.reached("flight")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    for name in ("hotel", "flight"):
        assert attrs(named(exporter, f"saga step {name}"))["saga.outcome"] == "cancelled"
    assert attrs(named(exporter, "saga trip"))["saga.outcome"] == "cancelled"


async def test_the_context_is_restored_in_the_task_that_awaited_a_cancelled_saga(
    engine: SagaEngine, journal: Journal, order: OrderData
) -> None:
    # The saga runs in the awaiting task itself: cancelling it must not leave the step's span
    # current there.
    flow = saga_flow(journal.hang("charge"))

    async def caller() -> object:
        before = otel_context.get_current()
        try:
            await engine.run(flow, order, saga_name="order")
        except asyncio.CancelledError:
            return otel_context.get_current() is before
        return None

    task = asyncio.create_task(caller())
    await journal.reached("charge")
    task.cancel()

    assert await task is True


# --- several sagas ----------------------------------------------------------------------------


async def test_concurrent_sagas_keep_their_spans_apart(
    engine: SagaEngine, exporter: InMemorySpanExporter
) -> None:
    async def hop(data: OrderData) -> None:
        for _ in range(3):
            await asyncio.sleep(0)  # let the other saga run in between

    async def fail(data: OrderData) -> None:
        await asyncio.sleep(0)
        if data.order_id == 2:
            raise Boom("second saga fails")

    flow = saga_flow(step(hop, compensate=hop), fail, hop)
    same = OrderData(order_id=3)  # the same data twice: the same saga id, still two runs

    await asyncio.gather(
        engine.run(flow, OrderData(order_id=1), saga_name="one"),
        engine.run(flow, OrderData(order_id=2), saga_name="two"),
        engine.run(flow, same, saga_name="three"),
        engine.run(flow, same, saga_name="three"),
    )

    finished = exporter.get_finished_spans()
    sagas = [s for s in finished if s.name.startswith("saga ") and s.parent is None]
    assert sorted(s.name for s in sagas) == ["saga one", "saga three", "saga three", "saga two"]
    for saga in sagas:
        assert saga.context is not None
        children = [s for s in finished if parent_of(s) == saga.context.span_id]
        assert {s.context.trace_id for s in children if s.context} == {saga.context.trace_id}
        assert {attrs(s)["saga.name"] for s in children} == {attrs(saga)["saga.name"]}
        expected = (
            ["saga step hop", "saga step fail", "saga compensation hop"]
            if saga.name == "saga two"
            else ["saga step hop", "saga step fail", "saga step hop"]
        )
        assert sorted(s.name for s in children) == sorted(expected)
    assert len({s.context.trace_id for s in sagas if s.context}) == 4


async def test_a_saga_run_inside_a_step_nests_under_that_step(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    inner = saga_flow(journal.ok("inner step"))

    async def outer_step(data: OrderData) -> None:
        await engine.run(inner, OrderData(order_id=9), saga_name="inner")

    await engine.run(saga_flow(outer_step, journal.ok("after")), order, saga_name="outer")

    outer = named(exporter, "saga outer")
    inner_saga = named(exporter, "saga inner")
    assert parent_of(inner_saga) == span_id(named(exporter, "saga step outer_step"))
    assert parent_of(named(exporter, "saga step inner step")) == span_id(inner_saga)
    assert parent_of(named(exporter, "saga step after")) == span_id(outer)


async def test_a_recovered_saga_gets_a_saga_span_marked_recovered(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    ledger = Ledger()
    store_clock = StoreClock()
    store = InMemorySagaStore(clock=store_clock)
    flow = saga_flow(
        ledger.transaction("reserve", bump("stock")), ledger.transaction("charge", bump("charged"))
    )
    crashed, recovering = engines(store, flow)
    ledger.crash_at = "charge"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    store_clock.expire()

    await recovering.recover(listeners=[SagaTelemetryListener(tracer_provider=tracer_provider)])

    saga = named(exporter, "saga order")
    assert attrs(saga)["saga.recovered"] is True
    assert attrs(saga)["saga.outcome"] == "failed"
    undone = [s for s in exporter.get_finished_spans() if s.name.startswith("saga compensation")]
    assert sorted(s.name for s in undone) == [
        "saga compensation charge",
        "saga compensation reserve",
    ]
    assert {parent_of(s) for s in undone} == {span_id(saga)}


# --- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_runs_and_compensations_by_outcome_and_time_steps(
    engine: SagaEngine, journal: Journal, reader: InMemoryMetricReader
) -> None:
    good = saga_flow(journal.transaction("reserve", takes=0.25), journal.ok("ship", takes=2.0))
    bad = saga_flow(journal.transaction("reserve", takes=0.25), journal.fail("pay"))

    await engine.run(good, OrderData(order_id=1), saga_name="order")
    await engine.run(good, OrderData(order_id=2), saga_name="order")
    await engine.run(bad, OrderData(order_id=3), saga_name="order")

    assert counts(reader, "saga.runs") == {
        (("saga.name", "order"), ("saga.outcome", "completed")): 2,
        (("saga.name", "order"), ("saga.outcome", "failed")): 1,
    }
    assert counts(reader, "saga.compensations") == {
        (("saga.name", "order"), ("saga.outcome", "compensated"), ("saga.step", "reserve")): 1,
    }
    durations = points(reader, "saga.step.duration")
    reserve = durations[
        (("saga.name", "order"), ("saga.outcome", "committed"), ("saga.step", "reserve"))
    ]
    assert isinstance(reserve, HistogramDataPoint)
    assert (reserve.count, reserve.sum) == (3, 0.75)
    ship = durations[(("saga.name", "order"), ("saga.outcome", "committed"), ("saga.step", "ship"))]
    assert (ship.count, ship.sum) == (2, 4.0)
    assert ship.explicit_bounds[:3] == (0.001, 0.0025, 0.005)  # seconds, not milliseconds
    pay = durations[(("saga.name", "order"), ("saga.outcome", "failed"), ("saga.step", "pay"))]
    assert pay.count == 1
    runs = points(reader, "saga.duration")
    completed = runs[(("saga.name", "order"), ("saga.outcome", "completed"))]
    assert (completed.count, completed.sum) == (2, 4.5)


async def test_metrics_count_timed_out_cancelled_and_compensation_failed_runs(
    engine: SagaEngine, journal: Journal, reader: InMemoryMetricReader
) -> None:
    timed_out = saga_flow(journal.hang("wait")).timeout(timedelta(milliseconds=5))
    await engine.run(timed_out, OrderData(order_id=1), saga_name="order")
    broken = saga_flow(
        step(journal.ok("reserve"), compensate=journal.undo_fail("reserve")), journal.fail("pay")
    )
    with pytest.raises(SagaCompensationFailedError):
        await engine.run(broken, OrderData(order_id=2), saga_name="order")
    task = asyncio.create_task(
        engine.run(saga_flow(journal.hang("stuck")), OrderData(order_id=3), saga_name="order")
    )
    await journal.reached("stuck")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert counts(reader, "saga.runs") == {
        (("saga.name", "order"), ("saga.outcome", "timed_out")): 1,
        (("saga.name", "order"), ("saga.outcome", "compensation_failed")): 1,
        (("saga.name", "order"), ("saga.outcome", "cancelled")): 1,
    }
    assert counts(reader, "saga.compensations") == {
        (("saga.name", "order"), ("saga.outcome", "failed"), ("saga.step", "reserve")): 1,
    }
    steps = points(reader, "saga.step.duration")
    assert {dict(key)["saga.outcome"] for key in steps} == {
        "timed_out",
        "committed",
        "failed",
        "cancelled",
    }


# --- observers never change a run -------------------------------------------------------------


class BrokenTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return BrokenTracer()


class BrokenTracer(trace.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("exporter down")


async def test_a_broken_tracer_is_reported_once_and_the_saga_runs_as_without_it(
    journal: Journal, order: OrderData, clock: ManualClock, sleep: RecordingSleep
) -> None:
    listener = SagaTelemetryListener(tracer_provider=BrokenTracerProvider())
    engine = SagaEngine(clock=clock, sleep=sleep, listeners=[listener])
    flow = saga_flow(journal.transaction("reserve"), journal.fail("pay"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await engine.run(flow, order, saga_name="order")

    assert result.status is SagaStatus.FAILED
    assert journal.events == ["reserve", "pay", "undo reserve"]
    [warning] = [w for w in caught if issubclass(w.category, SagaListenerWarning)]
    assert "SagaTelemetryListener() raised RuntimeError: exporter down" in str(warning.message)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


async def test_an_error_whose_str_raises_is_still_recorded(
    engine: SagaEngine, journal: Journal, order: OrderData, exporter: InMemorySpanExporter
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SagaListenerWarning)
        await engine.run(saga_flow(journal.fail("pay", Unprintable())), order, saga_name="o")

    pay = named(exporter, "saga step pay")
    assert pay.status.status_code is StatusCode.ERROR
    assert exception_types(pay) == ["Unprintable"]


def test_events_of_a_run_without_a_start_get_a_saga_span_of_their_own(
    listener: SagaTelemetryListener, exporter: InMemorySpanExporter, order: OrderData
) -> None:
    # Driven by hand, outside any event loop: a listener works wherever events come from.
    def event(kind: SagaEventKind, **fields: Any) -> SagaEvent:
        return SagaEvent(kind, "order", order.saga_id, **fields)

    listener.step_started(event(SagaEventKind.STEP_STARTED, step="ship", step_key="3"))
    listener.step_committed(event(SagaEventKind.STEP_COMMITTED, step="ship", step_key="3"))
    listener.saga_finished(event(SagaEventKind.SAGA_FINISHED, status=SagaStatus.COMPLETED))

    saga = named(exporter, "saga order")
    assert attrs(saga)["saga.recovered"] is True
    assert parent_of(named(exporter, "saga step ship")) == span_id(saga)


def test_spans_left_open_when_their_saga_ends_are_ended_and_no_longer_current(
    listener: SagaTelemetryListener, exporter: InMemorySpanExporter, order: OrderData
) -> None:
    cancelled = asyncio.CancelledError()
    listener.compensation_started(
        SagaEvent(SagaEventKind.COMPENSATION_STARTED, "order", order.saga_id, "reserve", "1")
    )
    listener.step_started(
        SagaEvent(SagaEventKind.STEP_STARTED, "order", order.saga_id, "ship", "3")
    )
    listener.saga_aborted(
        SagaEvent(SagaEventKind.SAGA_ABORTED, "order", order.saga_id, error=cancelled)
    )

    ship = named(exporter, "saga step ship")
    assert attrs(ship)["saga.outcome"] == "cancelled"
    assert ship.status.description == "cut off: the saga ended (cancelled) while it ran"
    assert attrs(named(exporter, "saga compensation reserve"))["saga.outcome"] == "interrupted"
    assert attrs(named(exporter, "saga order"))["saga.outcome"] == "cancelled"
    # no_leaks checks that the step's context was detached


def test_runs_whose_end_never_comes_are_ended_abandoned_beyond_a_limit(
    listener: SagaTelemetryListener, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    # Each a recovered run whose rollback was cut off and whose end was never reported.
    ids = [uuid.uuid4() for _ in range(1025)]
    for saga_id in ids:
        listener.compensation_failed(
            SagaEvent(
                SagaEventKind.COMPENSATION_FAILED,
                "order",
                saga_id,
                "reserve",
                "1",
                error=SagaCompensationInterruptedError("reserve"),
            )
        )

    ended = [s for s in exporter.get_finished_spans() if s.name == "saga order"]
    assert [attrs(s)["saga.id"] for s in ended] == [str(ids[0])]
    assert attrs(ended[0])["saga.outcome"] == "abandoned"
    assert counts(reader, "saga.compensations") == {
        (("saga.name", "order"), ("saga.outcome", "interrupted"), ("saga.step", "reserve")): 1025
    }
    for saga_id in ids[1:]:  # their ends come after all: each ends once
        listener.saga_aborted(SagaEvent(SagaEventKind.SAGA_ABORTED, "order", saga_id))
    assert counts(reader, "saga.runs") == {
        (("saga.name", "order"), ("saga.outcome", "abandoned")): 1,
        (("saga.name", "order"), ("saga.outcome", "aborted")): 1024,
    }


# --- docs -------------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "observability.md"


def test_the_docs_example_prints_the_trace_the_page_shows() -> None:
    section = DOCS.read_text(encoding="utf-8").split("## OpenTelemetry", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    shown = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert code is not None
    assert shown is not None

    done = run_python(code.group(1))

    assert done.returncode == 0, done.stderr
    assert done.stdout == shown.group(1)


# --- packaging --------------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def test_importing_spakky_saga_does_not_import_opentelemetry() -> None:
    done = run_python(
        "import sys, spakky_saga; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_opentelemetry_the_import_error_says_which_extra_to_install() -> None:
    done = run_python("import sys; sys.modules['opentelemetry'] = None; import spakky_saga.otel")

    assert done.returncode != 0
    assert "pip install 'spakky-saga-typed[otel]'" in done.stderr


def test_the_listener_is_also_reachable_from_the_package() -> None:
    assert spakky_saga.SagaTelemetryListener is SagaTelemetryListener
    assert "SagaTelemetryListener" not in spakky_saga.__all__  # `import *` needs no extra


def test_the_default_providers_are_the_global_ones(order: OrderData) -> None:
    listener = SagaTelemetryListener()  # no SDK configured: the API's no-op implementations

    listener.saga_started(SagaEvent(SagaEventKind.SAGA_STARTED, "order", order.saga_id))
    listener.saga_finished(
        SagaEvent(SagaEventKind.SAGA_FINISHED, "order", order.saga_id, status=SagaStatus.COMPLETED)
    )

    assert repr(listener) == "SagaTelemetryListener()"


@dataclasses.dataclass(frozen=True)
class Go:
    ok: bool


async def test_a_saga_suspended_in_a_wait_ends_its_span_waiting_and_its_resumption_has_its_own(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter, open_spans: OpenSpans
) -> None:
    store = InMemorySagaStore()
    flow = saga_flow(step(_nothing), wait_for(Go, merge=lambda data, go: data), step(_nothing))
    telemetry = SagaTelemetryListener(tracer_provider=tracer_provider)
    engine = SagaEngine(store=store, log=False, listeners=[telemetry])
    data = Ticket(order_id=1)

    waiting = await engine.run(flow, data, saga_name="order")
    first = named(exporter, "saga order")
    await engine.signal(data.saga_id, Go(True))
    await engine.recover()

    assert waiting.status is SagaStatus.WAITING
    assert attrs(first)["saga.outcome"] == "waiting"
    assert attrs(first)["saga.waiting_in"] == "wait_for(Go)"
    sagas = [s for s in exporter.get_finished_spans() if s.name == "saga order"]
    assert [attrs(s)["saga.outcome"] for s in sagas] == ["waiting", "completed"]
    assert open_spans.open == {}
    waits = [s for s in exporter.get_finished_spans() if s.name.endswith("wait_for(Go)")]
    assert len(waits) == 2  # the attempt cut off by the suspension, then the one that took it


async def _nothing(data: Ticket) -> None:
    return None
