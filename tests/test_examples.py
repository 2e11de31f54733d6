"""The demos `make demo` runs keep working: each runs in a process of its own, as there."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.postgres_support import postgres_schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_order_demo_completes_one_saga_and_compensates_the_other() -> None:
    output = run_example("order_saga.py")

    assert "status      : COMPLETED" in output
    assert "status      : FAILED" in output
    assert "undo charge_payment  compensated" in output
    assert "refunded=['pay-2']" in output
    # order 3: confirmed (the pivot), then the delivery gives up: STUCK, nothing undone
    stuck = output.split("=== order 3")[1]
    assert "status      : STUCK" in stuck
    assert "failed_step : book_delivery" in stuck
    assert "confirm_order (pivot)  committed" in stuck
    assert "compensated" not in stuck
    assert stuck.rstrip().endswith("refunded=['pay-2'] confirmed=[3]")


def test_the_exploring_demo_finds_every_promise_kept_at_every_failure_point() -> None:
    output = run_example("explore_order_saga.py")

    assert output.splitlines()[0].startswith("explore_failures(CreateOrderSaga): ")
    assert " 0 violations" in output.splitlines()[0]
    assert "undo issue_ticket fails, confirm_order fails" in output
    # past the pivot nothing is compensated: the saga is STUCK, and that is a kept promise
    [delivery] = [line for line in output.splitlines() if "  book_delivery fails  " in line]
    assert delivery.split()[-3:] == ["STUCK", "-", "ok"]


def test_the_crash_demo_recovers_the_killed_saga_compensating_each_step_once() -> None:
    output = run_example("durable_crash.py")

    assert "process 1 exited with -9" in output
    assert ": compensated" in output
    ledger = [line.strip() for line in output.split("in all:")[1].strip().splitlines()]
    assert ledger == [
        "charge card 420 EUR  [1:charge_card/1]",
        "reserve seat 14C  [2:reserve_seat/1]",
        "cancel hotel (if it was booked)  [3:book_hotel/undo]",
        "release seat 14C  [2:reserve_seat/undo]",
        "refund ch_420  [1:charge_card/undo]",
    ]


def test_the_crash_demo_keeps_its_store_for_the_console_when_asked(tmp_path: Path) -> None:
    (tmp_path / "sagas.db").write_text("an earlier demo's store")
    run_example("durable_crash.py", "--keep", str(tmp_path))
    listed = subprocess.run(
        [sys.executable, "-m", "spakky_saga", "list", "--store", str(tmp_path / "sagas.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    [header, saga] = listed.stdout.splitlines()
    assert header.startswith("saga id")
    assert " book-trip  FAILED " in saga
    makefile = (EXAMPLES.parent / "Makefile").read_text()
    assert "examples/durable_crash.py --keep .demo" in makefile
    assert "spakky-saga console --store .demo/sagas.db" in makefile


PAYMENT_API_LOG = [
    "charge 40  [charge/1]",
    "charge 80 refused: gateway timeout  [charge/1]",
    "charge 80  [charge/2]",  # RetryWhileClosed: the breaker was closed
    "refund ch_2 refused (try 1)  [charge/undo]",
    "refund ch_2 refused (try 2)  [charge/undo/2]",  # the refund's own Retry(4)
    "refund ch_2  [charge/undo/3]",
]


def check_payment_policies(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "payment_policies.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    output = done.stdout
    assert "order 1: COMPLETED" in output
    assert "order 2: FAILED" in output
    ledger = [line.strip() for line in output.split("in order:")[1].strip().splitlines()]
    assert ledger == PAYMENT_API_LOG


def test_the_policies_demo_retries_by_its_own_strategy_and_its_refund_by_its_policy() -> None:
    check_payment_policies()  # a temporary SQLite file


async def test_the_policies_demo_runs_the_same_on_postgresql() -> None:
    async with postgres_schema() as (dsn, schema):
        await asyncio.to_thread(check_payment_policies, dsn, schema)
