"""The promise a saga keeps, checked against what its steps recorded.

`check(scenario, trace)` raises AssertionError listing every broken invariant:

- bookkeeping: every action attempt, compensation and backoff sleep that started also ended;
  attempts of a step are numbered 1, 2, ... and never overlap; every cancellation a step or
  compensation saw has a cause at that instant (the caller's cancel, the saga deadline, the
  step's or the compensation's own timeout);
- the forward pass: each action got the data every earlier item committed; a step is retried
  exactly when its strategy says so (after its backoff), skipped or failed otherwise; nothing
  runs after the saga failed, timed out or was cancelled, or after its deadline;
- rollback: a completed saga compensates nothing; otherwise every committed compensable step
  is compensated exactly once, in reverse order (a group's members in reverse declaration
  order, or together for compensation_order="concurrent"), one at a time, each given the
  latest data; nothing uncommitted is compensated;
- reporting: a failed compensation reaches the failure handler (once, with the latest data,
  after the last compensation) and the caller (SagaCompensationFailedError naming exactly the
  failed steps, chained to the handler's error), unless the caller cancelled;
- the caller gets its own CancelledError exactly when one of its cancels was delivered,
  otherwise a SagaResult (or SagaCompensationFailedError) whose status, failed step, error,
  data, skipped steps and history agree with the journal; no task is left running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from spakky_saga import (
    SagaCompensationFailedError,
    SagaParallelMergeConflictError,
    SagaResult,
    SagaStatus,
    SagaStepCancelledError,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaTimeoutError,
    StepStatus,
    StoredStatus,
)
from tests.faults.harness import (
    FIELDS,
    SHARED,
    Boom,
    Entry,
    HandlerError,
    Snapshot,
    Trace,
    snapshot,
)
from tests.faults.scenario import EIGHTH, QUARTER, GroupSpec, Item, Scenario, StepSpec


@dataclass(frozen=True, slots=True)
class Expect:
    """What an error must be: that very object, or an instance of `kind` (caused by
    `cause`, when given)."""

    exactly: BaseException | None = None
    kind: type[BaseException] | None = None
    cause: type[BaseException] | None = None

    def matches(self, error: BaseException | None) -> bool:
        if self.exactly is not None:
            return error is self.exactly
        if self.kind is None:
            return error is None
        if not isinstance(error, self.kind):
            return False
        return self.cause is None or isinstance(error.__cause__, self.cause)

    def __repr__(self) -> str:
        if self.exactly is not None:
            return f"the very {type(self.exactly).__name__}({self.exactly})"
        if self.kind is None:
            return "no error"
        return self.kind.__name__ + (f" from {self.cause.__name__}" if self.cause else "")


NO_ERROR = Expect()


@dataclass(frozen=True, slots=True)
class Record:
    """An expected history record."""

    name: str
    status: StepStatus
    attempt: int
    compensation: bool
    error: Expect
    offset: float
    elapsed: float


@dataclass(slots=True)
class Run:
    """One attempt, compensation or backoff: journal positions of its start and end."""

    start: int
    end: int | None = None


type FateKind = Literal["committed", "skipped", "failed", "cut", "not_started"]


@dataclass(slots=True)
class Fate:
    """How a step's part of the forward pass ended."""

    kind: FateKind
    error: Expect = NO_ERROR
    cause: str = ""
    """What cut it off ("caller", "saga"), for kind "cut"."""
    cut_attempt: int = 0
    cut_since: float = 0.0
    in_action: bool = False
    """Cut while an attempt ran (which gets a record), not while waiting to retry."""


