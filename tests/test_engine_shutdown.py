"""A rollback running when the event loop shuts down is finished, not dropped: `asyncio.run()`
cancels every task when its main coroutine returns, and the engine carries the rollback on
for `shutdown_grace`, re-running the compensation the cancellation cut (same attempt, same
idempotency key). Past the grace period what did not finish is said on stderr, logging
configured or not. Run as a user runs it: `asyncio.run` in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = textwrap.dedent(
    """
    import asyncio
    import logging
    import sys
    from datetime import timedelta

    from spakky_saga import AbstractSagaData, SagaEngine, current_step, saga_flow, step

    if sys.argv[1] == "logging":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    grace = timedelta(seconds=float(sys.argv[2]))


    class Order(AbstractSagaData):
        order_id: int


    reached = asyncio.Event()
    calls = {"b": 0}


    async def act(data: Order) -> None:
        return None


    async def undo_a(data: Order) -> None:
        print("undo a", current_step().idempotency_key.rsplit("/", 1)[1], flush=True)


    async def undo_b(data: Order) -> None:
        calls["b"] += 1
        key = current_step().idempotency_key.rsplit("/", 1)[1]
        if calls["b"] == 1:
            print("undoing b", key, flush=True)
            reached.set()
            await asyncio.Event().wait()  # the payment API is slow: shutdown comes first
        print("undo b", key, flush=True)


    async def declined(data: Order) -> None:
        raise ValueError("card declined")


    async def main() -> None:
        a = step(act, name="a", compensate=undo_a)
        b = step(act, name="b", compensate=undo_b)
        flow = saga_flow(a, b, declined)
        engine = SagaEngine(shutdown_grace=grace)
        asyncio.get_running_loop().create_task(engine.run(flow, Order(order_id=1)))
        await reached.wait()
        print("main returns", flush=True)  # asyncio.run now cancels the saga's tasks


    asyncio.run(main())
    """
)


def run_program(tmp_path: Path, mode: str, grace: float) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "shop.py"
    script.write_text(PROGRAM)
    return subprocess.run(
        [sys.executable, str(script), mode, str(grace)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("mode", ["plain", "logging"])
def test_a_rollback_cut_by_loop_shutdown_finishes_within_the_grace_period(
    tmp_path: Path, mode: str
) -> None:
    ended = run_program(tmp_path, mode, grace=30.0)

    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.splitlines() == [
        "undoing b undo",
        "main returns",
        "undo b undo",  # run again, with the same idempotency key
        "undo a undo",
    ]
    if mode == "plain":
        assert ended.stderr == ""
    else:  # the cut attempt is on record, then nothing else is wrong
        assert re.sub(r"elapsed=\d+ms", "elapsed=Nms", ended.stderr).splitlines() == [
            "WARNING [saga=<anonymous> step=declined status=failed error=ValueError]",
            "ERROR [saga=<anonymous> step=b status=failed error=SagaCompensationInterruptedError]",
            "WARNING [saga=<anonymous> status=aborted error=CancelledError elapsed=Nms]",
        ]


@pytest.mark.parametrize("mode", ["plain", "logging"])
def test_without_a_grace_period_a_cut_rollback_is_said_on_stderr(tmp_path: Path, mode: str) -> None:
    ended = run_program(tmp_path, mode, grace=0.0)

    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.splitlines() == ["undoing b undo", "main returns"]
    warning = [
        line for line in ended.stderr.splitlines() if "SagaRollbackInterruptedWarning" in line
    ]
    assert len(warning) == 1
    assert "its rollback was cut off; compensations not finished: b, a" in warning[0]
