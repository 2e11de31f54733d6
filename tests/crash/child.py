"""The process that dies: `python -m tests.crash.child <mode> ...` (run from the repository
root, `src` on PYTHONPATH).

Modes:
- `saga`: run one saga of a flow from `tests.crash.flows` on a durable engine and die where
  `--kill` says (it prints a line only if it survives, which the parent treats as a failure);
- `fleet`: start `--count` slow sagas at once (half of them RESUME, half COMPENSATE), print
  MIDWAY once every saga has begun and `--midway` actions are done, and go on until killed;
- `batch`: start `--count` quick fleet sagas at once on `--store` (with `--synchronous`) and
  die inside the store's
  shared batch write once one holds at least `--batch-size` sagas' writes: `--kill-batch
  before` (written, not committed), `after` (committed, not yet acknowledged to any saga);
- `recover`: call `recover()` in a loop until no saga is unfinished, then print a JSON
  summary of what this process did (or die where `--kill` says, while recovering);
- `fork-server`: fork a process per `saga` case read from stdin (see `fork_server`);
- `wait-start`, `wait-signal`: start sagas that wait and die in their wait, or send their
  signals (tests/crash/wait_flows.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import traceback
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import spakky_saga.stores.sqlite as sqlite_store
from spakky_saga import (
    PostgresSagaStore,
    RecoveryPolicy,
    SagaCompensationFailedError,
    SagaEngine,
    SagaStore,
    SqliteSagaStore,
    StoredStatus,
)
from tests.crash.flows import (
    FLOWS,
    MIDWAY,
    NO_KILL,
    KillPlan,
    Order,
    Participant,
    die,
    fleet_runs,
    register_fleet,
)
from tests.crash.wait_flows import send_signals, start_and_wait


def open_store(kind: str, target: str, schema: str, synchronous: str = "FULL") -> SagaStore:
    if kind == "sqlite":
        return SqliteSagaStore(target, synchronous="NORMAL" if synchronous == "NORMAL" else "FULL")
    return PostgresSagaStore(target, schema=schema, max_size=10)


class _Output:
    prefix = ""
    """In a process forked by the fork server: its case name, before every line it says."""


def say(line: str) -> None:
    sys.stdout.write(_Output.prefix + line + "\n")
    sys.stdout.flush()


async def run_one(args: argparse.Namespace) -> None:
    participant = Participant(Path(args.effects), KillPlan.parse(args.kill), announce=say)
    engine = SagaEngine(
        store=open_store(args.store, args.target, args.schema, args.synchronous),
        lease=timedelta(milliseconds=args.lease_ms),
        recovery=RecoveryPolicy(args.policy),
        sleep=participant.sleep,
    )
    flow = FLOWS[args.scenario](participant)
    data = Order(order_id=args.order_id, saga_id=uuid.UUID(args.saga_id))
    if args.scenario == "refund":  # fail the refund, repair it, retry it (and die in it)
        participant.refund_broken = True
        with contextlib.suppress(SagaCompensationFailedError):
            await engine.run(flow, data, saga_name=args.scenario)
        participant.refund_broken = False
        await engine.retry_compensation(args.saga_id)
        say("SURVIVED retry_compensation")
        return
    result = await engine.run(flow, data, saga_name=args.scenario)
    if participant.kill.at == "end":
        die()
    say(f"SURVIVED {result.status.value}")  # the kill plan did not trigger: a test failure


async def run_fleet(args: argparse.Namespace) -> None:
    participant = Participant(Path(args.effects), NO_KILL)
    participant.slow = True
    engine = SagaEngine(
        store=open_store("postgres", args.target, args.schema),
        lease=timedelta(milliseconds=args.lease_ms),
    )
    flows = register_fleet(engine, participant)
    runs = fleet_runs(engine, flows, args.count, args.seed)

    async def watch() -> None:
        while len(participant.sagas_started) < args.count or participant.actions_done < args.midway:
            participant.progress.clear()
            await participant.progress.wait()
        say(MIDWAY)

    await asyncio.gather(watch(), *runs)
    say("SURVIVED fleet")  # every saga finished before the parent killed us


def die_in_a_shared_batch(store: SagaStore, when: str, size: int, nth: int) -> None:
    """Make the process SIGKILL itself in the store's `nth` batch write of `size` or more
    sagas' writes: `before` its commit (the batch is applied, not committed), `after` it
    (committed, no saga told yet). On SQLite that is the worker's batch (FULL) or a turn's
    batch committed on the loop's thread (NORMAL)."""
    seen = [0]

    def fatal(writes: int) -> bool:
        if writes < size:
            return False
        seen[0] += 1
        return seen[0] >= nth

    if isinstance(store, PostgresSagaStore):
        write_batch = store._write_batch

        async def postgres_batch(writes: Sequence[Any]) -> Any:
            kill = fatal(len(writes))
            if kill and when == "before":
                die()  # nothing sent: the server has nothing of it
            outcomes = await write_batch(writes)
            if kill:
                die()  # the statement committed; no saga has heard back
            return outcomes

        store._write_batch = postgres_batch  # type: ignore[method-assign] # the kill point
        return
    apply_writes, write_batch_here = sqlite_store._apply_writes, sqlite_store._write_batch

    def applied(db: Any, writes: Sequence[Any], now: float) -> Any:
        outcomes = apply_writes(db, writes, now)
        if when == "before" and fatal(len(writes)):
            die()  # in the open transaction: SQLite rolls it back
        return outcomes

    def committed(db: Any, batch: Any, path: Any, clock: Any) -> None:
        kill = when == "after" and fatal(len(batch))
        if not kill:
            write_batch_here(db, batch, path, clock)
            return
        hand_back, sqlite_store._hand_back = sqlite_store._hand_back, lambda *_: die()
        try:
            write_batch_here(db, batch, path, clock)  # commits, then dies handing back
        finally:
            sqlite_store._hand_back = hand_back

    commit_inline = sqlite_store.SqliteSagaStore._commit_inline

    def committed_inline(self: Any, writes: Sequence[Any]) -> Any:
        outcomes = commit_inline(self, writes)
        if when == "after" and outcomes is not None and fatal(len(writes)):
            die()  # the turn's batch committed; its callers' futures are not set yet
        return outcomes

    sqlite_store._apply_writes = applied
    sqlite_store._write_batch = committed
    sqlite_store.SqliteSagaStore._commit_inline = committed_inline  # type: ignore[method-assign] # the kill point


