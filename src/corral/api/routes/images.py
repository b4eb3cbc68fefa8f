"""Images: the registry, imports, the builds of the tiny and Debian images."""

from __future__ import annotations

from fastapi import APIRouter

from corral.api.errors import ERRORS
from corral.api.models import ImageParam, ImportBody
from corral.api.routes import ApiContext
from corral.api.schemas import Image, ImageDeleted
from corral.services.images import ImageRecord


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/images", tags=["images"], response_model=list[Image])
    def list_images() -> list[ImageRecord]:
        """The registered images."""
        return corral.images.records()

    @api.post("/images", tags=["images"], status_code=201, response_model=Image)
    def import_image(body: ImportBody) -> ImageRecord:
        """Register a disk image or ISO where it is (`{"name", "path"}`); it is never written to."""
        return corral.images.import_image(body.name, body.path)

    @api.post("/images/tiny/build", tags=["images"], response_model=Image)
    def build_tiny(force: bool = False) -> ImageRecord:
        """Build the built-in tiny image (returns when done; a cached build returns at once)."""
        return corral.images.build_tiny(force=force)

    @api.post("/images/debian/build", tags=["images"], response_model=Image)
    def build_debian(force: bool = False) -> ImageRecord:
        """Build the Debian 12 server image from Debian's package registry (about a minute; returns when
        done; a cached build returns at once)."""
        return corral.images.build_debian(force=force)

    @api.delete("/images/{name}", tags=["images"])
    def remove_image(name: ImageParam) -> ImageDeleted:
        """Forget an image (409 while guests use it). A built image's files go too; an imported file stays."""
        corral.guests.remove_image(name)
        return ImageDeleted(deleted=name)

    return api
