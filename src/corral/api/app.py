"""The REST API: a FastAPI application over the same service layer as the CLI.

Every endpoint calls service methods; nothing here decides anything about guests, images or the
host. Errors come out as `{"error": message}` with the status of the CorralError (or 401, 403,
404, 405, 408, 413, 422, 429, 503 from the HTTP layer itself). This module assembles the application:
the middlewares (middleware.py, auth.py), the error handlers (errors.py), the routers (routes/), the
OpenAPI schema with its security schemes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from corral.api import __version__
from corral.api.auth import CSRF_HEADER, PUBLIC_PATHS, SESSION_COOKIE, Authenticator, AuthMiddleware
from corral.api.balancing import BalancerLoop
from corral.api.errors import close_reason, install_error_handlers, refuse
from corral.api.live import LiveStats
from corral.api.middleware import BodyLimit, SecurityHeaders, WebUI
from corral.api.migrations import MigrationJobs
from corral.api.routes import (
    ApiContext,
    consoles,
    devices,
    domains,
    edit,
    host,
    hosts,
    images,
    migrations,
    plans,
    session,
    stats,
)
from corral.api.routes import (
    balancer as balancer_routes,
)
from corral.services.context import Corral
from corral.services.users import UserStore, users_path


def create_app(corral: Corral, *, sampler: bool = False, sample_interval_s: float | None = None,
               authenticator: Authenticator | None = None, allowed_hosts: frozenset[str] | None = None,
               balancer: bool = False) -> FastAPI:
    """The API over `corral`. With `sampler`, the monitoring sampler runs while the app does, and with
    `balancer` the balancer (its mode decides what it does); with `allowed_hosts`, requests whose Host
    header names another host are refused (400). Request bodies are bounded by the settings' [api] table."""
    auth = authenticator or Authenticator(UserStore(users_path(corral.settings.data_dir)))
    live = LiveStats(corral.monitoring, sample_interval_s)
    jobs = MigrationJobs(corral.migration)
    balancing = BalancerLoop(corral.balancer) if balancer else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if sampler:
            live.start()
        if balancing is not None:
            balancing.start()
        try:
            yield
        finally:
            if balancing is not None:
                await asyncio.to_thread(balancing.stop)
            await asyncio.to_thread(jobs.stop)  # running migrations are aborted: each guest stays on its source
            live.stop()

    app = FastAPI(title="Corral", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json", lifespan=lifespan,
                  description="Run guests on one host, measure them, plan the consolidation. "
                              "See docs/api.md for the authentication model.")
    app.state.corral = corral
    app.state.auth = auth
    app.state.live = live
    app.state.migrations = jobs
    # Innermost first: authentication, the web UI's files, security headers and the Host check, and
    # outermost the body limit, which bounds every request before anything else reads it.
    app.add_middleware(AuthMiddleware, auth=auth)
    app.add_middleware(WebUI)
    app.add_middleware(SecurityHeaders, allowed_hosts=allowed_hosts)
    limits = corral.settings.api
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    install_error_handlers(app)
    http_not_found = app.router.default

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse(scope, receive, send, 404, close_reason(f"no such WebSocket: {scope['path']}"))
        else:
            await http_not_found(scope, receive, send)

    app.router.default = not_found

    @app.get("/api/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        """The interactive API documentation, from the Swagger UI files scripts/setup vendored (no CDN)."""
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="Corral API",
                                   swagger_js_url="/ui/vendor/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/ui/vendor/swagger/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    ctx = ApiContext(corral, auth, live, jobs)
    for area in (session, host, hosts, domains, edit, devices, migrations, balancer_routes, images, stats, plans,
                 consoles):
        app.include_router(area.router(ctx))
    app.router.routes.append(Route("/metrics", stats.MetricsApp(corral.prometheus.registry), methods=["GET"],
                                   include_in_schema=False))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema["paths"]["/metrics"] = stats.metrics_openapi()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API token: corral user token"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                            "description": f"from POST /api/login; unsafe methods also need {CSRF_HEADER}"},
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if path in PUBLIC_PATHS:
                        operation["security"] = []
                    elif path == "/metrics":
                        operation["security"] = [{"bearer": []}]
                    else:
                        operation["security"] = [{"bearer": []}, {"session": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
