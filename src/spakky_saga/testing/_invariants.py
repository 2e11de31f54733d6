"""The promises a saga run keeps, checked against what its actions and compensations
recorded (see `Check` for the list, docs/testing.md for the reasons).

The checks read the calls the injectors recorded and what the caller got back (a result, a
SagaCompensationFailedError carrying one, or CancelledError), never the engine's internals:
an engine that breaks a promise is caught however it is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from spakky_saga.errors import (
    SagaCompensationFailedError,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaTimeoutError,
)
from spakky_saga.result import SagaResult
from spakky_saga.status import SagaStatus, StepStatus
from spakky_saga.testing._injection import Call, Group, Shape, Site
from spakky_saga.testing.report import Check, Scenario, Violation, describe_error

_UNKNOWN: Any = object()
"""The latest data, when a merge made it (the checks do not merge themselves)."""

_DUPLICATE_SUFFIX = re.compile(r" #\d+$")


@dataclass(slots=True)
class Observed:
    """One run: its calls, and how it ended for the caller."""

    calls: list[Call]
    input_data: object
    result: SagaResult[Any] | None
    raised: BaseException | None
    cancel_issued: bool
    aborted_data: object | None
    """The data of the SAGA_ABORTED event (what a cancelled run rolled back with)."""
    finished_at: int
    """The recorder's position when the caller got the outcome."""
    signals_sent: dict[str, object] = field(default_factory=dict)
    """By wait site key: the signal the explorer sent to that `wait_for`."""
    signals_taken: dict[str, list[object]] = field(default_factory=dict)
    """By wait site key: the signals its SIGNAL_RECEIVED events said it took."""
    reloaded: bool = False
    """Whether its data may have gone through the store (a suspended saga, resumed): then
    data is compared by value, not by identity."""


def same_data(one: object, other: object) -> bool:
    """Whether two saga data objects hold the same values (saga data compares by identity)."""
    if type(one) is not type(other) or not dataclasses.is_dataclass(one):
        return one == other
    return all(getattr(one, f.name) == getattr(other, f.name) for f in dataclasses.fields(one))


def committed(call: Call) -> bool:
    """Whether the engine saw this action call succeed (a result of the wrong type fails)."""
    return (
        call.ended is not None
        and call.raised is None
        and (call.returned is None or isinstance(call.returned, type(call.data)))
    )


def fold_retried(calls: list[Call]) -> list[Call]:
    """The compensation calls that count, one per compensation: an attempt that failed and
    that the compensation's own policy retried (a later call of the same step with the next
    attempt number) is part of that compensation, not a failure of its own."""
    attempts = {(c.site.key, c.step_attempt) for c in calls if c.site is not None}
    return [
        c
        for c in calls
        if not (
            c.raised is not None
            and c.site is not None
            and c.step_attempt is not None
            and (c.site.key, c.step_attempt + 1) in attempts
        )
    ]


