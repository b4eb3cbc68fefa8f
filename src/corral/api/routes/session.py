"""Sessions: liveness, login (throttled, with bounded password checks), logout, who am I."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.api import __version__
from corral.api.auth import SESSION_COOKIE, LoginBusy
from corral.api.errors import ERRORS, ErrorBody
from corral.api.models import LoginBody
from corral.api.routes import ApiContext, principal_of
from corral.api.schemas import Caller, Health, SessionEnded, SessionStarted
from corral.api.throttle import TooManyAttempts


def router(ctx: ApiContext) -> APIRouter:
    auth = ctx.auth
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/health", tags=["session"])
    async def health() -> Health:
        """Liveness; no authentication. Answered on the event loop: it needs no worker thread."""
        return Health(status="ok", version=__version__)

    @api.post("/login", tags=["session"], responses={
        429: {"model": ErrorBody, "description": "Too many failed logins from this address"},
        503: {"model": ErrorBody, "description": "Too many logins at once"}})
    async def login(body: LoginBody, request: Request, response: Response) -> SessionStarted:
        """Start a session: sets the session cookie and returns the CSRF token to send as X-CSRF-Token."""
        address = request.client.host if request.client else "unknown"
        try:
            session = await auth.login_async(body.user, body.password, address)
        except TooManyAttempts as exc:
            retry = exc.retry_after
            what = "from this address" if exc.scope == "address" else f"for {body.user!r} from this address"
            raise StarletteHTTPException(429, f"too many failed logins {what}: retry in {retry} s",
                                         headers={"Retry-After": str(retry)}) from None
        except LoginBusy as exc:
            retry = int(exc.retry_after_s)
            raise StarletteHTTPException(503, f"too many logins at once: retry in {retry} s",
                                         headers={"Retry-After": str(retry)}) from None
        if session is None:
            raise StarletteHTTPException(401, "wrong user name or password")
        response.set_cookie(SESSION_COOKIE, session.key, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return SessionStarted(user=session.user, csrf_token=session.csrf, idle_timeout_s=auth.session_idle_s)

    @api.post("/logout", tags=["session"])
    def logout(request: Request, response: Response) -> SessionEnded:
        """End this session (a no-op for a bearer token)."""
        principal = principal_of(request)
        if principal.session_key is not None:
            auth.logout(principal.session_key)
            response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                                   secure=request.url.scheme == "https")
        return SessionEnded(logged_out=principal.session_key is not None)

    @api.get("/session", tags=["session"])
    def whoami(request: Request) -> Caller:
        """Who is asking, and how (session or token)."""
        principal = principal_of(request)
        return Caller(user=principal.user, via=principal.via)

    return api
