"""Where durable sagas are written: the `SagaStore` protocol and the records it keeps.

A store keeps one row per saga (its name, status, latest data, flow fingerprint and lease)
and, per saga, an append-only log of events (attempt started, committed with its data,
failed, compensation started/done/failed...). The engine writes ahead: an attempt is in the
log before its action runs, and a commit (with the new data) before the next action starts.
Recovery rebuilds a saga's state from its log alone.

Every store keeps the same contract, which tests/stores checks against each of them:
- `begin` refuses a saga id it already has (`SagaAlreadyStartedError`);
- `append` writes a batch atomically, and only while the caller still owns the saga's
  lease (else `SagaLeaseLostError`, writing nothing);
- `claim` hands unfinished sagas whose lease expired (or that nobody owns) to one caller;
  two concurrent claims never get the same saga;
- `purge` deletes only finished sagas (`PURGEABLE`), with their logs, in one transaction;
- `request_cancel` marks a RUNNING saga (only) as asked to be cancelled, and `renew` tells the
  owner so (`Renewal.cancel_requested`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

from spakky_saga.errors import SagaStoreError


class SagaStoreNotFoundError(SagaStoreError):
    """A store opened with `create=False` (a read-only command: list, show, graph) found no saga
    store where it was pointed: the SQLite file does not exist (or is empty), or the PostgreSQL
    schema has none of the store's tables. Nothing was created."""

    message = "No saga store there"


class SagaStoreLocationError(SagaStoreError, ValueError):
    """Where the store was pointed cannot hold a saga store: an empty path, a directory, a
    missing parent directory, a malformed URL, a reserved schema name, or a file or schema that
    holds another application's tables. Nothing was written there. Also a `ValueError`: some
    of these are found when the store is constructed."""

    message = "That place cannot hold a saga store"


class SagaStoreDamagedError(SagaStoreError):
    """The store's file is damaged (truncated, or SQLite reports it malformed): it is refused
    as a whole, never read in part; restore it from a backup."""

    message = "The saga store is damaged"


