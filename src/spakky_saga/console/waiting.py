"""What a WAITING saga waits for, as the console shows it: the wait (or the escalated step)
it is suspended in and since when, the signal type it waits for (known with the
application's flows), when it wakes (the store's wake-up time: the wait's deadline, a
sleep's end), whether a signal it would take is stored but not taken yet, and every signal
sent to it with its id (taken or not, as its log says). Read from the saga's record, its
signals and the store; nothing here acts."""

from __future__ import annotations

from dataclasses import dataclass

from spakky_saga._names import type_name
from spakky_saga.events import SagaEventKind
from spakky_saga.store import SagaRecord, StoredEvent, StoredSignal, StoredStatus, signal_of
from spakky_saga.waits import RESOLUTION_NAME

_ESCALATED = SagaEventKind.STEP_ESCALATED.value
_SUSPENDED = SagaEventKind.SAGA_SUSPENDED.value
_RECEIVED = SagaEventKind.SIGNAL_RECEIVED.value
_STARTED = SagaEventKind.STEP_STARTED.value


@dataclass(frozen=True, slots=True)
class SignalRow:
    """A signal sent to the saga, and whether a wait of it took it (its log says so)."""

    signal: StoredSignal
    taken: bool


@dataclass(frozen=True, slots=True)
class Wait:
    """Where a WAITING saga is suspended and what would resume it."""

    step: str | None
    """The wait's (or the escalated step's) name; None when the log names none."""
    step_key: str | None
    since: float | None
    escalation: StoredEvent | None
    """The STEP_ESCALATED entry (its step, error type, error) when an operator's decision
    is what it waits for."""
    signal_type: str | None
    """The signal type (`module:QualName`) the wait takes, when the console has the flow."""
    wake_at: float | None
    """When the store wakes it (None: only a signal or a cancel request does)."""
    pending: tuple[StoredSignal, ...]
    """Signals it would take, stored but not taken yet (of its type when that is known)."""

    @property
    def escalated(self) -> bool:
        return self.escalation is not None


def escalation_of(events: tuple[StoredEvent, ...]) -> StoredEvent | None:
    """The STEP_ESCALATED entry no decision (SIGNAL_RECEIVED) or new attempt followed yet."""
    open_escalation: StoredEvent | None = None
    for event in events:
        if event.kind == _ESCALATED:
            open_escalation = event
        elif (
            open_escalation is not None
            and event.kind in (_RECEIVED, _STARTED)
            and event.step_key == open_escalation.step_key
        ):
            open_escalation = None
    return open_escalation


def taken_ids(events: tuple[StoredEvent, ...]) -> set[str]:
    """The ids of the signals the saga's waits took (SIGNAL_RECEIVED entries)."""
    return {signal_of(e)["signal_id"] for e in events if e.kind == _RECEIVED}


def signal_rows(record: SagaRecord, signals: list[StoredSignal]) -> list[SignalRow]:
    """Every signal sent to the saga, oldest first, each marked taken or not."""
    taken = taken_ids(record.events)
    return [SignalRow(s, s.signal_id in taken) for s in signals]


def wait_of(
    record: SagaRecord,
    rows: list[SignalRow],
    wake_at: float | None,
    waits: dict[str, type] | None,
) -> Wait | None:
    """What `record` (loaded with its log) waits for; None unless it is WAITING. `waits` are
    the signal types of its flow's waits by step key (`SagaEngine.registered_waits`), when
    the console has the application's flows."""
    if record.status is not StoredStatus.WAITING:
        return None
    suspended = next((e for e in reversed(record.events) if e.kind == _SUSPENDED), None)
    escalation = escalation_of(record.events)
    key = None if suspended is None else suspended.step_key
    wanted = None
    if escalation is not None:
        wanted = RESOLUTION_NAME
    elif waits is not None and key in waits:
        wanted = type_name(waits[key])
    pending = tuple(
        r.signal for r in rows if not r.taken and (wanted is None or r.signal.signal_type == wanted)
    )
    return Wait(
        step=None if suspended is None else suspended.step,
        step_key=key,
        since=None if suspended is None else suspended.at,
        escalation=escalation,
        signal_type=wanted,
        wake_at=wake_at,
        pending=pending,
    )
