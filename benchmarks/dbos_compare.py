"""DBOS Transact 3.4 doing what `durable_bench.py` measures on our engine (issue 15's comparison).

Optional, outside the test suite and outside `.venv`: it runs in `.venv/dbos` (Python 3.11, made
by `scripts/dbos-venv.sh`) and does not import spakky_saga, so that the comparison needs nothing
of ours and DBOS needs nothing in our dependencies.

The same work as `durable_bench.py`'s "one at a time" and "100 in flight" cases: a workflow of
10 steps, each returning `dataclasses.replace(data, stage=i)` on the same 13-field data class,
once with sync steps in a sync workflow and once with async steps in an async workflow. DBOS's
default settings apart from the system database URL and WARNING logging; a fresh workflow id
per workflow (DBOS's default). Backends: SQLite (a file in a temporary directory) and
PostgreSQL (a throwaway database `dbos_bench_<random>` created with psycopg and dropped at the
end; `--dsn` names the server, trust auth as user root by default).

Figures: one at a time, `--runs` workflows, each timed, µs per step = median (and mean) workflow
time / 10; 100 in flight, `--flight-workflows` workflows run by 100 workers (threads calling the
sync workflow, asyncio tasks awaiting the async one), so that 100 are in flight all along:
workflows per second. A few untimed workflows warm each cell up.

What differs from our engine, so read the figures with it:
- DBOS records every step as its own transaction (its output, pickled and base64-encoded),
  and a step costs it two: counted with SQLAlchemy events, a 10-step workflow is 24
  transactions on SQLite and about 22 on PostgreSQL (45 statements, and each connection
  checkout pings the server: `pool_pre_ping`). Ours writes a step's commit together with the
  next step's attempt: 11 writes for 10 steps, one statement each on PostgreSQL.
- DBOS's SQLite database keeps SQLite's defaults: a rollback journal (`journal_mode=delete`,
  not WAL) and `synchronous=FULL`, so a commit is several fsyncs; ours uses WAL.
- DBOS's pool is 20 connections with no overflow, so of 100 workflows in flight at most 20
  touch the database at once; SQLite writers are serialized (`BEGIN IMMEDIATE`) in any case.
  With 100 sync workflows in flight on SQLite, checkouts wait out the pool's 30 s timeout and
  DBOS retries them, logging "Database connection pool exhausted" WARNINGs: that is DBOS at
  its defaults, and it shows in the figure.
- DBOS has no compensations; the steps here have none to register, ours register a no-op one.
- DBOS's async API runs its database calls on threads (`asyncio.to_thread`); its sync API uses
  a thread per workflow started in the background. Both are DBOS's default ways.
- DBOS is a process-wide singleton, so the backends run one after the other, with
  `DBOS.destroy()` between them; the cells are not interleaved as in `durable_bench.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from dbos import DBOS, DBOSConfig

STEPS = 10
IN_FLIGHT = 100
WARMUP = 5
DEFAULT_DSN = "postgresql://root@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class OrderData:
    """The same fields and values as `durable_bench.OrderData` (about 200 bytes as JSON)."""

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


# --- the workflows (registered at import, before DBOS is configured) -------------------------


@DBOS.step()
def advance_sync(data: OrderData, stage: int) -> OrderData:
    return dataclasses.replace(data, stage=stage)


@DBOS.step()
async def advance_async(data: OrderData, stage: int) -> OrderData:
    return dataclasses.replace(data, stage=stage)


@DBOS.workflow()
def ten_steps_sync(data: OrderData) -> OrderData:
    for i in range(STEPS):
        data = advance_sync(data, i + 1)
    return data


@DBOS.workflow()
async def ten_steps_async(data: OrderData) -> OrderData:
    for i in range(STEPS):
        data = await advance_async(data, i + 1)
    return data


# --- timing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One backend and step kind: µs per step one at a time, workflows per second in flight."""

    backend: str
    kind: str
    median_us: float
    mean_us: float
    per_second: float


def one_at_a_time_sync(runs: int) -> list[float]:
    for _ in range(WARMUP):
        ten_steps_sync(OrderData())
    times: list[float] = []
    for _ in range(runs):
        data = OrderData()
        start = time.perf_counter()
        ten_steps_sync(data)
        times.append(time.perf_counter() - start)
    return times


