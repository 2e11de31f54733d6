"""Two application processes share a saga store; one dies (SIGKILL) in the middle of a saga;
the other's recovery service finishes it, nobody calling `recover()`. Real processes, as a
deployment runs them (tests/recovery_service_app/shop.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from spakky_saga import SqliteSagaStore
from tests.postgres_support import postgres_schema

ROOT = Path(__file__).resolve().parent.parent


def shop(store: list[str], mode: str, ledger: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.recovery_service_app.shop", *store, mode, str(ledger)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_both(store: list[str], tmp_path: Path) -> list[str]:
    ledger = tmp_path / "ledger.txt"
    serving = shop(store, "serve", ledger)
    assert serving.stdout is not None
    assert serving.stdout.readline().strip() == "serving"  # its recovery service is running
    placing = shop(store, "place", ledger)
    placing.wait(timeout=60)
    assert placing.returncode == -9  # killed while shipping
    out, err = serving.communicate(timeout=90)
    assert serving.returncode == 0, err
    assert err == ""
    assert out.strip() == "FAILED"
    lines = [line.split() for line in ledger.read_text().splitlines()]
    placed_by = lines[0][1]
    assert all(pid == placed_by for _, pid, _ in lines[:2])
    assert all(pid == str(serving.pid) for _, pid, _ in lines[2:])  # the sibling undid it
    return [f"{what} {key}" for what, _, key in lines]


def test_a_sibling_process_compensates_the_saga_of_one_that_died(tmp_path: Path) -> None:
    entries = run_both([str(tmp_path / "sagas.db")], tmp_path)

    assert entries == ["reserve 1:reserve/1", "ship 2:ship/1", "release 1:reserve/undo"]


def test_an_application_recovering_at_start_stops_cleanly(tmp_path: Path) -> None:
    store = [str(tmp_path / "sagas.db")]
    ledger = tmp_path / "ledger.txt"
    placing = shop(store, "place", ledger)
    placing.wait(timeout=60)
    assert placing.returncode == -9
    wait_for_the_lease_to_expire(tmp_path / "sagas.db")

    restarted = shop(store, "restart", ledger)
    out, err = restarted.communicate(timeout=60)

    assert restarted.returncode == 0, err
    assert err == ""  # no "Task was destroyed but it is pending" (the lease heartbeat)
    assert out.strip() == "FAILED"
    assert [line.split()[0] for line in ledger.read_text().splitlines()] == [
        "reserve",
        "ship",
        "release",  # order 1, recovered at start
        "reserve",
        "ship",  # order 2
    ]


def wait_for_the_lease_to_expire(path: Path) -> None:
    """Wait (real time: the dead process's lease is a real 1 s) until the store says its
    lease has run out, reading the store as it is, with a generous bound."""

    async def remaining() -> float:
        store = SqliteSagaStore(path)
        await store.open()
        try:
            [record] = await store.list()
            return (record.lease_expires or 0.0) - time.time()
        finally:
            await store.close()

    deadline = time.monotonic() + 30
    while (left := asyncio.run(remaining())) > 0:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(left + 0.05)


async def test_a_sibling_process_compensates_the_saga_of_one_that_died_on_postgresql(
    tmp_path: Path,
) -> None:
    async with postgres_schema() as (dsn, schema):
        entries = await asyncio.to_thread(run_both, [dsn, schema], tmp_path)

    assert entries == ["reserve 1:reserve/1", "ship 2:ship/1", "release 1:reserve/undo"]
