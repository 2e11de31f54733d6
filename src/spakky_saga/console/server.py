"""Serving the console standalone (`spakky-saga console`): uvicorn on one host and port, until
SIGINT or SIGTERM, then a clean stop (the store closed, exit status 0)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
from collections.abc import Iterator

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


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by the handlers `serve` installs: uvicorn's own re-raise the
    signal once it stopped, which would end the process before the store is closed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    store: SagaConsoleStore,
    engine: SagaEngine | None,
    *,
    host: str,
    port: int,
    token: str,
    refresh_seconds: float = 5.0,
) -> None:
    """Serve the console on `host:port` until a signal stops it; say where, and the token."""
    app = create_console_app(store, engine, token=token, refresh_seconds=refresh_seconds)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    stops = (signal.SIGINT, signal.SIGTERM)
    for stop in stops:
        loop.add_signal_handler(stop, setattr, server, "should_exit", True)
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
    try:
        await server.serve()
    finally:
        for stop in stops:
            loop.remove_signal_handler(stop)
