"""Real processes killed with SIGKILL at every point of a saga, then recovered by another
engine on the same store (a SQLite file; the machine's PostgreSQL).

For each store, every case below runs in a process of its own, all at once (forked by one
child that imported the library once, to spare dozens of interpreter start-ups): it runs one
saga and dies where its kill plan says (inside step k+1 for every k, before or after
that step's side effect; after the run returned; during a retry backoff; inside a parallel
group with some members committed; during a compensation). The parent then waits out the
children's leases, recovers every crashed saga with one engine, and each test checks one case
from three sources: the participants' effects file (what really happened, with idempotency
keys), the saga log (`store.load(...).events`) and the `RecoveredSaga` result.

The at-least-once rule being checked: an attempt whose start is logged but whose outcome is
not may or may not have happened; under COMPENSATE it is compensated (if it has a
compensation), under RESUME it runs again with the same idempotency key. Everything that
committed is compensated exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import (
    PostgresSagaStore,
    RecoveredSaga,
    SagaEngine,
    SagaStatus,
    SagaStore,
    SqliteSagaStore,
    StepStatus,
    StoredStatus,
)
from spakky_saga.errors import SagaInterruptedError
from spakky_saga.store import SagaRecord
from spakky_saga.stores.sqlite import Synchronous
from tests.crash.flows import (
    FLOWS,
    GROUP_MEMBERS,
    LINE_STEPS,
    PIVOT_STEPS,
    WHENS,
    Effect,
    KillPlan,
    Participant,
    read_effects,
)
from tests.crash.harness import (
    Ended,
    check_handover,
    check_log_shape,
    kinds,
    recover_until_finished,
    run_forked,
    wait_for_leases,
)
from tests.postgres_support import postgres_schema

LEASE = timedelta(seconds=2)
"""The children's lease. Short enough to wait out once per store; not shorter, because a
heartbeat that fires before a saga's first write lands declares the saga lost (see
test_found_bugs.py), and 28 children starting at once can delay that write."""
POLICIES = ("compensate", "resume")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    scenario: str
    policy: str
    kill: KillPlan


def _cases() -> list[Case]:
    cases = []
    for policy in POLICIES:
        for k, name in enumerate(LINE_STEPS):
            for when in WHENS:
                kill = KillPlan("do", name, when)
                cases.append(Case(f"line-{policy}-k{k}-{when}", "line", policy, kill))
        cases.append(Case(f"line-{policy}-k{len(LINE_STEPS)}-end", "line", policy, KillPlan("end")))
        cases.append(Case(f"backoff-{policy}", "backoff", policy, KillPlan("sleep")))
        for when in WHENS:
            cases.append(
                Case(f"group-{policy}-{when}", "group", policy, KillPlan("do", "charge", when, 2))
            )
            cases.append(
                Case(f"rollback-{policy}-{when}", "rollback", policy, KillPlan("undo", "b", when))
            )
    for name in PIVOT_STEPS:  # under COMPENSATE: past the pivot, recovery goes forward
        for when in WHENS:
            kill = KillPlan("do", name, when)
            cases.append(Case(f"pivot-compensate-{name}-{when}", "pivot", "compensate", kill))
    for when in WHENS:
        # retry_compensation runs the failed refund as its attempt 2 (key `.../undo/2`)
        kill = KillPlan("undo", "charge", when, 2)
        cases.append(Case(f"retry-compensation-{when}", "refund", "compensate", kill))
    return cases


CASES = {case.name: case for case in _cases()}


@dataclass(frozen=True, slots=True)
class Crashed:
    """One case after the kill and the recovery."""

    case: Case
    saga_id: str
    child: Ended
    before: SagaRecord | None
    """The saga as the dead child left it."""
    recovered: RecoveredSaga | None
    after: SagaRecord
    """The saga after recovery, with its whole log."""
    effects: list[Effect]
    recoverer: str
    listed: StoredStatus | None
    """The saga's status in `store.list()` after recovery (None: not listed)."""

    @property
    def crasher(self) -> str:
        assert self.before is not None
        assert self.before.events
        owner = self.before.events[0].owner
        assert owner is not None
        return owner

    def actions(self) -> list[tuple[str, str]]:
        """(step, attempt) of every action that happened, in order."""
        return [(e.step, e.attempt) for e in self.effects if e.verb == "do"]

    def undos(self) -> list[str]:
        return [e.step for e in self.effects if e.verb == "undo"]

    def child_log(self) -> list[tuple[str, str | None, int]]:
        return kinds(e for e in self.after.events if e.owner == self.crasher)

    def recovery_log(self) -> list[tuple[str, str | None, int]]:
        """What recovery wrote, after the `saga_recovered` entry it starts with (if any)."""
        log = kinds(e for e in self.after.events if e.owner != self.crasher)
        if not log:
            return log
        assert log[0] == ("saga_recovered", None, 1), log[:1]
        return log[1:]

    def result_history(self) -> list[tuple[str, StepStatus, int, bool]]:
        assert self.recovered is not None
        assert self.recovered.result is not None
        return [
            (r.name, r.status, r.attempt, r.compensation) for r in self.recovered.result.history
        ]


