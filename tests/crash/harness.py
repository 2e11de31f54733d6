"""The parent's side of the crash tests: start child processes, kill them, wait out their
leases, recover, and read back what the log and the participants say.

Synchronisation with a child is by its stdout lines (it prints KILL-ME / MIDWAY; the parent
answers with SIGKILL) or by its own SIGKILL: never by sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import spakky_saga
from spakky_saga import RecoveredSaga, SagaEngine, SagaStore
from spakky_saga.store import SagaRecord, StoredEvent, StoredStatus
from tests.crash.flows import FLEET_STEPS, KILL_ME, read_effects

ROOT: Final = Path(__file__).resolve().parents[2]
"""The repository root: `python -m tests.crash.child` runs from here."""
SRC: Final = Path(spakky_saga.__file__).resolve().parents[1]
"""Where the parent imports spakky_saga from: the child imports the same code."""
CHILD_TIMEOUT: Final = 60.0
COMPENSABLE: Final = ("reserve", "charge", "ship")
"""The fleet flow's steps with a compensation."""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


@dataclass(frozen=True, slots=True)
class Ended:
    """How a child process ended."""

    pid: int
    returncode: int
    stdout: list[str]
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def describe(self) -> str:
        return (
            f"child {self.pid} ended with {self.returncode}\nstdout: {self.stdout}\n"
            f"stderr:\n{self.stderr[-3000:]}"
        )


async def run_child(*args: str, kill_on: Iterable[str] = (KILL_ME,)) -> Ended:
    """Run `python -m tests.crash.child *args` to its end; SIGKILL it as soon as it prints a
    line in `kill_on`. Fails (killing it) if it takes longer than CHILD_TIMEOUT."""
    killers = set(kill_on)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.crash.child",
        *args,
        cwd=ROOT,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    lines: list[str] = []
    errors = asyncio.ensure_future(process.stderr.read())

    async def read() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if line in killers and process.returncode is None:
                process.send_signal(signal.SIGKILL)

    try:
        async with asyncio.timeout(CHILD_TIMEOUT):
            await read()
            stderr = (await errors).decode()
            returncode = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"child {' '.join(args)} still ran after {CHILD_TIMEOUT} s; stdout: {lines}"
        ) from None
    return Ended(process.pid, returncode, lines, stderr)


