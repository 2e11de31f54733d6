"""Two application processes share a saga store; one dies (SIGKILL) in the middle of a saga;
the other's recovery service finishes it, nobody calling `recover()`. Real processes, as a
deployment runs them (tests/recovery_service_app/shop.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
