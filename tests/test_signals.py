"""Signals at the seams: options and ids refused with a reason, a signal id naming a signal to
another saga, a stored signal of an unknown codec or a log entry of an unknown version
refused (never guessed), a suspended saga waking at its saga timeout."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import timedelta

import pytest

from spakky_saga import (
    AbstractSagaData,
    InMemorySagaStore,
    RecoveryOutcome,
    SagaEngine,
    SagaEngineConfigurationError,
    SagaSignalConflictError,
    SagaStatus,
    SagaStoreError,
    StoredSignal,
    saga_flow,
    wait_for,
)
from spakky_saga.signals import RunningSignals, Signals, check_send
from spakky_saga.store import StoredEvent, signal_of


class Data(AbstractSagaData):
    note: str = ""


@dataclass(frozen=True)
class Note:
    text: str


def noted(data: Data, signal: Note) -> Data:
    return dataclasses.replace(data, note=signal.text)


FLOW = saga_flow(wait_for(Note, merge=noted, timeout=timedelta(hours=48)))


def test_a_signal_poll_that_is_not_a_positive_timedelta_is_refused() -> None:
    with pytest.raises(SagaEngineConfigurationError, match="signal_poll"):
        SagaEngine(signal_poll=timedelta(0))


async def test_a_blank_signal_id_is_refused() -> None:
    engine = SagaEngine(log=False)

    with pytest.raises(SagaSignalConflictError, match="signal_id must be a non-blank str"):
        await engine.signal("x", Note("n"), signal_id=" ")


def test_a_signal_id_used_for_another_saga_is_a_conflict() -> None:
    first = StoredSignal("s", "saga-1", "m:Note", "{}", "c", 1.0)
    other = first._replace(saga_id="saga-2")

    assert check_send("RUNNING", first, first) is False  # a repeat
    with pytest.raises(SagaSignalConflictError, match="to saga saga-1"):
        check_send("RUNNING", first, other)


async def test_a_stored_signal_of_another_codec_is_refused_not_guessed() -> None:
    running = RunningSignals()
    running.opened("saga", frozenset({"tests.test_signals:Note"}))
    await running.send_signal(
        StoredSignal("s", "saga", "tests.test_signals:Note", "{}", "pydantic-json/9", 1.0)
    )
    signals = Signals(running, poll=None)

    with pytest.raises(Exception, match="codec 'pydantic-json/9'"):
        await signals.take("saga", Note, ())
    assert await running.accepts("saga") == frozenset({"tests.test_signals:Note"})
    running.closed("saga")
    assert await running.signals("saga") == []


def test_a_log_entry_recording_a_signal_in_an_unknown_version_is_refused() -> None:
    entry = StoredEvent(3, "signal_received", 1.0, data='{"signal_id": "s"}', data_type="x/9")

    with pytest.raises(SagaStoreError, match="this library reads 'spakky_saga:signal/1'"):
        signal_of(entry)


async def test_a_suspended_saga_wakes_at_its_saga_timeout_and_times_out() -> None:
    store = InMemorySagaStore()
    engine = SagaEngine(store=store, log=False)
    flow = FLOW.timeout(timedelta(milliseconds=100))
    engine.register("noting", flow)
    data = Data()

    waiting = await engine.run(flow, data, saga_name="noting")
    early = await engine.recover()
    await asyncio.sleep(0.2)
    report = await engine.recover()

    assert waiting.status is SagaStatus.WAITING
    assert len(early) == 0
    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.COMPENSATED]
    result = report.sagas[0].result
    assert result is not None
    assert result.status is SagaStatus.TIMED_OUT