async def _crash_and_recover(kind: str, directory: Path) -> dict[str, Crashed]:
    """Every case on a new store of `kind`; the children create its schema, racing."""
    if kind.startswith("sqlite"):
        path = str(directory / "sagas.db")
        synchronous: Synchronous = "NORMAL" if kind == "sqlite-normal" else "FULL"
        sqlite = SqliteSagaStore(path, synchronous=synchronous)
        args = ["--store=sqlite", f"--synchronous={synchronous}"]
        return await _batch(args, path, sqlite, directory)
    async with postgres_schema() as (dsn, schema):
        postgres = PostgresSagaStore(dsn, schema=schema)
        return await _batch(["--store=postgres", f"--schema={schema}"], dsn, postgres, directory)


async def _batch(
    store_args: list[str], target: str, store: SagaStore, directory: Path
) -> dict[str, Crashed]:
    effects = directory / "effects.log"
    ids = {name: str(uuid.uuid4()) for name in CASES}
    ended = await run_forked(
        {
            name: [
                *store_args,
                f"--target={target}",
                f"--effects={effects}",
                f"--lease-ms={LEASE // timedelta(milliseconds=1)}",
                f"--scenario={case.scenario}",
                f"--policy={case.policy}",
                f"--kill={case.kill}",
                f"--saga-id={ids[name]}",
            ]
            for name, case in CASES.items()
        },
        directory,
    )
    engine = SagaEngine(store=store, lease=timedelta(seconds=5))
    participant = Participant(effects)
    for name, build in FLOWS.items():
        engine.register(name, build(participant))
    try:
        await store.open()
        before = {name: await store.load(saga_id) for name, saga_id in ids.items()}
        await wait_for_leases(store, ids.values())
        recovered = await recover_until_finished(engine, store, list(ids.values()))
        after = {name: await store.load(saga_id) for name, saga_id in ids.items()}
        listed = {record.saga_id: record.status for record in await store.list(limit=1000)}
    finally:
        await engine.aclose()
    lines = read_effects(effects)
    crashed = {}
    for name, case in CASES.items():
        child = ended[name]
        record = after[name]
        assert record is not None, f"{name}: saga {ids[name]} is not in the store\n" + (
            child.describe()
        )
        crashed[name] = Crashed(
            case=case,
            saga_id=ids[name],
            child=child,
            before=before[name],
            recovered=recovered.get(ids[name]),
            after=record,
            effects=[e for e in lines if e.key.startswith(ids[name] + "/")],
            recoverer=engine.owner,
            listed=listed.get(ids[name]),
        )
    return crashed


@pytest.fixture(scope="module", params=["sqlite", "sqlite-normal", "postgres"])
def crashed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Crashed]:
    """Every case, crashed and recovered, on one store (run once per store): a SQLite file
    with synchronous FULL, one with NORMAL (documented to survive a process crash), and a
    PostgreSQL schema."""
    kind: str = request.param
    directory = tmp_path_factory.mktemp(f"crash-{kind}")
    return asyncio.run(_crash_and_recover(kind, directory))


def _case(crashed: dict[str, Crashed], name: str) -> Crashed:
    outcome = crashed[name]
    assert outcome.child.killed, outcome.child.describe()
    check_log_shape(outcome.after)
    return outcome


