"""What requests carry: the names in paths and the JSON bodies, as the OpenAPI schema shows them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from corral.core.errors import InvalidInput
from corral.core.hosts import ACCELERATORS, POWER_DRIVERS, STORAGE_MODES, HostSpec, PowerSpec
from corral.core.spec import (
    MAX_DISK_GIB,
    MAX_MEMORY_MIB,
    MAX_SPEED,
    MAX_TRACE_STEPS,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    GuestSpec,
    spec_from_mapping,
)
from corral.services.migration import MAX_BANDWIDTH_MIB_S, MAX_DOWNTIME_MS

# The pattern is documented in the schema (clients and fuzzers see the shape of a name) but checked by the
# services (the core's check_name()), so a bad name gets the same one-line message as in the CLI.
NAME_SCHEMA = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"}


def name_param(what: str) -> Any:
    return PathParam(description=what, max_length=200, json_schema_extra=NAME_SCHEMA)


NameParam = Annotated[str, name_param("Domain name")]
SnapshotParam = Annotated[str, name_param("Snapshot name")]
ImageParam = Annotated[str, name_param("Image name")]
PlanParam = Annotated[str, name_param("Plan name (its file name in <data_dir>/plans/ without .json)")]
HostParam = Annotated[str, name_param("Host name (see GET /api/hosts)")]
MigrationParam = Annotated[str, PathParam(description="A migration's id (from POST /api/domains/{name}/migrate)",
                                          max_length=64)]


# --- request bodies -------------------------------------------------------------------------------
# Bodies are strict: JSON numbers as they are (no true for 1, no "1" or 1.0 for a whole number, no NaN or
# infinity, no integer beyond what a JSON number holds exactly). The ranges are the core's (spec.py), which
# checks them with the same messages as for the CLI; the schema shows them.
WholeNumber = Annotated[int, Field(strict=True, ge=-(2**53), le=2**53)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
STRICT = ConfigDict(extra="forbid", strict=True)


class LoadBody(BaseModel):
    model_config = STRICT
    cpu: Number = Field(0, description="% of each vCPU kept busy (a whole number, 0-100)")
    disk: Number = Field(0, description="KiB/s read + written")
    net: Number = Field(0, description="KiB/s sent")


def _load_kind(value: Any) -> str:
    return "text" if isinstance(value, str) else "table"


Load = Annotated[Annotated[LoadBody, Tag("table")] | Annotated[str, Tag("text"), Field(max_length=200)],
                 Discriminator(_load_kind)]


class SpecBody(BaseModel):
    """The fields of a TOML spec file (and of `corral create`'s options)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"name": "web", "image": "tiny", "vcpus": 1, "memory": 256, "load": {"cpu": 15}}]})
    name: str = Field(max_length=200)
    image: str = Field(max_length=200)
    vcpus: WholeNumber = Field(1, json_schema_extra={"minimum": 1, "maximum": MAX_VCPUS})
    memory: WholeNumber = Field(256, description="MiB",
                                json_schema_extra={"minimum": MIN_MEMORY_MIB, "maximum": MAX_MEMORY_MIB})
    disk: Number | None = Field(None, description="GiB",
                                json_schema_extra={"exclusiveMinimum": 0, "maximum": MAX_DISK_GIB})
    iso: str | None = Field(None, description="absolute path of an ISO on the host, attached as a CD-ROM",
                            max_length=4096)
    load: Load | None = Field(None, description="tiny image only: {cpu, disk, net} or 'cpu=15,net=32'")
    load_trace: list[Number] | None = Field(None, min_length=1, max_length=MAX_TRACE_STEPS,
                                            description="tiny image only, instead of load cpu: CPU % of each vCPU "
                                                        "(0-100), one per 5-minute step, replayed in a loop")
    speed: Number | None = Field(None, description="with load_trace: replay it this many times faster",
                                 json_schema_extra={"minimum": 1, "maximum": MAX_SPEED})
    user: str | None = Field(None, max_length=32, description="disk images: the user cloud-init makes at first "
                                                              "boot (default: the image's own default user)")
    ssh_keys: list[str] | None = Field(None, max_length=32, description="disk images: SSH public key lines for "
                                                                        "that user")


class LoginBody(BaseModel):
    model_config = STRICT
    user: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class ExecBody(BaseModel):
    """A program to run in the guest through its guest agent, with its arguments."""

    model_config = STRICT
    command: list[str] = Field(min_length=1, max_length=256, description='e.g. ["/bin/sh", "-c", "uptime"]')
    timeout: float = Field(60.0, gt=0, le=3600, description="seconds to wait for it")


class NameBody(BaseModel):
    model_config = STRICT
    name: str = Field(max_length=200)


class ImportBody(BaseModel):
    model_config = STRICT
    name: str = Field(max_length=200)
    path: str = Field(max_length=4096, description="a qcow2 or raw disk image, or an ISO, on the host")


class PowerBody(BaseModel):
    """How Corral puts the host in standby and wakes it (see `corral host add --power`)."""

    model_config = STRICT
    driver: str = Field("none", max_length=20, description=" | ".join(POWER_DRIVERS))
    settings: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=32,
        description="the driver's settings: command: standby, wake (commands run by the server, without a "
                    "shell); wol: mac, broadcast, port, standby; ipmi: address, user, password_file, lanplus")