@dataclass(slots=True)
class _Checker:
    scenario: Scenario
    trace: Trace
    problems: list[str] = field(default_factory=list)
    attempts: dict[int, list[Run]] = field(default_factory=dict)
    undos: dict[int, list[Run]] = field(default_factory=dict)
    backoffs: dict[tuple[int, int], Run] = field(default_factory=dict)
    used_backoffs: set[tuple[int, int]] = field(default_factory=set)
    handler_calls: list[int] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    forward: list[tuple[float, Record]] = field(default_factory=list)
    """Expected records of the forward pass, by the journal position of what they record."""
    skipped: list[tuple[int, str]] = field(default_factory=list)
    members: set[int] = field(default_factory=set)
    """Indexes of the steps that are members of a parallel group."""
    _commits: dict[int, Entry] | None = None

    @property
    def journal(self) -> list[Entry]:
        return self.trace.journal

    def problem(self, text: str) -> None:
        self.problems.append(text)

    # --- reading the journal ---------------------------------------------------------------

    def read(self) -> None:
        open_undo: dict[int, Run] = {}
        open_backoff: dict[int, Run] = {}
        for position, entry in enumerate(self.journal):
            kind = entry.kind
            if kind == "start":
                runs = self.attempts.setdefault(entry.step, [])
                if runs and runs[-1].end is None:
                    self.problem(
                        f"s{entry.step}: attempt {entry.attempt} started while "
                        f"attempt {runs[-1].start} was still running"
                    )
                if entry.attempt != len(runs) + 1:
                    self.problem(
                        f"s{entry.step}: attempt {entry.attempt} is not number {len(runs) + 1}"
                    )
                runs.append(Run(position))
            elif kind in ("commit", "raise", "cut", "wrong"):
                self.attempts[entry.step][-1].end = position
            elif kind == "undo":
                if entry.step in self.undos:
                    self.problem(f"s{entry.step} was compensated more than once")
                run = Run(position)
                self.undos.setdefault(entry.step, []).append(run)
                open_undo[entry.step] = run
            elif kind in ("undo_ok", "undo_raise", "undo_cut"):
                open_undo.pop(entry.step).end = position
            elif kind == "backoff":
                run = Run(position)
                self.backoffs[entry.step, entry.attempt] = run
                open_backoff[entry.step] = run
            elif kind in ("backoff_done", "backoff_cut"):
                open_backoff.pop(entry.step).end = position
            elif kind == "handler":
                self.handler_calls.append(position)
            elif kind == "cancel":
                self.cancels.append(position)
        for index, runs in self.attempts.items():
            for number, run in enumerate(runs, start=1):
                if run.end is None:
                    self.problem(f"s{index} attempt {number} started and never ended")
        for index in open_undo:
            self.problem(f"the compensation of s{index} started and never ended")
        for index in open_backoff:
            self.problem(f"a backoff sleep of s{index} started and never ended")

    def cause(self, position: int, since: float, timeout: int | None) -> str:
        """What cancelled the run that ended at `position` (started at `since`)."""
        now = self.journal[position].time
        if any(c < position and self.journal[c].time == now for c in self.cancels):
            return "caller"
        deadline = self.deadline
        if deadline is not None and now == deadline:
            return "saga"
        if timeout is not None and now == since + timeout * QUARTER:
            return "timeout"
        self.problem(
            f"journal entry {position} ({self.journal[position]}) was cancelled at t={now} "
            "with no cause at that instant (no caller cancel, deadline or own timeout)"
        )
        return "unexplained"

    @property
    def deadline(self) -> float | None:
        timeout = self.scenario.saga_timeout
        return None if timeout is None else timeout * EIGHTH

    # --- the forward pass ------------------------------------------------------------------

    def fate(self, spec: StepSpec) -> Fate:
        runs = self.attempts.get(spec.index, [])
        if not runs:
            return Fate("not_started")
        strategy = spec.strategy
        for number, run in enumerate(runs, start=1):
            last = number == len(runs)
            start = self.journal[run.start]
            assert run.end is not None
            end = self.journal[run.end]
            elapsed = end.time - start.time
            committed = Record(
                spec.name, StepStatus.COMMITTED, number, False, NO_ERROR, start.time, elapsed
            )
            if end.kind == "commit":
                self.forward.append((run.end, committed))
                if not last:
                    self.problem(f"{spec.name} ran again after attempt {number} committed")
                return Fate("committed")
            if end.kind == "cut":
                cause = self.cause(run.end, start.time, spec.timeout)
                if cause != "timeout":
                    if not last:
                        self.problem(f"{spec.name} ran again after attempt {number} was cut")
                    return Fate(
                        "cut", cause=cause, cut_attempt=number, cut_since=start.time, in_action=True
                    )
                error_object: BaseException | None = end.error
                expect = (
                    Expect(exactly=end.error)
                    if end.error is not None
                    else Expect(kind=SagaStepTimeoutError)
                )
            elif end.kind == "wrong":
                error_object = None
                expect = Expect(kind=SagaStepResultError)
            else:
                error_object = end.error
                expect = (
                    Expect(kind=SagaStepCancelledError, cause=asyncio.CancelledError)
                    if isinstance(end.error, asyncio.CancelledError)
                    else Expect(exactly=end.error)
                )
            failed = dataclasses.replace(committed, status=StepStatus.FAILED, error=expect)
            self.forward.append((run.end, failed))
            retry = number < strategy.attempts and _should_retry(strategy.retry_on, error_object)
            if retry and not strategy.broken:
                delay = strategy.backoff * QUARTER * 2 ** (number - 1)
                if delay > 0:
                    backoff = self.backoffs.get((spec.index, number))
                    self.used_backoffs.add((spec.index, number))
                    if backoff is None:
                        self.problem(f"{spec.name}: no backoff sleep before attempt {number + 1}")
                    elif backoff.end and self.journal[backoff.end].kind == "backoff_cut":
                        cause = self.cause(backoff.end, start.time, None)
                        if not last:
                            self.problem(f"{spec.name} ran again after its backoff was cut")
                        return Fate("cut", cause=cause, cut_attempt=number, cut_since=start.time)
                if last:
                    self.problem(
                        f"{spec.name}: attempt {number} failed with {error_object!r}, which "
                        f"{strategy} retries, but attempt {number + 1} never started"
                    )
                    return Fate("failed", expect)
                continue
            if not last:
                self.problem(
                    f"{spec.name}: attempt {number + 1} started although attempt {number}'s "
                    f"error {error_object!r} is not retried by {strategy}"
                )
            if retry:  # the strategy's own code raised: the step fails, whatever `then` says
                return Fate("failed", Expect(kind=RuntimeError, cause=OverflowError))
            if strategy.skips:
                self.skipped.append((run.end, spec.name))
                return Fate("skipped")
            return Fate("failed", expect)
        raise AssertionError("unreachable: the last attempt returns")

    def walk(self) -> tuple[SagaStatus, str | None, Expect, list[Record]]:
        """The expected status, failed step and error, and the records of what the saga
        timeout cut off."""
        for position, item in enumerate(self.scenario.items):
            stop = self.item_fate(item)
            if stop is not None:
                status, failed, error, cut = stop
                for later in self.scenario.items[position + 1 :]:
                    for spec in _steps_of(later):
                        if spec.index in self.attempts:
                            self.problem(f"{spec.name} ran after the saga stopped at {item.name}")
                return status, failed, error, cut
        return SagaStatus.COMPLETED, None, NO_ERROR, []

    def item_fate(self, item: Item) -> tuple[SagaStatus, str, Expect, list[Record]] | None:
        timed_out = Expect(kind=SagaTimeoutError)
        if isinstance(item, StepSpec):
            fate = self.fate(item)
            if fate.kind == "cut":
                return SagaStatus.TIMED_OUT, item.name, timed_out, self.cut_records(item, fate)
            if fate.kind == "failed":
                return SagaStatus.FAILED, item.name, fate.error, []
            if fate.kind == "not_started":
                if not self.cancels:
                    self.problem(f"the saga stopped before {item.name} for no reason")
                return SagaStatus.TIMED_OUT, item.name, timed_out, []
            return None
        fates = [self.fate(member) for member in item.members]
        if any(f.kind in ("cut", "not_started") for f in fates):
            if not self.cancels and any(f.kind == "not_started" for f in fates):
                self.problem(f"members of {item.name} never started, and nobody cancelled")
            # Each member cut while running is recorded (in declaration order), then the group.
            cut = [
                record
                for member, fate in zip(item.members, fates, strict=True)
                for record in self.cut_records(member, fate)
            ]
            started = [
                self.journal[self.attempts[m.index][0].start].time
                for m in item.members
                if m.index in self.attempts
            ]
            since = min(started) if started else self._cut_time()
            cut.append(
                Record(
                    item.name, StepStatus.FAILED, 1, False, timed_out, since,
                    self._cut_time() - since,
                )
            )  # fmt: skip
            return SagaStatus.TIMED_OUT, item.name, timed_out, cut
        for member, fate in zip(item.members, fates, strict=True):
            if fate.kind == "failed":
                return SagaStatus.FAILED, member.name, fate.error, []
        if self.conflicted(item):  # every member ended well, but their results conflict
            ends = [runs[-1].end or 0 for m in item.members if (runs := self.attempts.get(m.index))]
            merged_at = self.journal[max(ends)].time
            conflict = Expect(kind=SagaParallelMergeConflictError)
            self.forward.append(
                (
                    max(ends) + 0.5,
                    Record(item.name, StepStatus.FAILED, 1, False, conflict, merged_at, 0.0),
                )
            )
            return SagaStatus.FAILED, item.name, conflict, []
        return None

    def cut_records(self, spec: StepSpec, fate: Fate) -> list[Record]:
        """The record of `spec`'s attempt the saga timeout cut off; none when it was waiting
        to retry (or was not cut)."""
        if fate.kind != "cut" or not fate.in_action:
            return []
        since = fate.cut_since
        return [
            Record(
                spec.name, StepStatus.FAILED, fate.cut_attempt, False,
                Expect(kind=SagaTimeoutError), since, self._cut_time() - since,
            )
        ]  # fmt: skip

    def _cut_time(self) -> float:
        return self.deadline if self.deadline is not None else 0.0

    # --- the whole check -------------------------------------------------------------------

    def check(self) -> None:
        trace = self.trace
        self.members = {
            m.index
            for item in self.scenario.items
            if isinstance(item, GroupSpec)
            for m in item.members
        }
        self.read()
        cancelled = bool(self.cancels)
        if trace.tasks_left:
            self.problem(f"{trace.tasks_left} task(s) still alive when the caller got its answer")
        if trace.outcome == "raised":
            self.problem(f"the caller got an undocumented exception: {trace.error!r}")
            return
        if cancelled != (trace.outcome == "cancelled"):
            self.problem(
                f"the caller {'cancelled' if cancelled else 'never cancelled'} but got "
                f"{trace.outcome} ({trace.error!r})"
            )
        self.check_forward_timing()
        status, failed_step, error, cut = self.walk()
        for key in self.backoffs.keys() - self.used_backoffs:
            self.problem(f"s{key[0]}: a backoff sleep after attempt {key[1]} nobody asked for")
        latest = self.latest()
        self.check_inputs()
        completed = not cancelled and status is SagaStatus.COMPLETED
        self.check_rollback(completed, latest)
        failed_undos = self.check_reports(latest)
        if trace.durable:
            self.check_store(latest)
        if cancelled:
            return
        if failed_undos and trace.outcome != "compensation_failed":
            self.problem(
                f"compensations of {sorted(failed_undos)} failed but the caller got {trace.outcome}"
            )
        if not failed_undos and trace.outcome == "compensation_failed":
            self.problem(f"no compensation failed, yet the caller got {trace.error!r}")
        result = trace.result
        if result is None:
            self.problem(f"no result to check (outcome {trace.outcome})")
            return
        self.check_result(result, (status, failed_step, error, cut), latest)

    def check_store(self, latest: Snapshot) -> None:
        """A durable run leaves its saga finished in the store, with the outcome the caller
        saw, the latest data, and its lease released."""
        stored = self.trace.stored
        if stored is None:
            if self.trace.outcome != "cancelled" or self.attempts:
                self.problem("the durable run ran steps but left no saga in its store")
            return
        expected = {
            "cancelled": StoredStatus.CANCELLED,
            "compensation_failed": StoredStatus.COMPENSATION_FAILED,
        }.get(self.trace.outcome)
        if expected is None and self.trace.result is not None:
            expected = StoredStatus(self.trace.result.status.value)
        if stored.status is not expected:
            self.problem(f"the store says {stored.status.name}, the caller saw {expected}")
        if stored.owner is not None:
            self.problem(f"the finished saga is still leased to {stored.owner}")
        values = json.loads(stored.data)
        data = (UUID(values["saga_id"]), tuple(values[name] for name in FIELDS))
        if data != latest and (STORE_HAS_FAILED_GROUPS_DATA or data != self.before_last_group()):
            self.problem(f"the store has data {_show(data)}, the latest is {_show(latest)}")

    def before_last_group(self) -> Snapshot:
        """The latest data without what the last group that ran changed: what the store keeps
        when that group failed or was cut off (test_found_bugs)."""
        reached = [
            item
            for item in self.scenario.items
            if any(spec.index in self.attempts for spec in _steps_of(item))
        ]
        values = list(self.trace.input[1])
        for item in reached[:-1] if reached and isinstance(reached[-1], GroupSpec) else reached:
            self.apply(values, item)
        return self.trace.input[0], tuple(values)

    def check_forward_timing(self) -> None:
        deadline = self.deadline
        forward_kinds = ("start", "commit", "raise", "cut", "wrong", "backoff", "backoff_done")
        first_cancel = self.cancels[0] if self.cancels else len(self.journal)
        for position, entry in enumerate(self.journal):
            if entry.kind not in forward_kinds:
                continue
            if deadline is not None and entry.time > deadline:
                self.problem(f"{entry} happened after the saga deadline t={deadline}")
            if entry.kind == "start" and position > first_cancel:
                # Group members the saga's task created before it saw the cancel may still
                # start at that instant (cancel() only requests); nothing else may.
                at_cancel = entry.time == self.journal[first_cancel].time
                if not (at_cancel and entry.step in self.members):
                    self.problem(f"{entry} started after the caller cancelled")

    def commits(self) -> dict[int, Entry]:
        """The commit entry of every step that committed, by step index."""
        if self._commits is None:
            self._commits = {e.step: e for e in self.journal if e.kind == "commit"}
        return self._commits

    def conflicted(self, item: Item) -> bool:
        """Whether committed members of group `item` wrote the shared field differently."""
        return len(self.shared_writers(item)) > 1

    def shared_writers(self, item: Item) -> list[int]:
        commits = self.commits()
        return [
            spec.index
            for spec in _steps_of(item)
            if spec.shared and spec.index in commits and commits[spec.index].data is not None
        ]

    def apply(self, values: list[int], item: Item) -> None:
        """What `item`'s committed steps change in the data: each its own field (its attempt
        number), and the shared field when exactly one group member wrote it (writers that
        disagree conflict: the field keeps its value)."""
        commits = self.commits()
        for spec in _steps_of(item):
            commit = commits.get(spec.index)
            if commit is not None and commit.data is not None:
                values[spec.index - 1] = commit.attempt
        writers = self.shared_writers(item)
        if len(writers) == 1:
            values[SHARED] = writers[0]

    def latest(self) -> Snapshot:
        values = list(self.trace.input[1])
        for item in self.scenario.items:
            self.apply(values, item)
        return self.trace.input[0], tuple(values)

    def check_inputs(self) -> None:
        values = list(self.trace.input[1])
        for item in self.scenario.items:
            expected = (self.trace.input[0], tuple(values))
            for spec in _steps_of(item):
                for run in self.attempts.get(spec.index, []):
                    seen = self.journal[run.start].data
                    if seen != expected:
                        self.problem(
                            f"{spec.name} attempt {self.journal[run.start].attempt} got data "
                            f"{_show(seen)}, expected {_show(expected)}"
                        )
            self.apply(values, item)

    def committed(self) -> set[int]:
        return set(self.commits())

    def check_rollback(self, completed: bool, latest: Snapshot) -> None:
        committed = self.committed()
        compensable = {s.index for s in self.scenario.steps if s.undo is not None}
        undone = list(self.undos)
        if completed:
            if undone:
                self.problem(f"a completed saga compensated {_names(undone)}")
            return
        for index in undone:
            if index not in committed:
                self.problem(f"s{index} was compensated but never committed")
        missing = (committed & compensable) - set(undone)
        if missing:
            self.problem(f"committed compensable steps never compensated: {_names(missing)}")
        # Order: blocks in reverse flow order, one block at a time.
        blocks: list[list[int]] = []
        for item in self.scenario.items:
            done = [s.index for s in _steps_of(item) if s.index in committed & compensable]
            if isinstance(item, GroupSpec) and item.concurrent and len(done) > 1:
                blocks.append(done)
            else:
                blocks.extend([index] for index in done)
        blocks.reverse()
        order = [e.step for e in self.journal if e.kind == "undo"]
        expected_order = [index for block in blocks for index in block]
        position = 0
        for block in blocks:
            got = order[position : position + len(block)]
            if sorted(got) != sorted(block) or (len(block) == 1 and got != block):
                self.problem(f"compensation order {_names(order)}, expected {_show_blocks(blocks)}")
                break
            position += len(block)
        if len(order) != len(expected_order):
            return
        previous_ends: list[int] = []
        for block in blocks:
            starts = [self.undos[i][0].start for i in block]
            ends = [self.undos[i][0].end or 0 for i in block]
            if previous_ends and min(starts) < max(previous_ends):
                self.problem(
                    f"compensation of {_names(block)} started before the previous one ended"
                )
            if len(block) > 1 and all(self._yields(i) for i in block) and max(starts) > min(ends):
                self.problem(f"concurrent compensations {_names(block)} did not run together")
            previous_ends = ends
        for index, runs in self.undos.items():
            given = self.journal[runs[0].start].data
            if given != latest:
                self.problem(
                    f"the compensation of s{index} got {_show(given)}, the latest data is "
                    f"{_show(latest)}"
                )

    def _yields(self, index: int) -> bool:
        undo = next(s.undo for s in self.scenario.steps if s.index == index)
        assert undo is not None
        return undo.ticks > 0 or undo.delay > 0 or undo.outcome == "hang"

    def check_reports(self, latest: Snapshot) -> dict[str, Expect]:
        """Checks the handler; returns the failed compensations (name -> expected error)."""
        failed: dict[str, Expect] = {}
        timeout = self.scenario.compensation_timeout
        last_end = -1
        names = {spec.index: spec.name for spec in self.scenario.steps}
        for index, runs in sorted(self.undos.items(), key=lambda pair: pair[1][0].end or 0):
            run = runs[0]
            if run.end is None:
                continue
            last_end = max(last_end, run.end)
            end = self.journal[run.end]
            key = _unique_key(failed, names[index])
            if end.kind == "undo_raise":
                failed[key] = (
                    Expect(kind=SagaStepCancelledError, cause=asyncio.CancelledError)
                    if isinstance(end.error, asyncio.CancelledError)
                    else Expect(exactly=end.error)
                )
            elif end.kind == "undo_cut":
                since = self.journal[run.start].time
                if timeout is None or end.time != since + timeout * QUARTER:
                    self.problem(
                        f"the compensation of s{index} was cancelled at t={end.time}, not by "
                        "its compensation timeout (a rollback must not be cut)"
                    )
                failed[key] = Expect(kind=TimeoutError)
        calls = self.handler_calls
        if failed and self.scenario.handler != "none":
            if len(calls) != 1:
                self.problem(f"the failure handler was called {len(calls)} times, expected once")
            for call in calls:
                if call < last_end:
                    self.problem("the failure handler ran before the last compensation ended")
                if self.journal[call].data != latest:
                    self.problem(
                        f"the failure handler got {_show(self.journal[call].data)}, the latest "
                        f"data is {_show(latest)}"
                    )
        elif calls:
            self.problem(
                f"the failure handler was called {len(calls)} times, no compensation failed"
            )
        trace = self.trace
        if failed and trace.outcome == "compensation_failed":
            error = trace.error
            assert isinstance(error, SagaCompensationFailedError)
            if set(error.failures) != set(failed):
                self.problem(
                    f"SagaCompensationFailedError.failures names {sorted(error.failures)}, the "
                    f"failed compensations were {sorted(failed)}"
                )
            for name, expect in failed.items():
                if name in error.failures and not expect.matches(error.failures[name]):
                    self.problem(
                        f"failures[{name!r}] is {error.failures[name]!r}, expected {expect!r}"
                    )
            raises = self.scenario.handler in ("sync_raises", "async_raises")
            if raises and not isinstance(error.__cause__, HandlerError):
                self.problem(f"the handler's error is not the cause: {error.__cause__!r}")
        return failed

    def check_result(
        self,
        result: SagaResult[Any],
        expected_end: tuple[SagaStatus, str | None, Expect, list[Record]],
        latest: Snapshot,
    ) -> None:
        status, failed_step, error, cut = expected_end
        if result.status is not status:
            self.problem(f"status {result.status.name}, expected {status.name}")
        if result.failed_step != failed_step:
            self.problem(f"failed_step {result.failed_step!r}, expected {failed_step!r}")
        if not error.matches(result.error):
            self.problem(f"error {result.error!r}, expected {error!r}")
        data = snapshot(result.data)
        if data != latest:
            self.problem(f"result data {_show(data)}, expected {_show(latest)}")
        skipped = [name for _, name in sorted(self.skipped)]
        if list(result.skipped) != skipped:
            self.problem(f"skipped {list(result.skipped)}, expected {skipped}")
        expected = [record for _, record in sorted(self.forward, key=lambda pair: pair[0])]
        expected.extend(cut)
        names = {spec.index: spec.name for spec in self.scenario.steps}
        undo_runs = sorted(
            ((runs[0].end or 0, index, runs[0]) for index, runs in self.undos.items()),
        )
        for end_position, index, run in undo_runs:
            start, end = self.journal[run.start], self.journal[end_position]
            if end.kind == "undo_ok":
                status_, expect = StepStatus.COMPENSATED, NO_ERROR
            elif end.kind == "undo_cut":
                status_, expect = StepStatus.FAILED, Expect(kind=TimeoutError)
            elif isinstance(end.error, asyncio.CancelledError):
                status_ = StepStatus.FAILED
                expect = Expect(kind=SagaStepCancelledError, cause=asyncio.CancelledError)
            else:
                status_, expect = StepStatus.FAILED, Expect(exactly=end.error)
            expected.append(
                Record(names[index], status_, 1, True, expect, start.time, end.time - start.time)
            )
        self.check_history(result.history, expected)

    def check_history(self, history: Sequence[Any], expected: list[Record]) -> None:
        problems = []
        for position in range(max(len(history), len(expected))):
            got = history[position] if position < len(history) else None
            want = expected[position] if position < len(expected) else None
            if got is None or want is None:
                problems.append(f"  #{position}: got {got!r}, expected {want!r}")
                continue
            same = (
                got.name == want.name
                and got.status is want.status
                and got.attempt == want.attempt
                and got.compensation == want.compensation
                and want.error.matches(got.error)
                and got.offset_seconds == want.offset
                and got.elapsed_seconds == want.elapsed
            )
            if not same:
                problems.append(
                    f"  #{position}: got {got!r} offset={got.offset_seconds}, expected "
                    f"{want.name} {want.status.name} attempt={want.attempt} "
                    f"compensation={want.compensation} error={want.error!r} "
                    f"offset={want.offset} elapsed={want.elapsed}"
                )
        if problems:
            self.problem("history disagrees with the journal:\n" + "\n".join(problems))


