"""Signals: messages sent to a running saga, taken by its waits (`wait_for`).

`Signals` is the engine's side of them: `send` checks and stores a signal (`engine.signal`),
and as the executor's `SignalBox` it finds a waiting run's signals and wakes it. It works over
any `SignalStore`: a durable engine's store (the signal is durable before `send` returns, and
any engine on the store finds it, by polling every `poll` seconds, at once when it was sent
through the engine that runs the saga), or, for an engine without a store, `RunningSignals`,
which keeps the signals of the sagas the engine runs in memory.

A signal is taken once: a wait takes the oldest signal of its type whose id the saga's log
does not list as taken (`SIGNAL_RECEIVED`, written with the wait's commit). A repeat of a
signal id is stored once (`SignalReceipt.duplicate`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import NamedTuple

from spakky_saga._text import error_text, safe_repr
from spakky_saga.codec import CODEC_VERSION, signal_adapter, type_name
from spakky_saga.errors import (
    SagaSignalConflictError,
    SagaSignalTargetError,
    SagaSignalTypeError,
)
from spakky_saga.store import SignalStore, StoredSignal

type Accepts = Callable[[str], Awaitable[frozenset[str] | None]]
"""The signal types (`module:QualName`) a saga's waits accept, when the engine can tell
(None: it cannot; the store still checks that the saga runs)."""


class SignalReceipt(NamedTuple):
    """What `engine.signal` stored: the signal's id, and whether it was a repeat of a signal
    sent before with that id (then nothing new was stored)."""

    signal_id: str
    duplicate: bool = False


class RunningSignals:
    """A `SignalStore` in memory for an engine without a store: the signals of the sagas it
    runs (that have waits), kept while they run. A saga it does not run is unknown here."""

    __slots__ = ("_accepts", "_sagas")

    def __init__(self) -> None:
        self._sagas: dict[str, list[StoredSignal]] = {}
        self._accepts: dict[str, frozenset[str]] = {}

    def opened(self, saga_id: str, accepts: frozenset[str]) -> None:
        """A run whose waits accept `accepts` starts: it can receive signals from now on."""
        self._sagas[saga_id] = []
        self._accepts[saga_id] = accepts

    def closed(self, saga_id: str) -> None:
        """The run ended: its signals go (a later signal for it is refused)."""
        self._sagas.pop(saga_id, None)
        self._accepts.pop(saga_id, None)

    async def accepts(self, saga_id: str) -> frozenset[str] | None:
        return self._accepts.get(saga_id)

    async def send_signal(self, signal: StoredSignal) -> bool:
        kept = self._sagas.get(signal.saga_id)
        if kept is None:
            raise SagaSignalTargetError(signal.saga_id, None, " running in this engine")
        return _add_once(kept, signal)

    async def signals(self, saga_id: str) -> list[StoredSignal]:
        return list(self._sagas.get(saga_id, ()))


def _add_once(kept: list[StoredSignal], signal: StoredSignal) -> bool:
    """Append `signal` unless its id is there: False for a repeat, an error for a conflict."""
    for old in kept:
        if old.signal_id == signal.signal_id:
            check_repeat(old, signal)
            return False
    kept.append(signal)
    return True


def check_send(status: str | None, existing: StoredSignal | None, signal: StoredSignal) -> bool:
    """What a store does with `signal`, given its saga's status (None: no such saga) and the
    signal stored with its id, if any: True to store it, False for a repeat (store nothing);
    raises for a saga that is unknown or not RUNNING (or WAITING), or an id naming another
    signal."""
    if existing is not None:
        check_repeat(existing, signal)
        return False
    if status is None:
        raise SagaSignalTargetError(signal.saga_id)
    if status not in ("RUNNING", "WAITING"):
        raise SagaSignalTargetError(signal.saga_id, status)
    return True


def check_repeat(old: StoredSignal, new: StoredSignal) -> None:
    """Raise unless `new` repeats `old` (same saga and type): one id, one signal."""
    if old.saga_id != new.saga_id or old.signal_type != new.signal_type:
        raise SagaSignalConflictError(
            f"signal id {new.signal_id!r} was used for a {old.signal_type} signal to saga "
            f"{old.saga_id}; it cannot name a {new.signal_type} signal to saga {new.saga_id}. "
            "Give each signal its own id (or none: one is generated)"
        )


class Signals:
    """Sends signals to sagas and finds them for waiting runs (the executor's `SignalBox`).

    `poll` (seconds) is how often a waiting run looks at the store for signals sent through
    another engine (None: never; an engine without a store gets signals only through
    itself); a signal sent through this engine wakes its run at once.
    """

    __slots__ = ("_seen", "_wakers", "poll", "store", "suspends")

    def __init__(self, store: SignalStore, *, poll: float | None, suspends: bool = False) -> None:
        self.store = store
        self.poll = poll
        self.suspends = suspends
        """Whether durable runs wait suspended in the store (else in their process)."""
        self._wakers: dict[str, asyncio.Event] = {}
        self._seen: dict[str, int] = {}

    async def send(
        self,
        saga_id: str,
        payload: object,
        signal_id: str | None,
        accepts: Accepts,
        now: float,
    ) -> SignalReceipt:
        """Check and store a signal for `saga_id`, then wake its run if it waits here."""
        if signal_id is not None and (not isinstance(signal_id, str) or not signal_id.strip()):
            raise SagaSignalConflictError(
                f"signal_id must be a non-blank str (or None: one is generated), got "
                f"{safe_repr(signal_id)}"
            )
        signal_type = type(payload)
        name = type_name(signal_type)
        try:
            text = signal_adapter(signal_type).dump_json(payload).decode()
        except Exception as error:
            raise SagaSignalTypeError(
                f"the {signal_type.__qualname__} signal to saga {saga_id} cannot be stored as "
                f"JSON ({error_text(error)}); send a dataclass or pydantic model with typed fields"
            ) from error
        accepted = await accepts(saga_id)
        if accepted is not None and name not in accepted:
            waits = ", ".join(sorted(accepted)) or "none"
            raise SagaSignalTypeError(
                f"no wait of saga {saga_id} accepts a {name} signal (its waits accept: "
                f"{waits}); send one of those types"
            )
        signal = StoredSignal(
            signal_id or uuid.uuid4().hex, saga_id, name, text, CODEC_VERSION, now
        )
        fresh = await self.store.send_signal(signal)
        waker = self._wakers.get(saga_id)
        if waker is not None:
            waker.set()
        return SignalReceipt(signal.signal_id, duplicate=not fresh)

    async def take(
        self, saga_id: str, signal_type: type, taken: Collection[str], /
    ) -> tuple[str, object] | None:
        waker = self._wakers.get(saga_id)
        if waker is None:
            waker = self._wakers[saga_id] = asyncio.Event()
        waker.clear()  # before reading: a signal stored after the read sets it again
        name = type_name(signal_type)
        signals = await self.store.signals(saga_id)
        for signal in signals:
            if signal.signal_type == name and signal.signal_id not in taken:
                self._wakers.pop(saga_id, None)
                self._seen.pop(saga_id, None)
                if signal.codec != CODEC_VERSION:
                    raise SagaSignalTypeError(
                        f"signal {signal.signal_id} was stored with codec {signal.codec!r}; "
                        f"this library reads {CODEC_VERSION!r}: upgrade it"
                    )
                payload = signal_adapter(signal_type).validate_json(signal.payload)
                return signal.signal_id, payload
        self._seen[saga_id] = len(signals)
        return None

    def seen(self, saga_id: str, /) -> int:
        self._wakers.pop(saga_id, None)  # it suspends: nothing in the process waits for it
        return self._seen.pop(saga_id, 0)

    async def arrival(self, saga_id: str, /) -> None:
        waker = self._wakers.get(saga_id)
        if waker is None:  # pragma: no cover - take() made it just before
            waker = self._wakers[saga_id] = asyncio.Event()
        try:
            async with asyncio.timeout(self.poll):
                await waker.wait()
        except TimeoutError:
            pass
        except asyncio.CancelledError:  # the wait timed out or was cancelled: it is over
            self._wakers.pop(saga_id, None)
            self._seen.pop(saga_id, None)
            raise
