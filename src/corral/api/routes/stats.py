"""Monitoring: the sampler's latest interval (also as a WebSocket), history, and /metrics for Prometheus."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import PlainTextResponse
from starlette.websockets import WebSocketDisconnect

from corral.api.errors import ERRORS
from corral.api.models import name_param
from corral.api.routes import ApiContext
from corral.api.schemas import HistoryRow, StatsNow
from corral.monitoring.collector import parse_duration


def router(ctx: ApiContext) -> APIRouter:
    corral, live = ctx.corral, ctx.live
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/stats", tags=["stats"], response_model=StatsNow)
    def live_stats() -> dict[str, Any]:
        """The latest interval's samples of every domain, from the sampler running inside `corral serve`."""
        return {"sampler": live.running, "interval_s": live.interval_s or corral.settings.monitor.interval_s,
                "error": live.error, "samples": live.latest}

    @api.get("/stats/{domain}", tags=["stats"], response_model=list[HistoryRow], response_model_exclude_unset=True)
    def stats_history(domain: Annotated[str, name_param("A guest, or Domain-0 for the host")],
                      since: Annotated[str, Query(max_length=32)] = "1h",
                      resource: Literal["cpu", "mem", "disk", "net"] | None = None,
                      resolution: Literal["auto", "raw", "rollup"] = "auto",
                      host: Annotated[str | None, Query(max_length=63, description="Domain-0 of this host "
                                                        "(default: the default host's); a guest's history "
                                                        "on this host only")] = None) -> list[dict[str, Any]]:
        """History from the store, like `corral stats NAME --json`: raw samples, or 5-minute rollups with
        each metric's min and max."""
        return corral.monitoring.history(domain, parse_duration(since, "since"), resource, resolution, host)

    @api.websocket("/ws/stats")
    async def ws_stats(websocket: WebSocket) -> None:
        """Each interval's samples as one JSON array; the latest interval right away, if there is one."""
        await websocket.accept()
        queue = live.subscribe()
        try:
            if live.latest:
                await websocket.send_json(live.latest)
            while True:
                receive = asyncio.ensure_future(websocket.receive())
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({receive, get}, return_when=asyncio.FIRST_COMPLETED)
                if receive in done:
                    get.cancel()
                    if receive.result().get("type") == "websocket.disconnect":
                        return
                    continue
                receive.cancel()
                await websocket.send_json(get.result())
        except WebSocketDisconnect:
            return
        finally:
            live.unsubscribe(queue)

    return api


def metrics_router(ctx: ApiContext) -> APIRouter:
    """`/metrics`, outside /api (where Prometheus looks)."""
    corral = ctx.corral
    root = APIRouter()

    @root.get("/metrics", tags=["metrics"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus text exposition; needs `Authorization: Bearer <token>`."""
        lines = [corral.monitoring.prometheus_text().rstrip("\n")]
        helps = {"migrations_total": "counter", "migrations_failed_total": "counter", "decisions_total": "counter",
                 "hosts_active": "gauge", "hosts_standby": "gauge", "mode": "gauge"}
        seen: set[str] = set()
        for key, value in corral.balancer.metrics().items():
            name = key.split("{", 1)[0]
            if name not in seen:
                seen.add(name)
                lines.append(f"# TYPE corral_balancer_{name} {helps.get(name, 'gauge')}")
            lines.append(f"corral_balancer_{key} {value:g}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")

    return root
