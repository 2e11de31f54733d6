"""The approval demo (examples/refund_approval.py) as a user runs it, on SQLite and
PostgreSQL: exit 0, nothing on stderr; the approved refund escalates its failed transfer to an
operator, whose "retry" completes it, with the approval and the decision in its log; the
refund nobody approved is compensated when its approval window closes."""

from __future__ import annotations

import asyncio

from tests.examples_support import run_example
from tests.postgres_support import postgres_schema


def run_demo(*location: str) -> str:
    return run_example("refund_approval.py", *location)


def check_demo(output: str) -> None:
    assert output.count("run() returned WAITING") == 2
    approved = output.split("=== the manager approves refund 1")[1]
    before_decision, after_decision = approved.split("=== the operator looked at the bank")
    assert (
        "refund 1: transfer escalated to an operator "
        "(ConnectionError: the bank's API is down (503))" in before_decision
    )
    assert "refund 1: 900 transferred" not in before_decision
    assert "refund 1: 900 transferred (approved by maria@finance)" in after_decision
    assert "refund 1: customer notified" in after_decision
    # once its approval window closed: at the last pass, or earlier on a busy machine
    assert "refund 2: hold released (not approved)" in approved
    lines = output.splitlines()
    assert [line.split(": ")[1] for line in lines if line.startswith("refund saga ")] == [
        "COMPLETED",
        "FAILED",
    ]
    assert lines[-1].endswith(
        "records the approval and the decision: signal approval-1; decision retry by omar@ops"
    )


def test_the_approval_demo_escalates_then_completes_on_sqlite() -> None:
    check_demo(run_demo())


async def test_the_approval_demo_runs_the_same_on_postgresql() -> None:
    async with postgres_schema() as (dsn, schema):
        check_demo(await asyncio.to_thread(run_demo, dsn, schema))