async def run_batch(args: argparse.Namespace) -> None:
    participant = Participant(Path(args.effects), NO_KILL)
    participant.fsync = False
    store = open_store(args.store, args.target, args.schema, args.synchronous)
    engine = SagaEngine(store=store, lease=timedelta(milliseconds=args.lease_ms))
    flows = register_fleet(engine, participant)
    await store.open()
    die_in_a_shared_batch(store, args.kill_batch, args.batch_size, args.batch_number)
    await asyncio.gather(*fleet_runs(engine, flows, args.count, args.seed))
    say("SURVIVED batch")  # no batch was that large: a test failure


async def run_recoverer(args: argparse.Namespace) -> None:
    participant = Participant(Path(args.effects), KillPlan.parse(args.kill), announce=say)
    store = open_store(args.store, args.target, args.schema, args.synchronous)
    engine = SagaEngine(store=store, lease=timedelta(milliseconds=args.lease_ms))
    for name, build in FLOWS.items():
        engine.register(name, build(participant))
    outcomes: Counter[str] = Counter()
    rounds = 0
    while True:
        rounds += 1
        report = await engine.recover(limit=args.limit)
        outcomes.update(saga.outcome for saga in report.sagas)
        if not report.sagas:
            if not await store.list([StoredStatus.RUNNING, StoredStatus.COMPENSATING]):
                break
            await asyncio.sleep(0.02)  # some are still leased by another engine
    say(json.dumps({"owner": engine.owner, "outcomes": outcomes, "rounds": rounds}))
    await engine.aclose()


def fork_server(parser: argparse.ArgumentParser, stderr_dir: Path) -> None:
    """Fork one process per line of stdin (JSON: `[case, *arguments of saga mode]`), each
    running `saga` mode with everything already imported: dozens of crash cases without
    dozens of interpreter start-ups. Says `FORKED <case> <pid>`, then `EXIT <case> <code>` as
    each ends (-9: SIGKILL); a forked process's own lines go out as `<case> <line>`, its
    stderr to `<stderr_dir>/<case>.err`. No event loop, thread or connection exists here
    when it forks: each forked process starts its own."""
    import psycopg_pool  # noqa: F401, PLC0415 - warm the driver's import for the forks

    cases: dict[int, str] = {}
    for line in sys.stdin:
        case, *argv = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the forked process: run the case, never return to this loop
            code = 1
            try:
                _Output.prefix = f"{case} "
                error = os.open(stderr_dir / f"{case}.err", os.O_WRONLY | os.O_CREAT, 0o644)
                os.dup2(error, 2)
                asyncio.run(run_one(parser.parse_args(["saga", *argv])))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        cases[pid] = case
        say(f"FORKED {case} {pid}")
    while cases:
        pid, status = os.wait()
        say(f"EXIT {cases.pop(pid)} {os.waitstatus_to_exitcode(status)}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.crash.child")
    parser.add_argument(
        "mode",
        choices=["saga", "fleet", "batch", "recover", "fork-server", "wait-start", "wait-signal"],
    )
    parser.add_argument("--stderr-dir", default=".")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--target", default="", help="SQLite path or PostgreSQL DSN")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--effects", default="effects.log")
    parser.add_argument("--lease-ms", type=int, default=300)
    parser.add_argument("--scenario", default="line")
    parser.add_argument("--policy", default="compensate")
    parser.add_argument("--kill", default=str(NO_KILL))
    parser.add_argument("--kill-batch", choices=["before", "after"], default="after")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--batch-number", type=int, default=3)
    parser.add_argument("--saga-id", default=str(uuid.uuid4()))
    parser.add_argument("--order-id", type=int, default=1)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--midway", type=int, default=300)
    parser.add_argument("--seed", default="fleet")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--hold", action="store_true", help="wait-start: hold_waits=True")
    args = parser.parse_args()
    if args.mode in ("wait-start", "wait-signal"):
        store = open_store(args.store, args.target, args.schema)
        waits = start_and_wait if args.mode == "wait-start" else send_signals
        asyncio.run(waits(args, store, say))
        return
    if args.mode == "fork-server":
        fork_server(parser, Path(args.stderr_dir))
        return
    run = {"saga": run_one, "fleet": run_fleet, "batch": run_batch, "recover": run_recoverer}[
        args.mode
    ]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
