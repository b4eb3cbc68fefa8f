"""The host: its facts and capacity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from corral.api.errors import ERRORS
from corral.api.routes import ApiContext
from corral.api.schemas import HostStatus


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/host", tags=["host"], response_model=HostStatus)
    def host() -> dict[str, Any]:
        """The host: CPU, memory, engine (KVM or TCG, and why), capacity limits and what is free."""
        return corral.host.report().as_dict()

    return api
