"""One durable run's write-ahead log: the durable consumer of the engine's event seam.

The engine hands every `SagaEvent` of a durable run to its `SagaJournal` (`add`, cheap: it
converts and buffers), and awaits `flush()` before it acts: before an action attempt, before a
compensation, before a retry's backoff, and before the run ends. So an attempt is in the log
before its action runs, and a commit (with the data it produced) is in the log before the
next action starts; the commit of one step and the attempt of the next share one write.

A journal whose saga was taken over by another engine (lease lost) or whose store failed
raises on every later flush without writing: the engine stops the run at once and the saga
stays unfinished in the store, for recovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from spakky_saga._text import safe_str, traceback_text
from spakky_saga.codec import CODEC_VERSION, encode, type_name
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import (
    LoggedError,
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
)
from spakky_saga.events import SagaEvent, SagaEventKind
from spakky_saga.status import SagaStatus
from spakky_saga.store import (
    CANCEL_REQUESTED,
    TRACEBACK_LIMIT,
    CancelRequest,
    SagaRecord,
    SagaStore,
    SagaUpdate,
    StoredEvent,
    StoredStatus,
    WaitingStore,
    signal_entry,
    stored_event,
)

_KIND_NAMES: Final = {kind: kind.value for kind in SagaEventKind}

_COMPENSATION_OUTCOMES: Final = frozenset(
    {SagaEventKind.COMPENSATION_DONE, SagaEventKind.COMPENSATION_FAILED}
)

_FINAL_STATUS: Final = {
    SagaStatus.COMPLETED: StoredStatus.COMPLETED,
    SagaStatus.FAILED: StoredStatus.FAILED,
    SagaStatus.TIMED_OUT: StoredStatus.TIMED_OUT,
    SagaStatus.STUCK: StoredStatus.STUCK,
}


class SagaJournal:
    """Buffers one run's events as log entries and writes them in batches."""

    __slots__ = (
        "_begin",
        "_begun",
        "_cut_off",
        "_data",
        "_data_type",
        "_error",
        "_failed_step",
        "_failure",
        "_finished",
        "_last_data",
        "_lock",
        "_pending",
        "_release",
        "_status",
        "_written",
        "lease_seconds",
        "owner",
        "saga_id",
        "seq",
        "store",
        "wall_clock",
    )

    def __init__(
        self,
        store: SagaStore,
        saga_id: str,
        owner: str,
        lease_seconds: float,
        *,
        begin: SagaRecord | None = None,
        seq: int = 0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.saga_id = saga_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.seq = seq
        """The last sequence number used (a recovered saga continues its log)."""
        self.wall_clock = wall_clock
        self._begin = begin
        self._pending: list[StoredEvent] = []
        self._status: StoredStatus | None = None
        self._data: str | None = None
        self._data_type: str | None = None
        self._failed_step: str | None = None
        self._error: str | None = None
        self._release = False
        self._finished = False
        self._cut_off: set[str | None] = set()
        """Compensations a cancellation cut off, not run again since."""
        self._failure: BaseException | None = None
        self._last_data: AbstractSagaData | None = None
        self._lock: asyncio.Lock | None = None
        self._begun = begin is None  # a recovered saga's row is there already
        self._written = seq
        """The last entry known to be in the store."""

    @property
    def begun(self) -> bool:
        """Whether the saga's row is in the store (its first batch was written): before that,
        there is no lease to renew."""
        return self._begun

    def lose(self, error: BaseException) -> None:
        """Stop writing: every later flush raises `error` (the heartbeat found the lease gone)."""
        if self._failure is None:
            self._failure = error

    def add(self, event: SagaEvent) -> None:
        """Turn `event` into a log entry and buffer it (nothing is written yet)."""
        if self._failure is not None or self._finished:
            return
        kind = event.kind
        step_key = event.step_key
        data_text = data_type = None
        if kind is SagaEventKind.SAGA_STARTED and event.data is not None:
            data_text, data_type = encode(event.data), type_name(type(event.data))
            self._last_data = event.data
        elif kind is SagaEventKind.STEP_COMMITTED and event.data is not None:
            if event.data is not self._last_data:  # unchanged data is not written again
                data_text, data_type = encode(event.data), type_name(type(event.data))
                if step_key is not None and "." not in step_key:  # sequential: the new data
                    self._data, self._data_type = data_text, data_type
                    self._last_data = event.data
        elif kind is SagaEventKind.SIGNAL_RECEIVED and event.signal_id is not None:
            data_text, data_type = signal_entry(event.signal_id, event.signal)
        elif kind is SagaEventKind.COMPENSATION_STARTED and self._status is None:
            self._status = StoredStatus.COMPENSATING
        elif kind is SagaEventKind.SAGA_FINISHED:
            self._finish(event)
        elif kind is SagaEventKind.SAGA_ABORTED:
            self._abort(event)
        elif kind is SagaEventKind.SAGA_SUSPENDED:
            self._finished = True  # the row changes with `suspend`, after this is written
        elif kind is SagaEventKind.COMPENSATION_FAILED and isinstance(
            event.error, SagaCompensationInterruptedError
        ):
            self._cut_off.add(step_key)
        elif kind in _COMPENSATION_OUTCOMES:  # an outcome after all: it was run again
            self._cut_off.discard(step_key)
        error = event.error
        self.seq += 1
        self._pending.append(
            stored_event(
                (
                    self.seq,
                    _KIND_NAMES[kind],
                    self.wall_clock(),
                    step_key,
                    event.step,
                    event.attempt,
                    event.elapsed_seconds,
                    None if error is None else _type_name(error),
                    None if error is None else safe_str(error),
                    data_text,
                    data_type,
                    self.owner,
                    None if error is None else traceback_text(error, TRACEBACK_LIMIT),
                ),
            )
        )

    def note_cancel_request(self, request: CancelRequest) -> None:
        """Record in the log, with the next batch, that `request.by` asked to cancel the saga
        (at `request.at`): the audit of who stopped it. Not an engine event."""
        if self._failure is not None or self._finished:
            return
        self.seq += 1
        self._pending.append(StoredEvent(self.seq, CANCEL_REQUESTED, request.at, owner=request.by))

    def merged(self, data: AbstractSagaData) -> None:
        """A group's members merged into `data`: the saga row's data follows."""
        if self._failure is None:
            self._data, self._data_type = encode(data), type_name(type(data))

    async def flush(self) -> None:
        """Write what is buffered, in one batch; raise if this run may not write any more.

        Batches are written one at a time, in order (group members flush concurrently): a
        store sees the saga's row before any append, and the log never has a gap. A flush
        waits only for what was buffered when it was called: if a concurrent flush wrote that
        (group members' attempts share one write), it returns without writing.
        """
        if self._failure is not None:
            raise self._failure
        if not self._pending and self._begin is None:
            return
        wanted = self.seq
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._written >= wanted and self._begin is None:
                return  # a concurrent flush wrote this caller's entries already
            events, self._pending = self._pending, []
            try:
                if self._begin is not None:
                    await self.store.begin(self._begin, events, self.lease_seconds)
                    self._begin = None
                    self._begun = True
                    if self._has_update():
                        await self.store.append(
                            self.saga_id, self.owner, (), self._take_update(), self.lease_seconds
                        )
                else:
                    await self.store.append(
                        self.saga_id, self.owner, events, self._take_update(), self.lease_seconds
                    )
                if events:
                    self._written = events[-1].seq
            except Exception as error:  # a lost lease, or the store failed: stop writing
                self._failure = error
                raise

    async def suspend(self, wake_at: float | None, seen: int) -> None:
        """After the SAGA_SUSPENDED entry was written: make the saga WAITING in the store and
        give up its lease (`WaitingStore.suspend`)."""
        if self._failure is not None:
            raise self._failure
        store = self.store
        if not isinstance(store, WaitingStore):  # pragma: no cover - the engine checks it too
            raise TypeError(f"{store!r} cannot suspend sagas")
        await store.suspend(self.saga_id, self.owner, wake_at, seen)

    def _finish(self, event: SagaEvent) -> None:
        assert event.status is not None
        self._status = _FINAL_STATUS[event.status]
        if event.error is not None:
            self._failed_step = event.step
            self._error = safe_str(event.error)
        self._release = True
        self._finished = True

    def _abort(self, event: SagaEvent) -> None:
        error = event.error
        self._finished = True
        if self._cut_off:
            # The rollback was cut off (the loop shutting down): the saga stays COMPENSATING
            # and its lease runs out, so that recovery runs what did not run.
            return
        if isinstance(error, SagaCompensationFailedError):
            self._status = StoredStatus.COMPENSATION_FAILED
        elif event.status is SagaStatus.RUNNING:
            # Cancelled past its pivot: it must complete, so recovery takes it forward.
            return
        elif isinstance(error, asyncio.CancelledError):
            self._status = StoredStatus.CANCELLED
        else:  # KeyboardInterrupt or SystemExit from a compensation: leave it to recovery
            return
        self._error = safe_str(error)
        self._release = True

    def _has_update(self) -> bool:
        return (
            self._status is not None
            or self._data is not None
            or self._release
            or self._error is not None
        )

    def _take_update(self) -> SagaUpdate:
        update = SagaUpdate(
            status=self._status,
            data=self._data,
            data_type=self._data_type,
            failed_step=self._failed_step,
            error=self._error,
            release=self._release,
        )
        self._status = self._data = self._data_type = self._failed_step = self._error = None
        self._release = False
        return update


def begin_record(
    *,
    saga_id: str,
    saga_name: str,
    owner: str,
    fingerprint: str,
    structure: str,
    policy: str,
    data_text: str,
    data: AbstractSagaData,
    now: float,
) -> SagaRecord:
    """The row a durable saga starts with."""
    return SagaRecord(
        saga_id=saga_id,
        saga_name=saga_name,
        status=StoredStatus.RUNNING,
        fingerprint=fingerprint,
        structure=structure,
        policy=policy,
        data=data_text,
        data_type=type_name(type(data)),
        codec=CODEC_VERSION,
        created=now,
        updated=now,
        owner=owner,
    )


def _type_name(error: BaseException) -> str:
    """The error's type as the log records it: a logged error keeps its original type."""
    return error.type_name if isinstance(error, LoggedError) else type(error).__qualname__
