"""A guest's disks and NICs: added, grown and removed, hot-plugged while it runs (`corral disk`, `corral nic`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from corral.api.errors import ERRORS
from corral.api.models import NameParam, Number
from corral.api.routes import ApiContext
from corral.api.schemas import DiskChanged, NicChanged
from corral.core.spec import MAX_DISK_GIB, MIN_DISK_GIB
from corral.services.devices import DiskChange, NicChange

# Shapes documented in the schema, checked by the service (so a bad one gets the CLI's one-line message).
DeviceParam = Annotated[str, PathParam(description="A disk's target in the guest's definition (vdb)", max_length=8,
                                       json_schema_extra={"pattern": r"^[hsv]d[a-z]{1,2}$"})]
MacParam = Annotated[str, PathParam(description="A NIC's MAC address (52:54:00:12:34:56)", max_length=17,
                                    json_schema_extra={"pattern": r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"})]


class DiskBody(BaseModel):
    """A new disk: its size."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"size": 2}]})
    size: Number = Field(description="GiB", json_schema_extra={"minimum": MIN_DISK_GIB, "maximum": MAX_DISK_GIB})


class ResizeBody(BaseModel):
    """The size a disk grows to (never smaller than it is)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"size": 4}]})
    size: Number = Field(description="GiB, at least the disk's size now",
                         json_schema_extra={"minimum": MIN_DISK_GIB, "maximum": MAX_DISK_GIB})


class NicBody(BaseModel):
    """A new NIC: the network it joins."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"network": "corral"}]})
    network: str | None = Field(None, max_length=200, description="a libvirt network of the guest's host "
                                "(default: the one new guests join)")


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.post("/domains/{name}/disks", tags=["devices"], status_code=201, response_model=DiskChanged)
    def add_disk(name: NameParam, body: DiskBody) -> DiskChange:
        """Give the guest a new blank disk (the next free vdX), hot-plugged while it runs: a volume of its
        host's storage pool, deleted with the guest (unless keep_disks)."""
        return corral.devices.add_disk(name, body.size)

    @api.delete("/domains/{name}/disks/{device}", tags=["devices"], response_model=DiskChanged)
    def remove_disk(name: NameParam, device: DeviceParam, keep: Annotated[bool, Query(
            description="keep the disk's volume in the pool")] = False) -> DiskChange:
        """Detach a disk (a running guest releases it first; 504 when it does not in time) and delete its
        volume. The boot disk (vda) is refused (422)."""
        return corral.devices.remove_disk(name, device, keep=keep)

    @api.post("/domains/{name}/disks/{device}/resize", tags=["devices"], response_model=DiskChanged)
    def resize_disk(name: NameParam, device: DeviceParam, body: ResizeBody) -> DiskChange:
        """Grow a disk, live while the guest runs; a smaller size than it has is refused (422)."""
        return corral.devices.resize_disk(name, device, body.size)

    @api.post("/domains/{name}/nics", tags=["devices"], status_code=201, response_model=NicChanged)
    def add_nic(name: NameParam, body: NicBody | None = None) -> NicChange:
        """Give the guest a new virtio NIC (a new MAC), hot-plugged while it runs; a network its host does
        not have is refused (422)."""
        return corral.devices.add_nic(name, body.network if body is not None else None)

    @api.delete("/domains/{name}/nics/{mac}", tags=["devices"], response_model=NicChanged)
    def remove_nic(name: NameParam, mac: MacParam) -> NicChange:
        """Detach the NIC with this MAC (a running guest releases it first; 504 when it does not in time)."""
        return corral.devices.remove_nic(name, mac)

    return api
