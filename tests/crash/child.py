"""The process that dies: `python -m tests.crash.child <mode> ...` (run from the repository
root, `src` on PYTHONPATH).

Modes:
- `saga`: run one saga of a flow from `tests.crash.flows` on a durable engine and die where
  `--kill` says (it prints a line only if it survives, which the parent treats as a failure);
- `fleet`: start `--count` slow sagas at once (half of them RESUME, half COMPENSATE), print
  MIDWAY once every saga has begun and `--midway` actions are done, and go on until killed;
- `recover`: call `recover()` in a loop until no saga is unfinished, then print a JSON
  summary of what this process did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

from spakky_saga import (
    PostgresSagaStore,
    RecoveryPolicy,
    SagaCompensationFailedError,
    SagaEngine,
    SagaStore,
    SqliteSagaStore,
    StoredStatus,
)
from tests.crash.flows import FLOWS, MIDWAY, NO_KILL, KillPlan, Order, Participant, die


def open_store(kind: str, target: str, schema: str) -> SagaStore:
    if kind == "sqlite":
        return SqliteSagaStore(target)
    return PostgresSagaStore(target, schema=schema, max_size=10)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run_one(args: argparse.Namespace) -> None:
    participant = Participant(Path(args.effects), KillPlan.parse(args.kill))
    engine = SagaEngine(
        store=open_store(args.store, args.target, args.schema),
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
    flows = {name: FLOWS[name](participant) for name in ("fleet_compensate", "fleet_resume")}
    engine.register("fleet_compensate", flows["fleet_compensate"])
    engine.register("fleet_resume", flows["fleet_resume"], recovery=RecoveryPolicy.RESUME)
    names = ["fleet_compensate", "fleet_resume"]
    runs = [
        engine.run(
            flows[names[index % 2]],
            Order(order_id=index, saga_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{args.seed}/{index}")),
            saga_name=names[index % 2],
        )
        for index in range(args.count)
    ]

    async def watch() -> None:
        while len(participant.sagas_started) < args.count or participant.actions_done < args.midway:
            participant.progress.clear()
            await participant.progress.wait()
        say(MIDWAY)

    await asyncio.gather(watch(), *runs)
    say("SURVIVED fleet")  # every saga finished before the parent killed us


async def run_recoverer(args: argparse.Namespace) -> None:
    participant = Participant(Path(args.effects), NO_KILL)
    store = open_store("postgres", args.target, args.schema)
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.crash.child")
    parser.add_argument("mode", choices=["saga", "fleet", "recover"])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--target", required=True, help="SQLite path or PostgreSQL DSN")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--effects", required=True)
    parser.add_argument("--lease-ms", type=int, default=300)
    parser.add_argument("--scenario", default="line")
    parser.add_argument("--policy", default="compensate")
    parser.add_argument("--kill", default=str(NO_KILL))
    parser.add_argument("--saga-id", default=str(uuid.uuid4()))
    parser.add_argument("--order-id", type=int, default=1)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--midway", type=int, default=300)
    parser.add_argument("--seed", default="fleet")
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    run = {"saga": run_one, "fleet": run_fleet, "recover": run_recoverer}[args.mode]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
