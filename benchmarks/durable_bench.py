"""Durable engine cost against the in-memory engine and a bare commit, in one process.

The same 10-step flow (each step a transaction that returns changed data of about 200 bytes of
JSON) runs on the in-memory engine, on a durable engine over `InMemorySagaStore` (the engine's
own journal and codec work, no I/O), over `SqliteSagaStore` (synchronous FULL and NORMAL) and
over `PostgresSagaStore`. Each durable saga gets fresh data (a saga id starts once). Figures:
per-step cost one saga at a time and with 100 sagas in flight, the cost of a bare commit of one
200-byte row on the same database (what one write-ahead write cannot go below), a group of 8
parallel members against 8 sequential steps, and how long the event loop is held up while
durable sagas run. Cases are timed round-robin over the stores, so that a burst of load on the
machine hits each alike; the best of `--repeats` is kept.

Run: `.venv/bin/python benchmarks/durable_bench.py` (about a minute); `--no-postgres` without
a server; `SPAKKY_SAGA_TEST_POSTGRES` (or `--dsn`) points at another one. The SQLite files go
to a temporary directory (`--dir`), the PostgreSQL tables to a schema of their own; both are
removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import math
import os
import resource
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from spakky_saga import (
    AbstractSagaData,
    InMemorySagaStore,
    PostgresSagaStore,
    RecoveryOutcome,
    RecoveryPolicy,
    SagaEngine,
    SagaFlow,
    SagaStatus,
    SagaStore,
    SagaStoreError,
    SqliteSagaStore,
    StoredStatus,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.codec import CODEC_VERSION, encode, type_name
from spakky_saga.store import Renewal, SagaRecord, SagaUpdate, StoredEvent

DEFAULT_DSN = os.environ.get("SPAKKY_SAGA_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")
STEPS = 10
IN_FLIGHT = 100
RECOVERY_SAGAS = 1_000
GROUP = 8
LEASE = timedelta(hours=1)

# --- the saga ------------------------------------------------------------------------------


class OrderData(AbstractSagaData):
    """About 200 bytes of JSON (205 with its saga id)."""

    order_id: str = "ord-000123"
    customer: str = "customer-4711"
    amount_cents: int = 12_999
    currency: str = "EUR"
    stage: int = 0
    f0: int = 0
    f1: int = 0
    f2: int = 0
    f3: int = 0
    f4: int = 0
    f5: int = 0
    f6: int = 0
    f7: int = 0


def advance(stage: int) -> Callable[[OrderData], Awaitable[OrderData]]:
    """A transaction's action: returns the data with `stage` changed (a write per step)."""

    async def act(data: OrderData) -> OrderData:
        return dataclasses.replace(data, stage=stage)

    return act


def mark(index: int) -> Callable[[OrderData], Awaitable[OrderData]]:
    """A group member's action: changes its own field, so the members merge cleanly."""
    change: dict[str, Any] = {f"f{index}": 1}

    async def act(data: OrderData) -> OrderData:
        return dataclasses.replace(data, **change)

    return act


async def undo(data: OrderData) -> None:
    return None


def ten_steps() -> SagaFlow[OrderData]:
    return saga_flow(*(step(advance(i + 1), compensate=undo, name=f"s{i}") for i in range(STEPS)))


def eight_sequential() -> SagaFlow[OrderData]:
    """One step, then 8 steps one after the other."""
    return saga_flow(
        step(advance(1), compensate=undo, name="open"),
        *(step(mark(i), compensate=undo, name=f"m{i}") for i in range(GROUP)),
    )


def eight_parallel() -> SagaFlow[OrderData]:
    """One step, then the same 8 steps as one parallel group.

    The leading step is there in both flows because a flow that starts with a group fails on
    PostgreSQL (see the README's notes on this benchmark)."""
    return saga_flow(
        step(advance(1), compensate=undo, name="open"),
        parallel(*(step(mark(i), compensate=undo, name=f"m{i}") for i in range(GROUP))),
    )


