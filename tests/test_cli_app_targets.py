"""What `--app` accepts: a spakky application (or a factory returning one), whose container's
`SagaEngine` pod has the flows its `@Saga()` classes registered; a `SagaEngine`; a function
returning either. Anything else is a one-line error, never a traceback. Run as a subprocess,
with the application of tests/cli_spakky_app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import SagaEngine
from spakky_saga.cli import ATTENTION, OK, USAGE
from tests import cli_app
from tests.cli_app import spakky_saga
from tests.cli_spakky_app.shop import SETTINGS, OrderData, OrderSaga

APPLICATION = "tests.cli_spakky_app.application"


@pytest.fixture(autouse=True)
async def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with cli_app.environment_store("sqlite", tmp_path, monkeypatch):
        yield


async def crash_an_order() -> str:
    """An OrderSaga whose process died in `ship`, its lease expired at once."""
    saga = OrderSaga()
    engine = SagaEngine(store=cli_app.store(), lease=timedelta(milliseconds=1), log=False)
    saga.connect_engine(engine)
    data = OrderData(order_id=1)
    SETTINGS["crash"] = True
    try:
        with pytest.raises(cli_app.Crash):
            await saga.execute(data)
    finally:
        SETTINGS["crash"] = False
        await engine.aclose()
    return str(data.saga_id)


@pytest.mark.parametrize("target", [f"{APPLICATION}:app", f"{APPLICATION}:make_app"])
async def test_recover_takes_a_spakky_application_and_uses_its_engine_pod(target: str) -> None:
    crashed = await crash_an_order()

    done = spakky_saga("recover", "--app", target)

    assert (done.returncode, done.stdout.strip()) == (OK, f"{crashed} (OrderSaga): compensated")
    assert done.stderr == ""
    shown = spakky_saga("show", crashed, *cli_app.store_options())
    assert "undo reserve  compensated" in shown.stdout


async def test_an_engine_factory_without_the_application_gets_a_hint_to_pass_the_application() -> (
    None
):
    crashed = await crash_an_order()

    done = spakky_saga("recover", "--app", "tests.cli_spakky_app.shop:saga_engine")

    assert done.returncode == ATTENTION
    assert done.stdout.startswith(
        f'{crashed} (OrderSaga): refused: SagaNotRegisteredError: no flow is registered as "'
    )
    assert "pass the application instead (--app MODULE:app" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "tests.cli_spakky_app.shop:OrderSaga",
            "OrderSaga is a saga class; its flow is registered with the engine when the "
            "application's container creates it, so pass the application",
        ),
        ("tests.cli_spakky_app.shop:OrderData", "OrderData is a class; expected a SagaEngine"),
        (f"{APPLICATION}:not_an_app", "got 'an engine, honest' (str)"),
        ("tests.cli_app:engine_without_flows.__name__", "got 'engine_without_flows' (str)"),
    ],
)
def test_a_target_that_is_neither_an_engine_nor_an_application_is_one_line_exit_2(
    target: str, message: str
) -> None:
    done = spakky_saga("recover", "--app", target)

    assert done.returncode == USAGE
    [line] = done.stderr.splitlines()
    assert line.startswith(f"spakky-saga: --app {target}: ")
    assert message in line


def test_an_application_whose_factory_fails_is_one_line_exit_1() -> None:
    done = spakky_saga("recover", "--app", f"{APPLICATION}:broken_app")

    assert done.returncode == ATTENTION
    assert done.stderr.splitlines() == [
        f"spakky-saga: --app {APPLICATION}:broken_app: broken_app() raised RuntimeError: "
        "the configuration file is missing"
    ]