async def run_forked(cases: dict[str, list[str]], stderr_dir: Path) -> dict[str, Ended]:
    """Run each case (`saga` mode arguments) in a process of its own, forked by one
    `fork-server` child that imported everything once; SIGKILL a case's process when it
    prints KILL-ME. How each ended, by case."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.crash.child",
        "fork-server",
        f"--stderr-dir={stderr_dir}",
        cwd=ROOT,
        env=child_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    assert server.stderr is not None
    server.stdin.write(
        "".join(json.dumps([case, *args]) + "\n" for case, args in cases.items()).encode()
    )
    await server.stdin.drain()
    server.stdin.close()
    errors = asyncio.ensure_future(server.stderr.read())
    pids: dict[str, int] = {}
    codes: dict[str, int] = {}
    lines: dict[str, list[str]] = {case: [] for case in cases}
    to_kill: set[str] = set()

    async def read() -> None:
        assert server.stdout is not None
        async for raw in server.stdout:
            head, _, rest = raw.decode().rstrip("\n").partition(" ")
            if head == "FORKED":
                case, pid = rest.split(" ")
                pids[case] = int(pid)
                if case in to_kill:
                    os.kill(pids[case], signal.SIGKILL)
            elif head == "EXIT":
                case, code = rest.split(" ")
                codes[case] = int(code)
            else:
                lines[head].append(rest)
                if rest == KILL_ME and head not in codes:
                    to_kill.add(head)
                    if head in pids:
                        os.kill(pids[head], signal.SIGKILL)

    try:
        async with asyncio.timeout(CHILD_TIMEOUT):
            await read()
            server_errors = (await errors).decode()
            await server.wait()
    except TimeoutError:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.kill()
        await server.wait()
        raise AssertionError(f"crash cases still ran after {CHILD_TIMEOUT} s: {lines}") from None
    assert server.returncode == 0, f"the fork server failed:\n{server_errors}"
    ended = {}
    for case in cases:
        assert case in codes, f"case {case} never ended; fork server:\n{server_errors}"
        stderr = stderr_dir / f"{case}.err"
        ended[case] = Ended(
            pids[case], codes[case], lines[case], stderr.read_text() if stderr.exists() else ""
        )
    return ended


async def wait_for_leases(store: SagaStore, saga_ids: Iterable[str]) -> None:
    """Sleep until every lease of `saga_ids` has run out (by the store's own records)."""
    expiries = []
    for saga_id in saga_ids:
        record = await store.load(saga_id)
        if record is not None and record.lease_expires is not None:
            expiries.append(record.lease_expires)
    if expiries:
        await asyncio.sleep(max(0.0, max(expiries) - time.time()) + 0.01)


async def recover_until_finished(
    engine: SagaEngine, store: SagaStore, saga_ids: Sequence[str], *, deadline: float = 60.0
) -> dict[str, RecoveredSaga]:
    """Call `recover()` until none of `saga_ids` is unfinished; what happened to each."""
    recovered: dict[str, RecoveredSaga] = {}
    wanted = set(saga_ids)
    async with asyncio.timeout(deadline):
        while True:
            report = await engine.recover(limit=1000)
            for saga in report.sagas:
                assert saga.saga_id not in recovered or recovered[saga.saga_id].outcome in (
                    "refused",
                    "stopped",
                ), f"saga {saga.saga_id} was recovered twice: {recovered[saga.saga_id]}, {saga}"
                recovered[saga.saga_id] = saga
            left = [
                saga_id
                for saga_id in wanted
                if (record := await store.load(saga_id)) is not None and record.status.unfinished
            ]
            if not left:
                return recovered
            await asyncio.sleep(0.02)


def owner_runs(events: Sequence[StoredEvent]) -> list[str | None]:
    """The owners of a log, one entry per run of consecutive events by the same owner."""
    runs: list[str | None] = []
    for event in events:
        if not runs or runs[-1] != event.owner:
            runs.append(event.owner)
    return runs


def check_log_shape(record: SagaRecord) -> None:
    """A log is numbered 1..n without gaps, every entry names its owner, and no owner comes
    back after another one wrote: no two engines ever ran the saga at once."""
    seqs = [event.seq for event in record.events]
    assert seqs == list(range(1, len(seqs) + 1)), f"saga {record.saga_id}: log seqs {seqs}"
    assert all(event.owner for event in record.events), f"saga {record.saga_id}: an ownerless entry"
    runs = owner_runs(record.events)
    assert len(runs) == len(set(runs)), f"saga {record.saga_id}: owners interleave: {runs}"


def check_handover(record: SagaRecord, leases: dict[str, float]) -> None:
    """Where one owner's entries end and another's begin, the next owner wrote only after
    the previous one's lease (`leases[owner]`) had run out. A write leaves at least half a
    lease (it extends the lease when less is left), so the next owner's first entry is at
    least half a lease after the previous owner's last. With `check_log_shape`, no two
    engines ever ran the saga at once."""
    events = record.events
    for before, after in itertools.pairwise(events):
        if before.owner == after.owner or before.owner not in leases:
            continue
        lease = leases[before.owner]
        assert after.at >= before.at + lease / 2 - 0.005, (
            f"saga {record.saga_id}: {after.owner} wrote {after.at - before.at:.3f} s after "
            f"{before.owner}'s last entry, before its {lease} s lease ran out"
        )


def kinds(events: Iterable[StoredEvent]) -> list[tuple[str, str | None, int]]:
    """(kind, step, attempt) of each entry: what a log says happened, in order."""
    return [(event.kind, event.step, event.attempt) for event in events]


def check_fleet_effects(
    record: SagaRecord, effects_of: dict[str, list[tuple[str, str, str]]]
) -> None:
    """What the participants saw agrees with a fleet saga's log: a COMPLETED saga did every
    step (the step its first owner's death cut maybe twice, with one key), a compensated one
    undid each step its first owner had started, once, in reverse order."""
    effects = effects_of.get(record.saga_id, [])
    a_owner = record.events[0].owner
    started = {
        e.step or "" for e in record.events if e.owner == a_owner and e.kind == "step_started"
    }
    actions = [(step, key) for verb, step, key in effects if verb == "do"]
    undos = [step for verb, step, _ in effects if verb == "undo"]
    for step in FLEET_STEPS:
        keys = {key for name, key in actions if name == step}
        assert len(keys) <= 1, f"saga {record.saga_id}: {step} ran with several keys {keys}"
    repeated = [step for step, count in Counter(s for s, _ in actions).items() if count > 1]
    assert len(repeated) <= 1, f"saga {record.saga_id}: {repeated} all ran twice"
    if record.status is StoredStatus.COMPLETED:
        done = {step for step, _ in actions}
        assert done == set(FLEET_STEPS), f"saga {record.saga_id}: {effects}"
        assert undos == [], f"saga {record.saga_id}: {effects}"
    else:
        assert record.status is StoredStatus.FAILED, f"saga {record.saga_id}: {record.status}"
        assert record.saga_name == "fleet_compensate"
        assert not repeated, f"saga {record.saga_id}: {effects}"
        assert undos == [s for s in reversed(COMPENSABLE) if s in started], (
            f"saga {record.saga_id}: undid {undos}, A had started {sorted(started)}"
        )


def effects_by_saga(path: Path) -> dict[str, list[tuple[str, str, str]]]:
    by_saga: dict[str, list[tuple[str, str, str]]] = {}
    for effect in read_effects(path):
        by_saga.setdefault(effect.key.split("/", 1)[0], []).append(
            (effect.verb, effect.step, effect.key)
        )
    return by_saga
