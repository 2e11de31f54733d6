"""What merging costs a parallel group: 8 members that return changed data vs. 8 that return None.

Cases, all in one process, each an 8-member group run many times (best of `--repeats`):

- side-effect only: `parallel(8 steps)` whose members return None (nothing to merge);
- merging, prebuilt results: each member returns a result built once, before timing, that
  changes its own field of the input; this is the engine's cost of merging and nothing else;
- merging, members build results: each member calls `dataclasses.replace(data, f<i>=...)`,
  as real steps do; the extra time is mostly those 8 `replace` calls, the user's own work;
- hand-written: `asyncio.TaskGroup` over the same 8 coroutines (returning None), no history,
  no merge: the floor any engine is measured against; and the same over the 8 members that
  build results, which shows what the members' own `replace` calls cost.

Figures are µs of CPU time per group run (one `SagaEngine.run` of a flow that is just the group) and
ratios; the target (issue 4) is merging within 1.5x of the side-effect-only group.
Run: `.venv/bin/python benchmarks/parallel_merge_bench.py [--runs N] [--repeats N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from spakky_saga import AbstractSagaData, SagaEngine, SagaFlow, parallel, saga_flow

MEMBERS = 8
CLOCK = time.process_time
"""CPU time of this process by default (`--clock wall` for perf_counter): the work a run
costs, unaffected by other processes taking the CPU away on a shared machine."""


class GroupData(AbstractSagaData):
    """Eight fields the members write, and four nobody touches (as real data has)."""

    order_id: int = 1
    customer: str = "c-1"
    currency: str = "EUR"
    note: str = ""
    f0: int = 0
    f1: int = 0
    f2: int = 0
    f3: int = 0
    f4: int = 0
    f5: int = 0
    f6: int = 0
    f7: int = 0


type Action = Callable[[GroupData], Coroutine[Any, Any, GroupData | None]]


def side_effect_member(index: int) -> Action:
    async def member(data: GroupData) -> GroupData | None:
        return None

    member.__name__ = f"notify{index}"
    return member


def prebuilt_member(index: int, result: GroupData) -> Action:
    async def member(data: GroupData) -> GroupData | None:
        return result

    member.__name__ = f"write{index}"
    return member


def building_member(index: int) -> Action:
    change: dict[str, Any] = {f"f{index}": index + 1}

    async def member(data: GroupData) -> GroupData | None:
        return dataclasses.replace(data, **change)

    member.__name__ = f"write{index}"
    return member


def group_flow(members: list[Action]) -> SagaFlow[GroupData]:
    return saga_flow(parallel(*members))


async def time_engine(
    engine: SagaEngine, flow: SagaFlow[GroupData], data: GroupData, runs: int
) -> float:
    run = engine.run
    t0 = CLOCK()
    for _ in range(runs):
        result = await run(flow, data)
    elapsed = CLOCK() - t0
    assert result.succeeded, result.error
    return elapsed / runs


async def time_hand_written(members: list[Action], data: GroupData, runs: int) -> float:
    t0 = CLOCK()
    for _ in range(runs):
        async with asyncio.TaskGroup() as tasks:
            for member in members:
                tasks.create_task(member(data))
    return (CLOCK() - t0) / runs


async def main(runs: int, repeats: int) -> dict[str, float]:
    engine = SagaEngine()
    data = GroupData()
    changes: list[dict[str, Any]] = [{f"f{i}": i + 1} for i in range(MEMBERS)]
    prebuilt = [dataclasses.replace(data, **change) for change in changes]
    side_effect = [side_effect_member(i) for i in range(MEMBERS)]
    flows: dict[str, SagaFlow[GroupData]] = {
        "side-effect only (members return None)": group_flow(side_effect),
        "merging, prebuilt results (engine cost)": group_flow(
            [prebuilt_member(i, prebuilt[i]) for i in range(MEMBERS)]
        ),
        "merging, members build results (replace)": group_flow(
            [building_member(i) for i in range(MEMBERS)]
        ),
    }
    merged = (await engine.run(flows["merging, prebuilt results (engine cost)"], data)).data
    assert [getattr(merged, f"f{i}") for i in range(MEMBERS)] == list(range(1, MEMBERS + 1))

    cases: dict[str, Callable[[], Awaitable[float]]] = {
        name: functools.partial(time_engine, engine, flow, data, runs)
        for name, flow in flows.items()
    }
    cases["hand-written TaskGroup over the 8 coroutines"] = functools.partial(
        time_hand_written, side_effect, data, runs
    )
    cases["hand-written TaskGroup, members build results"] = functools.partial(
        time_hand_written, [building_member(i) for i in range(MEMBERS)], data, runs
    )
    for measure in cases.values():
        await measure()  # warm up: plan cache, code paths, allocator
    # Round-robin over the cases, keeping each case's best: a burst of load on the machine
    # then slows one round of every case rather than all the timings of one case.
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        gc.collect()
        for name, measure in cases.items():
            timings[name].append(await measure())
    return {name: min(values) for name, values in timings.items()}


def report(figures: dict[str, float]) -> None:
    side_effect = figures["side-effect only (members return None)"]
    hand = figures["hand-written TaskGroup over the 8 coroutines"]
    width = max(len(name) for name in figures)
    print(f"{'case':<{width}}  {'µs/group':>9}  {'vs side-effect':>14}  {'vs hand':>8}")
    for name, seconds in figures.items():
        print(
            f"{name:<{width}}  {seconds * 1e6:>9.2f}  {seconds / side_effect:>13.2f}x  "
            f"{seconds / hand:>7.2f}x"
        )
    engine_ratio = figures["merging, prebuilt results (engine cost)"] / side_effect
    verdict = "within" if engine_ratio <= 1.5 else "OVER"
    print(f"\nmerging (engine cost) / side-effect only = {engine_ratio:.2f}x: {verdict} 1.5x")
    members_work = figures["hand-written TaskGroup, members build results"] - hand
    building = figures["merging, members build results (replace)"]
    print(
        f"members building results: {building / side_effect:.2f}x, of which the members' own "
        f"8 replace calls are {members_work * 1e6:.1f} µs; without them "
        f"{(building - members_work) / side_effect:.2f}x"
    )


def parse_args(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5000, help="group runs per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per case; best kept")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if args.clock == "wall":
        CLOCK = time.perf_counter
    report(asyncio.run(main(args.runs, args.repeats)))