STORE_HAS_FAILED_GROUPS_DATA = True
"""A durable saga's stored row misses what the committed members of a group that failed (or
was cut off) changed (test_found_bugs.py); set to True once that is fixed."""


def _should_retry(retry_on: str, error: BaseException | None) -> bool:
    if retry_on == "any":
        return True
    if retry_on in ("boom", "predicate"):
        return isinstance(error, Boom)
    return False  # a raising predicate counts as "no"


def _unique_key(failures: dict[str, Expect], name: str) -> str:
    """The key of a failed compensation in SagaCompensationFailedError.failures, as
    documented: the step's name, or "name #2", "name #3"... for later steps of that name."""
    key, number = name, 1
    while key in failures:
        number += 1
        key = f"{name} #{number}"
    return key


def _steps_of(item: Item) -> tuple[StepSpec, ...]:
    return item.members if isinstance(item, GroupSpec) else (item,)


def _names(indexes: Sequence[int] | set[int]) -> str:
    return "[" + ", ".join(f"s{i}" for i in indexes) + "]"


def _show_blocks(blocks: list[list[int]]) -> str:
    return " then ".join("{" + ", ".join(f"s{i}" for i in block) + "}" for block in blocks)


def _show(data: Snapshot | None) -> str:
    if data is None:
        return "None"
    written = {FIELDS[i]: value for i, value in enumerate(data[1]) if value}
    return f"{written or '{}'}"