def _names(prefix: str) -> list[str]:
    return [name for name in CASES if name.startswith(prefix)]


def _line_kill(name: str) -> tuple[int, bool]:
    """(k, whether the killed step's effect happened) of a line case."""
    case = CASES[name]
    return LINE_STEPS.index(case.kill.step), case.kill.when == "after"


def _line_log_until(k: int) -> list[tuple[str, str | None, int]]:
    """The child's log when it died in step k+1: k commits, then the attempt it cut."""
    log: list[tuple[str, str | None, int]] = [("saga_started", None, 1)]
    for step in LINE_STEPS[:k]:
        log += [("step_started", step, 1), ("step_committed", step, 1)]
    return [*log, ("step_started", LINE_STEPS[k], 1)]


# --- every case -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_no_crashed_saga_is_lost_and_its_owners_never_overlap(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)

    assert outcome.listed is not None  # store.list() shows it...
    assert not outcome.listed.unfinished  # ...finished
    assert not outcome.after.status.unfinished
    assert outcome.after.owner is None  # released: nobody holds it any more
    assert outcome.before is not None  # begun before the kill
    assert outcome.before.events
    check_handover(outcome.after, {outcome.crasher: LEASE.total_seconds()})
    owners = {event.owner for event in outcome.after.events}
    assert owners <= {outcome.crasher, outcome.recoverer}


# --- after k committed steps ----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in _names("line-compensate") if "end" not in n])
def test_compensate_undoes_every_committed_step_once_and_the_cut_attempt_after_a_kill_in_a_step(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)
    k, happened = _line_kill(name)
    killed_step = LINE_STEPS[k]

    done = [(step, "1") for step in LINE_STEPS[:k]]
    assert outcome.actions() == done + ([(killed_step, "1")] if happened else [])
    # The cut attempt may have happened (at-least-once): compensated too, if it has one.
    undone = [step for step in reversed(LINE_STEPS[: k + 1]) if step != "notify"]
    assert outcome.undos() == undone
    assert all(e.attempt == "undo" for e in outcome.effects if e.verb == "undo")
    assert outcome.after.status is StoredStatus.FAILED
    assert outcome.recovered is not None
    assert outcome.recovered.outcome == "compensated"
    result = outcome.recovered.result
    assert result is not None
    assert result.status is SagaStatus.FAILED
    assert isinstance(result.error, SagaInterruptedError)
    assert outcome.result_history() == [
        *((step, StepStatus.COMMITTED, 1, False) for step in LINE_STEPS[:k]),
        *((step, StepStatus.COMPENSATED, 1, True) for step in undone),
    ]
    assert outcome.child_log() == _line_log_until(k)
    compensations = []
    for step in undone:
        compensations += [("compensation_started", step, 1), ("compensation_done", step, 1)]
    assert outcome.recovery_log() == [*compensations, ("saga_finished", None, 1)]


@pytest.mark.parametrize("name", [n for n in _names("line-resume") if "end" not in n])
def test_resume_reruns_the_cut_attempt_with_its_idempotency_key_and_completes(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)
    k, happened = _line_kill(name)
    killed_step = LINE_STEPS[k]

    expected = [(step, "1") for step in LINE_STEPS]
    if happened:  # it ran in the dead child and runs again: the same key both times
        expected.insert(k, (killed_step, "1"))
    assert outcome.actions() == expected
    keys = [e.key for e in outcome.effects if e.step == killed_step]
    assert len(set(keys)) == 1
    assert outcome.undos() == []
    assert outcome.after.status is StoredStatus.COMPLETED
    assert outcome.recovered is not None
    assert outcome.recovered.outcome == "completed"
    result = outcome.recovered.result
    assert result is not None
    assert result.status is SagaStatus.COMPLETED
    data = result.data
    assert (data.stock, data.charged, data.shipped, data.notified) == (1, 10, True, True)
    assert outcome.result_history() == [
        (step, StepStatus.COMMITTED, 1, False) for step in LINE_STEPS
    ]
    assert outcome.child_log() == _line_log_until(k)
    resumed = []
    for step in LINE_STEPS[k:]:
        resumed += [("step_started", step, 1), ("step_committed", step, 1)]
    assert outcome.recovery_log() == [*resumed, ("saga_finished", None, 1)]


