"""Monitoring: the sampler's latest interval (also as a WebSocket), history, and /metrics for Prometheus."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, WebSocket
from prometheus_client import make_asgi_app
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.types import Receive, Scope, Send
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


class MetricsApp:
    """`/metrics`: prometheus_client's ASGI app over Corral's registry (the bearer token is checked before,
    by the authentication middleware). The registry is collected in a worker thread, since its collector
    asks every host's libvirt: a slow host never holds the event loop; the app then serves what was
    collected, in the format the scraper asks for."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        families = await asyncio.to_thread(lambda: list(self.registry.collect()))
        collected = CollectorRegistry(auto_describe=True)  # auto_describe: ?name[]=... selects among them
        collected.register(_Collected(families))
        await make_asgi_app(collected)(scope, receive, send)


class _Collected(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def metrics_openapi() -> dict[str, Any]:
    """/metrics in the OpenAPI schema (it is not a FastAPI route, so FastAPI does not describe it)."""
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {"get": {
        "tags": ["metrics"], "summary": "Metrics", "operationId": "metrics",
        "description": "Prometheus text exposition (OpenMetrics when the scraper asks for it); needs "
                       "`Authorization: Bearer <token>`.",
        "responses": {"200": {"description": "Successful Response", "content": text}},
    }}
