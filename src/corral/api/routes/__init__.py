"""The API's routers, one per area; each is made by `router(ctx)` over what the application holds."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from corral.api.auth import Authenticator, Principal
from corral.api.live import LiveStats
from corral.api.migrations import MigrationJobs
from corral.services.context import Corral


@dataclass(frozen=True)
class ApiContext:
    """What the routes call: the services, the authenticator, the sampler's live figures, the migrations
    started through the API."""

    corral: Corral
    auth: Authenticator
    live: LiveStats
    migrations: MigrationJobs


def principal_of(request: Request) -> Principal:
    """Who sent the request (AuthMiddleware put it there)."""
    principal: Principal = request.state.principal
    return principal