@pytest.mark.parametrize("name", [n for n in CASES if n.endswith("-end")])
def test_a_saga_killed_after_it_finished_stays_completed_and_recovery_leaves_it_alone(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)

    assert outcome.before is not None
    assert outcome.before.status is StoredStatus.COMPLETED
    assert outcome.recovered is None
    assert outcome.actions() == [(step, "1") for step in LINE_STEPS]
    assert outcome.undos() == []
    assert outcome.recovery_log() == []
    assert outcome.child_log()[-1] == ("saga_finished", None, 1)


# --- during a retry backoff -----------------------------------------------------------------


def test_a_kill_during_a_retry_backoff_compensates_what_committed_and_not_the_failed_step(
    crashed: dict[str, Crashed],
) -> None:
    outcome = _case(crashed, "backoff-compensate")

    assert [(e.verb, e.step, e.attempt) for e in outcome.effects] == [
        ("do", "reserve", "1"),
        ("fail", "charge", "1"),
        ("undo", "reserve", "undo"),
    ]
    assert outcome.after.status is StoredStatus.FAILED
    assert outcome.after.failed_step == "charge"
    assert outcome.child_log() == [
        ("saga_started", None, 1),
        ("step_started", "reserve", 1),
        ("step_committed", "reserve", 1),
        ("step_started", "charge", 1),
        ("step_failed", "charge", 1),
        ("step_retrying", "charge", 2),
    ]
    assert outcome.recovery_log() == [
        ("compensation_started", "reserve", 1),
        ("compensation_done", "reserve", 1),
        ("saga_finished", "charge", 1),
    ]


def test_a_kill_during_a_retry_backoff_resumes_with_the_next_attempt(
    crashed: dict[str, Crashed],
) -> None:
    outcome = _case(crashed, "backoff-resume")

    assert [(e.verb, e.step, e.attempt) for e in outcome.effects] == [
        ("do", "reserve", "1"),
        ("fail", "charge", "1"),
        ("do", "charge", "2"),
        ("do", "ship", "1"),
    ]
    assert outcome.after.status is StoredStatus.COMPLETED
    assert outcome.result_history() == [
        ("reserve", StepStatus.COMMITTED, 1, False),
        ("charge", StepStatus.FAILED, 1, False),
        ("charge", StepStatus.COMMITTED, 2, False),
        ("ship", StepStatus.COMMITTED, 1, False),
    ]
    assert outcome.recovery_log() == [
        ("step_started", "charge", 2),
        ("step_committed", "charge", 2),
        ("step_started", "ship", 1),
        ("step_committed", "ship", 1),
        ("saga_finished", None, 1),
    ]


# --- inside a parallel group ----------------------------------------------------------------


@pytest.mark.parametrize("name", _names("group-compensate"))
def test_a_kill_inside_a_group_compensates_its_committed_and_cut_members_once(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)
    happened = CASES[name].kill.when == "after"

    # email and invoice committed; charge died in attempt 2; audit was still running.
    assert sorted(outcome.actions()) == sorted(
        [("reserve", "1"), ("email", "1"), ("invoice", "1")]
        + ([("charge", "2")] if happened else [])
    )
    undos = outcome.undos()
    assert sorted(undos[:-1]) == sorted(GROUP_MEMBERS)  # each member once, cut ones too
    assert undos[-1] == "reserve"  # reverse commit order: the first commit is undone last
    assert outcome.after.status is StoredStatus.FAILED
    child = outcome.child_log()
    assert ("step_committed", "email", 1) in child
    assert ("step_committed", "invoice", 1) in child
    assert ("step_started", "audit", 1) in child
    assert child[-1] == ("step_started", "charge", 2)
    assert outcome.recovery_log()[-1] == ("saga_finished", "charge", 1)  # its retry was cut