class HostBody(BaseModel):
    """A host to register, as `corral host add` takes it."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"name": "h2", "uri": "qemu+tcp://10.0.0.2/system", "storage": "shared"}]})
    name: str = Field(max_length=200)
    uri: str = Field(max_length=1024, description="libvirt URI: qemu+ssh://root@h2/system, qemu+tcp://…, "
                                                  "qemu+tls://…, qemu+unix:///system?socket=PATH")
    storage: str = Field("copy", max_length=20, description=f"{' | '.join(STORAGE_MODES)}: whether it sees "
                                                           "Corral's data folder, or disks are copied to it")
    accelerator: str = Field("auto", max_length=20, description=" | ".join(ACCELERATORS))
    network: str | None = Field(None, max_length=200, description="libvirt network for guests' NICs there "
                                                                  "(\"\": user-mode NICs; null: the configured one)")
    power: PowerBody | None = None


class MigrateBody(BaseModel):
    """Where and how to move a guest (the options of `corral migrate`)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"host": "h2"}]})
    host: str = Field(max_length=200, description="the destination host")
    offline: bool = Field(False, description="the guest must be shut off: move its definition (a shut-off guest "
                                             "moves offline anyway)")
    copy_storage: bool = Field(False, description="copy its disks to a host that does not share storage")
    bandwidth: WholeNumber | None = Field(None, description="MiB/s at most",
                                          json_schema_extra={"minimum": 1, "maximum": MAX_BANDWIDTH_MIB_S})
    max_downtime: WholeNumber | None = Field(None, description="ms the guest may pause at the end",
                                             json_schema_extra={"minimum": 1, "maximum": MAX_DOWNTIME_MS})
    postcopy: bool = Field(False, description="switch to post-copy after the first pass. Risk: a failure of "
                                              "either host then loses the guest")


class MaintenanceBody(BaseModel):
    model_config = STRICT
    on: bool = Field(description="true: refused unless the other hosts can hold its guests, then set and the "
                                 "host evacuated; false: the host takes guests again")


def host_spec_of(body: HostBody) -> HostSpec:
    """The core's host spec for a body (the core checks the fields and gives the messages)."""
    power = body.power or PowerBody(driver="none", settings={})
    if any(not key.strip() for key in power.settings):
        raise InvalidInput("power.settings: a setting needs a name")
    settings = tuple(sorted((key.strip(), value) for key, value in power.settings.items()))
    return HostSpec(body.name, body.uri, body.storage, body.accelerator, PowerSpec(power.driver, settings),
                    body.network)


def spec_of(body: SpecBody) -> GuestSpec:
    """The core's spec for a body (the core checks the ranges and gives the messages)."""
    data = body.model_dump(exclude_none=True)
    if body.iso is not None and not Path(body.iso).is_absolute():
        raise InvalidInput(f"iso {body.iso!r} must be an absolute path on the host")
    return spec_from_mapping(data)


# --- changing a guest (services/edit.py) ------------------------------------------------------------
# The pattern is shown in the schema and checked by the service (core/tags.py), with the CLI's message.
TagText = Annotated[str, Field(max_length=200, json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9_.-]{0,31}$"})]


class AutostartBody(BaseModel):
    model_config = STRICT
    autostart: bool = Field(description="true: start it with its host's libvirt (refused when the host's "
                                        "autostart guests would not fit its admission guard together)")


class ResourcesBody(BaseModel):
    """New vCPUs and memory (what `corral set` takes); a field left out is unchanged."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"memory": 512, "live": True}]})
    vcpus: WholeNumber | None = Field(None, json_schema_extra={"minimum": 1, "maximum": MAX_VCPUS})
    memory: WholeNumber | None = Field(None, description="MiB",
                                       json_schema_extra={"minimum": MIN_MEMORY_MIB, "maximum": MAX_MEMORY_MIB})
    max_vcpus: WholeNumber | None = Field(None, description="the definition's maximum: how far a later live "
                                                            "raise can go", json_schema_extra={"minimum": 1,
                                                                                               "maximum": MAX_VCPUS})
    max_memory: WholeNumber | None = Field(None, description="MiB: the definition's maximum (the balloon's "
                                                             "ceiling)", json_schema_extra={
                                               "minimum": MIN_MEMORY_MIB, "maximum": MAX_MEMORY_MIB})
    live: bool = Field(False, description="also change the running guest now (balloon, vCPU hot-plug), within "
                                          "its maximum")


class TagsBody(BaseModel):
    model_config = STRICT
    tags: list[TagText] = Field(max_length=32, description="the guest's tags from now on (replacing its tags)")


class BulkBody(BaseModel):
    """Which guests a bulk action acts on (names, or every guest with a tag), and its options."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"tag": "prod"}]})
    tag: TagText | None = Field(None, description="every guest with this tag")
    names: list[Annotated[str, Field(max_length=200)]] | None = Field(None, min_length=1, max_length=1000,
                                                                      description="or these guests")
    snapshot: str | None = Field(None, max_length=200, description="snapshot: the snapshot's name")
    timeout: Number = Field(60, description="shutdown: seconds to wait for each guest",
                            json_schema_extra={"exclusiveMinimum": 0, "maximum": 3600})
    force: bool = Field(False, description="shutdown: power off what is still running after the timeout")