def describe(trace: Trace) -> str:
    lines = [f"outcome: {trace.outcome} {trace.error!r}"]
    if trace.result is not None:
        lines.append(
            f"result: {trace.result.status.name} failed_step={trace.result.failed_step!r}"
            f" error={trace.result.error!r}"
        )
        lines.extend(f"  history: {record!r}" for record in trace.result.history)
    for position, entry in enumerate(trace.journal):
        extra = f" data={_show(entry.data)}" if entry.data is not None else ""
        extra += f" error={entry.error!r}" if entry.error is not None else ""
        lines.append(
            f"  {position:3} t={entry.time:<8} {entry.kind:<12} s{entry.step} "
            f"#{entry.attempt}{extra}"
        )
    return "\n".join(lines)


def check(scenario: Scenario, trace: Trace) -> None:
    """Raise AssertionError describing every invariant the run broke."""
    checker = _Checker(scenario, trace)
    checker.check()
    if checker.problems:
        raise AssertionError(
            "saga invariants broken:\n- " + "\n- ".join(checker.problems) + "\n" + describe(trace)
        )


def normalized(trace: Trace) -> object:
    """The trace without object identities: equal for runs that did the same thing."""

    def error(value: BaseException | None) -> object:
        return None if value is None else (type(value).__name__, str(value))

    result: object = None
    if trace.result is not None:
        r = trace.result
        result = (
            r.status,
            r.failed_step,
            error(r.error),
            snapshot(r.data),
            r.skipped,
            tuple(
                (h.name, h.status, h.attempt, h.compensation, error(h.error), h.offset, h.elapsed)
                for h in r.history
            ),
        )
    failures: object = None
    if isinstance(trace.error, SagaCompensationFailedError):
        failures = sorted(trace.error.failures)
    journal = [(e.kind, e.step, e.attempt, e.time, e.data, error(e.error)) for e in trace.journal]
    return (
        _canonical(journal),
        trace.outcome,
        result,
        None if trace.error is None else type(trace.error).__name__,
        failures,
        trace.tasks_left,
    )


_ABORTED = frozenset({"cut", "backoff_cut"})


def _canonical(journal: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`journal` with each run of same-instant cancellations sorted.

    asyncio's TaskGroup cancels its tasks in the order of a set of tasks (by address), so
    the members of a cancelled group see their cancellation in an order that differs from
    run to run; nothing else does.
    """
    out: list[tuple[Any, ...]] = []
    batch: list[tuple[Any, ...]] = []
    for entry in [*journal, ("end",)]:
        if batch and (entry[0] not in _ABORTED or entry[3] != batch[0][3]):
            out.extend(sorted(batch, key=repr))
            batch = []
        if entry[0] in _ABORTED:
            batch.append(entry)
        elif entry[0] != "end":
            out.append(entry)
    return out
