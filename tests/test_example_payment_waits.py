"""The waits demo (examples/payment_waits.py) as a user runs it, in processes of its own, on
SQLite and PostgreSQL: exit 0, nothing on stderr, the confirmed order completed by a process
that did not start it, the other compensated when its confirmation timed out. And the
`spakky-saga signal` command on a saga the demo's engine suspended."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.examples_support import EXAMPLES, run_example
from tests.postgres_support import postgres_schema


def run_demo(*location: str) -> str:
    return run_example("payment_waits.py", *location)


def check_demo(output: str) -> None:
    assert output.count("run() returned WAITING") == 2
    assert "the store holds 2 WAITING saga(s) and no process holds them" in output
    process_3 = output.split("=== process 3")[1]
    assert "order 1: payment pay-7781 captured" in process_3
    assert "order 1: shipped" in process_3
    # once its 2-second timeout passed: at the later pass, or at the first one already when
    # processes 1 and 2 took that long (a busy machine)
    assert "order 2: stock released (no payment)" in process_3
    assert output.rstrip().endswith("in the end: COMPLETED, FAILED")


def test_the_waits_demo_finishes_a_suspended_saga_in_another_process_on_sqlite() -> None:
    check_demo(run_demo())


async def test_the_waits_demo_runs_the_same_on_postgresql() -> None:
    async with postgres_schema() as (dsn, schema):
        check_demo(await asyncio.to_thread(run_demo, dsn, schema))


def cli(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spakky_saga", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=EXAMPLES,
        env=os.environ | {"PAYMENT_WAITS_STORE": store},
    )


def start(store: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "payment_waits.py"), "--start", store],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()[1].split("saga_id=")[1]


def test_the_signal_command_delivers_a_json_payload_to_a_waiting_saga(tmp_path: Path) -> None:
    store = str(tmp_path / "sagas.db")
    saga_id = start(store)
    listed = cli("list", "--store", store, "--status", "WAITING", "--json", store=store)
    shown = cli("show", saga_id, "--store", store, store=store)
    app = ("--app", "payment_waits:engine")

    sent = cli(
        "signal",
        saga_id,
        "payment_waits:PaymentConfirmed",
        "--json",
        '{"reference": "p-1"}',
        "--signal-id",
        "p-1",
        *app,
        store=store,
    )
    again = cli(
        "signal",
        saga_id,
        "payment_waits:PaymentConfirmed",
        "--json",
        '{"reference": "p-1"}',
        "--signal-id",
        "p-1",
        *app,
        store=store,
    )
    recovered = cli("recover", *app, store=store)

    waiting = [r["saga_id"] for r in json.loads(listed.stdout)]
    assert saga_id in waiting
    assert len(waiting) == 2  # the demo starts two orders
    assert 'waiting in "wait_for(PaymentConfirmed)" since' in shown.stdout
    assert sent.returncode == 0, sent.stderr
    assert f"{saga_id}: signal p-1 (PaymentConfirmed) stored;" in sent.stdout
    assert "a repeat" in again.stdout
    assert recovered.returncode == 0, recovered.stderr
    assert "payment p-1 captured" in recovered.stdout
    done = cli("show", saga_id, "--store", store, "--json", store=store)
    assert json.loads(done.stdout)["status"] == "COMPLETED"


def test_the_signal_command_says_what_is_wrong_with_a_payload_or_a_saga(tmp_path: Path) -> None:
    store = str(tmp_path / "sagas.db")
    saga_id = start(store)
    app = ("--app", "payment_waits:engine")
    kind = "payment_waits:PaymentConfirmed"

    malformed = cli("signal", saga_id, kind, "--json", '{"ref": 1}', *app, store=store)
    unknown = cli("signal", "nope", kind, "--json", '{"reference": "x"}', *app, store=store)
    wrong = cli(
        "signal",
        saga_id,
        "payment_waits:OrderData",
        "--json",
        '{"order_id": 1, "amount": 2}',
        *app,
        store=store,
    )

    assert malformed.returncode == 2
    assert "--json is not a valid PaymentConfirmed" in malformed.stderr
    assert unknown.returncode == 3
    assert "there is no saga nope" in unknown.stderr
    assert wrong.returncode == 2
    assert "no wait of saga" in wrong.stderr
