"""Durable sagas in a spakky application: a `SagaEngine` pod with a store makes container
sagas durable, they register themselves for recovery, and `recover_on_start=True` finishes
what a previous run of the application left unfinished."""

# No `from __future__ import annotations`: spakky reads a Pod function's return annotation.
import asyncio
from pathlib import Path

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext

import tests.spakky_durable_app
from spakky_saga import (
    PLUGIN_NAME,
    SagaEngineNotConnectedError,
    SagaStatus,
    SqliteSagaStore,
    StoredStatus,
)
from tests.durable_support import StoreClock
from tests.spakky_durable_app.shipping import (
    LEDGER,
    SETTINGS,
    Crash,
    ShipmentData,
    ShipOrderSaga,
)


def started_app() -> SpakkyApplication:
    app = SpakkyApplication(ApplicationContext()).load_plugins({PLUGIN_NAME})
    return app.scan(tests.spakky_durable_app).start()


@pytest.fixture(autouse=True)
def store_clock(tmp_path: Path) -> StoreClock:
    """The store's clock: `expire()` runs the crashed run's lease out, without waiting."""
    clock = StoreClock()
    SETTINGS.update(path=str(tmp_path / "sagas.db"), crash_at=None, clock=clock)
    LEDGER.clear()
    return clock


async def test_a_container_saga_runs_durably_on_the_engine_pod() -> None:
    app = started_app()
    try:
        saga = app.container.get(ShipOrderSaga)
        result = await saga.execute(ShipmentData(order_id=7))
    finally:
        app.stop()

    assert result.status is SagaStatus.COMPLETED
    assert LEDGER == ["pack", "hand_over"]


async def test_an_unfinished_saga_is_recovered_when_the_application_starts_again(
    store_clock: StoreClock,
) -> None:
    first = started_app()
    SETTINGS["crash_at"] = "hand_over"
    try:
        with pytest.raises(Crash):
            await first.container.get(ShipOrderSaga).execute(ShipmentData(order_id=7))
    finally:
        first.stop()
    store_clock.expire()  # the crashed run's lease runs out

    second = started_app()  # recover_on_start: the saga is compensated during start
    second.stop()

    assert LEDGER == ["pack", "unpack"]  # hand_over may have happened: it has no compensation


async def test_a_durable_saga_refuses_an_engine_without_a_store() -> None:
    with pytest.raises(SagaEngineNotConnectedError, match="durable = True"):
        await ShipOrderSaga().execute(ShipmentData(order_id=1))
    assert LEDGER == []


def test_the_recovered_saga_is_finished_in_the_store(store_clock: StoreClock) -> None:
    async def crash_then_recover() -> list[StoredStatus]:
        first = started_app()
        SETTINGS["crash_at"] = "hand_over"
        try:
            with pytest.raises(Crash):
                await first.container.get(ShipOrderSaga).execute(ShipmentData(order_id=3))
        finally:
            first.stop()
        store_clock.expire()
        started_app().stop()
        store = SqliteSagaStore(SETTINGS["path"])
        records = await store.list()
        await store.close()
        return [r.status for r in records]

    assert asyncio.run(crash_then_recover()) == [StoredStatus.FAILED]
