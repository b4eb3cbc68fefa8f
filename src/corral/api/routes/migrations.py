"""Migrations: start one (checked first, then run in the background), follow it (GET, or a WebSocket that
streams its progress), abort it. Like `corral migrate`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from starlette.websockets import WebSocketDisconnect

from corral.api.errors import ERRORS, close_reason
from corral.api.migrations import ENDED, MigrationStatus
from corral.api.models import MigrateBody, MigrationParam, NameParam
from corral.api.routes import ApiContext, principal_of
from corral.api.schemas import Migration
from corral.core.errors import CorralError


def router(ctx: ApiContext) -> APIRouter:
    corral, jobs = ctx.corral, ctx.migrations
    api = APIRouter(prefix="/api", responses=ERRORS, tags=["migrations"])

    @api.post("/domains/{name}/migrate", status_code=202, response_model=Migration)
    def migrate(name: NameParam, body: MigrateBody, request: Request) -> dict[str, Any]:
        """Move a guest to another host: live for a running guest, its definition for a shut-off one. Every
        check is made first (an unknown, unreachable, standby or maintenance host, the same host, storage the
        destination lacks, no room there: one error, nothing moved); then it runs in the background and this
        returns its id at once. Follow it with GET /api/migrations/{id} or WS /api/ws/migrations/{id}."""
        options: dict[str, Any] = {"offline": body.offline, "copy_storage": body.copy_storage,
                                   "bandwidth_mib_s": body.bandwidth, "max_downtime_ms": body.max_downtime,
                                   "postcopy": body.postcopy}
        plan = corral.migration.check(name, body.host, **options)
        return jobs.start(plan, principal_of(request).user, **options).as_dict()

    @api.get("/migrations", response_model=list[Migration])
    def list_migrations() -> list[dict[str, Any]]:
        """The migrations started through this server: running ones, and those that ended within the hour."""
        return [status.as_dict() for status in jobs.all()]

    @api.get("/migrations/{id}", response_model=Migration)
    def migration(id: MigrationParam) -> dict[str, Any]:
        """A migration as it stands: its latest progress, then its result or error."""
        return jobs.get(id).as_dict()

    @api.delete("/migrations/{id}", response_model=Migration)
    def abort_migration(id: MigrationParam) -> dict[str, Any]:
        """Abort a running migration: it ends as "aborted" (follow it), the guest running on its source as
        before. 409 when it has already ended."""
        return jobs.abort(id).as_dict()

    @api.websocket("/ws/migrations/{id}")
    async def ws_migration(websocket: WebSocket, id: str) -> None:
        """The migration as JSON messages (GET /api/migrations/{id}'s shape): at once, then at each progress
        reading (about five a second), and last its end (state succeeded, failed or aborted, with the result
        or the error); then the socket closes with 1000. An unknown id closes it with 4404."""
        await websocket.accept()
        try:
            status, queue = jobs.subscribe(id)
        except CorralError as exc:
            await websocket.close(4000 + exc.status, close_reason(exc.message))
            return
        try:
            await _stream(websocket, status, queue)
        except WebSocketDisconnect:
            return
        finally:
            jobs.unsubscribe(id, queue)

    return api


async def _stream(websocket: WebSocket, status: MigrationStatus, queue: asyncio.Queue[MigrationStatus]) -> None:
    await websocket.send_json(status.as_dict())
    while status.state not in ENDED:
        receive = asyncio.ensure_future(websocket.receive())
        get = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({receive, get}, return_when=asyncio.FIRST_COMPLETED)
        if receive in done:
            get.cancel()
            if receive.result().get("type") == "websocket.disconnect":
                return
            continue
        receive.cancel()
        status = get.result()
        await websocket.send_json(status.as_dict())
    await websocket.close(1000)
