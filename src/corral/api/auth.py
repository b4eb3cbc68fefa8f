"""Authentication of the REST API: sessions (cookie + CSRF token), API tokens, login rate limiting,
one-time console tickets, and the ASGI middleware that puts every non-public path behind them.

- A browser logs in with `POST /api/login`: the server keeps the session in memory and sets an
  HttpOnly, SameSite=Strict cookie (Secure over https). Every state-changing request
  (POST/PUT/PATCH/DELETE) with that cookie must carry `X-CSRF-Token` equal to the session's token.
- A script sends `Authorization: Bearer <token>` (from `corral user token`): no cookie, no CSRF.
- `/metrics` takes only a bearer token.
- Failed logins are throttled per client address and user name (see throttle.py), and at most
  KDF_SLOTS password checks (scrypt, 32 MiB each) run at once; the others wait up to KDF_WAIT_S.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NoReturn

import anyio.to_thread
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api.errors import refuse
from corral.api.throttle import Attempt, LoginThrottle, TooManyAttempts
from corral.services.users import UserStore

log = logging.getLogger("corral.api")

SESSION_COOKIE = "corral_session"
CSRF_HEADER = "x-csrf-token"
SESSION_IDLE_S = 3600.0
SESSION_MAX_S = 12 * 3600.0
TICKET_TTL_S = 30.0
KDF_SLOTS = 2  # password checks at once: scrypt takes 32 MiB and ~0.1 s of a core each
KDF_WAIT_S = 10.0  # how long a login waits for a slot before it gets 503
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_PATHS = frozenset({"/", "/api/health", "/api/login", "/api/docs", "/api/docs/oauth2-redirect",
                          "/api/openapi.json"})
BEARER_ONLY_PATHS = frozenset({"/metrics"})


@dataclass
class Session:
    key: str
    user: str
    csrf: str
    created: float
    last_seen: float


@dataclass(frozen=True)
class Principal:
    """Who sent a request, and how: through a session cookie or an API token."""

    user: str
    via: Literal["session", "token"]
    key: str  # session key, or "token:<id>": what a console ticket is tied to

    @property
    def session_key(self) -> str | None:
        return self.key if self.via == "session" else None


@dataclass
class _Ticket:
    domain: str
    principal_key: str
    user: str
    expires: float


class LoginBusy(Exception):
    """Every password-check slot stayed taken for KDF_WAIT_S: try again shortly."""

    retry_after_s = 2.0


class Authenticator:
    """In-memory sessions, rate limiter and tickets over the users file. Thread-safe."""

    def __init__(self, users: UserStore, *, clock: Callable[[], float] = time.monotonic,
                 session_idle_s: float = SESSION_IDLE_S, session_max_s: float = SESSION_MAX_S,
                 kdf_slots: int = KDF_SLOTS, kdf_wait_s: float = KDF_WAIT_S) -> None:
        self.users = users
        self.clock = clock
        self.session_idle_s = session_idle_s
        self.session_max_s = session_max_s
        self.throttle = LoginThrottle(clock)
        self.kdf_wait_s = kdf_wait_s
        self._kdf = threading.BoundedSemaphore(kdf_slots)
        self._sessions: dict[str, Session] = {}
        self._tickets: dict[str, _Ticket] = {}
        self._lock = threading.Lock()

    # --- login ----------------------------------------------------------------------------------
    async def login_async(self, user: str, password: str, address: str) -> Session | None:
        """A new session when the password is right; None when not. TooManyAttempts when throttled,
        LoginBusy when no password-check slot came free in time. Waiting takes no worker thread."""
        attempt = self._begin(user, address)
        deadline = time.monotonic() + self.kdf_wait_s
        pause = 0.005
        while not self._kdf.acquire(blocking=False):
            if time.monotonic() >= deadline:
                self._busy(attempt, user)
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.05)
        try:
            right = await anyio.to_thread.run_sync(self.users.authenticate, user, password)
        finally:
            self._kdf.release()
        return self._conclude(attempt, user, right)

    def login(self, user: str, password: str, address: str = "local") -> Session | None:
        """`login_async` for callers in threads (the password check runs in the calling thread)."""
        attempt = self._begin(user, address)
        if not self._kdf.acquire(timeout=self.kdf_wait_s):
            self._busy(attempt, user)
        try:
            right = self.users.authenticate(user, password)
        finally:
            self._kdf.release()
        return self._conclude(attempt, user, right)

    def _begin(self, user: str, address: str) -> Attempt:
        try:
            return self.throttle.begin(user, address)
        except TooManyAttempts as exc:
            log.warning("login refused: user %r from %s: too many failed logins %s, retry in %d s", user,
                        address, "from this address" if exc.scope == "address" else "of this name from this address",
                        exc.retry_after)
            raise

    def _busy(self, attempt: Attempt, user: str) -> NoReturn:
        self.throttle.withdraw(attempt)
        log.warning("login refused: user %r from %s: too many logins at once", user, attempt.address)
        raise LoginBusy()

    def _conclude(self, attempt: Attempt, user: str, right: bool) -> Session | None:
        if not right:
            log.warning("login failed: user %r from %s: wrong user name or password", user, attempt.address)
            return None
        self.throttle.succeeded(attempt)
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._prune_sessions(now)
            self._sessions[session.key] = session
        return session

    def logout(self, session_key: str) -> None:
        with self._lock:
            self._sessions.pop(session_key, None)
            self._tickets = {t: v for t, v in self._tickets.items() if v.principal_key != session_key}

    def _prune_sessions(self, now: float) -> None:
        self._sessions = {k: s for k, s in self._sessions.items() if not self._expired(s, now)}

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.session_idle_s or now - session.created > self.session_max_s

    # --- per request ------------------------------------------------------------------------------
    def session(self, key: str) -> Session | None:
        now = self.clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if self._expired(session, now) or not self.users.exists(session.user):
                del self._sessions[key]
                return None
            session.last_seen = now
            return session

    def identify(self, conn: HTTPConnection) -> tuple[Principal | None, str | None]:
        """(principal, None) or (None, why not) for the credentials of a request."""
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "Authorization must be 'Bearer <token>'"
            owner = self.users.token_owner(token.strip())
            if owner is None:
                return None, "invalid or revoked API token"
            return Principal(owner[0], "token", f"token:{owner[1]}"), None
        cookie = conn.cookies.get(SESSION_COOKIE)
        if cookie:
            session = self.session(cookie)
            if session is None:
                return None, "session expired or unknown: log in again"
            return Principal(session.user, "session", session.key), None
        return None, "authentication required: log in (POST /api/login) or send 'Authorization: Bearer <token>'"

    def csrf_ok(self, principal: Principal, sent: str | None) -> bool:
        if principal.via != "session":
            return True
        with self._lock:
            session = self._sessions.get(principal.key)
        return session is not None and sent is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())

    # --- console tickets ---------------------------------------------------------------------------
    def issue_ticket(self, principal: Principal, domain: str) -> str:
        ticket = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._tickets = {t: v for t, v in self._tickets.items() if v.expires > now}
            self._tickets[ticket] = _Ticket(domain, principal.key, principal.user, now + TICKET_TTL_S)
        return ticket

    def redeem_ticket(self, ticket: str, domain: str, principal_key: str | None = None) -> str | None:
        """The user a console ticket was issued to, when it is valid for `domain` (and, if given, the
        same session or token); None otherwise. A ticket is good once, whatever the outcome."""
        now = self.clock()
        with self._lock:
            found = self._tickets.pop(ticket, None)
        if found is None or found.expires <= now or found.domain != domain:
            return None
        if principal_key is not None and not hmac.compare_digest(found.principal_key, principal_key):
            return None
        if found.principal_key.startswith("token:"):
            return found.user if self.users.exists(found.user) else None
        with self._lock:
            session = self._sessions.get(found.principal_key)
        return found.user if session is not None and not self._expired(session, now) else None


class AuthMiddleware:
    """Puts every path but the public ones behind a session or a token, and checks CSRF (pure ASGI)."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        principal, problem = self.auth.identify(conn)
        if principal is None:
            await self._refuse(scope, receive, send, 401, problem or "authentication required")
            return
        if scope["path"] in BEARER_ONLY_PATHS and principal.via != "token":
            await self._refuse(scope, receive, send, 401, f"{scope['path']} needs 'Authorization: Bearer <token>'")
            return
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS \
                and not self.auth.csrf_ok(principal, conn.headers.get(CSRF_HEADER)):
            await self._refuse(scope, receive, send, 403, "missing or wrong X-CSRF-Token header")
            return
        if scope["type"] == "websocket" and principal.via == "session" and not _same_origin(conn):
            await self._refuse(scope, receive, send, 403, "cross-origin WebSocket refused")
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        await refuse(scope, receive, send, status, message, headers)


def _same_origin(conn: HTTPConnection) -> bool:
    origin = conn.headers.get("origin")
    if origin is None:
        return True  # not a browser
    host = conn.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


