"""Who may look and who may act: the console's authentication hook, its token login, CSRF
tokens, the loopback rule for read-only viewing, and the security headers on every response.

- An action (recover, retry compensation, cancel) needs an authenticated operator: the
  `auth` hook names one (the host application's own authentication when mounted), or, by
  default, a token login (`TokenAuth`: the token `spakky-saga console` prints at start).
- Every action form carries a CSRF token bound to the operator (an HMAC of their identity
  under a per-process secret); a request from another site (`Origin`, `Sec-Fetch-Site`) is
  refused before the token is even read.
- Read-only pages are open to loopback clients (127.0.0.1, ::1); anyone else must log in.
- Every response says `Content-Security-Policy` (scripts and styles only from the console's
  own files: no inline script runs, even one smuggled into a page), `nosniff`, no framing
  and no referrer to other sites.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

type ConsoleAuth = Callable[[Request], Awaitable[str | None]]
"""The authentication hook: the name of the operator who sent `request` (what the audit trail
records as "by"), or None when the request is not authenticated."""

TOKEN_COOKIE: Final = "spakky_console_token"
OPERATOR_COOKIE: Final = "spakky_console_operator"

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" makes a form post's Origin "null"
    (b"cache-control", b"no-store"),
)


class TokenAuth:
    """The default `auth` hook: an operator logs in (the console's login form) with `token`
    and a name of their choosing; the browser keeps both in HttpOnly, SameSite=Strict
    cookies. Requests may also send `Authorization: Bearer TOKEN` (named "token holder")."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(24)

    def accepts(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.token.encode())

    async def __call__(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer ") and self.accepts(header.removeprefix("Bearer ")):
            return "token holder"
        cookie = request.cookies.get(TOKEN_COOKIE)
        if cookie is None or not self.accepts(cookie):
            return None
        return (request.cookies.get(OPERATOR_COOKIE) or "token holder")[:80]


class CsrfTokens:
    """CSRF tokens bound to an operator: an HMAC of their name under a per-process secret."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def token_for(self, operator: str) -> str:
        return hmac.new(self._secret, operator.encode(), hashlib.sha256).hexdigest()

    def valid(self, operator: str, token: str) -> bool:
        return hmac.compare_digest(self.token_for(operator).encode(), token.encode())


def cross_site(request: Request) -> bool:
    """Whether the browser says the request came from another site (`Sec-Fetch-Site`), or its
    `Origin` is not this console's."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    return origin != f"{request.url.scheme}://{request.url.netloc}"


def from_loopback(request: Request) -> bool:
    """Whether the client is this machine (127.0.0.0/8, ::1)."""
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # no address (a Unix socket) or a name: not known to be this machine
        return False


def origin_of(request: Request) -> str:
    """Where a request came from, as the audit trail records it: the client's address."""
    return request.client.host if request.client is not None else "unknown"


class SecurityHeaders:
    """ASGI middleware adding the console's security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
