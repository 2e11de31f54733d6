"""Tens of thousands of concurrent sagas under random faults, twice, with a memory check.

Run as a module (`python -m tests.faults.mass [--sagas N] [--seed S]`); it prints one JSON
object. Each batch runs N sagas at once on one virtual-time loop, sharing a few engines (one
per compensation timeout, kept for both batches as an application keeps its engine) and a
pool of flows, each saga with its own random scenario, data, journal and caller. Every saga's
invariants are checked and no task may be left over. After each batch, with everything from
it dropped and collected, memory is measured (`memory`, see `_memory`): the first batch warms
up caches and the allocator; the second must leave as much memory in use as the first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import logging
import math
import random
import resource
import sys
import time
import warnings
from typing import Any

from spakky_saga import SagaCompensationFailedError, SagaEngine
from tests.faults.harness import Trace, build_flow, call_saga, new_data, new_engine
from tests.faults.invariants import check
from tests.faults.scenario import Limits, RandomChoices, Scenario, draw_scenario
from tests.faults.virtual_loop import run_virtual

POOL = 2000
"""Distinct scenarios per batch (drawing one costs more than running it); each saga runs a
random one of them with its own data, journal and caller."""

PER_RUN_LISTENERS = True
"""Raising observers are attached to the engines (one each, for the scenarios that want
them). Per-run raising listeners (`engine.run(..., listeners=[...])`) leave memory behind in a
long-lived engine (test_found_bugs.py); set this to True once that is fixed."""

LIGHT = Limits(items=3, ticks=1, caller_ticks=8)
"""Smaller flows and fewer yields than the property tests: the point here is many at once."""


type _Engines = dict[tuple[int | None, bool], SagaEngine]


async def _batch(sagas: int, seed: int, engines: _Engines) -> dict[str, Any]:
    """Run `sagas` random sagas at once and check each; the engines outlive the batch."""
    rng = random.Random(seed)
    pool = [draw_scenario(RandomChoices(rng), LIGHT) for _ in range(POOL)]
    picks = [rng.choice(pool) for _ in range(sagas)]
    for scenario in pool:
        key = scenario.compensation_timeout, scenario.observers
        if key not in engines:
            engines[key] = new_engine(key[0], raising_listener=key[1])
    flows = {id(scenario): build_flow(scenario) for scenario in pool}  # shared, as in an app
    traces = await asyncio.gather(
        *(
            call_saga(
                engines[s.compensation_timeout, s.observers],
                s,
                new_data(),
                observers=PER_RUN_LISTENERS and s.observers,
                flow=flows[id(s)],
            )
            for s in picks
        )
    )
    left = len(asyncio.all_tasks() - {asyncio.current_task()})
    return {"left": left, **_verify(picks, traces)}


def _verify(picks: list[Scenario], traces: list[Trace]) -> dict[str, Any]:
    outcomes: collections.Counter[str] = collections.Counter()
    violations: list[str] = []
    for scenario, trace in zip(picks, traces, strict=True):
        status = trace.result.status.name if trace.result is not None else ""
        outcomes[f"{trace.outcome} {status}".strip()] += 1
        try:
            check(scenario, trace)
        except AssertionError as broken:
            violations.append(f"{scenario!r}\n{broken}")
        _untangle(trace)
    return {"outcomes": dict(outcomes), "violations": len(violations), "first": violations[:2]}


def _untangle(trace: Trace) -> None:
    """Drop the tracebacks of every error the run left: each is a reference cycle (error,
    traceback, frame, the frame's locals, the error), so that the batch is freed as it goes
    instead of by one garbage collection over millions of objects (seconds)."""
    errors = [entry.error for entry in trace.journal]
    errors.append(trace.error)
    if trace.result is not None:
        errors.append(trace.result.error)
        errors.extend(record.error for record in trace.result.history)
    if isinstance(trace.error, SagaCompensationFailedError):
        errors.extend(trace.error.failures.values())
    seen: set[int] = set()
    while errors:
        error = errors.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        errors.extend((error.__cause__, error.__context__))


def _rss() -> int:
    """The resident set size now (Linux), else the peak (getrusage)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return pages * resource.getpagesize()


def _memory() -> dict[str, int]:
    """Memory in use with every unreachable object collected: pymalloc blocks (each live
    small object is one; a leak of one object per saga shows as 20,000 more), objects the
    garbage collector tracks, and the resident set size (noisy: the allocator keeps arenas
    that a few survivors pin)."""
    for _ in range(3):
        gc.collect()
    return {"blocks": sys.getallocatedblocks(), "objects": len(gc.get_objects()), "rss": _rss()}


async def _both(sagas: int, seed: int) -> dict[str, Any]:
    engines: _Engines = {}  # shared by both batches, as an application shares its engine
    report: dict[str, Any] = {"sagas": sagas, "batches": [], "memory": []}
    loop = asyncio.get_running_loop()
    for batch in range(2):
        started = time.process_time()
        gc.disable()  # 20,000 live sagas make every full collection slow; collected after
        try:
            summary = await _batch(sagas, seed + batch, engines)
        finally:
            gc.enable()
        # Start the next batch on a whole second. Measure only after this sleep: until the
        # loop moves on, its handle that woke this task holds the gather, and all it held.
        await asyncio.sleep(math.floor(loop.time()) + 1 - loop.time())
        ran = time.process_time()
        report["memory"].append(_memory())
        summary["cpu_seconds"] = {"run": ran - started, "collect": time.process_time() - ran}
        report["batches"].append(summary)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # raising listeners are reported once each: thousands
    # Tens of thousands of failure lines cost a tenth of the run; the property tests check
    # that logging (raising or not) changes nothing.
    logging.getLogger("spakky_saga").setLevel(logging.CRITICAL)
    return run_virtual(_both(args.sagas, args.seed))


if __name__ == "__main__":
    print(json.dumps(main()))
