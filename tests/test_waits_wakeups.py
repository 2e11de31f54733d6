"""PostgreSQL LISTEN/NOTIFY for waits: a signal sent through one engine (another process, in
real life) wakes a saga that another engine serves at once, not at its next pass; when the
listening connection fails, the serving engine logs it and goes on polling."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from spakky_saga import (
    AbstractSagaData,
    PostgresSagaStore,
    SagaEngine,
    SagaFlow,
    SagaStatus,
    SagaStoreConnectionError,
    saga_flow,
    wait_for,
)
from tests.postgres_support import postgres_schema

pytest.importorskip("psycopg")


class Order(AbstractSagaData):
    reference: str = ""


@dataclass(frozen=True)
class Paid:
    reference: str


def paid(data: Order, signal: Paid) -> Order:
    return dataclasses.replace(data, reference=signal.reference)


def waiting_flow(shipped: dict[str, asyncio.Event]) -> SagaFlow[Order]:
    async def ship(data: Order) -> None:
        shipped[str(data.saga_id)].set()

    return saga_flow(wait_for(Paid, merge=paid, timeout=timedelta(hours=48)), ship)


async def _listening(dsn: str, channel: str) -> int:
    """The backend pid of the connection LISTENing on `channel`, once it does."""
    import psycopg  # noqa: PLC0415 - the optional driver

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(2000):
            cursor = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE query = %s", (f'LISTEN "{channel}"',)
            )
            row = await cursor.fetchone()
            if row is not None:
                pid: int = row[0]
                return pid
            await asyncio.sleep(0.005)
    raise AssertionError(f"nobody listens on {channel}")


async def test_a_signal_sent_through_another_engine_wakes_the_serving_engine_at_once() -> None:
    async with postgres_schema() as (dsn, schema):
        shipped: dict[str, asyncio.Event] = {}
        flow = waiting_flow(shipped)
        serving = SagaEngine(store=PostgresSagaStore(dsn, schema=schema), log=False)
        serving.register("order", flow)
        sending = SagaEngine(store=PostgresSagaStore(dsn, schema=schema), log=False)
        sending.register("order", flow)
        data = Order()
        shipped[str(data.saga_id)] = asyncio.Event()
        try:
            async with serving.recovering(every=timedelta(hours=1)):
                await _listening(dsn, f"spakky_saga_wake_{schema}")
                result = await sending.run(flow, data, saga_name="order")
                assert result.status is SagaStatus.WAITING

                await sending.signal(data.saga_id, Paid("p-1"))
                # An hour between passes: only the notice can wake it this soon.
                await asyncio.wait_for(shipped[str(data.saga_id)].wait(), timeout=30)
        finally:
            await sending.aclose()
            await serving.aclose()


async def test_wakeups_say_when_the_listening_connection_cannot_be_made_or_breaks() -> None:
    unreachable = PostgresSagaStore("postgresql://root@127.0.0.1:1/test", schema="nowhere")
    with pytest.raises(SagaStoreConnectionError, match="cannot listen for wake-ups"):
        await anext(aiter(unreachable.wakeups()))

    import psycopg  # noqa: PLC0415 - the optional driver

    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(dsn, schema=schema)
        wakeups = store.wakeups()
        waiting = asyncio.ensure_future(anext(aiter(wakeups)))
        pid = await _listening(dsn, f"spakky_saga_wake_{schema}")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(SagaStoreConnectionError, match=r"listening for wake-ups at .* failed"):
            await asyncio.wait_for(waiting, timeout=30)
        await wakeups.aclose()


async def test_a_serving_engine_whose_listening_fails_logs_it_and_goes_on_polling(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with postgres_schema() as (dsn, schema):
        store = PostgresSagaStore(dsn, schema=schema)

        async def broken(self: Any) -> Any:
            raise SagaStoreConnectionError("no listening today", transient=True)
            yield  # an async generator  # pragma: no cover

        monkeypatch.setattr(PostgresSagaStore, "wakeups", broken)
        engine = SagaEngine(store=store)
        stop = asyncio.Event()
        with caplog.at_level(logging.WARNING, logger="spakky_saga"):
            serving = asyncio.ensure_future(engine.serve(every=timedelta(hours=1), stop=stop))
            for _ in range(2000):
                if "wakeups_failed" in caplog.text:
                    break
                await asyncio.sleep(0.005)
            stop.set()
            await asyncio.wait_for(serving, timeout=30)
        await engine.aclose()
        assert "status=wakeups_failed error=SagaStoreConnectionError" in caplog.text
