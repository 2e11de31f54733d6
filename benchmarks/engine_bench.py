"""Engine overhead against hand-written asyncio doing the same work, in one process.

Each case runs the same awaits twice: through `SagaEngine` and through a hand-written
coroutine that keeps a history list and a reverse-compensation list. Figures are reported as
microseconds and as the ratio engine / hand-written, which is what stays comparable across
machines. Run: `make bench` (or `.venv/bin/python benchmarks/engine_bench.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from spakky_saga import (
    AbstractSagaData,
    ExponentialBackoff,
    Retry,
    SagaEngine,
    SagaEvent,
    SagaFlow,
    SagaListener,
    SagaStatus,
    parallel,
    saga_flow,
    step,
)


class BenchData(AbstractSagaData):
    value: int = 0


class StepFailed(Exception):
    pass


async def act(data: BenchData) -> BenchData:
    return data


async def undo(data: BenchData) -> None:
    return None


async def act_and_yield(data: BenchData) -> BenchData:
    await asyncio.sleep(0)
    return data


async def fail(data: BenchData) -> BenchData:
    raise StepFailed("step 8 failed")


def make_flaky(failures: int) -> Callable[[BenchData], Awaitable[BenchData]]:
    """An action that fails `failures` times, then succeeds, per saga run (keyed by saga_id)."""
    seen: dict[Any, int] = {}

    async def flaky(data: BenchData) -> BenchData:
        count = seen.get(data.saga_id, 0)
        if count < failures:
            seen[data.saga_id] = count + 1
            raise StepFailed("transient")
        seen.pop(data.saga_id, None)
        return data

    return flaky


# --- hand-written baselines: the same awaits, a history list and an undo list -------------

HAND_LOGGER = logging.getLogger("bench.hand")
"""Where the baselines log what the documented behaviour logs at WARNING: each failed attempt
(the engine's `status=failed` line), so failure paths compare the engine's own work."""
FAILED_LINE = "[saga=%s step=%s status=failed error=%s]"


@dataclass(slots=True)
class HandRecord:
    name: str
    ok: bool
    elapsed: float


async def hand_sequential(
    steps: list[tuple[str, Callable[[BenchData], Awaitable[BenchData | None]], Any]],
    data: BenchData,
) -> tuple[bool, BenchData, list[HandRecord]]:
    clock = time.perf_counter
    history: list[HandRecord] = []
    compensations: list[tuple[str, Any]] = []
    for name, action, compensate in steps:
        t0 = clock()
        try:
            out = await action(data)
        except Exception as error:
            history.append(HandRecord(name, False, clock() - t0))
            HAND_LOGGER.warning(FAILED_LINE, "bench", name, type(error).__name__)
            for comp_name, comp in reversed(compensations):
                c0 = clock()
                await comp(data)
                history.append(HandRecord(comp_name, True, clock() - c0))
            return False, data, history
        history.append(HandRecord(name, True, clock() - t0))
        if out is not None:
            data = out
        if compensate is not None:
            compensations.append((name, compensate))
    return True, data, history


async def hand_parallel(
    members: list[tuple[str, Callable[[BenchData], Awaitable[BenchData | None]]]],
    data: BenchData,
) -> list[HandRecord]:
    clock = time.perf_counter
    history: list[HandRecord] = []

    async def run(name: str, action: Callable[[BenchData], Awaitable[BenchData | None]]) -> None:
        t0 = clock()
        await action(data)
        history.append(HandRecord(name, True, clock() - t0))

    async with asyncio.TaskGroup() as group:
        for name, action in members:
            group.create_task(run(name, action))
    return history


async def hand_retry(
    action: Callable[[BenchData], Awaitable[BenchData]], data: BenchData, attempts: int
) -> list[HandRecord]:
    clock = time.perf_counter
    history: list[HandRecord] = []
    for _attempt in range(attempts):
        t0 = clock()
        try:
            await action(data)
        except Exception as error:
            history.append(HandRecord("flaky", False, clock() - t0))
            HAND_LOGGER.warning(FAILED_LINE, "bench", "flaky", type(error).__name__)
            continue
        history.append(HandRecord("flaky", True, clock() - t0))
        break
    return history


# --- measurement --------------------------------------------------------------------------


async def best_of(repeats: int, runs: int, body: Callable[[], Awaitable[object]]) -> float:
    """Best wall time in seconds of `runs` sequential calls, over `repeats` tries."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(runs):
            await body()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class Row:
    case: str
    unit: str
    engine: float
    hand: float

    @property
    def ratio(self) -> float:
        return self.engine / self.hand


async def sequential_case(engine: SagaEngine, runs: int, repeats: int) -> Row:
    flow = saga_flow(*(step(act, compensate=undo, name=f"s{i}") for i in range(10)))
    hand_steps = [(f"s{i}", act, undo) for i in range(10)]
    data = BenchData()
    result = await engine.run(flow, data)
    assert result.status is SagaStatus.COMPLETED
    assert len(result.history) == 10
    t_engine = await best_of(repeats, runs, lambda: engine.run(flow, data))
    t_hand = await best_of(repeats, runs, lambda: hand_sequential(hand_steps, data))
    per = 1e6 / (runs * 10)
    return Row("10-step transaction flow", "µs/step", t_engine * per, t_hand * per)


async def failing_case(engine: SagaEngine, runs: int, repeats: int) -> Row:
    actions = [act] * 10
    actions[7] = fail
    flow = saga_flow(*(step(a, compensate=undo, name=f"s{i}") for i, a in enumerate(actions)))
    hand_steps = [(f"s{i}", a, undo) for i, a in enumerate(actions)]
    data = BenchData()
    result = await engine.run(flow, data)
    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "s7"
    assert len(result.history) == 8 + 7
    t_engine = await best_of(repeats, runs, lambda: engine.run(flow, data))
    t_hand = await best_of(repeats, runs, lambda: hand_sequential(hand_steps, data))
    per = 1e6 / runs
    return Row("failing flow (step 8/10 fails, 7 undone)", "µs/saga", t_engine * per, t_hand * per)


async def parallel_case(engine: SagaEngine, runs: int, repeats: int) -> Row:
    members = [step(act, compensate=undo, name=f"p{i}") for i in range(8)]
    flow: SagaFlow[BenchData] = saga_flow(parallel(*members))
    hand_members = [(f"p{i}", act) for i in range(8)]
    data = BenchData()
    result = await engine.run(flow, data)
    assert result.status is SagaStatus.COMPLETED
    assert len(result.history) == 8
    t_engine = await best_of(repeats, runs, lambda: engine.run(flow, data))
    t_hand = await best_of(repeats, runs, lambda: hand_parallel(hand_members, data))
    per = 1e6 / runs
    return Row("parallel group of 8", "µs/group", t_engine * per, t_hand * per)


async def retry_case(engine: SagaEngine, runs: int, repeats: int) -> Row:
    flaky_engine, flaky_hand = make_flaky(2), make_flaky(2)
    flow = saga_flow(step(flaky_engine, name="flaky", on_error=Retry(3, ExponentialBackoff(0.0))))
    data = BenchData()
    result = await engine.run(flow, data)
    assert result.status is SagaStatus.COMPLETED
    assert len(result.history) == 3
    t_engine = await best_of(repeats, runs, lambda: engine.run(flow, BenchData()))
    t_hand = await best_of(repeats, runs, lambda: hand_retry(flaky_hand, BenchData(), 3))
    per = 1e6 / runs
    return Row("retry path (2 failures, then success)", "µs/saga", t_engine * per, t_hand * per)


async def concurrent_case(engine: SagaEngine, sagas: int) -> list[Row]:
    """`sagas` 5-step sagas in flight at once.

    Each saga's first step waits on a shared gate (standing for an I/O wait), so all of them
    are in flight together; memory per in-flight saga is measured while they wait there.
    Then the gate opens and every saga runs to completion. Throughput counts from starting
    the sagas until the last one finished.
    """
    gate = asyncio.Event()

    async def wait_for_io(data: BenchData) -> BenchData:
        await gate.wait()
        return data

    flow = saga_flow(
        step(wait_for_io, compensate=undo, name="c0"),
        *(step(act, compensate=undo, name=f"c{i}") for i in range(1, 5)),
    )
    hand_steps = [("c0", wait_for_io, undo)] + [(f"c{i}", act, undo) for i in range(1, 5)]
    datas = [BenchData(value=i) for i in range(sagas)]

    def start_engine() -> list[asyncio.Task[Any]]:
        return [asyncio.create_task(engine.run(flow, d)) for d in datas]

    def start_hand() -> list[asyncio.Task[Any]]:
        return [asyncio.create_task(hand_sequential(hand_steps, d)) for d in datas]

    async def run_all(
        start: Callable[[], list[asyncio.Task[Any]]], measure_memory: bool
    ) -> tuple[float, float]:
        gate.clear()
        gc.collect()
        if measure_memory:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0] if measure_memory else 0
        t0 = time.perf_counter()
        tasks = start()
        await asyncio.sleep(0)  # every saga runs up to the gate
        in_flight = (tracemalloc.get_traced_memory()[0] - before) / sagas if measure_memory else 0.0
        if measure_memory:
            tracemalloc.stop()
        gate.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        return sagas / elapsed, in_flight

    rates: dict[str, float] = {}
    memory: dict[str, float] = {}
    for label, start in (("engine", start_engine), ("hand", start_hand)):
        await run_all(start, measure_memory=False)  # warm up
        rates[label] = max([(await run_all(start, measure_memory=False))[0] for _ in range(3)])
        memory[label] = (await run_all(start, measure_memory=True))[1]
    return [
        Row(f"{sagas:,} concurrent 5-step sagas", "sagas/s", rates["engine"], rates["hand"]),
        Row("memory per in-flight saga", "bytes", memory["engine"], memory["hand"]),
    ]


