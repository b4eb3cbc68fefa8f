"""What requests carry: the names in paths and the JSON bodies, as the OpenAPI schema shows them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from corral.core.errors import InvalidInput
from corral.core.spec import MAX_DISK_GIB, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, GuestSpec, spec_from_mapping

# The pattern is documented in the schema (clients and fuzzers see the shape of a name) but checked by the
# services (the core's check_name()), so a bad name gets the same one-line message as in the CLI.
NAME_SCHEMA = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"}


def name_param(what: str) -> Any:
    return PathParam(description=what, max_length=200, json_schema_extra=NAME_SCHEMA)


NameParam = Annotated[str, name_param("Domain name")]
SnapshotParam = Annotated[str, name_param("Snapshot name")]
ImageParam = Annotated[str, name_param("Image name")]
PlanParam = Annotated[str, name_param("Plan name (its file name in <data_dir>/plans/ without .json)")]


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


class LoginBody(BaseModel):
    model_config = STRICT
    user: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class NameBody(BaseModel):
    model_config = STRICT
    name: str = Field(max_length=200)


class ImportBody(BaseModel):
    model_config = STRICT
    name: str = Field(max_length=200)
    path: str = Field(max_length=4096, description="a qcow2 or raw disk image, or an ISO, on the host")


def spec_of(body: SpecBody) -> GuestSpec:
    """The core's spec for a body (the core checks the ranges and gives the messages)."""
    data = body.model_dump(exclude_none=True)
    if body.iso is not None and not Path(body.iso).is_absolute():
        raise InvalidInput(f"iso {body.iso!r} must be an absolute path on the host")
    return spec_from_mapping(data)
