"""Errors of the API: every one is `{"error": message}`, the one line the CLI would print, with the status of
the CorralError (or of the HTTP layer itself)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from corral.core.errors import CorralError
from corral.planning.errors import PlanningError

log = logging.getLogger("corral.api")


class ErrorBody(BaseModel):
    """Every error: the one line the CLI would print."""

    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No or bad credentials"},
    403: {"model": ErrorBody, "description": "Missing or wrong X-CSRF-Token (cookie sessions)"},
    404: {"model": ErrorBody, "description": "No such domain, snapshot, image or plan"},
    409: {"model": ErrorBody, "description": "Wrong state, or the name is taken"},
    422: {"model": ErrorBody, "description": "Invalid name, spec, body or query"},
    502: {"model": ErrorBody, "description": "libvirt, QEMU or a host tool failed"},
    504: {"model": ErrorBody, "description": "The guest did not come up or shut down in time"},
    507: {"model": ErrorBody, "description": "Admission refused: what would be exceeded"},
}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def close_reason(text: str) -> str:
    """A WebSocket close reason: at most 123 bytes of UTF-8."""
    return text.encode()[:123].decode(errors="ignore")


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                 headers: dict[str, str] | None = None) -> None:
    """An HTTP error `{"error": message}`, from a middleware. A WebSocket gets the same as the answer to its
    handshake when the server can give one (the ASGI denial-response extension: uvicorn and the test client
    can), else a close with code 4000 + status before the socket opens."""
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 4000 + status, "reason": close_reason(message)})
        return
    await error(status, message, headers)(scope, receive, send)


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body" or len(problem.get("loc", ())) == 1)
        parts.append(f"{where}: {problem.get('msg', 'invalid')}" if where else str(problem.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts[:5])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def corral_error(_request: Request, exc: CorralError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(PlanningError)
    async def planning_error(_request: Request, exc: PlanningError) -> JSONResponse:
        return error(422, str(exc).replace("\n", " "))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error(500, f"internal error: {type(exc).__name__}")
