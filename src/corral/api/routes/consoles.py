"""The console WebSockets: a guest's serial console and its VNC display, each opened with a one-time ticket."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket

from corral.api.auth import Principal
from corral.api.bridges import bridge_console, bridge_tcp
from corral.api.errors import ERRORS, close_reason
from corral.api.routes import ApiContext
from corral.core.errors import CorralError
from corral.core.validate import check_domain_name


def router(ctx: ApiContext) -> APIRouter:
    corral, auth = ctx.corral, ctx.auth
    api = APIRouter(prefix="/api", responses=ERRORS)

    async def _open_with_ticket(websocket: WebSocket, name: str, ticket: str) -> bool:
        """Accept the socket, then check the name and redeem the ticket; False (socket closed) if either fails.
        The name is checked here, ahead of the service that checks it again, so that a bad name does not
        spend the ticket (the one check a route makes itself)."""
        principal: Principal = websocket.scope["state"]["principal"]
        await websocket.accept()
        try:
            check_domain_name(name)
        except CorralError as exc:
            await websocket.close(4000 + exc.status, close_reason(exc.message))
            return False
        if auth.redeem_ticket(ticket, name, principal.key) is None:
            await websocket.close(4403, "invalid or expired console ticket: ask for a new one")
            return False
        return True

    @api.websocket("/ws/console/{name}")
    async def ws_console(websocket: WebSocket, name: str, ticket: str = "", force: bool = False) -> None:
        """A guest's serial console: binary frames both ways (text frames are sent as UTF-8). Needs a
        one-time ticket (POST /api/domains/{name}/console-ticket) of the same session or token. While
        another session has the console it is refused (4409) unless `?force=true`, which takes it over."""
        if not await _open_with_ticket(websocket, name, ticket):
            return
        try:
            console = await asyncio.to_thread(corral.guests.open_console, name, force=force)
        except CorralError as exc:
            await websocket.close(4000 + exc.status, close_reason(exc.message))
            return
        await bridge_console(websocket, console)

    @api.websocket("/ws/vnc/{name}")
    async def ws_vnc(websocket: WebSocket, name: str, ticket: str = "") -> None:
        """A guest's display: the bytes of its VNC server (on loopback) in binary frames, for noVNC. Needs a
        one-time ticket like the serial console."""
        if not await _open_with_ticket(websocket, name, ticket):
            return
        try:
            info = await asyncio.to_thread(corral.guests.info, name)
        except CorralError as exc:
            await websocket.close(4000 + exc.status, close_reason(exc.message))
            return
        host, _, port = (info.vnc or "").rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            await websocket.close(4409, close_reason(f"{name} has no display now (it is {info.state})"))
            return
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            await websocket.close(4502, close_reason(f"cannot reach the display of {name}: {exc.strerror or exc}"))
            return
        await bridge_tcp(websocket, reader, writer)

    return api