@dataclass(frozen=True)
class Named:
    """A flow and the saga name it runs under (one name means one flow to a durable engine)."""

    name: str
    flow: SagaFlow[OrderData]


SAGAS = {
    "ten": Named("ten-steps", ten_steps()),
    "seq8": Named("eight-sequential", eight_sequential()),
    "group8": Named("eight-parallel", eight_parallel()),
}


# --- the stores under test -------------------------------------------------------------------


class CountingStore:
    """Delegates to a store and counts the writes (`begin` and `append` calls)."""

    def __init__(self, inner: SagaStore) -> None:
        self.inner = inner
        self.writes = 0

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        self.writes += 1
        await self.inner.begin(record, events, lease_seconds)

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        self.writes += 1
        await self.inner.append(saga_id, owner, events, update, lease_seconds)

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        return await self.inner.claim(owner, lease_seconds, limit, saga_ids)

    async def reopen(self, saga_id: str, owner: str, lease_seconds: float) -> SagaRecord:
        return await self.inner.reopen(saga_id, owner, lease_seconds)

    async def renew(self, owner: str, saga_ids: Sequence[str], lease_seconds: float) -> Renewal:
        return await self.inner.renew(owner, saga_ids, lease_seconds)

    async def request_cancel(self, saga_id: str, by: str) -> SagaRecord | None:
        return await self.inner.request_cancel(saga_id, by)

    async def load(self, saga_id: str) -> SagaRecord | None:
        return await self.inner.load(saga_id)

    async def list(
        self, statuses: Sequence[StoredStatus] = (), limit: int = 100
    ) -> list[SagaRecord]:
        return await self.inner.list(statuses, limit)

    async def purge(self, finished_before: float, *, dry_run: bool = False) -> tuple[str, ...]:
        return await self.inner.purge(finished_before, dry_run=dry_run)


class CrashingStore(CountingStore):
    """Refuses every saga's write after its first `keep`, as a store would after the process
    died: the sagas stay unfinished in the store, as a crash leaves them."""

    def __init__(self, inner: SagaStore, keep: int) -> None:
        super().__init__(inner)
        self.keep = keep
        self.per_saga: dict[str, int] = {}

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        count = self.per_saga[saga_id] = self.per_saga.get(saga_id, 0) + 1
        if count >= self.keep:
            raise SagaStoreError("the benchmark's crash")
        await self.inner.append(saga_id, owner, events, update, lease_seconds)


BareCommit = Callable[[int], Awaitable[list[float]]]
"""Times `n` commits of one 200-byte row each, one after the other; seconds per commit."""

ROW = "x" * 200


def sqlite_bare_commit(path: Path, synchronous: str) -> BareCommit:
    """Commits on the calling thread, with the store's settings (WAL, `synchronous`)."""

    async def commits(n: int) -> list[float]:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {synchronous}")
            db.execute("CREATE TABLE IF NOT EXISTS bare (id INTEGER PRIMARY KEY, body TEXT)")
            clock = time.perf_counter
            times = []
            for _ in range(n):
                t0 = clock()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO bare (body) VALUES (?)", (ROW,))
                db.execute("COMMIT")
                times.append(clock() - t0)
            return times
        finally:
            db.close()

    return commits


def postgres_bare_commit(dsn: str, schema: str) -> BareCommit:
    """Autocommitted INSERTs on one async connection, from the event loop."""

    async def commits(n: int) -> list[float]:
        import psycopg  # noqa: PLC0415 - the optional driver, only when PostgreSQL is measured

        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".bare (id BIGSERIAL PRIMARY KEY, body TEXT)'
            )
            clock = time.perf_counter
            times = []
            for _ in range(n):
                t0 = clock()
                await conn.execute(f'INSERT INTO "{schema}".bare (body) VALUES (%s)', (ROW,))
                times.append(clock() - t0)
            return times

    return commits


