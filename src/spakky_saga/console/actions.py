"""What an operator can do to a saga from the console, when, and what each did: recover,
retry compensation, cancel (a RUNNING or WAITING saga), answer an escalation (`resolve`) and
send a signal, on one saga, or (`plan_bulk`, after a dry run; the first three) on every saga
of a filter. Each action is refused with its reason when it does not apply
(or needs the application's flows and the console has none), and every action that ran is
recorded in the store's audit trail (`AuditEntry`: who, when, from where, what came of it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from enum import StrEnum

from spakky_saga._names import type_name
from spakky_saga.audit import AuditEntry
from spakky_saga.cancel import cancel
from spakky_saga.codec import signal_from_json
from spakky_saga.console.waiting import escalation_of
from spakky_saga.console_store import SagaConsoleStore
from spakky_saga.engine import SagaEngine
from spakky_saga.errors import (
    AbstractSpakkySagaError,
    SagaResolutionError,
    SagaSignalTypeError,
)
from spakky_saga.query import MAX_PAGE, SagaQuery
from spakky_saga.store import SIGNALLED, SagaRecord, StoredStatus
from spakky_saga.waits import Decided

NEEDS_APP = (
    "needs the application's flows: start the console with --app MODULE:TARGET "
    "(or create_console_app(store, engine=...))"
)


class Action(StrEnum):
    """The console's actions (each a URL: /sagas/{id}/{action})."""

    RECOVER = "recover"
    RETRY_COMPENSATION = "retry-compensation"
    CANCEL = "cancel"
    RESOLVE = "resolve"
    """Answer an escalated step: the form's `decision` (retry, skip, compensate)."""
    SIGNAL = "signal"
    """Send a signal: the form's `type` (one its flow's waits take) and JSON `payload`."""

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def bulk(self) -> bool:
        """Whether it is offered on every saga of a filter (a decision or a signal is not:
        each is about one saga)."""
        return self not in (Action.RESOLVE, Action.SIGNAL)


_LABELS: dict[Action, str] = {
    Action.RECOVER: "Recover",
    Action.RETRY_COMPENSATION: "Retry compensation",
    Action.CANCEL: "Cancel",
    Action.RESOLVE: "Answer the escalation",
    Action.SIGNAL: "Send the signal",
}

DECISIONS: tuple[Decided, ...] = ("retry", "skip", "compensate")
"""The answers to an escalation (`engine.resolve`)."""


@dataclass(frozen=True, slots=True)
class ActionInput:
    """What an action's form gives beyond the click: a decision (resolve); a signal type
    (`module:QualName`), its JSON payload and an optional signal id (signal)."""

    decision: str = ""
    signal_type: str = ""
    payload: str = ""
    signal_id: str = ""


def waits_of(engine: SagaEngine, saga_name: str) -> dict[str, type] | None:
    """The signal type of each wait of `saga_name`'s registered flow, by step key
    (`SagaEngine.registered_waits`); None when the console cannot tell (the name is not
    registered, or the application's flow function raised)."""
    try:
        return engine.registered_waits(saga_name)
    except Exception:  # the application's flow function raised: cannot tell
        return None


