"""What an operator can do to a saga from the console, when, and what each did: recover,
retry compensation, cancel, on one saga or (`plan_bulk`, after a dry run) on every saga of a
filter. Each action is refused with its reason when it does not apply
(or needs the application's flows and the console has none), and every action that ran is
recorded in the store's audit trail (`AuditEntry`: who, when, from where, what came of it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from enum import StrEnum

from spakky_saga.audit import AuditEntry
from spakky_saga.console_store import SagaConsoleStore
from spakky_saga.engine import SagaEngine
from spakky_saga.errors import AbstractSpakkySagaError
from spakky_saga.query import MAX_PAGE, SagaQuery
from spakky_saga.store import SagaRecord, StoredStatus

NEEDS_APP = (
    "needs the application's flows: start the console with --app MODULE:TARGET "
    "(or create_console_app(store, engine=...))"
)


class Action(StrEnum):
    """The console's actions (each a URL: /sagas/{id}/{action})."""

    RECOVER = "recover"
    RETRY_COMPENSATION = "retry-compensation"
    CANCEL = "cancel"

    @property
    def label(self) -> str:
        return {"recover": "Recover", "retry-compensation": "Retry compensation"}.get(
            self.value, "Cancel"
        )


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
    """Whether `action` applies to `record` at `now`, with or without an engine."""
    status = record.status
    named = status.value
    if action is Action.CANCEL:
        if status is not StoredStatus.RUNNING:
            return Availability(action, f"only a RUNNING saga can be cancelled; it is {named}")
        if record.cancel_request is not None:
            return Availability(action, f"cancel was requested by {record.cancel_request.by}")
        return Availability(action)
    if engine is None:
        return Availability(action, NEEDS_APP)
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
) -> AuditEntry:
    """Run `action` on the saga (if it applies) and record it in the audit trail; the entry
    says what came of it."""
    now = time.time()
    allowed = availability(action, loaded, engine, now)
    if allowed.reason is not None:
        outcome = f"refused: {allowed.reason}"
    else:
        try:
            outcome = await _run(action, saga_id, store, engine, by)
        except AbstractSpakkySagaError as error:
            outcome = f"failed: {type(error).__name__}: {error}"
    entry = AuditEntry(saga_id, now, action.value, by, origin, outcome)
    await store.audit(entry)
    return entry


async def _run(
    action: Action, saga_id: str, store: SagaConsoleStore, engine: SagaEngine | None, by: str
) -> str:
    if action is Action.CANCEL:
        record = await store.request_cancel(saga_id, by)
        if record is None or record.cancel_request is None:
            return "refused: it is no longer RUNNING"
        if engine is None:
            return "requested: its engine cancels it when it next renews its lease"
        report = await engine.recover(saga_ids=[saga_id], limit=1)
        if not report.sagas:
            return "requested: its engine is alive and cancels it within a lease"
        return f"recovered here: {report.sagas[0].outcome}"
    assert engine is not None  # availability() said so
    if action is Action.RETRY_COMPENSATION:
        return f"retried: {(await engine.retry_compensation(saga_id)).outcome}"
    report = await engine.recover(saga_ids=[saga_id], limit=1)
    if not report.sagas:
        return "nothing recovered: another engine holds it"
    saga = report.sagas[0]
    detail = "" if saga.error is None else f" ({type(saga.error).__name__}: {saga.error})"
    return f"recovered: {saga.outcome}{detail}"


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