class SagaStoreConnectionError(SagaStoreError):
    """The database server could not be reached, or refused the connection. `transient` is
    True when retrying later may succeed (connection refused, timed out, server starting up)
    and False when the configuration is wrong (bad DSN, unknown database or role, failed
    authentication): those are raised at once, not retried."""

    message = "Cannot connect to the saga store"

    def __init__(self, message: str | None = None, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoredStatus(Enum):
    """A saga's status in the store; the first two mean "unfinished"."""

    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    """Finished, but a compensation failed: needs `retry-compensation` or manual repair."""
    CANCELLED = "CANCELLED"
    """The task running it was cancelled; its committed steps were compensated."""
    STUCK = "STUCK"
    """Past its flow's pivot (the point of no return), a step failed for good; nothing was
    compensated. Needs an operator: finish what the saga could not, by hand."""
    WAITING = "WAITING"
    """Suspended in a wait (`wait_for`, `sleep`; docs/waits.md): nobody owns it, no process
    holds it; any engine on the store resumes it when its signal arrives or its time comes."""

    @property
    def unfinished(self) -> bool:
        return self in (StoredStatus.RUNNING, StoredStatus.COMPENSATING, StoredStatus.WAITING)


UNFINISHED: tuple[StoredStatus, ...] = (StoredStatus.RUNNING, StoredStatus.COMPENSATING)
"""The unfinished statuses an owner's lease covers (a WAITING saga has no owner: it is
claimed when it wakes)."""

SIGNALLED: tuple[StoredStatus, ...] = (StoredStatus.RUNNING, StoredStatus.WAITING)
"""The statuses in which a saga takes signals and cancel requests."""

PURGEABLE: tuple[StoredStatus, ...] = (
    StoredStatus.COMPLETED,
    StoredStatus.FAILED,
    StoredStatus.TIMED_OUT,
    StoredStatus.CANCELLED,
)
"""The statuses `purge` deletes: finished, with nothing left for an operator to do. Never an
unfinished saga, nor a COMPENSATION_FAILED or STUCK one (it still needs repair)."""


CANCEL_REQUESTED: Final = "cancel_requested"
"""The kind of the log entry recording an operator's cancel request (`spakky-saga cancel`):
its `owner` is who asked (user@host), `at` when. Written by the engine that acts on the
request; not an engine event (`SagaEventKind`): replay and timelines skip it."""


TRACEBACK_LIMIT: Final = 8000
"""How much of a failure's traceback the log keeps (characters): the end, where the error was
raised, when it is longer."""


SIGNAL_ENTRY: Final = "spakky_saga:signal/1"
"""The `data_type` of a SIGNAL_RECEIVED log entry, whose `data` is `{"signal_id": ...}`:
which signal a wait took (versioned, as every blob the store keeps)."""


@runtime_checkable
class LoggedSignal(Protocol):
    """A signal whose log entry records more than its id: an operator's decision
    (`Resolution`) records the decision and who made it."""

    def log_fields(self) -> dict[str, str]:
        """What the SIGNAL_RECEIVED entry records besides `signal_id`, in order."""
        ...


def signal_entry(signal_id: str, signal: object = None) -> tuple[str, str]:
    """The `data` and `data_type` of the log entry recording that a wait took `signal_id`,
    with what the signal adds to it (`LoggedSignal`)."""
    entry = {"signal_id": signal_id}
    if isinstance(signal, LoggedSignal):
        entry |= signal.log_fields()
    return json.dumps(entry), SIGNAL_ENTRY


def signal_of(event: StoredEvent) -> dict[str, str]:
    """What a SIGNAL_RECEIVED log entry records: `signal_id`, and for an operator's decision
    `resolution` and `by`; an unknown version is refused."""
    if event.data_type != SIGNAL_ENTRY or event.data is None:
        raise SagaStoreError(
            f"log entry {event.seq} records a signal as {event.data_type!r}; this library "
            f"reads {SIGNAL_ENTRY!r}: upgrade it"
        )
    entry: dict[str, str] = json.loads(event.data)
    return entry


class CancelRequest(NamedTuple):
    """Who asked to cancel a saga (user@host), and when (epoch seconds)."""

    by: str
    at: float


class Renewal(NamedTuple):
    """What `renew` found: the sagas the owner still holds, and the cancel requests on them."""

    kept: set[str]
    cancel_requested: dict[str, CancelRequest]


class StoredEvent(NamedTuple):
    """One entry of a saga's log. `seq` orders a saga's entries (from 1, no gaps).

    A named tuple: the engine makes two a step, and a tuple is the cheapest immutable record.
    """

    seq: int
    kind: str
    """A `SagaEventKind` value."""
    at: float
    """Wall-clock time (epoch seconds) when the engine recorded it."""
    step_key: str | None = None
    step: str | None = None
    attempt: int = 1
    elapsed: float = 0.0
    error_type: str | None = None
    error: str | None = None
    data: str | None = None
    """For commits: the data after the step (JSON), or None when the step returned None."""
    data_type: str | None = None
    owner: str | None = None
    """The engine that wrote it: a saga's entries never interleave two owners."""
    traceback: str | None = None
    """For failures: the error's traceback as text (at most `TRACEBACK_LIMIT` characters, its
    end kept), or None (no error, or a log written before schema version 4)."""


type EventFields = tuple[
    int,
    str,
    float,
    str | None,
    str | None,
    int,
    float,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
]
"""All of a `StoredEvent`'s fields, in order (`seq` to `traceback`)."""


def stored_event(fields: EventFields, /) -> StoredEvent:
    """The `StoredEvent` of `fields` (every field, in order), made without the named tuple's
    `__new__` and its keyword handling: the journal makes two a step, and this is the
    cheapest way to make one. Elsewhere, call `StoredEvent(...)`."""
    return tuple.__new__(StoredEvent, fields)


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """One saga as the store has it; `events` is filled by `load` (empty in listings)."""

    saga_id: str
    saga_name: str
    status: StoredStatus
    fingerprint: str
    structure: str
    """The flow's structure as JSON: what recovery compares to say what changed."""
    policy: str
    data: str
    data_type: str
    codec: str
    created: float
    updated: float
    owner: str | None = None
    lease_expires: float | None = None
    failed_step: str | None = None
    error: str | None = None
    cancel_requested_by: str | None = None
    """Who asked to cancel it (`request_cancel`), if anyone did."""
    cancel_requested_at: float | None = None
    events: tuple[StoredEvent, ...] = field(default=(), compare=False)

    @property
    def cancel_request(self) -> CancelRequest | None:
        """The operator's request to cancel this saga, if there is one."""
        if self.cancel_requested_by is None or self.cancel_requested_at is None:
            return None
        return CancelRequest(self.cancel_requested_by, self.cancel_requested_at)

    @classmethod
    def from_row(cls, row: Sequence[Any], events: tuple[StoredEvent, ...] = ()) -> SagaRecord:
        """A record from a database row holding `SAGA_COLUMNS`, in that order."""
        values = dict(zip(SAGA_COLUMNS, row, strict=True))
        values["status"] = StoredStatus(values["status"])
        return cls(**values, events=events)


SAGA_COLUMNS: tuple[str, ...] = (
    "saga_id",
    "saga_name",
    "status",
    "fingerprint",
    "structure",
    "policy",
    "data",
    "data_type",
    "codec",
    "created",
    "updated",
    "owner",
    "lease_expires",
    "failed_step",
    "error",
    "cancel_requested_by",
    "cancel_requested_at",
)
"""A saga row's columns, as SQL stores keep them (SagaRecord's fields but `events`)."""


class SagaUpdate(NamedTuple):
    """What a batch changes on the saga's row (None: leave as it is). A named tuple: a
    journal makes one a step, and a tuple is the cheapest immutable record."""

    status: StoredStatus | None = None
    data: str | None = None
    data_type: str | None = None
    failed_step: str | None = None
    error: str | None = None
    release: bool = False
    """Give up the lease (the saga finished, or this engine stops handling it)."""


class StoredSignal(NamedTuple):
    """A signal sent to a saga (`engine.signal`): kept until the saga is purged, delivered to
    one wait at most (its saga's log records which signal ids it took)."""

    signal_id: str
    saga_id: str
    signal_type: str
    """`module:QualName` of the payload's class."""
    payload: str
    """The payload as JSON (pydantic)."""
    codec: str
    at: float
    """When it was stored (epoch seconds)."""


@runtime_checkable
class SignalStore(Protocol):
    """Where signals wait for their saga. The SQL stores and `InMemorySagaStore` are one."""

    async def send_signal(self, signal: StoredSignal) -> bool:
        """Store `signal` for its saga, atomically with checking that the saga is RUNNING or
        WAITING (then it wakes: `claim` takes it at once);
        returns False (storing nothing) when a signal with its id is stored already for the
        same saga and type (a repeat). Raises `SagaSignalTargetError` when the saga is
        unknown or not RUNNING, `SagaSignalConflictError` when its id names another signal."""
        ...

    async def signals(self, saga_id: str) -> list[StoredSignal]:
        """The signals sent to `saga_id`, oldest first."""
        ...


@runtime_checkable
class WaitingStore(SignalStore, Protocol):
    """A `SignalStore` that also keeps suspended sagas (WAITING): the SQL stores and
    `InMemorySagaStore`. On one, a durable engine's waits cost no process anything."""

    async def suspend(self, saga_id: str, owner: str, wake_at: float | None, seen: int) -> None:
        """Suspend the saga `owner` holds in a wait: status WAITING, no owner, to be claimed
        again at `wake_at` (epoch seconds; None: only a signal wakes it), or at once when it
        has more than `seen` signals (one arrived since the wait last looked). Raises
        `SagaLeaseLostError` (changing nothing) when `owner` no longer holds it."""
        ...


@runtime_checkable
class WakingStore(Protocol):
    """A store that tells a serving engine at once when a signal woke a suspended saga, from
    whichever process sent it (PostgreSQL: LISTEN/NOTIFY). Polling stays the fallback: a
    wake-up missed (the listening connection was down) is found at the next pass."""

    def wakeups(self) -> AsyncIterator[None]:
        """Yield once per wake-up notice (several may come as one); raises
        `SagaStoreConnectionError` when the listening connection fails."""
        ...


@runtime_checkable
class SagaStore(Protocol):
    """The durable saga log. Implementations: InMemorySagaStore, SqliteSagaStore,
    PostgresSagaStore. All methods are safe to call concurrently from one event loop."""

    async def open(self) -> None:
        """Connect and create (or check) the versioned schema; idempotent."""
        ...

    async def close(self) -> None:
        """Release connections and threads; idempotent."""
        ...

    async def begin(
        self, record: SagaRecord, events: Sequence[StoredEvent], lease_seconds: float
    ) -> None:
        """Insert a new saga owned by `record.owner`, with its first events."""
        ...

    async def append(
        self,
        saga_id: str,
        owner: str,
        events: Sequence[StoredEvent],
        update: SagaUpdate,
        lease_seconds: float,
    ) -> None:
        """Append `events` and apply `update` atomically; raise SagaLeaseLostError (writing
        nothing) if `owner` no longer owns the saga. The lease is extended to `lease_seconds`
        when less than half of it is left (a store may extend it at every write; the SQL
        stores do not, so that most writes leave the lease and its index alone): after a
        write, at least half a lease is left."""
        ...

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        """Take over up to `limit` unfinished sagas whose lease expired or that nobody owns,
        and WAITING sagas whose wake-up time came (they become RUNNING), only `saga_ids`
        when given, with their events."""
        ...

    async def reopen(self, saga_id: str, owner: str, lease_seconds: float) -> SagaRecord:
        """Take a COMPENSATION_FAILED saga back (status COMPENSATING, owned by `owner`) to
        retry its compensations; raises SagaStoreError when it is in another state."""
        ...

    async def renew(self, owner: str, saga_ids: Sequence[str], lease_seconds: float) -> Renewal:
        """Extend the leases `owner` holds; returns the ids it still owns, and the cancel
        requests on those of them that are RUNNING."""
        ...

    async def request_cancel(self, saga_id: str, by: str) -> SagaRecord | None:
        """Record that `by` (user@host) asks to cancel the saga, if it is RUNNING or WAITING
        (then it wakes, so that an engine claims and compensates it) and not asked already
        (the first request is kept); return the saga as it is then (without
        its log), or None when there is no such saga. Changes nothing when it is not RUNNING:
        the caller reads its status from the record."""
        ...

    async def load(self, saga_id: str) -> SagaRecord | None:
        """One saga with its events, or None."""
        ...

    async def list(
        self, statuses: Sequence[StoredStatus] = (), limit: int = 100
    ) -> list[SagaRecord]:
        """Sagas (without events), most recently updated first, optionally by status."""
        ...

    async def purge(self, finished_before: float, *, dry_run: bool = False) -> tuple[str, ...]:
        """Delete (row and log) every saga in a `PURGEABLE` status last updated before
        `finished_before` (epoch seconds), atomically; return their ids, sorted. With
        `dry_run`, delete nothing and return the ids that would go."""
        ...