@dataclass(frozen=True)
class Targets:
    """Issue 15's targets for one store, against its floor measured in the same run."""

    vs_bare: float
    """Per-step median, one saga at a time, at most this many bare commits."""
    flight_per_s: float
    """Sagas per second with 100 in flight, at least."""
    recovery_s: float
    """Seconds to recover 1,000 sagas left halfway, at most (each policy)."""


@dataclass
class Backend:
    label: str
    store: SagaStore | None
    """None: the in-memory engine (no journal at all)."""
    bare_commit: BareCommit | None = None
    targets: Targets | None = None
    fresh_store: Callable[[str], SagaStore] | None = None
    """A new, empty store of this kind (named by the argument), for the recovery timings."""
    engine: SagaEngine = field(init=False)

    def __post_init__(self) -> None:
        # A lease longer than the run: no heartbeat renewal fires during the timings (every
        # lease/3), so they measure the saga's own writes.
        self.engine = SagaEngine(store=self.store, lease=LEASE)


# --- measurement -----------------------------------------------------------------------------


def fresh(n: int) -> list[OrderData]:
    """Data for `n` sagas (each with its own saga id), built before any timing starts."""
    return [OrderData() for _ in range(n)]


async def one_at_a_time(
    engine: SagaEngine, saga: Named, n: int | list[OrderData], *, pause: bool = False
) -> list[float]:
    """Seconds per saga, `n` sagas one after the other (or one per data of a list made
    before a timing starts). `pause`: let the loop turn between two sagas (a saga that never
    suspends would otherwise hold it for all `n`)."""
    clock = time.perf_counter
    times = []
    for data in fresh(n) if isinstance(n, int) else n:
        if pause:
            await asyncio.sleep(0)
        t0 = clock()
        result = await engine.run(saga.flow, data, saga_name=saga.name)
        times.append(clock() - t0)
        if result.status is not SagaStatus.COMPLETED:
            raise RuntimeError(f"the benchmark saga ended {result.status}: {result.error!r}")
    return times


async def in_flight(
    engine: SagaEngine, saga: Named, n: int | list[OrderData], width: int, *, pause: bool = False
) -> float:
    """Seconds for `n` sagas (or one per data of a list made before a timing starts) run by
    `width` workers: `width` sagas in flight all along. `pause`: let the loop turn between
    two sagas of a worker."""
    datas = iter(fresh(n) if isinstance(n, int) else n)

    async def worker() -> None:
        for data in datas:  # shared: each worker takes the next saga
            if pause:
                await asyncio.sleep(0)
            result = await engine.run(saga.flow, data, saga_name=saga.name)
            if result.status is not SagaStatus.COMPLETED:
                raise RuntimeError(f"the benchmark saga ended {result.status}: {result.error!r}")

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(width):
            tasks.create_task(worker())
    return time.perf_counter() - t0


async def store_writes(store: SagaStore, n: int) -> list[float]:
    """Seconds per `store.append` of what one sequential step writes: the step's commit (with
    its data) and the next step's attempt, and the saga row's new data."""
    owner = f"bench-{uuid.uuid4().hex[:8]}"
    data = OrderData()
    text = encode(data)
    saga_id = str(data.saga_id)
    now = time.time()
    record = SagaRecord(
        saga_id=saga_id,
        saga_name="store-write",
        status=StoredStatus.RUNNING,
        fingerprint="bench",
        structure="[]",
        policy="COMPENSATE",
        data=text,
        data_type=type_name(OrderData),
        codec=CODEC_VERSION,
        created=now,
        updated=now,
        owner=owner,
    )
    await store.begin(record, (), 30.0)
    clock = time.perf_counter
    times = []
    for i in range(n):
        events = (
            StoredEvent(seq=2 * i + 1, kind="STEP_COMMITTED", at=now, step_key="a", step="a",
                        data=text, data_type=record.data_type, owner=owner),
            StoredEvent(seq=2 * i + 2, kind="STEP_STARTED", at=now, step_key="b", step="b",
                        owner=owner),
        )  # fmt: skip
        update = SagaUpdate(data=text, data_type=record.data_type)
        t0 = clock()
        await store.append(saga_id, owner, events, update, 30.0)
        times.append(clock() - t0)
    return times