def in_flight_sync(total: int) -> float:
    """Workflows per second with IN_FLIGHT threads each running workflows back to back."""
    remaining = [total]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            ten_steps_sync(OrderData())

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        start = time.perf_counter()
        futures = [pool.submit(worker) for _ in range(IN_FLIGHT)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return total / elapsed


async def one_at_a_time_async(runs: int) -> list[float]:
    for _ in range(WARMUP):
        await ten_steps_async(OrderData())
    times: list[float] = []
    for _ in range(runs):
        data = OrderData()
        start = time.perf_counter()
        await ten_steps_async(data)
        times.append(time.perf_counter() - start)
    return times


async def in_flight_async(total: int) -> float:
    """Workflows per second with IN_FLIGHT tasks each awaiting workflows back to back."""
    remaining = [total]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await ten_steps_async(OrderData())

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(IN_FLIGHT):
            tasks.create_task(worker())
    return total / (time.perf_counter() - start)


def cell(backend: str, kind: str, times: list[float], per_second: float) -> Cell:
    return Cell(
        backend,
        kind,
        statistics.median(times) / STEPS * 1e6,
        statistics.mean(times) / STEPS * 1e6,
        per_second,
    )


async def async_cells(backend: str, runs: int, flight: int) -> Cell:
    """Both async cases in one event loop (DBOS binds its async helpers to the running loop)."""
    times = await one_at_a_time_async(runs)
    await in_flight_async(min(flight, 2 * IN_FLIGHT) // 10)  # warm-up: threads, pool
    return cell(backend, "async", times, await in_flight_async(flight))


def measure(backend: str, url: str, runs: int, flight: int) -> list[Cell]:
    """Launches DBOS on `url`, runs the sync then the async cells, and shuts DBOS down."""
    config: DBOSConfig = {
        "name": "dbos-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        times = one_at_a_time_sync(runs)
        in_flight_sync(min(flight, 2 * IN_FLIGHT) // 10)
        sync = cell(backend, "sync", times, in_flight_sync(flight))
        return [sync, asyncio.run(async_cells(backend, runs, flight))]
    finally:
        DBOS.destroy()


@contextmanager
def throwaway_database(dsn: str) -> Iterator[str]:
    """Creates `dbos_bench_<random>` on the server of `dsn`, yields its URL, then drops it."""
    name = f"dbos_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base, _, _ = dsn.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_backends(args: argparse.Namespace) -> list[Cell]:
    results: list[Cell] = []
    backends: list[tuple[str, Callable[[], list[Cell]]]] = []
    if not args.no_sqlite:

        def on_sqlite() -> list[Cell]:
            with tempfile.TemporaryDirectory(dir=args.dir) as directory:
                url = f"sqlite:///{Path(directory) / 'dbos_bench.sqlite'}"
                return measure("SQLite", url, args.runs, args.flight_workflows)

        backends.append(("SQLite", on_sqlite))
    if not args.no_postgres:

        def on_postgres() -> list[Cell]:
            with throwaway_database(args.dsn) as url:
                return measure("PostgreSQL", url, args.runs, args.flight_workflows)

        backends.append(("PostgreSQL", on_postgres))
    for name, run in backends:
        print(f"running {name} ...", flush=True)
        results.extend(run())
    return results


def print_table(cells: list[Cell], runs: int, flight: int) -> None:
    print()
    print(f"DBOS Transact 3.4, {STEPS}-step workflow; one at a time: {runs} runs;")
    print(f"{IN_FLIGHT} in flight: {flight} workflows")
    header = ("backend", "steps", "µs/step median", "mean", f"{IN_FLIGHT} in flight, wf/s")
    rows = [
        (c.backend, c.kind, f"{c.median_us:,.0f}", f"{c.mean_us:,.0f}", f"{c.per_second:,.1f}")
        for c in cells
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        left = [v.ljust(w) for v, w in zip(row[:2], widths[:2], strict=True)]
        right = [v.rjust(w) for v, w in zip(row[2:], widths[2:], strict=True)]
        print("  ".join(left + right))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="workflows timed one at a time")
    parser.add_argument(
        "--flight-workflows", type=int, default=500, help="workflows run 100 at a time"
    )
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("DBOS_BENCH_POSTGRES", DEFAULT_DSN),
        help="a database on the server to create the throwaway one from",
    )
    parser.add_argument("--dir", default=None, help="where the SQLite file's directory goes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    print_table(run_backends(args), args.runs, args.flight_workflows)


if __name__ == "__main__":
    main()
