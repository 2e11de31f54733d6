"""What waiting costs (issue 16): memory per waiting saga, and signal-to-resume latency.

1. Memory. `--sagas` sagas (default 20,000) reach a `wait_for` on a durable engine over SQLite
   and are suspended in the store (WAITING); the Python heap the process holds afterwards
   (tracemalloc, after a collection) is divided by their number. For contrast, `--held` sagas
   (default 2,000) wait the same way held in the process (`hold_waits=True`): what each costs
   there (its task, its run's state).
2. Latency. An engine serves (`recovering()`); a saga is started, suspends, and is sent its
   signal through that engine; the time from `signal()` to the step after the wait starting
   is measured `--rounds` times (default 200), on SQLite and PostgreSQL: median and p99.
3. Latency across engines (PostgreSQL). The signal is sent through a second engine (another
   process, in real life) while the first serves with its default pass interval (5 s): with
   LISTEN/NOTIFY its notice starts a pass at once; `Polling` (the store without its wake-ups)
   shows what polling alone gives, interleaved with it, `--cross-rounds` times each.

Run: `.venv/bin/python benchmarks/waits_bench.py [--no-postgres] [--sagas N]`. The SQLite file
goes to a temporary directory, the PostgreSQL tables to a schema of their own (both removed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from spakky_saga import (
    AbstractSagaData,
    PostgresSagaStore,
    SagaEngine,
    SagaFlow,
    SagaStatus,
    SagaStore,
    SqliteSagaStore,
    saga_flow,
    wait_for,
)

DSN = os.environ.get("SPAKKY_SAGA_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


class Order(AbstractSagaData):
    order_id: int
    reference: str = ""


@dataclass(frozen=True)
class Paid:
    reference: str


def paid(data: Order, signal: Paid) -> Order:
    return dataclasses.replace(data, reference=signal.reference)


async def reserve(data: Order) -> None:
    return None


def waiting_flow(after: Callable[[Order], None]) -> SagaFlow[Order]:
    async def ship(data: Order) -> None:
        after(data)

    return saga_flow(reserve, wait_for(Paid, merge=paid, timeout=timedelta(hours=48)), ship)


async def start_many(engine: SagaEngine, flow: SagaFlow[Order], count: int) -> None:
    """Start `count` sagas, 500 at a time (their writes share commits); each suspends."""
    for first in range(0, count, 500):
        results = await asyncio.gather(
            *(
                engine.run(flow, Order(order_id=n), saga_name="order")
                for n in range(first, min(count, first + 500))
            )
        )
        assert all(r.status is SagaStatus.WAITING for r in results)


def heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def memory_suspended(path: Path, count: int) -> float:
    flow = waiting_flow(lambda data: None)
    engine = SagaEngine(store=SqliteSagaStore(path, synchronous="NORMAL"), log=False)
    engine.register("order", flow)
    await start_many(engine, flow, 100)  # warm up: adapters, plans, connections
    await start_many(engine, flow, 1)  # (the loop keeps the last batch's results a while)
    before = heap()
    await start_many(engine, flow, count)
    await start_many(engine, flow, 1)
    after = heap()
    await engine.aclose()
    return (after - before) / count


async def memory_held(path: Path, count: int) -> float:
    flow = waiting_flow(lambda data: None)
    engine = SagaEngine(
        store=SqliteSagaStore(path, synchronous="NORMAL"), log=False, hold_waits=True
    )
    engine.register("order", flow)
    before = heap()
    tasks = [
        asyncio.ensure_future(engine.run(flow, Order(order_id=n), saga_name="order"))
        for n in range(count)
    ]
    store = engine.store
    assert store is not None
    for _ in range(600):  # until every run is in its wait (a minute at most)
        await asyncio.sleep(0.1)
        if len(await store.list(limit=count + 1)) >= count:
            break
    await asyncio.sleep(1.0)
    after = heap()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await engine.aclose()
    return (after - before) / count


async def latency(
    store: SagaStore, rounds: int, sender: SagaStore | None = None, every: float = 30.0
) -> list[float]:
    """Signal-to-resume times; through `sender` (a second engine) if given, else through the
    serving engine itself."""
    resumed: dict[uuid.UUID, asyncio.Event] = {}
    engine = SagaEngine(store=store, log=False)
    flow = waiting_flow(lambda data: resumed[data.saga_id].set())
    engine.register("order", flow)
    other = engine if sender is None else SagaEngine(store=sender, log=False)
    other.register("order", flow)
    times: list[float] = []
    async with engine.recovering(every=timedelta(seconds=every)):
        await asyncio.sleep(0.5)  # its first pass done, its listening connection made
        for n in range(rounds):
            data = Order(order_id=n)
            resumed[data.saga_id] = asyncio.Event()
            result = await other.run(flow, data, saga_name="order")
            assert result.status is SagaStatus.WAITING
            sent = time.perf_counter()
            await other.signal(data.saga_id, Paid(f"p-{n}"))
            await resumed[data.saga_id].wait()
            times.append(time.perf_counter() - sent)
    if other is not engine:
        await other.aclose()
    await engine.aclose()
    return times


class Polling(PostgresSagaStore):
    """The PostgreSQL store without its wake-ups: serving engines poll only (as before)."""

    wakeups = None  # a protocol member set to None: not a WakingStore


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    import psycopg  # noqa: PLC0415 - only when PostgreSQL is measured

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield schema
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def show(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p99 = ordered[max(0, round(len(ordered) * 0.99) - 1)]
    print(
        f"  {name:<11} median {statistics.median(ordered) * 1e3:6.1f} ms   "
        f"p99 {p99 * 1e3:6.1f} ms   ({len(ordered)} signals)"
    )


async def main(args: argparse.Namespace) -> None:
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as folder:
        print("memory per waiting saga (Python heap, tracemalloc), SQLite:")
        suspended = await memory_suspended(Path(folder) / "suspended.db", args.sagas)
        print(f"  suspended   {suspended:8.1f} bytes/saga   ({args.sagas} sagas WAITING)")
        held = await memory_held(Path(folder) / "held.db", args.held)
        print(f"  held        {held:8.1f} bytes/saga   ({args.held} sagas, hold_waits=True)")
        tracemalloc.stop()
        print("signal() to the step after the wait, one engine serving:")
        show("SQLite", await latency(SqliteSagaStore(Path(folder) / "latency.db"), args.rounds))
    if not args.no_postgres:
        async with postgres_schema() as schema:
            show("PostgreSQL", await latency(PostgresSagaStore(DSN, schema=schema), args.rounds))
        print("signal() through another engine, serving every 5 s, PostgreSQL (interleaved):")
        notified: list[float] = []
        polled: list[float] = []
        for _ in range(args.cross_batches):
            for kind, into in ((PostgresSagaStore, notified), (Polling, polled)):
                async with postgres_schema() as schema:
                    into.extend(
                        await latency(
                            kind(DSN, schema=schema),
                            args.cross_rounds,
                            sender=PostgresSagaStore(DSN, schema=schema),
                            every=5.0,
                        )
                    )
        show("NOTIFY", notified)
        show("polling", polled)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=20_000)
    parser.add_argument("--held", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--cross-rounds", type=int, default=10)
    parser.add_argument("--cross-batches", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