class CountingHandler(logging.Handler):
    """Accepts every record and does nothing else: measures the cost of producing records."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def info_logging_case(engine: SagaEngine, runs: int, repeats: int) -> Row:
    """Engine with INFO records vs hand-written code logging the same number of records."""
    flow = saga_flow(*(step(act, compensate=undo, name=f"s{i}") for i in range(10)))
    data = BenchData()
    saga_logger = logging.getLogger("spakky_saga")
    hand_logger = logging.getLogger("bench.hand")
    handler = CountingHandler()
    for lg in (saga_logger, hand_logger):
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        handler.count = 0
        await engine.run(flow, data)
        records_per_run = handler.count
        fmt = "[saga=%s step=%s status=%s elapsed=%.3fms]"

        async def hand_logged() -> None:
            clock = time.perf_counter
            history: list[HandRecord] = []
            compensations: list[Any] = []
            hand_logger.info(fmt, "bench", "-", "started", 0.0)
            for i in range(10):
                name = f"s{i}"
                hand_logger.info(fmt, "bench", name, "started", 0.0)
                t0 = clock()
                await act(data)
                elapsed = clock() - t0
                history.append(HandRecord(name, True, elapsed))
                compensations.append(undo)
                hand_logger.info(fmt, "bench", name, "completed", elapsed * 1e3)
            hand_logger.info(fmt, "bench", "-", "completed", 0.0)

        handler.count = 0
        await hand_logged()
        assert handler.count == records_per_run, (handler.count, records_per_run)
        t_engine = await best_of(repeats, runs, lambda: engine.run(flow, data))
        t_hand = await best_of(repeats, runs, hand_logged)
    finally:
        for lg in (saga_logger, hand_logger):
            lg.removeHandler(handler)
            lg.setLevel(logging.NOTSET)
            lg.propagate = True
    per = 1e6 / (runs * 10)
    return Row(
        f"10-step flow, INFO logs ({records_per_run} records/run)",
        "µs/step",
        t_engine * per,
        t_hand * per,
    )


class FailureCounter(SagaListener):
    """A listener that wants no progress events: what a metrics hook for failures costs."""

    def __init__(self) -> None:
        self.failures = 0

    def wants_progress(self) -> bool:
        return False

    def step_failed(self, event: SagaEvent) -> None:
        self.failures += 1


class StepCounter(SagaListener):
    """A listener of every step: the cost of the event seam itself."""

    def __init__(self) -> None:
        self.steps = 0

    def step_committed(self, event: SagaEvent) -> None:
        self.steps += 1


async def listener_cases(runs: int, repeats: int) -> list[Row]:
    """The 10-step flow with listeners, against the same hand-written baseline, timed
    round-robin with the plain engine so that all share the machine's state."""
    flow = saga_flow(*(step(act, compensate=undo, name=f"s{i}") for i in range(10)))
    hand_steps = [(f"s{i}", act, undo) for i in range(10)]
    data = BenchData()
    engines: list[tuple[str, SagaEngine]] = [
        ("10-step flow, no listener (this run)", SagaEngine()),
        ("10-step flow, a failures-only listener", SagaEngine(listeners=[FailureCounter()])),
        ("10-step flow, a listener of every step", SagaEngine(listeners=[StepCounter()])),
    ]
    otel = _otel_engine()
    if otel is not None:
        engines.append(("10-step flow, OpenTelemetry (SDK, in-memory export)", otel))
    best = {label: float("inf") for label, _ in engines}
    best_hand = float("inf")
    for _ in range(repeats):
        for label, engine in engines:
            best[label] = min(
                best[label], await best_of(1, runs, lambda e=engine: e.run(flow, data))
            )
        best_hand = min(
            best_hand, await best_of(1, runs, lambda: hand_sequential(hand_steps, data))
        )
    per = 1e6 / (runs * 10)
    return [Row(label, "µs/step", best[label] * per, best_hand * per) for label, _ in engines]