async def writes_per_saga(saga: Named) -> float:
    """Store writes one saga of `flow` makes, counted on a SQLite FULL store: writes wait for
    the worker there, so group members' attempts share writes as on PostgreSQL (an in-memory
    store never suspends, and NORMAL writes inline, so nothing waits to be shared)."""
    with tempfile.TemporaryDirectory() as directory:
        store = CountingStore(SqliteSagaStore(Path(directory) / "count.db", synchronous="FULL"))
        engine = SagaEngine(store=store)
        runs = 5
        for data in fresh(runs):
            await engine.run(saga.flow, data, saga_name=saga.name)
        await engine.aclose()
    return store.writes / runs


def preemptions() -> int:
    """Involuntary context switches of this process's threads so far: how often the kernel
    took a CPU from one of them for another process. A long gap with one in it says the
    machine was busy (the loop's thread, or the SQLite worker holding the GIL, was descheduled),
    not that our code held the loop."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


@dataclass
class Durations:
    """Seconds the event loop was held (gaps between a ticker's turns, or single callbacks),
    each with whether a thread of the process was preempted meanwhile."""

    values: list[float] = field(default_factory=list)
    preempted: list[bool] = field(default_factory=list)
    collected: list[float] = field(default_factory=list)
    """Seconds of garbage collection inside each one (any generation)."""

    def add(self, seconds: float, preempted: bool, collected: float = 0.0) -> None:
        self.values.append(seconds)
        self.preempted.append(preempted)
        self.collected.append(collected)

    @property
    def max(self) -> float:
        return max(self.values, default=0.0)

    @property
    def max_unpreempted(self) -> float:
        return max(
            (v for v, p in zip(self.values, self.preempted, strict=True) if not p), default=0.0
        )

    @property
    def max_own(self) -> float:
        """The longest without a preemption, less the garbage collection in it: how long
        our code held the loop."""
        return max((v - c for v, p, c in self._rows() if not p), default=0.0)

    @property
    def max_collection(self) -> float:
        """The longest garbage collection inside one (0: none ran)."""
        return max(self.collected, default=0.0)

    @property
    def p99(self) -> float:
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def over(self, seconds: float) -> tuple[int, int]:
        """How many exceeded `seconds`: in all, and of our code's own time (without a
        preemption, less the garbage collection in them)."""
        rows = list(self._rows())
        return (
            sum(v > seconds for v, _, _ in rows),
            sum(v - c > seconds and not p for v, p, c in rows),
        )

    def _rows(self) -> zip[tuple[float, bool, float]]:
        return zip(self.values, self.preempted, self.collected, strict=True)


async def ticking(gaps: Durations, body: Awaitable[object]) -> None:
    """Run `body` while a ticker task records every gap between its turns."""
    stop = False

    async def ticker() -> None:
        clock = time.perf_counter
        last, switches = clock(), preemptions()
        while not stop:
            await asyncio.sleep(0)
            now, now_switches = clock(), preemptions()
            gaps.add(now - last, now_switches != switches)
            last, switches = now, now_switches

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running
    try:
        await body
    finally:
        stop = True
        await task


class CallbackTimer:
    """Times every callback the event loop runs (each task step is one) while in use, by
    wrapping `asyncio.Handle._run`: how long each held the loop, without debug mode's own
    overhead. The wrapper adds about 2 µs per callback (two clock reads, two getrusage). Only
    callbacks that start and end inside the `with` block count (not the benchmark's own step
    that leaves it and goes on to collect garbage).

    Garbage collection inside a callback is timed too (by `gc.callbacks`): CPython's cyclic
    collector runs when allocations set it off, whoever made them, and scans the process's
    objects (a full collection, all of them: 11-23 ms with 100 PostgreSQL sagas in flight
    here, none after `gc.freeze()`); 'own' figures leave it out, and the report gives the
    longest collection on its own."""

    def __init__(self) -> None:
        self.durations = Durations()
        self._original: Callable[[asyncio.Handle], None] | None = None
        self._on = False
        self._collected = 0.0
        self._collection_start = 0.0

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collection_start = time.perf_counter()
        else:
            self._collected += time.perf_counter() - self._collection_start

    def __enter__(self) -> CallbackTimer:
        original: Callable[[asyncio.Handle], None] = asyncio.Handle._run
        add = self.durations.add
        clock = time.perf_counter

        def timed(handle: asyncio.Handle) -> None:
            switches = preemptions()
            self._collected = 0.0
            t0 = clock()
            try:
                original(handle)
            finally:
                if self._on:
                    add(clock() - t0, preemptions() != switches, self._collected)

        self._original = original
        self._on = True
        gc.callbacks.append(self._on_collection)
        setattr(asyncio.Handle, "_run", timed)  # noqa: B010 - patching the class on purpose
        return self

    def __exit__(self, *exc: object) -> None:
        self._on = False
        gc.callbacks.remove(self._on_collection)
        setattr(asyncio.Handle, "_run", self._original)  # noqa: B010 - restoring it


# --- the cases -------------------------------------------------------------------------------


@dataclass
class Figures:
    bare_us: float | None = None
    """Median bare commit."""
    write_us: float | None = None
    """Median `store.append` of one step's write."""
    seq_median_us: float = math.inf
    seq_mean_us: float = math.inf
    flight_per_s: float = 0.0
    flight_step_us: float = math.inf
    eight_seq_us: float = math.inf
    eight_group_us: float = math.inf
    ticks: list[Durations] = field(default_factory=list)
    """Ticker gaps, one saga at a time, one entry a repeat (so are the callbacks)."""
    seq_callbacks: list[Durations] = field(default_factory=list)
    flight_callbacks: list[Durations] = field(default_factory=list)
    recovery_s: dict[RecoveryPolicy, float] = field(default_factory=dict)
    """Seconds to recover `--recovery-sagas` sagas left halfway, by policy (the best)."""


