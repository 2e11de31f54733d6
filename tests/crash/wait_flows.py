"""Flows that wait, for the crash tests of waits (tests/crash/test_waits_killed.py), and the
child process modes that run them: start sagas and die while they wait (suspended in the
store, or held in the process), and send their signals from another process."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from spakky_saga import (
    AbstractSagaData,
    SagaEngine,
    SagaEventKind,
    SagaFlow,
    SagaStatus,
    SagaStore,
    saga_flow,
    sleep,
    step,
    wait_for,
)

SLEEP = timedelta(milliseconds=600)
"""The sleeping flow's sleep: it ends while no process runs the saga."""


class Parcel(AbstractSagaData):
    order_id: int
    reference: str = ""


@dataclass(frozen=True)
class Paid:
    reference: str


def paid(data: Parcel, signal: Paid) -> Parcel:
    return dataclasses.replace(data, reference=signal.reference)


class Effects:
    """What the participants did, one line a call, appended and flushed (survives SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def note(self, data: Parcel, what: str) -> None:
        with self.path.open("a") as out:
            out.write(f"{data.saga_id} {what}\n")
            out.flush()

    async def reserve(self, data: Parcel) -> None:
        self.note(data, "reserve")

    async def release(self, data: Parcel) -> None:
        self.note(data, "release")

    async def ship(self, data: Parcel) -> None:
        self.note(data, f"ship {data.reference or '-'}")

    def read(self) -> dict[str, list[str]]:
        done: dict[str, list[str]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                saga_id, what = line.split(" ", 1)
                done.setdefault(saga_id, []).append(what)
        return done


def flows(effects: Effects) -> dict[str, SagaFlow[Parcel]]:
    return {
        "waiting": saga_flow(
            step(effects.reserve, compensate=effects.release),
            wait_for(Paid, merge=paid, timeout=timedelta(hours=1)),
            effects.ship,
        ),
        "sleeping": saga_flow(
            step(effects.reserve, compensate=effects.release), sleep(SLEEP), effects.ship
        ),
    }


def engine_for(store: SagaStore, effects: Effects, *, hold: bool, lease_ms: int) -> SagaEngine:
    engine = SagaEngine(
        store=store,
        lease=timedelta(milliseconds=lease_ms),
        hold_waits=hold,
        signal_poll=timedelta(milliseconds=50),
        log=False,
    )
    for name, flow in flows(effects).items():
        engine.register(name, flow)
    return engine


def saga_ids(count: int, seed: str) -> list[uuid.UUID]:
    return [uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/{n}") for n in range(count)]


async def start_and_wait(
    args: argparse.Namespace, store: SagaStore, say: Callable[[str], None]
) -> None:
    """Start `--count` sagas of `--scenario`; once each is in its wait for sure (suspended:
    run() returned WAITING; held: its wait's attempt is in its log), say KILL-ME, and wait
    for the kill."""
    effects = Effects(Path(args.effects))
    engine = engine_for(store, effects, hold=args.hold, lease_ms=args.lease_ms)
    flow = flows(effects)[args.scenario]
    ids = saga_ids(args.count, args.seed)
    await store.open()
    runs = [
        asyncio.ensure_future(
            engine.run(flow, Parcel(order_id=n, saga_id=saga_id), saga_name=args.scenario)
        )
        for n, saga_id in enumerate(ids)
    ]
    if not args.hold:
        results = await asyncio.gather(*runs)
        assert all(r.status is SagaStatus.WAITING for r in results), results
    else:
        for _ in range(3000):  # a minute at most: the parent's CHILD_TIMEOUT ends it anyway
            if all([await _in_its_wait(store, str(saga_id)) for saga_id in ids]):
                break
            await asyncio.sleep(0.02)
    say("KILL-ME")
    await asyncio.Event().wait()


async def _in_its_wait(store: SagaStore, saga_id: str) -> bool:
    record = await store.load(saga_id)
    return record is not None and any(
        e.kind == SagaEventKind.STEP_STARTED.value and e.step_key == "2" for e in record.events
    )


async def send_signals(
    args: argparse.Namespace, store: SagaStore, say: Callable[[str], None]
) -> None:
    """Another process (a webhook): send each saga its signal, twice (a repeat by its id)."""
    engine = engine_for(store, Effects(Path(args.effects)), hold=True, lease_ms=args.lease_ms)
    repeats = 0
    for saga_id in saga_ids(args.count, args.seed):
        for _ in range(2):
            receipt = await engine.signal(saga_id, Paid(f"p-{saga_id}"), signal_id=f"s-{saga_id}")
            repeats += receipt.duplicate
    await engine.aclose()
    say(f"SENT {repeats}")