@pytest.mark.parametrize("name", _names("group-resume"))
def test_a_kill_inside_a_group_resumes_only_its_unfinished_members(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)
    happened = CASES[name].kill.when == "after"

    actions = outcome.actions()
    assert sorted(actions) == sorted(
        [("reserve", "1"), ("email", "1"), ("invoice", "1"), ("charge", "2"), ("audit", "1")]
        + [("ship", "1")]
        + ([("charge", "2")] if happened else [])
    )
    assert actions[-1] == ("ship", "1")
    assert outcome.undos() == []
    assert outcome.recovered is not None
    assert outcome.recovered.result is not None
    data = outcome.recovered.result.data
    # The members' results from before the kill (read from the log) merge with the new ones.
    assert (data.emailed, data.invoiced, data.audited, data.charged, data.shipped) == (
        True,
        True,
        True,
        10,
        True,
    )
    assert sorted(kind for kind in outcome.recovery_log() if kind[0] == "step_started") == [
        ("step_started", "audit", 1),
        ("step_started", "charge", 2),
        ("step_started", "ship", 1),
    ]


# --- during a compensation ------------------------------------------------------------------


@pytest.mark.parametrize("name", _names("rollback-"))
def test_a_kill_during_a_compensation_finishes_the_rollback_repeating_only_the_cut_one(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)
    happened = CASES[name].kill.when == "after"

    assert outcome.actions() == [("a", "1"), ("b", "1"), ("c", "1")]
    # Even under RESUME, a saga that was compensating is only ever compensated.
    assert outcome.undos() == ["c", *(["b"] if happened else []), "b", "a"]
    assert len({e.key for e in outcome.effects if e.step == "b" and e.verb == "undo"}) == 1
    assert outcome.after.status is StoredStatus.FAILED
    assert outcome.after.failed_step == "decline"
    assert outcome.child_log()[-3:] == [
        ("compensation_started", "c", 1),
        ("compensation_done", "c", 1),
        ("compensation_started", "b", 1),
    ]
    assert outcome.recovery_log() == [
        ("compensation_started", "b", 1),
        ("compensation_done", "b", 1),
        ("compensation_started", "a", 1),
        ("compensation_done", "a", 1),
        ("saga_finished", "decline", 1),
    ]


# --- during retry_compensation --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "retry-compensation-before",
        "retry-compensation-after",
    ],
)
def test_a_kill_during_retry_compensation_still_runs_the_failed_compensation(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)

    assert [(e.verb, e.step) for e in outcome.effects][:5] == [
        ("do", "reserve"),
        ("do", "charge"),
        ("fail", "decline"),
        ("fail", "charge"),  # the refund failed: COMPENSATION_FAILED
        ("undo", "reserve"),
    ]
    refunds = [e for e in outcome.effects if e.verb == "undo" and e.step == "charge"]
    assert refunds  # at least once: the refund started by the dead child runs again
    assert {e.key.split(":", 1)[1] for e in refunds} == {"charge/undo/2"}  # one key: attempt 2
    assert outcome.undos().count("reserve") == 1
    assert outcome.after.status is StoredStatus.FAILED
    assert outcome.recovered is not None
    assert outcome.recovered.outcome == "compensated"


# --- the point of no return -----------------------------------------------------------------


@pytest.mark.parametrize("name", _names("pivot-compensate"))
def test_under_compensate_a_killed_saga_is_compensated_before_its_pivot_and_goes_forward_after(
    crashed: dict[str, Crashed], name: str
) -> None:
    outcome = _case(crashed, name)
    killed = CASES[name].kill
    k = PIVOT_STEPS.index(killed.step)
    happened = killed.when == "after"
    assert outcome.recovered is not None

    if k <= PIVOT_STEPS.index("charge"):  # the pivot's commit is not in the log: roll back
        done = [(step, "1") for step in PIVOT_STEPS[: k + (1 if happened else 0)]]
        assert outcome.actions() == done
        assert outcome.undos() == list(reversed(PIVOT_STEPS[: k + 1]))
        assert outcome.after.status is StoredStatus.FAILED
        assert outcome.recovered.outcome == "compensated"
    else:  # past the pivot: forward, whatever the policy; nothing compensated
        expected = [(step, "1") for step in PIVOT_STEPS]
        if happened:  # it ran in the dead child and again after: the same key both times
            expected.insert(k, (killed.step, "1"))
        assert outcome.actions() == expected
        assert outcome.undos() == []
        assert outcome.after.status is StoredStatus.COMPLETED
        assert outcome.recovered.outcome == "completed"