def signal_types(engine: SagaEngine | None, saga_name: str) -> dict[str, type]:
    """The signal types (by `module:QualName`) the waits of `saga_name`'s registered flow
    take: what the console offers to send; empty when it cannot tell."""
    waits = None if engine is None else waits_of(engine, saga_name)
    return {type_name(t): t for t in (waits or {}).values()}


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether an action applies to a saga now; when not, why (shown beside its button)."""

    action: Action
    reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.reason is None


def availability(
    action: Action, record: SagaRecord, engine: SagaEngine | None, now: float
) -> Availability:
    """Whether `action` applies to `record` at `now`, with or without an engine (a decision
    needs `record` loaded with its log, to tell that a step escalated)."""
    status = record.status
    named = status.value
    if action is Action.CANCEL:
        if status not in SIGNALLED:
            return Availability(
                action, f"only a RUNNING or WAITING saga can be cancelled; it is {named}"
            )
        if record.cancel_request is not None:
            return Availability(action, f"cancel was requested by {record.cancel_request.by}")
        return Availability(action)
    if engine is None:
        return Availability(action, NEEDS_APP)
    if action is Action.RESOLVE:
        if status is not StoredStatus.WAITING or escalation_of(record.events) is None:
            return Availability(
                action,
                "only a saga waiting for an operator's decision (a step escalated) can be "
                f"answered; it is {named}"
                + (", waiting for a signal or a time" if status is StoredStatus.WAITING else ""),
            )
        return Availability(action)
    if action is Action.SIGNAL:
        if status not in SIGNALLED:
            return Availability(
                action, f"only a RUNNING or WAITING saga takes signals; it is {named}"
            )
        if not signal_types(engine, record.saga_name):
            return Availability(
                action, f"no wait_for of the flow registered as {record.saga_name} takes a signal"
            )
        return Availability(action)
    if action is Action.RETRY_COMPENSATION:
        if status is not StoredStatus.COMPENSATION_FAILED:
            return Availability(
                action, f"only a COMPENSATION_FAILED saga can be retried; it is {named}"
            )
        return Availability(action)
    if not status.unfinished:
        return Availability(action, f"it is finished ({named}): nothing to recover")
    if record.owner is not None and (record.lease_expires or 0.0) >= now:
        return Availability(action, f"engine {record.owner} holds its lease and is running it")
    return Availability(action)


async def perform(
    action: Action,
    saga_id: str,
    store: SagaConsoleStore,
    loaded: SagaRecord,
    engine: SagaEngine | None,
    *,
    by: str,
    origin: str,
    given: ActionInput = ActionInput(),
) -> AuditEntry:
    """Run `action` on the saga (if it applies; `given`: what its form gave) and record it in
    the audit trail; the entry says what came of it."""
    now = time.time()
    allowed = availability(action, loaded, engine, now)
    if allowed.reason is not None:
        outcome = f"refused: {allowed.reason}"
    else:
        try:
            outcome = await _run(action, saga_id, store, loaded, engine, by=by, given=given)
        except AbstractSpakkySagaError as error:
            outcome = f"failed: {type(error).__name__}: {error}"
    entry = AuditEntry(saga_id, now, action.value, by, origin, outcome)
    await store.audit(entry)
    return entry


async def _run(
    action: Action,
    saga_id: str,
    store: SagaConsoleStore,
    loaded: SagaRecord,
    engine: SagaEngine | None,
    *,
    by: str,
    given: ActionInput,
) -> str:
    if action is Action.CANCEL:
        return await _cancel(saga_id, store, engine, by)
    assert engine is not None  # availability() said so
    if action is Action.RETRY_COMPENSATION:
        return f"retried: {(await engine.retry_compensation(saga_id)).outcome}"
    if action is Action.RECOVER:
        return await _resume(
            engine, saga_id, "recovered", "nothing recovered: another engine holds it"
        )
    if action is Action.RESOLVE:
        receipt = await engine.resolve(saga_id, _decision(given.decision), by=by)
        done = f"decided {given.decision} ({receipt.signal_id})"
    else:
        receipt = await engine.signal(
            saga_id,
            _signal(engine, loaded, given),
            signal_id=given.signal_id.strip() or None,
        )
        repeat = ", a repeat: nothing new stored" if receipt.duplicate else ""
        done = f"signal {receipt.signal_id} ({given.signal_type}) stored{repeat}"
    later = f"{done}; an engine on the store resumes it at its next pass"
    return await _resume(engine, saga_id, f"{done}; resumed here", later)


async def _cancel(saga_id: str, store: SagaConsoleStore, engine: SagaEngine | None, by: str) -> str:
    done = await cancel(store, saga_id, by, engine)
    if done.record is None or done.refused:
        return "refused: it is no longer RUNNING or WAITING"
    if done.recovered is not None:
        return f"recovered here: {done.recovered.outcome}"
    if done.record.status is StoredStatus.WAITING:
        return "requested: the request woke it; an engine on the store compensates it"
    if engine is None:
        return "requested: its engine cancels it when it next renews its lease"
    return "requested: its engine is alive and cancels it within a lease"


async def _resume(engine: SagaEngine, saga_id: str, done: str, otherwise: str) -> str:
    """Recover the saga here if nobody holds it; what came of it."""
    report = await engine.recover(saga_ids=[saga_id], limit=1)
    if not report.sagas:
        return otherwise
    saga = report.sagas[0]
    detail = "" if saga.error is None else f" ({type(saga.error).__name__}: {saga.error})"
    return f"{done}: {saga.outcome}{detail}"


def _decision(text: str) -> Decided:
    for decision in DECISIONS:
        if decision == text:
            return decision
    raise SagaResolutionError(
        f"{text!r} is not an answer to an escalation: choose retry, skip or compensate"
    )


def _signal(engine: SagaEngine, loaded: SagaRecord, given: ActionInput) -> object:
    """The signal the form describes, validated as `spakky-saga signal` validates it."""
    types = signal_types(engine, loaded.saga_name)
    chosen = types.get(given.signal_type)
    if chosen is None:
        raise SagaSignalTypeError(
            f"{given.signal_type!r} is not a signal type the waits of {loaded.saga_name} "
            f"take; choose one of {', '.join(sorted(types))}"
        )
    return signal_from_json(chosen, given.payload)


BULK_LIMIT: int = MAX_PAGE
"""How many sagas one bulk action selects at most (the first of the filter's order)."""


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """A bulk action's dry run: the sagas the filter selects (at most `BULK_LIMIT`), those the
    action applies to now, and why it does not apply to the others (reason -> how many)."""

    action: Action
    selected: int
    more: bool
    """More sagas match the filter than one bulk action takes."""
    applicable: list[SagaRecord]
    skipped: dict[str, int]


async def plan_bulk(
    action: Action,
    store: SagaConsoleStore,
    query: SagaQuery,
    engine: SagaEngine | None,
    now: float,
) -> BulkPlan:
    """What `action` on every saga `query` selects (from its first page) would do: nothing is
    changed. The confirmed action runs on the applicable sagas' ids, each checked again."""
    page = await store.query(replace(query, after=None, limit=BULK_LIMIT))
    applicable: list[SagaRecord] = []
    skipped: dict[str, int] = {}
    for record in page.records:
        reason = availability(action, record, engine, now).reason
        if reason is None:
            applicable.append(record)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    return BulkPlan(action, len(page.records), page.next is not None, applicable, skipped)