def _otel_engine() -> SagaEngine | None:
    """An engine with the OpenTelemetry listener on the SDK (spans to an in-memory exporter,
    metrics to an in-memory reader), or None without the `otel` extra and the SDK."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
            InMemorySpanExporter,
        )

        from spakky_saga.otel import SagaTelemetryListener  # noqa: PLC0415
    except ImportError:
        return None
    tracer_provider = TracerProvider()
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    listener = SagaTelemetryListener(tracer_provider=tracer_provider, meter_provider=meter_provider)

    class Clearing(SagaListener):  # keep the exporter's memory flat over thousands of runs
        def saga_finished(self, event: SagaEvent) -> None:
            exporter.clear()

    return SagaEngine(listeners=[listener, Clearing()])


async def main(runs: int, repeats: int, sagas: int) -> None:
    for name in ("spakky_saga", "bench.hand"):  # the same handlers and level on both sides
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("bench.hand").addHandler(logging.NullHandler())
    engine = SagaEngine()
    rows = [
        await sequential_case(engine, runs, repeats),
        await failing_case(engine, runs, repeats),
        await parallel_case(engine, runs, repeats),
        await retry_case(engine, runs, repeats),
        *(await concurrent_case(engine, sagas)),
        await info_logging_case(engine, runs, repeats),
        *(await listener_cases(runs // 5, repeats)),
    ]
    width = max(len(r.case) for r in rows)
    print(f"{'case':<{width}}  {'unit':<9} {'engine':>10} {'hand':>10} {'ratio':>7}")
    for r in rows:
        print(f"{r.case:<{width}}  {r.unit:<9} {r.engine:>10.2f} {r.hand:>10.2f} {r.ratio:>6.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5000, help="saga runs per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings; the best is kept")
    parser.add_argument("--sagas", type=int, default=10_000, help="concurrent sagas")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.repeats, args.sagas))