def settle() -> None:
    """Before a timing: collect, then freeze what survives (the stores' and earlier runs'
    objects), so that the collector's passes during the timing are the run's own."""
    gc.collect()
    gc.freeze()


async def measure(
    backends: list[Backend], runs: int, repeats: int, flight_sagas: int, *, blocking: bool
) -> dict[str, Figures]:
    flow, seq8, group8 = SAGAS["ten"], SAGAS["seq8"], SAGAS["group8"]
    ticked = max(20, runs // 4)
    figures = {b.label: Figures() for b in backends}
    for b in backends:  # warm up: open the stores, build the codec's adapter, fill caches
        await one_at_a_time(b.engine, flow, 20)
        await one_at_a_time(b.engine, seq8, 5)
        await one_at_a_time(b.engine, group8, 5)
        await in_flight(b.engine, flow, IN_FLIGHT, IN_FLIGHT)
    for _ in range(repeats):
        for b in backends:
            f = figures[b.label]
            if b.bare_commit is not None:
                settle()
                bare = statistics.median(await b.bare_commit(runs))
                f.bare_us = min(f.bare_us or math.inf, bare * 1e6)
            if b.store is not None:
                settle()
                write = statistics.median(await store_writes(b.store, runs))
                f.write_us = min(f.write_us or math.inf, write * 1e6)
            settle()
            times = await one_at_a_time(b.engine, flow, runs)
            f.seq_median_us = min(f.seq_median_us, statistics.median(times) / STEPS * 1e6)
            f.seq_mean_us = min(f.seq_mean_us, statistics.fmean(times) / STEPS * 1e6)
            settle()
            wall = await in_flight(b.engine, flow, flight_sagas, IN_FLIGHT)
            f.flight_per_s = max(f.flight_per_s, flight_sagas / wall)
            f.flight_step_us = min(f.flight_step_us, wall / (flight_sagas * STEPS) * 1e6)
            settle()
            f.eight_seq_us = min(
                f.eight_seq_us, statistics.median(await one_at_a_time(b.engine, seq8, runs)) * 1e6
            )
            settle()
            f.eight_group_us = min(
                f.eight_group_us,
                statistics.median(await one_at_a_time(b.engine, group8, runs)) * 1e6,
            )
            if blocking:
                settle()
                ticks = Durations()
                datas = fresh(ticked)  # made outside the timing: the benchmark's own work
                with CallbackTimer() as timer:
                    # A quarter of the sagas: the ticker spins the loop, which slows a store
                    # that needs the CPU too (PostgreSQL's server process on a small machine).
                    await ticking(ticks, one_at_a_time(b.engine, flow, datas, pause=True))
                f.ticks.append(ticks)
                f.seq_callbacks.append(timer.durations)
                settle()
                datas = fresh(flight_sagas)
                with CallbackTimer() as timer:
                    await in_flight(b.engine, flow, datas, IN_FLIGHT, pause=True)
                f.flight_callbacks.append(timer.durations)
    return figures


async def recovery_seconds(
    open_store: Callable[[], SagaStore], policy: RecoveryPolicy, n: int
) -> float:
    """Seconds one engine (default settings) takes to recover `n` sagas another one left
    unfinished halfway (after 5 of their 11 writes), by `policy`. `open_store` gives a new
    store object on the same database each time."""
    saga = SAGAS["ten"]
    dying = SagaEngine(
        store=CrashingStore(open_store(), keep=5),
        lease=timedelta(milliseconds=200),
        recovery=policy,
    )
    datas = iter(fresh(n))

    async def worker() -> None:
        for data in datas:
            with contextlib.suppress(SagaStoreError):
                await dying.run(saga.flow, data, saga_name=saga.name)

    async with asyncio.TaskGroup() as tasks:
        for _ in range(IN_FLIGHT):
            tasks.create_task(worker())
    await dying.aclose()
    await asyncio.sleep(0.3)  # the dead engine's leases run out
    engine = SagaEngine(store=open_store(), lease=LEASE)
    engine.register(saga.name, saga.flow, recovery=policy)
    try:
        settle()
        t0 = time.perf_counter()
        report = await engine.recover(limit=n)
        seconds = time.perf_counter() - t0
    finally:
        await engine.aclose()
    wanted = (
        RecoveryOutcome.COMPLETED
        if policy is RecoveryPolicy.RESUME
        else RecoveryOutcome.COMPENSATED
    )
    outcomes = [r.outcome for r in report.sagas]
    if len(outcomes) != n or any(o is not wanted for o in outcomes):
        raise RuntimeError(f"recovery finished {len(outcomes)} of {n}: {set(outcomes)}")
    return seconds


async def measure_recovery(
    backends: list[Backend], figures: dict[str, Figures], n: int, repeats: int
) -> None:
    """Recovery timings, each on a new store (the best of `repeats`, at most 2: a timing
    first leaves `n` sagas halfway, which costs as much again)."""
    for attempt in range(min(repeats, 2)):
        for b in backends:
            if b.fresh_store is None:
                continue
            for policy in (RecoveryPolicy.RESUME, RecoveryPolicy.COMPENSATE):
                name = f"recovery_{policy.value.lower()}_{attempt}"
                seconds = await recovery_seconds(functools.partial(b.fresh_store, name), policy, n)
                best = figures[b.label].recovery_s.get(policy, math.inf)
                figures[b.label].recovery_s[policy] = min(best, seconds)


# --- report ----------------------------------------------------------------------------------


def us(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isinf(value) else f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def report(
    backends: list[Backend],
    figures: dict[str, Figures],
    writes: dict[str, float],
    recovery_sagas: int,
) -> None:
    memory = figures[backends[0].label]
    per_step_writes = writes["ten"] / STEPS
    print(f"\n10-step saga, one at a time ({writes['ten']:.0f} writes per saga); µs per step")
    rows = []
    for b in backends:
        f = figures[b.label]
        verdict = "-"
        if b.targets is not None and f.bare_us is not None:
            met = f.seq_median_us <= b.targets.vs_bare * f.bare_us
            verdict = f"<= {b.targets.vs_bare:g}x bare: {'met' if met else 'MISSED'}"
        rows.append(
            [
                b.label,
                us(f.seq_median_us),
                us(f.seq_mean_us),
                f"{f.seq_median_us / memory.seq_median_us:,.0f}x",
                us(f.bare_us),
                us(f.write_us),
                "-" if f.bare_us is None else f"{f.seq_median_us / f.bare_us:.2f}x",
                "-"
                if f.bare_us is None
                else f"{f.seq_median_us / (f.bare_us * per_step_writes):.2f}x",
                verdict,
            ]
        )
    print(
        table(
            [
                "engine",
                "median",
                "mean",
                "vs memory",
                "bare commit",
                "store write",
                "vs bare",
                f"vs {per_step_writes:.1f} bare",
                "target",
            ],
            rows,
        )
    )

    print(f"\n{IN_FLIGHT} sagas in flight (10 steps each)")
    rows = [
        [
            b.label,
            f"{figures[b.label].flight_per_s:,.0f}",
            us(figures[b.label].flight_step_us),
            f"{figures[b.label].flight_step_us / memory.flight_step_us:,.0f}x",
            f"{figures[b.label].seq_median_us / figures[b.label].flight_step_us:.1f}x",
            "-"
            if b.targets is None
            else f">= {b.targets.flight_per_s:,.0f}: "
            + ("met" if figures[b.label].flight_per_s >= b.targets.flight_per_s else "MISSED"),
        ]
        for b in backends
    ]
    print(
        table(
            ["engine", "sagas/s", "µs/step", "vs memory", "speed-up vs one at a time", "target"],
            rows,
        )
    )

    recovered = [b for b in backends if figures[b.label].recovery_s]
    if recovered:
        print(
            f"\nrecovering {recovery_sagas:,} sagas a crashed engine left halfway (5 of 11 "
            "writes), s: by recovery policy (the engine's default concurrency)"
        )
        rows = []
        for b in recovered:
            f = figures[b.label]
            for policy, seconds in f.recovery_s.items():
                target = "-"
                if b.targets is not None:
                    met = seconds <= b.targets.recovery_s
                    target = f"<= {b.targets.recovery_s:g}: {'met' if met else 'MISSED'}"
                rows.append([b.label, policy.value, f"{seconds:.2f}", target])
        print(table(["engine", "policy", "seconds", "target"], rows))

    print(
        f"\nparallel group of {GROUP} vs {GROUP} sequential steps (after one step); µs per saga;"
        f" writes per saga: {writes['seq8']:.0f} sequential, {writes['group8']:.0f} group"
    )
    rows = [
        [
            b.label,
            us(figures[b.label].eight_seq_us),
            us(figures[b.label].eight_group_us),
            f"{figures[b.label].eight_group_us / figures[b.label].eight_seq_us:.2f}x",
        ]
        for b in backends
    ]
    print(table(["engine", f"1 + {GROUP} sequential", f"1 + group of {GROUP}", "group/seq"], rows))

    if any(figures[b.label].ticks for b in backends):
        print(
            "\nevent-loop blocking, ms (each the lowest over the repeats): gaps between turns of"
            " a ticker task, and single callbacks, one saga at a time and with"
            f" {IN_FLIGHT} in flight; 'clean' leaves out those during which the kernel preempted"
            " a thread of this process for another process; a callback's 'own' time leaves out"
            " those and the garbage collection in it, whose longest pause is given on its own"
        )
        rows = []
        for b in backends:
            f = figures[b.label]
            over = min((d.over(1e-3) for d in f.flight_callbacks), key=lambda pair: pair[1])
            rows.append(
                [
                    b.label,
                    ms(f.ticks, Durations.max),
                    ms(f.ticks, Durations.max_unpreempted),
                    ms(f.ticks, Durations.p99, 3),
                    ms(f.seq_callbacks, Durations.max_own),
                    ms(f.flight_callbacks, Durations.max),
                    ms(f.flight_callbacks, Durations.max_own),
                    ms(f.flight_callbacks, Durations.p99, 3),
                    f"{over[1]} / {over[0]}",
                    us(max(d.max_collection for d in f.flight_callbacks) * 1e3, 2),
                ]
            )
        print(
            table(
                [
                    "engine",
                    "gap max",
                    "clean",
                    "gap p99",
                    "callback max, own",
                    f"{IN_FLIGHT} in flight: callback max",
                    "own",
                    "p99",
                    "> 1 ms: own / all",
                    "gc (longest)",
                ],
                rows,
            )
        )


def ms(repeats: list[Durations], statistic: Any, digits: int = 2) -> str:
    """The lowest of `statistic` (a Durations property) over the repeats, in milliseconds:
    what a loop was held for every time, rather than a burst of load on the machine once."""
    return us(min(statistic.fget(d) for d in repeats) * 1e3, digits)


async def drop_schema(dsn: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415 - the optional driver, only when PostgreSQL is measured

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("spakky_saga").setLevel(logging.WARNING)
    directory = Path(tempfile.mkdtemp(prefix="durable-bench-", dir=args.dir))
    schema = f"durable_bench_{uuid.uuid4().hex[:8]}"
    backends = [
        Backend("in-memory engine", None),
        Backend("durable, InMemorySagaStore", InMemorySagaStore()),
        Backend(
            "durable, SQLite FULL",
            SqliteSagaStore(directory / "full.db", synchronous="FULL"),
            sqlite_bare_commit(directory / "bare-full.db", "FULL"),
            Targets(vs_bare=2.0, flight_per_s=2_500, recovery_s=1.0),
            lambda name: SqliteSagaStore(directory / f"{name}-full.db", synchronous="FULL"),
        ),
        Backend(
            "durable, SQLite NORMAL",
            SqliteSagaStore(directory / "normal.db", synchronous="NORMAL"),
            sqlite_bare_commit(directory / "bare-normal.db", "NORMAL"),
            Targets(vs_bare=3.0, flight_per_s=2_500, recovery_s=1.0),
            lambda name: SqliteSagaStore(directory / f"{name}-normal.db", synchronous="NORMAL"),
        ),
    ]
    schemas = [schema, f"{schema}_bare"]
    if not args.no_postgres:

        def fresh_schema(name: str) -> SagaStore:
            schemas.append(f"{schema}_{name}")
            return PostgresSagaStore(args.dsn, schema=schemas[-1])

        backends.append(
            Backend(
                "durable, PostgreSQL",
                PostgresSagaStore(args.dsn, schema=schema),
                postgres_bare_commit(args.dsn, f"{schema}_bare"),
                Targets(vs_bare=2.5, flight_per_s=1_000, recovery_s=2.0),
                fresh_schema,
            )
        )
    try:
        writes = {key: await writes_per_saga(saga) for key, saga in SAGAS.items()}
        figures = await measure(
            backends, args.runs, args.repeats, args.flight_sagas, blocking=not args.no_blocking
        )
        if args.recovery_sagas:
            await measure_recovery(backends, figures, args.recovery_sagas, args.repeats)
        report(backends, figures, writes, args.recovery_sagas)
    finally:
        for b in backends:
            await b.engine.aclose()
        shutil.rmtree(directory, ignore_errors=True)
        if not args.no_postgres:
            for name in schemas:
                await drop_schema(args.dsn, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="sagas (or commits) per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings; the best is kept")
    parser.add_argument(
        "--flight-sagas", type=int, default=500, help=f"sagas per {IN_FLIGHT}-in-flight timing"
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL server (libpq DSN or URL)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-blocking", action="store_true", help="skip the event-loop check")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (a temp dir)")
    parser.add_argument(
        "--recovery-sagas",
        type=int,
        default=RECOVERY_SAGAS,
        help="sagas per recovery timing (0: skip recovery)",
    )
    asyncio.run(main(parser.parse_args()))