@dataclass(slots=True)
class _Checker:
    scenario: Scenario
    shape: Shape
    run: Observed
    baseline: bool
    found: list[Violation] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)

    def add(self, check: Check, message: str) -> None:
        self.found.append(Violation(check, self.scenario, message))

    # --- helpers ------------------------------------------------------------------------------

    def calls(self, kind: str) -> list[Call]:
        return [call for call in self.run.calls if call.kind == kind]

    def of_site(self, site: Site) -> list[Call]:
        return [c for c in self.run.calls if c.kind == "action" and c.site is site]

    def differ(self, data: object, expected: object) -> bool:
        """Whether `data` is not `expected` (nor, for a reloaded run, equal to it)."""
        return data is not expected and not (self.run.reloaded and same_data(data, expected))

    def label(self, data: object) -> str:
        label = self.labels.get(id(data))
        if label is None:
            others = sum(text.startswith("another data object") for text in self.labels.values())
            label = f"another data object #{others + 1} ({type(data).__name__})"
            self.labels[id(data)] = label
        return label

    def committed_compensable(self) -> list[Site]:
        return [
            site
            for site in self.shape.sites
            if site.compensable and any(committed(c) for c in self.of_site(site))
        ]

    def expected_latest(self) -> object:
        """The data after the last committed item, or _UNKNOWN after a merge that changed it."""
        latest = self.run.input_data
        for item in self.shape.items:
            if isinstance(item, Group):
                outputs = [
                    c.returned
                    for member in item.members
                    for c in self.of_site(member)
                    if committed(c) and c.returned is not None
                ]
                merged = item.custom_merge and any(self.of_site(m) for m in item.members)
                if merged or any(out is not latest for out in outputs):
                    latest = _UNKNOWN
                continue
            for call in self.of_site(item):
                if committed(call) and call.returned is not None:
                    latest = call.returned
        return latest

    # --- the checks ---------------------------------------------------------------------------

    def check(self) -> list[Violation]:
        run = self.run
        self.labels[id(run.input_data)] = "the input data"
        for call in self.calls("action"):
            if committed(call) and call.returned is not None:
                self.labels.setdefault(id(call.returned), f"the data {call.label} returned")
        self.left_running()
        result = self.outcome()
        if result is not None and not run.cancel_issued:
            self.status(result)
            self.history(result)
        if result is not None or run.cancel_issued:
            self.rollback(result)
        self.uninjected_compensation_errors()
        self.signals()
        return self.found

    def signals(self) -> None:
        """Each `wait_for` took its signal once if it committed, and nothing otherwise."""
        run = self.run
        for site in self.shape.waits:
            if site.signal_type is None:
                continue
            taken = run.signals_taken.get(site.key, [])
            sent = run.signals_sent.get(site.key, _UNKNOWN)
            wrong = [s for s in taken if s is not sent and s != sent]
            if wrong:
                self.add(
                    Check.SIGNAL_ONCE,
                    f"{site.label} took {_times(len(wrong), 'signal')} the explorer never sent it",
                )
            commits = sum(committed(c) for c in self.of_site(site))
            if len(taken) != commits:
                self.add(
                    Check.SIGNAL_ONCE,
                    f"{site.label} took {_times(len(taken), 'signal')} but committed "
                    f"{_times(commits)}",
                )

    def left_running(self) -> None:
        for call in self.run.calls:
            if call.ended is None or call.ended > self.run.finished_at:
                self.add(
                    Check.LEFT_RUNNING,
                    f"{call.label} (attempt {call.attempt}) was still running when the caller "
                    "got the saga's outcome",
                )

    def outcome(self) -> SagaResult[Any] | None:
        """Check what the caller got; return the result to check further, if any."""
        run = self.run
        raised = run.raised
        got = "a result" if raised is None else describe_error(raised)
        failed = [c for c in fold_retried(self.calls("compensation")) if c.raised is not None]
        if run.cancel_issued:
            if not isinstance(raised, asyncio.CancelledError):
                self.add(
                    Check.OUTCOME,
                    f"the caller cancelled at await {self.scenario.cancelled_at} but got {got} "
                    "instead of CancelledError",
                )
            return run.result
        if isinstance(raised, asyncio.CancelledError):
            self.add(Check.OUTCOME, "the run raised CancelledError though nobody cancelled it")
            return None
        if failed:
            names = ", ".join(f"{c.label} ({describe_error(c.raised)})" for c in failed)
            if not isinstance(raised, SagaCompensationFailedError):
                self.add(
                    Check.FAILURE_REPORTED,
                    f"{names} failed, but the caller got {got} instead of "
                    "SagaCompensationFailedError",
                )
                return run.result
            self.reported_failures(raised, failed)
            return raised.result
        if raised is not None:
            self.add(
                Check.OUTCOME,
                f"the run raised {got} instead of returning a result (no compensation failed)",
            )
            return None
        return run.result

    def reported_failures(self, error: SagaCompensationFailedError, failed: list[Call]) -> None:
        expected = Counter(c.site.name for c in failed if c.site is not None)
        reported = Counter(_DUPLICATE_SUFFIX.sub("", key) for key in error.failures)
        if expected != reported:
            self.add(
                Check.FAILURE_REPORTED,
                f"SagaCompensationFailedError.failures names {_names(reported)}, but the "
                f"compensations of {_names(expected)} failed",
            )
        errors = list(error.failures.values())
        for call in failed:
            raised = call.raised
            if not any(e is raised or e.__cause__ is raised for e in errors):
                self.add(
                    Check.FAILURE_REPORTED,
                    f"SagaCompensationFailedError.failures does not carry the error {call.label} "
                    f"raised ({describe_error(raised)})",
                )
        if error.result is None:
            self.add(Check.FAILURE_REPORTED, "SagaCompensationFailedError carries no result")

    def status(self, result: SagaResult[Any]) -> None:
        shape = self.shape
        finals = {site.key: calls[-1] for site in shape.sites if (calls := self.of_site(site))}
        failed = [s for s in shape.sites if s.key in finals and not committed(finals[s.key])]
        stopping = [s for s in failed if not s.skip]
        unreached = [s for s in shape.sites if s.key not in finals]
        status = result.status
        groups = {item.name for item in shape.items if isinstance(item, Group)}
        if self.baseline and status is not SagaStatus.COMPLETED:
            self.add(
                Check.BASELINE,
                f"without any fault the saga ends {status.name} at {result.failed_step} "
                f"({describe_error(result.error)}); every other scenario starts from there",
            )
        if status is SagaStatus.COMPLETED:
            for site in stopping:
                error = describe_error(finals[site.key].raised)
                self.add(Check.STATUS, f"COMPLETED although {site.label} failed ({error})")
            if unreached:
                never = ", ".join(site.label for site in unreached)
                self.add(Check.STATUS, f"COMPLETED although {never} never ran")
            if result.failed_step is not None or result.error is not None:
                self.add(
                    Check.STATUS,
                    f"COMPLETED with failed_step={result.failed_step!r} and error="
                    f"{describe_error(result.error)}",
                )
        elif status is SagaStatus.TIMED_OUT:
            if not shape.saga_timeout:
                self.add(Check.STATUS, "TIMED_OUT, but the flow has no saga timeout")
            elif not isinstance(result.error, SagaTimeoutError):
                self.add(
                    Check.STATUS,
                    f"TIMED_OUT with error {describe_error(result.error)}, not SagaTimeoutError",
                )
        elif status is SagaStatus.STUCK:
            self.stuck(result, stopping, finals)
        elif status is SagaStatus.FAILED:
            if result.failed_step in groups and not stopping:
                pass  # the group's merge failed: its members all committed
            elif not stopping:
                self.add(
                    Check.STATUS,
                    f"FAILED at {result.failed_step} ({describe_error(result.error)}), although "
                    "every step that ran committed or was skipped",
                )
            else:
                self.failed_step(result, stopping[0], finals[stopping[0].key])
        else:
            self.add(Check.STATUS, f"a finished run has status {status.name}")
        pivot = self.shape.past_pivot(self.run.calls)
        if pivot is not None and status in (SagaStatus.FAILED, SagaStatus.TIMED_OUT):
            self.add(
                Check.PIVOT,
                f"{status.name} at {result.failed_step} after the pivot {pivot.name} committed; "
                "a saga that cannot go on past its point of no return ends STUCK",
            )
        if stopping and status is not SagaStatus.COMPLETED:
            self.nothing_after(stopping[0])
        skipped = Counter(site.name for site in failed if site.skip)
        if Counter(result.skipped) != skipped:
            self.add(
                Check.STATUS,
                f"skipped={list(result.skipped)}, but the steps that failed and were skipped "
                f"are {sorted(skipped.elements())}",
            )
        expected = self.expected_latest()
        if expected is not _UNKNOWN and self.differ(result.data, expected):
            self.add(
                Check.STATUS,
                f"result.data is {self.label(result.data)}, not the latest data "
                f"({self.label(expected)})",
            )

    def stuck(self, result: SagaResult[Any], stopping: list[Site], finals: dict[str, Call]) -> None:
        """STUCK: only past the pivot, at the first step that failed for good (or cut off by
        the saga timeout)."""
        if self.shape.past_pivot(self.run.calls) is None:
            self.add(
                Check.PIVOT,
                f"STUCK at {result.failed_step}, but the forward pass never got past a pivot",
            )
        elif stopping:
            self.failed_step(result, stopping[0], finals[stopping[0].key])
        elif not isinstance(result.error, SagaTimeoutError):
            self.add(
                Check.STATUS,
                f"STUCK at {result.failed_step} ({describe_error(result.error)}), although "
                "every step that ran committed or was skipped",
            )

    def failed_step(self, result: SagaResult[Any], site: Site, last: Call) -> None:
        if result.failed_step != site.name:
            self.add(
                Check.STATUS,
                f"failed_step is {result.failed_step!r}, but the first step that failed for "
                f"good is {site.name!r}",
            )
            return
        raised, error = last.raised, result.error
        if isinstance(raised, Exception):
            if not (
                error is raised
                or (error is not None and raised in (error.__cause__, error.__context__))
            ):
                self.add(
                    Check.STATUS,
                    f"result.error is {describe_error(error)}, not the error {site.label} "
                    f"raised ({describe_error(raised)})",
                )
        elif isinstance(raised, asyncio.CancelledError) and site.timeout:
            if not isinstance(error, SagaStepTimeoutError):
                self.add(
                    Check.STATUS,
                    f"{site.label} was cut off by its timeout, but result.error is "
                    f"{describe_error(error)}, not SagaStepTimeoutError",
                )
        elif raised is None and not isinstance(error, SagaStepResultError):
            self.add(
                Check.STATUS,
                f"{site.label} returned {type(last.returned).__name__}, not the saga data, but "
                f"result.error is {describe_error(error)}, not SagaStepResultError",
            )

    def nothing_after(self, stop: Site) -> None:
        position = next(
            i
            for i, item in enumerate(self.shape.items)
            if item is stop or (isinstance(item, Group) and stop in item.members)
        )
        stopped_at = max(c.ended or 0 for c in self.of_site(stop))
        for item in self.shape.items[position + 1 :]:
            for site in item.members if isinstance(item, Group) else (item,):
                late = [c for c in self.of_site(site) if c.started > stopped_at]
                if late:
                    self.add(
                        Check.STATUS, f"{site.label} ran after the saga had failed at {stop.label}"
                    )

    def history(self, result: SagaResult[Any]) -> None:
        """Calls and records match, by step name and attempt (records carry no position)."""
        forward = [r for r in result.history if not r.compensation]
        timed_out = isinstance(result.error, SagaTimeoutError)  # TIMED_OUT, or STUCK by it
        groups = {item.name for item in self.shape.items if isinstance(item, Group)}
        actions = [c for c in self.calls("action") if c.site is not None and c.ended is not None]
        calls_ok = Counter((c.site.name, c.attempt) for c in actions if committed(c) and c.site)
        records_ok = Counter(
            (r.name, r.attempt) for r in forward if r.status is StepStatus.COMMITTED
        )
        for (name, attempt), count in (calls_ok - records_ok).items():
            self.add(
                Check.HISTORY,
                f"{name} attempt {attempt} committed {_times(count)} without a COMMITTED record",
            )
        for (name, attempt), count in (records_ok - calls_ok).items():
            self.add(
                Check.HISTORY,
                f"the history has {_times(count, 'COMMITTED record')} of {name} attempt "
                f"{attempt}, but no such call committed",
            )
        calls_failed = Counter(
            (c.site.name, c.attempt)
            for c in actions
            if c.site is not None
            and not committed(c)
            # A group member cut off by the saga timeout has no record: its group has one.
            and not (timed_out and c.site.group and isinstance(c.raised, asyncio.CancelledError))
        )
        records_failed = Counter(
            (r.name, r.attempt)
            for r in forward
            if r.status is StepStatus.FAILED and r.name not in groups  # a group's merge failed
        )
        for (name, attempt), count in (calls_failed - records_failed).items():
            self.add(
                Check.HISTORY,
                f"{name} attempt {attempt} failed {_times(count)} without a FAILED record",
            )
        cut_waiting = Counter(  # the saga timeout cut a step off while it waited to retry
            (r.name, r.attempt)
            for r in forward
            if r.status is StepStatus.FAILED and isinstance(r.error, SagaTimeoutError)
        )
        for (name, attempt), count in (records_failed - calls_failed - cut_waiting).items():
            self.add(
                Check.HISTORY,
                f"the history has {_times(count, 'FAILED record')} of {name} attempt {attempt}, "
                "but no such call failed",
            )
        undo_calls = Counter(
            (c.site.name, StepStatus.COMPENSATED if c.raised is None else StepStatus.FAILED)
            for c in self.calls("compensation")
            if c.site is not None and c.ended is not None
        )
        undo_records = Counter((r.name, r.status) for r in result.history if r.compensation)
        for (name, status), count in (undo_calls - undo_records).items():
            self.add(
                Check.HISTORY,
                f"undo {name} ended {status.name} {_times(count)} without a compensation record",
            )
        for (name, status), count in (undo_records - undo_calls).items():
            self.add(
                Check.HISTORY,
                f"the history has {_times(count, f'{status.name} compensation record')} of "
                f"{name} that no compensation call matches",
            )

    def rollback(self, result: SagaResult[Any] | None) -> None:
        run = self.run
        undo = fold_retried(self.calls("compensation"))
        rolled_back = run.cancel_issued or (
            result is not None and result.status is not SagaStatus.COMPLETED
        )
        if not rolled_back:
            for call in undo:
                self.add(Check.UNCOMMITTED_COMPENSATED, f"the saga COMPLETED but ran {call.label}")
            self.handler([], None)
            return
        pivot = self.shape.past_pivot(run.calls)
        if pivot is not None:
            for call in undo:
                self.add(
                    Check.PIVOT,
                    f"{call.label} ran after the pivot {pivot.name} committed: past the point "
                    "of no return nothing is compensated",
                )
            self.handler([], None)
            return
        due = self.committed_compensable()
        counts = Counter(c.site.key for c in undo if c.site is not None)
        exact = True
        for site in due:
            count = counts.pop(site.key, 0)
            if count != 1:
                exact = False
                self.add(
                    Check.COMPENSATED_ONCE,
                    f"{site.label} committed and was compensated {_times(count)}, not once",
                )
        for key, count in counts.items():
            exact = False
            site = next(s for s in self.shape.sites if s.key == key)
            why = "its action never committed" if self.of_site(site) else "it never ran"
            self.add(
                Check.UNCOMMITTED_COMPENSATED,
                f"undo {site.label} ran {_times(count)} though {why}",
            )
        if exact:
            self.order(undo, due)
        if result is not None:
            latest = result.data
        else:  # cancelled: the SAGA_ABORTED event says what the engine rolled back with
            latest = self.expected_latest()
            aborted = run.aborted_data
            if latest is _UNKNOWN:
                latest = aborted if aborted is not None else undo[0].data if undo else None
            elif aborted is not None and self.differ(aborted, latest):
                self.add(
                    Check.COMPENSATION_DATA,
                    f"the cancelled saga rolled back with {self.label(aborted)}, not the latest "
                    f"data ({self.label(latest)})",
                )
        for call in undo:
            if self.differ(call.data, latest):
                self.add(
                    Check.COMPENSATION_DATA,
                    f"{call.label} got {self.label(call.data)}, not the latest data "
                    f"({self.label(latest)})",
                )
        failed = [c for c in undo if c.raised is not None]
        self.handler(failed, latest, undo)

    def order(self, undo: list[Call], due: list[Site]) -> None:
        due_keys = {site.key for site in due}
        units: list[tuple[str, ...]] = []
        for item in self.shape.items:
            if isinstance(item, Group):
                done = tuple(m.key for m in item.members if m.key in due_keys)
                if item.concurrent and len(done) > 1:
                    units.append(done)
                else:
                    units.extend((key,) for key in done)
            elif item.key in due_keys:
                units.append((item.key,))
        units.reverse()
        position = 0
        previous: list[Call] = []
        for unit in units:
            chunk = undo[position : position + len(unit)]
            position += len(unit)
            if {c.site.key for c in chunk if c.site is not None} != set(unit):
                self.add(
                    Check.COMPENSATION_ORDER,
                    f"compensations ran as {_sequence(undo, self.shape)}; expected "
                    f"{_expected(units, self.shape)} (reverse commit order)",
                )
                return
            if previous and max(c.ended or 0 for c in previous) > min(c.started for c in chunk):
                overlapping = ", ".join(c.label for c in chunk)
                self.add(
                    Check.COMPENSATION_ORDER,
                    f"{overlapping} started before {previous[-1].label} had finished: "
                    "compensations run one at a time",
                )
            previous = chunk

    def handler(self, failed: list[Call], latest: object, undo: Iterable[Call] = ()) -> None:
        if not self.shape.handler:
            return
        calls = self.calls("handler")
        if not failed:
            if calls:
                self.add(
                    Check.FAILURE_HANDLER,
                    f"the failure handler ran {_times(len(calls))} though no compensation failed",
                )
            return
        if len(calls) != 1:
            self.add(
                Check.FAILURE_HANDLER,
                f"a compensation failed and the failure handler ran {_times(len(calls))}, not once",
            )
            return
        call = calls[0]
        if call.data is not latest:
            self.add(
                Check.FAILURE_HANDLER,
                f"the failure handler got {self.label(call.data)}, not the latest data "
                f"({self.label(latest)})",
            )
        if any((c.ended or 0) > call.started for c in undo):
            self.add(
                Check.FAILURE_HANDLER,
                "the failure handler ran before every compensation had finished",
            )

    def uninjected_compensation_errors(self) -> None:
        for call in self.calls("compensation"):
            if call.raised is not None and call.injected is None:
                self.add(
                    Check.COMPENSATION_RAISED,
                    f"{call.label} raised {describe_error(call.raised)}, given "
                    f"{self.label(call.data)}; no fault was injected into it",
                )


