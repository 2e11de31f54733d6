"""Serving the console standalone (`spakky-saga console`): uvicorn on one host and port, until
SIGINT or SIGTERM, then a clean stop."""

from __future__ import annotations

import ipaddress

import uvicorn

from spakky_saga.console.app import create_console_app
from spakky_saga.console_store import SagaConsoleStore
from spakky_saga.engine import SagaEngine


def loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    store: SagaConsoleStore,
    engine: SagaEngine | None,
    *,
    host: str,
    port: int,
    token: str,
) -> None:
    """Serve the console on `host:port` until a signal stops it; say where, and the token."""
    app = create_console_app(store, engine, token=token)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"spakky-saga console: http://{shown}:{port}/", flush=True)
    print(f"  token (to log in and act): {token}", flush=True)
    if engine is None:
        print(
            "  recover and retry compensation are disabled: start it with --app MODULE:TARGET "
            "to run compensations",
            flush=True,
        )
    if not loopback(host):
        print(
            f"  listening on {host}: read-only pages need the token from other machines; put "
            "it behind TLS (see docs/console.md)",
            flush=True,
        )
    await server.serve()
