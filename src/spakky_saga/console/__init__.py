"""The operations console: a web page for the sagas in a store (the `console` extra).

`create_console_app(store, engine=None, auth=...)` is an ASGI application to mount in a
Starlette or FastAPI application; `spakky-saga console --store URL` serves it standalone.
See docs/console.md.
"""

from spakky_saga.console.app import ConsoleConfigurationError, create_console_app
from spakky_saga.console.security import CONTENT_SECURITY_POLICY, ConsoleAuth, TokenAuth

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "ConsoleAuth",
    "ConsoleConfigurationError",
    "TokenAuth",
    "create_console_app",
]