def check_run(
    scenario: Scenario, shape: Shape, run: Observed, *, baseline: bool
) -> list[Violation]:
    """Every broken promise of one run."""
    return _Checker(scenario, shape, run, baseline).check()


def _times(count: int, what: str = "") -> str:
    if what:
        return f"{count} {what}{'s' if count != 1 else ''}"
    return {0: "never", 1: "once", 2: "twice"}.get(count, f"{count} times")


def _names(counts: Counter[str]) -> str:
    return ", ".join(sorted(counts.elements())) or "nothing"


def _sequence(calls: list[Call], shape: Shape) -> str:
    return " -> ".join(call.label for call in calls) or "nothing"


def _expected(units: list[tuple[str, ...]], shape: Shape) -> str:
    labels = {site.key: f"undo {site.label}" for site in shape.sites}
    parts = [
        labels[unit[0]] if len(unit) == 1 else "{" + " & ".join(labels[k] for k in unit) + "}"
        for unit in units
    ]
    return " -> ".join(parts) or "nothing"


def check_compensation_order(
    scenario: Scenario, shape: Shape, undo: list[Call], due: list[Site]
) -> list[Violation]:
    """Whether the compensation calls `undo` (one per site of `due`) ran one at a time in
    reverse commit order: the order check of `check_run`, for calls gathered elsewhere (a
    crashed run and its recovery)."""
    nothing = Observed([], None, None, None, False, None, 0)
    checker = _Checker(scenario, shape, nothing, baseline=False)
    checker.order(undo, due)
    return checker.found
