"""The application `--app` names: built, not started (the command starts and stops it)."""

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext

from spakky_saga import PLUGIN_NAME
from tests.cli_spakky_app.shop import OrderSaga, saga_engine


def make_app() -> SpakkyApplication:
    """A factory returning the application, as `--app MODULE:make_app`."""
    return (
        SpakkyApplication(ApplicationContext())
        .load_plugins(include={PLUGIN_NAME})
        .add(saga_engine)
        .add(OrderSaga)
    )


app = make_app()


def broken_app() -> SpakkyApplication:
    raise RuntimeError("the configuration file is missing")


def not_an_app() -> str:
    return "an engine, honest"
