"""The spakky integration: a real application loads the plugin through its entry point,
scans a module with a saga and its dependency, creates the saga with the dependency
injected, and connects it to the container's SagaEngine when there is one."""

# No `from __future__ import annotations`: spakky reads a Pod function's return annotation
# as a type, and a string would not do.
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.core.pod.annotations.pod import Pod

import spakky_saga.main
import tests.spakky_app
from spakky_saga import PLUGIN_NAME, SagaEngine, SagaEngineNotConnectedError, SagaStatus
from tests.spakky_app.orders import (
    CancelOrderSaga,
    OrderSaga,
    OrderSagaData,
    PaymentDeclinedError,
    TicketService,
)

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@Pod()
def saga_engine() -> SagaEngine:
    """Registers an engine in the container; the plugin connects sagas to it."""
    return SagaEngine()


def started_app(*, plugins: set[Plugin] | None = None, engine: bool = False) -> SpakkyApplication:
    """An application that loads `plugins` (all by default) and scans the test app."""
    app = SpakkyApplication(ApplicationContext()).load_plugins(plugins).scan(tests.spakky_app)
    if engine:
        app.add(saga_engine)
    return app.start()


@pytest.fixture
def app() -> Iterator[SpakkyApplication]:
    application = started_app()
    yield application
    application.stop()


def test_plugin_name_is_the_spakky_plugin_named_spakky_saga() -> None:
    assert Plugin(name="spakky-saga") == PLUGIN_NAME


def test_the_entry_point_names_main_initialize() -> None:
    declared = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["entry-points"]
    (installed,) = [ep for ep in entry_points(group="spakky.plugins") if ep.name == "spakky-saga"]

    assert declared["spakky.plugins"] == {"spakky-saga": "spakky_saga.main:initialize"}
    assert installed.value == "spakky_saga.main:initialize", (
        "the installed package metadata is stale: reinstall the project (scripts/bootstrap.sh)"
    )
    assert installed.load() is spakky_saga.main.initialize


async def test_the_container_creates_the_saga_with_its_dependency_injected(
    app: SpakkyApplication,
) -> None:
    saga = app.container.get(OrderSaga)
    tickets = app.container.get(TicketService)

    result = await saga.execute(OrderSagaData(order_id=7))

    assert saga.tickets is tickets
    assert result.status is SagaStatus.COMPLETED
    assert result.saga_name == "OrderSaga"
    assert result.data.ticket_id == 101
    assert tickets.log == ["issue 101 for order 7"]


async def test_a_container_made_saga_compensates_through_its_dependency(
    app: SpakkyApplication,
) -> None:
    saga = app.container.get(OrderSaga)

    result = await saga.execute(OrderSagaData(order_id=8, fail_payment=True))

    assert result.status is SagaStatus.FAILED
    assert result.failed_step == "charge"
    assert isinstance(result.error, PaymentDeclinedError)
    assert app.container.get(TicketService).log == ["issue 101 for order 8", "cancel 101"]


async def test_sagas_are_connected_to_a_container_registered_engine() -> None:
    app = started_app(engine=True)
    try:
        order_saga = app.container.get(OrderSaga)
        cancel_saga = app.container.get(CancelOrderSaga)
        app.container.get(SagaEngine).close()

        with pytest.raises(SagaEngineNotConnectedError, match='saga "OrderSaga"'):
            await order_saga.execute(OrderSagaData(order_id=1))
        with pytest.raises(SagaEngineNotConnectedError, match='saga "CancelOrderSaga"'):
            await cancel_saga.execute(OrderSagaData(order_id=1, ticket_id=5))
        assert app.container.get(TicketService).log == []
    finally:
        app.stop()


async def test_load_plugins_including_plugin_name_connects_sagas() -> None:
    app = started_app(plugins={PLUGIN_NAME}, engine=True)
    try:
        app.container.get(SagaEngine).close()

        with pytest.raises(SagaEngineNotConnectedError):
            await app.container.get(OrderSaga).execute(OrderSagaData(order_id=1))
    finally:
        app.stop()


async def test_without_the_plugin_sagas_are_not_connected_to_the_container_engine() -> None:
    app = started_app(plugins=set(), engine=True)
    try:
        app.container.get(SagaEngine).close()

        result = await app.container.get(OrderSaga).execute(OrderSagaData(order_id=1))

        assert result.status is SagaStatus.COMPLETED
    finally:
        app.stop()


async def test_without_a_container_engine_sagas_use_the_default_engine(
    app: SpakkyApplication,
) -> None:
    assert app.container.get_or_none(SagaEngine) is None

    result = await app.container.get(OrderSaga).execute(OrderSagaData(order_id=2))

    assert result.status is SagaStatus.COMPLETED


async def test_stopping_the_application_closes_the_engine_its_sagas_run_on() -> None:
    app = started_app(engine=True)
    saga = app.container.get(OrderSaga)

    app.stop()

    with pytest.raises(SagaEngineNotConnectedError) as raised:
        await saga.execute(OrderSagaData(order_id=1))
    assert str(raised.value) == (
        'cannot execute saga "OrderSaga": its saga engine was closed '
        "(the application is shutting down)"
    )
