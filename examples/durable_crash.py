"""Demo: a saga process is killed halfway (SIGKILL); a new process recovers the saga.

Run with `make demo` (after the order demo), or `.venv/bin/python examples/durable_crash.py`
(`--keep FOLDER`: leave the store in FOLDER/sagas.db, to look at it with `spakky-saga show` or
`spakky-saga console --store FOLDER/sagas.db`, as `make demo` does).

The first process books a trip on a durable engine (SQLite): it charges the card, reserves a
seat, and is killed while booking the hotel. Nothing in memory survives. The second process
opens the same store, registers the same flow, waits for the dead engine's lease to expire and
calls `recover()`: the seat and the charge are compensated (and the hotel booking, which may
have happened: the at-least-once window), each exactly once. The participants write to a
ledger file, so what they did survives the kill too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from spakky_saga import (
    AbstractSagaData,
    SagaEngine,
    SagaFlow,
    SqliteSagaStore,
    current_step,
    saga_flow,
    step,
)
from spakky_saga.timeline import format_timeline, rows_from_events

LEASE = timedelta(milliseconds=300)


class TripData(AbstractSagaData):
    traveller: str
    card_charge: str | None = None
    seat: str | None = None
    hotel: str | None = None


class Ledger:
    """What the participants did, appended to a file (flushed: it survives a SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, what: str) -> None:
        with self.path.open("a") as file:
            file.write(f"{what}  [{current_step().idempotency_key.split('/', 1)[1]}]\n")
            file.flush()
            os.fsync(file.fileno())

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


def trip_flow(ledger: Ledger, *, die_in_hotel: bool) -> SagaFlow[TripData]:
    async def charge_card(data: TripData) -> TripData:
        ledger.write("charge card 420 EUR")
        return dataclasses.replace(data, card_charge="ch_420")

    async def refund_card(data: TripData) -> None:
        ledger.write(f"refund {data.card_charge}")

    async def reserve_seat(data: TripData) -> TripData:
        ledger.write("reserve seat 14C")
        return dataclasses.replace(data, seat="14C")

    async def release_seat(data: TripData) -> None:
        ledger.write(f"release seat {data.seat}")

    async def book_hotel(data: TripData) -> TripData:
        if die_in_hotel:
            os.kill(os.getpid(), signal.SIGKILL)  # the process dies here, mid-saga
        ledger.write("book hotel")
        return dataclasses.replace(data, hotel="h-7")

    async def cancel_hotel(data: TripData) -> None:
        ledger.write("cancel hotel (if it was booked)")

    return saga_flow(
        step(charge_card, compensate=refund_card),
        step(reserve_seat, compensate=release_seat),
        step(book_hotel, compensate=cancel_hotel),
    )


async def doomed_process(store_path: str, ledger_path: str) -> None:
    """The first process: runs the saga and is killed in its third step."""
    engine = SagaEngine(store=SqliteSagaStore(store_path), lease=LEASE, log=False)
    flow = trip_flow(Ledger(Path(ledger_path)), die_in_hotel=True)
    await engine.run(flow, TripData(traveller="Ada"), saga_name="book-trip")


async def recovering_process(store_path: str, ledger: Ledger) -> None:
    """The second process: registers the flow and recovers what the first one left."""
    store = SqliteSagaStore(store_path)
    engine = SagaEngine(store=store, lease=LEASE, log=False)
    engine.register("book-trip", trip_flow(ledger, die_in_hotel=False))
    unfinished = await store.list()
    print(f"the store holds {len(unfinished)} saga(s):")
    for record in unfinished:
        print(
            f"  {record.saga_id}  {record.saga_name}  {record.status.value}  owner={record.owner}"
        )
    await asyncio.sleep(LEASE.total_seconds() * 1.5)  # the dead engine's lease runs out
    report = await engine.recover()
    for saga in report.sagas:
        print(f"\nrecovered {saga.saga_id}: {saga.outcome}")
        assert saga.result is not None
        print(saga.result.format_timeline())
        logged = await store.load(saga.saga_id)
        assert logged is not None
        print(f"\nthe saga log ({logged.status.value}), as `spakky-saga show` prints it:")
        print(format_timeline(rows_from_events(logged.events)))
    await engine.aclose()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--doomed":
        asyncio.run(doomed_process(sys.argv[2], sys.argv[3]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--keep":
        folder = Path(sys.argv[2])
        folder.mkdir(parents=True, exist_ok=True)
        for earlier in [*folder.glob("sagas.db*"), folder / "ledger.txt"]:
            earlier.unlink(missing_ok=True)  # the store and ledger of an earlier demo
        demo(folder)
        return
    with tempfile.TemporaryDirectory() as directory:
        demo(Path(directory))


def demo(folder: Path) -> None:
    """Both processes, on a store and ledger in `folder`."""
    store_path = str(folder / "sagas.db")
    ledger = Ledger(folder / "ledger.txt")
    print("=== process 1: books a trip on a durable engine, and is killed halfway")
    child = subprocess.run(
        [sys.executable, __file__, "--doomed", store_path, str(ledger.path)], check=False
    )
    print(f"process 1 exited with {child.returncode} (SIGKILL is -{signal.SIGKILL})")
    print("the participants did:", *ledger.lines(), sep="\n  ")
    print("\n=== process 2: a new engine on the same store recovers the saga")
    asyncio.run(recovering_process(store_path, ledger))
    print("\nthe participants did, in all:", *ledger.lines(), sep="\n  ")


if __name__ == "__main__":
    main()
