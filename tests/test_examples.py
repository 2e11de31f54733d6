"""The demos `make demo` runs keep working: each runs in a process of its own, as there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
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


def test_the_exploring_demo_finds_every_promise_kept_at_every_failure_point() -> None:
    output = run_example("explore_order_saga.py")

    assert output.splitlines()[0].startswith("explore_failures(CreateOrderSaga): ")
    assert " 0 violations" in output.splitlines()[0]
    assert "undo issue_ticket fails, reserve_stock fails" in output


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
