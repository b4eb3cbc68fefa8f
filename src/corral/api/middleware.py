"""ASGI middlewares of the API that run before authentication and routing, outermost first: the body
limit, the security headers (and the Host check), the web UI's static files. Authentication is auth.py's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.errors import error, refuse

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0
# A login's body is a name and a password (at most 1024 characters): a stranger's request needs no more.
SMALL_BODY_PATHS: Mapping[str, int] = {"/api/login": 16 * 1024}


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length a request declares; None when it declares none; -1 when the header is malformed."""
    values = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
    if not values:
        return None
    if not all(v.strip().isdigit() for v in values) or len({int(v) for v in values}) != 1:
        return -1
    return int(values[0])


class BodyLimit:
    """Bounds every HTTP request's body, before anything else looks at the request.

    A declared Content-Length over the limit gets 413 at once, without reading a byte of the body; a body
    without one (chunked) is counted as it arrives and cut off with 413 as soon as it passes the limit; a
    body not fully received within `timeout_s` of the request's start gets 408 (and the connection is
    closed). The application then sees the client as gone. Pure ASGI, so it can sit outermost.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 timeout_s: float = DEFAULT_BODY_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.clock = clock

    def limit_for(self, path: str) -> int:
        return min(self.max_bytes, SMALL_BODY_PATHS.get(path, self.max_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _declared_length(scope)
        if declared == -1:
            await _refuse(scope, receive, send, 400, "invalid Content-Length header", close=True)
            return
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, 413, _too_large(limit))
            return
        deadline = self.clock() + self.timeout_s
        received = 0
        body_done = False
        started = False  # the application's response
        answered = False  # ours (413 or 408): the application's answer is dropped

        async def guarded_receive() -> Message:
            nonlocal received, body_done, answered
            if answered:
                return {"type": "http.disconnect"}
            if body_done:  # past the body, an application waits only for the client to leave
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - self.clock()))
            except TimeoutError:
                status, text, close = 408, f"request body not received within {self.timeout_s:g} s", True
            else:
                if message["type"] != "http.request":
                    return message
                received += len(message.get("body", b""))
                if received <= limit:
                    body_done = not message.get("more_body", False)
                    return message
                status, text, close = 413, _too_large(limit), False
            if not started:
                answered = True
                await _refuse(scope, receive, send, status, text, close=close)
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


def _too_large(limit: int) -> str:
    return f"request body too large: at most {limit} bytes"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str, *,
                  close: bool = False) -> None:
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if close:
        headers["Connection"] = "close"
    await error(status, message, headers)(scope, receive, send)


SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]

# The web UI: static files (vanilla JS modules, CSS, and the vendored xterm.js / noVNC that
# scripts/setup copies into static/vendor/). "/" is its page; "/ui/..." its assets. They are public (the
# page itself logs in through /api/login); everything they do goes through the API.
WEB_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
UI_PREFIX = "/ui/"
UI_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
          "frame-src 'self'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class WebUI:
    """Serves `/` (the UI's page) and `/ui/...` (its assets) from WEB_DIR, before authentication; passes
    everything else on."""

    def __init__(self, app: ASGIApp, directory: Path = WEB_DIR) -> None:
        self.app = app
        self.files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(UI_PREFIX)):
            await self.app(scope, receive, send)
            return
        inner = {**scope, "path": "/index.html" if path == "/" else path[len(UI_PREFIX) - 1:], "root_path": ""}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"cache-control", b"no-cache"),
                                                  (b"content-security-policy", UI_CSP.encode())]}
            await send(message)

        try:
            await self.files(inner, receive, send_with_headers)
        except StarletteHTTPException as exc:  # 404, 405: raised before anything was sent
            await error(exc.status_code, "no such file of the web UI" if exc.status_code == 404 else str(exc.detail),
                        dict(exc.headers) if exc.headers else None)(scope, receive, send)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def host_of(header: str) -> str:
    """The host part of a Host header: `[::1]:8080` -> `[::1]`, `localhost:8080` -> `localhost`."""
    if header.startswith("["):
        return header[:header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityHeaders:
    """nosniff, no framing, no referrer, and no caching of API answers, on every HTTP response; and,
    when `allowed_hosts` is given, only requests naming one of them in Host (defeats DNS rebinding
    of a server on loopback)."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed_hosts is not None and scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1").lower()
            if host_of(host) not in self.allowed_hosts:
                await refuse(scope, receive, send, 400, f"unexpected Host header {host!r}")
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = scope["path"].startswith("/api/") or scope["path"] == "/metrics"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if scope["path"].startswith("/api/plans/") and scope["path"].endswith("/report"):
                    # The web console shows a plan's report in a frame of its own page (same origin only).
                    headers = [(k, b"SAMEORIGIN" if k == b"x-frame-options" else v) for k, v in headers]
                if no_store:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
