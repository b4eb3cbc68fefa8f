"""Changing a guest: autostart, vCPUs and memory, tags; and actions on several guests at once (by names or a
tag), each guest with its own result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam

from corral.api.errors import ERRORS
from corral.api.models import AutostartBody, BulkBody, NameParam, ResourcesBody, TagsBody
from corral.api.routes import ApiContext
from corral.api.schemas import BulkOutcomes, DomainDetails, DomainResources
from corral.core.resources import Change
from corral.services.edit import BULK_ACTIONS
from corral.services.guests import GuestInfo

ActionParam = Annotated[str, PathParam(description=" | ".join(BULK_ACTIONS), max_length=20,
                                       json_schema_extra={"enum": list(BULK_ACTIONS)})]


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.put("/domains/{name}/autostart", tags=["domains"], response_model=DomainDetails)
    def set_autostart(name: NameParam, body: AutostartBody) -> GuestInfo:
        """libvirt's autostart, like `corral autostart NAME on|off`. Turning it on is refused (507) when the
        host's autostart guests, this one with them, would not fit its admission guard started together."""
        return corral.edit.set_autostart(name, body.autostart)

    @api.get("/domains/{name}/resources", tags=["domains"], response_model=DomainResources)
    def resources(name: NameParam) -> dict[str, Any]:
        """The guest's vCPUs and memory: its definition's (from the next boot) and, while it runs, the live
        ones, each with the maximum a live raise stays within."""
        return corral.edit.resources(name).as_dict()

    @api.patch("/domains/{name}", tags=["domains"], response_model=DomainResources)
    def set_resources(name: NameParam, body: ResourcesBody) -> dict[str, Any]:
        """Change vCPUs and memory, like `corral set`: for the next boot, and with `live` in the running guest
        too (balloon, vCPU hot-plug) within its maxima. A raise is checked by the admission guard (507);
        a refused change changes nothing."""
        change = Change(body.vcpus, body.memory, body.max_vcpus, body.max_memory)
        return corral.edit.set_resources(name, change, live=body.live).as_dict()

    @api.put("/domains/{name}/tags", tags=["domains"], response_model=DomainDetails)
    def set_tags(name: NameParam, body: TagsBody) -> GuestInfo:
        """Give the guest exactly these tags (`[]` removes them all); refused (409) for a domain Corral did
        not make."""
        return corral.edit.set_tags(name, body.tags)

    @api.post("/bulk/{action}", tags=["domains"], response_model=BulkOutcomes)
    def bulk(action: ActionParam, body: BulkBody) -> dict[str, Any]:
        """Start, shut down, power off or snapshot (`snapshot`: its name) every guest named or with `tag`, one
        after the other: a failure on one is its result and the others are still done (200 either way;
        `failed` counts them). A tag no guest has is 404."""
        result = corral.edit.bulk(action, names=body.names, tag=body.tag, snapshot=body.snapshot,
                                  timeout_s=body.timeout, force=body.force)
        return result.as_dict()

    return api
