"""`InMemorySagaStore`: the saga log in a dictionary.

It keeps the store contract (write-ahead batches, leases, claims) without surviving the
process: for tests of durable behaviour, and for running the recovery logic inside one
process (an engine that lost its lease, a saga re-claimed after its owner stopped).
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from collections.abc import Callable, Sequence

from spakky_saga.audit import AuditEntry
from spakky_saga.console_store import EngineNode
from spakky_saga.errors import SagaAlreadyStartedError, SagaLeaseLostError, SagaStoreError
from spakky_saga.query import SagaPage, SagaQuery
from spakky_saga.signals import check_send
from spakky_saga.store import (
    PURGEABLE,
    SIGNALLED,
    UNFINISHED,
    CancelRequest,
    Renewal,
    SagaRecord,
    SagaUpdate,
    StoredEvent,
    StoredSignal,
    StoredStatus,
)


def _leased(record: SagaRecord, now: float) -> bool:
    """Whether an engine's lease on `record` still holds at `now`."""
    return record.owner is not None and (record.lease_expires or 0.0) > now


class InMemorySagaStore:
    """A `SagaStore` in memory. `clock` (wall-clock seconds) decides lease expiry."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._sagas: dict[str, SagaRecord] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._audit: list[AuditEntry] = []
        self._renewed: dict[str, float] = {}
        self._signals: dict[str, StoredSignal] = {}
        self._wake: dict[str, float] = {}
        """When each WAITING saga that has a wake-up time is to be claimed again."""

    def __repr__(self) -> str:
        return f"InMemorySagaStore({len(self._sagas)} sagas)"

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the sagas stay readable."""

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        if record.saga_id in self._sagas:
            raise SagaAlreadyStartedError(record.saga_id)
        self._sagas[record.saga_id] = dataclasses.replace(
            record, lease_expires=self._clock() + lease_seconds, events=()
        )
        self._events[record.saga_id] = list(events)

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        record = self._sagas.get(saga_id)
        if record is None or record.owner != owner:
            raise SagaLeaseLostError(saga_id, owner)
        now = self._clock()
        changes: dict[str, object] = {"updated": now, "lease_expires": now + lease_seconds}
        if update.status is not None:
            changes["status"] = update.status
        if update.data is not None:
            changes["data"] = update.data
            changes["data_type"] = update.data_type or record.data_type
        if update.failed_step is not None:
            changes["failed_step"] = update.failed_step
        if update.error is not None:
            changes["error"] = update.error
        if update.release:
            changes["owner"] = None
            changes["lease_expires"] = None
        self._sagas[saga_id] = dataclasses.replace(record, **changes)  # type: ignore[arg-type] # fields by name
        self._events[saga_id].extend(events)

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        now = self._clock()
        claimed: list[SagaRecord] = []
        candidates = saga_ids or sorted(self._sagas, key=lambda i: self._sagas[i].created)
        for saga_id in candidates:
            record = self._sagas.get(saga_id)
            if record is None:
                continue
            if record.status is StoredStatus.WAITING:
                if self._wake.get(saga_id, now + 1) > now:
                    continue
                del self._wake[saga_id]
                record = dataclasses.replace(record, status=StoredStatus.RUNNING)
            elif record.status not in UNFINISHED or (
                record.owner is not None and (record.lease_expires or 0.0) > now
            ):
                continue
            record = dataclasses.replace(record, owner=owner, lease_expires=now + lease_seconds)
            self._sagas[saga_id] = record
            claimed.append(dataclasses.replace(record, events=tuple(self._events[saga_id])))
            if len(claimed) >= limit:
                break
        return claimed

    async def reopen(self, saga_id: str, owner: str, lease_seconds: float) -> SagaRecord:
        record = self._sagas.get(saga_id)
        if record is None or record.status is not StoredStatus.COMPENSATION_FAILED:
            raise SagaStoreError(
                f"saga {saga_id} is "
                + ("unknown" if record is None else f"{record.status.value}")
                + "; only a COMPENSATION_FAILED saga can have its compensation retried"
            )
        record = dataclasses.replace(
            record,
            status=StoredStatus.COMPENSATING,
            owner=owner,
            lease_expires=self._clock() + lease_seconds,
        )
        self._sagas[saga_id] = record
        return dataclasses.replace(record, events=tuple(self._events[saga_id]))

    async def renew(self, owner: str, saga_ids: Sequence[str], lease_seconds: float) -> Renewal:
        now = self._clock()
        if saga_ids:
            self._renewed[owner] = now
        kept: set[str] = set()
        requests: dict[str, CancelRequest] = {}
        for saga_id in saga_ids:
            record = self._sagas.get(saga_id)
            if record is not None and record.owner == owner:
                self._sagas[saga_id] = dataclasses.replace(
                    record, lease_expires=now + lease_seconds
                )
                kept.add(saga_id)
                request = record.cancel_request
                if request is not None and record.status is StoredStatus.RUNNING:
                    requests[saga_id] = request
        return Renewal(kept, requests)

    async def request_cancel(self, saga_id: str, by: str) -> SagaRecord | None:
        record = self._sagas.get(saga_id)
        if record is None:
            return None
        if record.status in SIGNALLED and record.cancel_request is None:
            record = dataclasses.replace(
                record, cancel_requested_by=by, cancel_requested_at=self._clock()
            )
            self._sagas[saga_id] = record
            if record.status is StoredStatus.WAITING:  # wake it: its claimer compensates it
                self._wake[saga_id] = self._clock()
        return record

    async def send_signal(self, signal: StoredSignal) -> bool:
        record = self._sagas.get(signal.saga_id)
        status = None if record is None else record.status.value
        if not check_send(status, self._signals.get(signal.signal_id), signal):
            return False
        self._signals[signal.signal_id] = signal
        if status == StoredStatus.WAITING.value:
            self._wake[signal.saga_id] = self._clock()
        return True

    async def suspend(self, saga_id: str, owner: str, wake_at: float | None, seen: int) -> None:
        record = self._sagas.get(saga_id)
        if record is None or record.owner != owner:
            raise SagaLeaseLostError(saga_id, owner)
        now = self._clock()
        if sum(s.saga_id == saga_id for s in self._signals.values()) > seen:
            wake_at = now
        self._sagas[saga_id] = dataclasses.replace(
            record, status=StoredStatus.WAITING, owner=None, lease_expires=None, updated=now
        )
        self._wake.pop(saga_id, None)
        if wake_at is not None:
            self._wake[saga_id] = wake_at

    async def signals(self, saga_id: str) -> builtins.list[StoredSignal]:
        return sorted(
            (s for s in self._signals.values() if s.saga_id == saga_id),
            key=lambda s: (s.at, s.signal_id),
        )

    async def load(self, saga_id: str) -> SagaRecord | None:
        record = self._sagas.get(saga_id)
        if record is None:
            return None
        return dataclasses.replace(record, events=tuple(self._events[saga_id]))

    async def list(
        self, statuses: Sequence[StoredStatus] = (), limit: int = 100
    ) -> list[SagaRecord]:
        records = [r for r in self._sagas.values() if not statuses or r.status in statuses]
        records.sort(key=lambda r: r.updated, reverse=True)
        return records[:limit]

    async def query(self, query: SagaQuery) -> SagaPage:
        records = sorted(
            (r for r in self._sagas.values() if query.matches(r)),
            key=lambda r: (query.sort_value(r), r.saga_id),
            reverse=query.descending,
        )
        return query.page(records, len(records) > query.limit)

    async def count_by_status(self, query: SagaQuery) -> dict[StoredStatus, int]:
        counts: dict[StoredStatus, int] = {}
        everywhere = dataclasses.replace(query, after=None)
        for record in self._sagas.values():
            if everywhere.matches(record, statuses=False):
                counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    async def audit(self, entry: AuditEntry) -> None:
        self._audit.append(entry)

    async def audit_trail(self, saga_id: str) -> builtins.list[AuditEntry]:
        return sorted((e for e in self._audit if e.saga_id == saga_id), key=lambda e: e.at)

    async def nodes(self) -> builtins.list[EngineNode]:
        held: dict[str, builtins.list[float]] = {}
        for record in self._sagas.values():
            if record.status in UNFINISHED and record.owner is not None:
                held.setdefault(record.owner, []).append(record.lease_expires or 0.0)
        return [
            EngineNode(owner, len(leases), max(leases), self._renewed.get(owner))
            for owner, leases in sorted(held.items())
        ]

    async def wake_times(
        self, saga_ids: Sequence[str] = (), *, due_by: float | None = None, limit: int = 100
    ) -> dict[str, float]:
        chosen = set(saga_ids)
        due = sorted(
            (wake_at, saga_id)
            for saga_id, wake_at in self._wake.items()
            if (not chosen or saga_id in chosen)
            and (due_by is None or wake_at <= due_by)
            and saga_id in self._sagas
            and self._sagas[saga_id].status is StoredStatus.WAITING
        )
        return {saga_id: wake_at for wake_at, saga_id in due[:limit]}

    async def purge(self, finished_before: float, *, dry_run: bool = False) -> tuple[str, ...]:
        gone = tuple(
            sorted(
                saga_id
                for saga_id, record in self._sagas.items()
                if record.status in PURGEABLE and record.updated < finished_before
            )
        )
        if not dry_run:
            for saga_id in gone:
                del self._sagas[saga_id]
                del self._events[saga_id]
            self._signals = {k: s for k, s in self._signals.items() if s.saga_id not in gone}
            for saga_id in gone:
                self._wake.pop(saga_id, None)
        return gone
