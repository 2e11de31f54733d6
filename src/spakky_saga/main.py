"""Entry point of the `spakky-saga` plugin, as spakky plugins have it: the `spakky.plugins`
entry point `spakky-saga` names `spakky_saga.main:initialize`, which
`SpakkyApplication.load_plugins()` calls with the application."""

from __future__ import annotations

from spakky.core.application.application import SpakkyApplication

from spakky_saga.spakky_plugin import SagaEngineConnector, SagaRecoveryService


def initialize(app: SpakkyApplication) -> None:
    """Add the saga integration to `app` (see `spakky_saga.spakky_plugin`)."""
    app.add(SagaEngineConnector)
    app.add(SagaRecoveryService)
