"""Images: the registry, imports, the tiny image's build."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from corral.api.errors import ERRORS
from corral.api.models import ImageParam, ImportBody
from corral.api.routes import ApiContext
from corral.core.validate import check_name


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/images", tags=["images"])
    def list_images() -> list[dict[str, Any]]:
        return [r.as_dict() for r in corral.images.records()]

    @api.post("/images", tags=["images"], status_code=201)
    def import_image(body: ImportBody) -> dict[str, Any]:
        """Register a disk image or ISO where it is (`{"name", "path"}`); it is never written to."""
        return corral.images.import_image(body.name, body.path).as_dict()

    @api.post("/images/tiny/build", tags=["images"])
    def build_tiny(force: bool = False) -> dict[str, Any]:
        """Build the built-in tiny image (returns when done; a cached build returns at once)."""
        return corral.images.build_tiny(force=force).as_dict()

    @api.delete("/images/{name}", tags=["images"])
    def remove_image(name: ImageParam) -> dict[str, Any]:
        """Forget an image (409 while guests use it). A built image's files go too; an imported file stays."""
        check_name(name, "image name")
        corral.guests.remove_image(name)
        return {"deleted": name}

    return api
