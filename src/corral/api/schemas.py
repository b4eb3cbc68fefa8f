"""What responses carry: the JSON of every endpoint as a pydantic model, so the OpenAPI schema shows its shape.

Where a service's dataclass declares the fields (a guest's details, a listing row, a snapshot, an image, the
capacity limits), the model is derived from it by `from_dataclass`: the same names, types and order, nothing
listed twice; the endpoint returns the dataclass (or its `as_dict()`, the JSON form the CLI prints too) and
FastAPI checks and serializes it through the model. The output is the JSON the services give: numbers stay
as they are (`Number`: a whole number is not turned into 2.0), and keys keep the order the CLI prints them in.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from corral.adapters.libvirt_host import JobProgress
from corral.api.migrations import MigrationStatus
from corral.core.capacity import Budget, CapacityLimits
from corral.core.nics import IpAddress, NicInfo
from corral.core.resources import Resources
from corral.monitoring.metrics import METRICS, UNITS
from corral.services.devices import DiskChange, NicChange
from corral.services.edit import BulkOutcome, BulkResult, GuestResources
from corral.services.guests import GuestInfo, ListedDomain, SnapshotInfo
from corral.services.host import HostSummary
from corral.services.images import ImageRecord
from corral.services.migration import EvacuationResult, MigrationResult

# A JSON number as the service gave it: an int stays an int, a float a float (pydantic's `float` would make
# every whole number 2.0).
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
M = TypeVar("M", bound=BaseModel)


def _number(hint: Any) -> Any:
    """`float` (also inside `float | None`) as `Number`."""
    if hint is float:
        return Number
    if get_origin(hint) in (Union, types.UnionType) and float in get_args(hint):
        return functools.reduce(operator.or_, [Number if arg is float else arg for arg in get_args(hint)])
    return hint


def with_fields(fields: Mapping[str, Any]) -> Callable[[type[M]], type[M]]:
    """Give the model it decorates (a name and a docstring, no fields of its own) `fields`, pydantic's
    `(type, default or Field)` pairs, in their order."""
    def make(spec: type[M]) -> type[M]:
        model: type[M] = create_model(spec.__name__, __base__=spec, __doc__=spec.__doc__,
                                      __module__=spec.__module__, **dict(fields))
        return model
    return make


def from_dataclass(source: type[Any], *, first: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                   fields: Mapping[str, Any] | None = None,
                   describe: Mapping[str, str] | None = None) -> Callable[[type[M]], type[M]]:
    """Give the model it decorates the fields the dataclass `source` declares, in its order (`first` ones
    first), all required (a response always has them). `fields` gives some a more precise type or adds
    ones the JSON has beside the dataclass's (a property); `describe` documents them."""
    hints = get_type_hints(source)
    declared = [f.name for f in dataclasses.fields(source) if f.name not in exclude]
    types_ = {**{n: hints[n] for n in declared}, **(fields or {})}
    unknown = [n for n in (*first, *(describe or {})) if n not in types_]
    if unknown:
        raise TypeError(f"{source.__name__} has no field {', '.join(unknown)}")
    order = [*first, *(n for n in types_ if n not in first)]
    definitions = {n: (_number(types_[n]), Field(description=(describe or {}).get(n))) for n in order}
    return with_fields(definitions)


# --- session ----------------------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"]
    version: str


class SessionStarted(BaseModel):
    """A new session: the cookie is set; send `csrf_token` as X-CSRF-Token with every unsafe request."""

    user: str
    csrf_token: str
    idle_timeout_s: float = Field(description="the session ends after this long without a request")


class SessionEnded(BaseModel):
    logged_out: bool = Field(description="false for a bearer token, which has no session to end")


class Caller(BaseModel):
    """Who is asking, and how."""

    user: str
    via: Literal["session", "token"]


# --- host -------------------------------------------------------------------------------------------------
@from_dataclass(CapacityLimits)
class Limits(BaseModel):
    """The capacity limits the admission guard applies."""


@from_dataclass(Budget, exclude=("resource",), fields={"free": float})
class CapacityBudget(BaseModel):
    """One capacity of the host: what it allows, what its guests use, what is free."""


class HostStatus(BaseModel):
    """The host, like `corral host --json`: facts from its libvirt, the engine, the capacity model."""

    host: str = Field(description="the host's name in Corral's settings")
    hostname: str
    cpu_model: str
    cores: int
    memory_mib: int
    memory_used_mib: int
    cpu_pct: Number = Field(description="% of all cores busy over a short window")
    kernel: str = Field(description="the local machine's kernel; empty for a host reached over the network")
    engine: str = Field(description="kvm or tcg")
    engine_reason: str
    libvirt_uri: str
    guests_running: int
    guests_defined: int
    network: str | None = Field(description="the libvirt network guests' NICs join; null: QEMU user-mode NICs")
    network_reason: str
    limits: Limits
    capacity: dict[str, CapacityBudget] = Field(
        description="per resource (vcpus, memory, cpu): what the admission guard allows, uses, has free")


# --- hosts ------------------------------------------------------------------------------------------------
@from_dataclass(HostSummary, describe={
    "state": "up, unreachable, maintenance or standby",
    "storage": "shared (it sees Corral's data folder) or copy (disks are copied to it)",
    "cores": "null when the host cannot be asked (unreachable, standby)",
    "cpu_pct": "% of all its cores busy over a short window",
    "vcpus_allocated": "vCPUs of its running guests", "memory_allocated_mib": "memory of its running guests",
    "cpu_cap_cores": "expected CPU demand (in cores) the admission guard allows there: cores x cap",
    "guests_running": "running (or paused) guests", "guests_defined": "every guest defined there",
    "power": "its power driver (none: no standby and wake)",
    "error": "why it could not be asked",
})
class HostRow(BaseModel):
    """One host, like a row of `corral host list --json`."""


class HostRemoved(BaseModel):
    removed: str


class HostWoken(BaseModel):
    """A host woken through its power driver: its libvirt answered after `after_s`."""

    host: HostRow
    after_s: Number


class HostMove(BaseModel):
    """A migration the balancer made into or out of a host."""

    time: Number
    guest: str
    source: str
    dest: str
    outcome: str


class HostLoad(BaseModel):
    """What a host's guests took of it over time, against its cap, with the balancer's migrations."""

    host: str
    cap_pct: Number = Field(description="the cap, % of the host's cores")
    points: list[tuple[Number, Number]] = Field(description="(time, % of the host's cores its guests took)")
    moves: list[HostMove]


@from_dataclass(MigrationResult, describe={
    "live": "moved while running (else its definition, shut off)",
    "total_s": "from start to end", "downtime_ms": "how long the guest was paused at the switch (live only)",
    "memory_bytes": "memory sent", "disk_bytes": "disk data copied", "iterations": "pre-copy passes",
})
class MigrationOutcome(BaseModel):
    """A finished migration, like `corral migrate --json`."""


@from_dataclass(EvacuationResult, fields={"moved": list[MigrationOutcome], "left": list[str]},
                describe={"left": "guests still there (none when it worked)"})
class Evacuation(BaseModel):
    """What an evacuation moved, like `corral host evacuate --json`."""


class Maintenance(BaseModel):
    """A host's maintenance state, and what entering it moved away."""

    host: str
    maintenance: bool
    evacuation: Evacuation | None = Field(description="the guests moved away (null when turned off)")


@from_dataclass(JobProgress, describe={
    "memory_total": "bytes", "memory_remaining": "bytes", "memory_bps": "bytes/s being sent",
    "disk_total": "bytes (disks being copied)", "disk_remaining": "bytes", "data_remaining": "bytes, all told",
    "iteration": "the pre-copy pass", "dirty_rate": "pages/s the guest dirties",
    "downtime_ms": "known once it completed",
})
class MigrationProgress(BaseModel):
    """A running migration's job statistics, from libvirt."""


@from_dataclass(MigrationStatus, fields={"progress": MigrationProgress | None, "result": MigrationOutcome | None},
                describe={"id": "for GET/DELETE /api/migrations/{id} and WS /api/ws/migrations/{id}",
                          "user": "who started it", "started": "unix seconds", "finished": "unix seconds",
                          "state": "running, succeeded, failed or aborted",
                          "abort_requested": "DELETE /api/migrations/{id} was asked",
                          "progress": "the latest job statistics (live migrations; null before the first)",
                          "result": "once it succeeded", "error": "once it failed or was aborted",
                          "error_status": "the HTTP status the same error has elsewhere"})
class Migration(BaseModel):
    """A migration started through the API, as it stands."""


# --- domains ----------------------------------------------------------------------------------------------
@from_dataclass(IpAddress, describe={
    "family": "ipv4 or ipv6",
    "sources": "who reported it: lease (the DHCP server of the guest's libvirt network), agent (the guest agent)",
})
class Address(BaseModel):
    """An IP address of a guest's NIC."""


@from_dataclass(NicInfo, fields={"addresses": list[Address]}, describe={
    "mac": "its MAC address",
    "type": "libvirt's interface type: network, bridge, user, ...",
    "network": "the libvirt network it joins (type network)",
    "bridge": "the host bridge it is plugged into (while it runs, or type bridge)",
    "model": "the NIC model the guest sees (virtio, e1000, ...)",
    "target": "its device on the host (vnet3) while the guest runs",
    "guest_name": "its name inside the guest (eth0), when the guest agent says",
    "addresses": "its addresses while the guest runs: IPv4 first",
})
class Nic(BaseModel):
    """A NIC of a guest, with the addresses known for its MAC."""


@from_dataclass(ListedDomain, first=("name", "host", "id", "state", "reason"), fields={"nics": list[Nic] | None},
                describe={
    "host": "the host it is on",
    "id": "libvirt's id while it runs (Domain-0: 0), else null",
    "state": "running, paused, shut-off, ...; for a host that cannot be reached: unreachable",
    "reason": "why it is paused, when something other than a user paused it (an unreachable host: why)",
    "cpu_pct": "% of its own vCPUs (Domain-0: of all host cores) since the previous reading; null when off",
    "nics": "a guest's NICs and addresses with ?long=true (like `corral list --long`); null otherwise",
    "autostart": "started with its host's libvirt (null: Domain-0, or a host that cannot be reached)",
    "tags": "its tags (corral tag); ?tag= lists only the guests with that tag",
})
class DomainRow(BaseModel):
    """One row of the listing: a host itself (Domain-0) or a guest."""


class Disk(BaseModel):
    path: str
    format: str
    device: str = Field(description="disk or cdrom")
    target: str = Field("", description="its name in the guest's definition: vda, sda …")


@from_dataclass(GuestInfo, fields={"disks": list[Disk], "nics": list[Nic]}, describe={
    "managed_by_corral": "made by Corral (its metadata is in the domain XML)",
    "load": "the load the tiny image runs, as cpu=..,disk=..,net=..",
    "vnc": "the display's loopback address while it runs",
    "snapshots": "snapshot names, oldest first",
    "nics": "its NICs: MAC, network, model and, while it runs, its addresses (DHCP leases, guest agent)",
})
class DomainDetails(BaseModel):
    """Everything about one guest, like `corral info --json`."""


class AdmissionAnswer(BaseModel):
    """Would the guest be admitted?"""

    fits: bool
    exceeded: str | None = Field(description="what would be exceeded, and by how much (null when it fits)")
    beside_running: bool = Field(description="checked beside the running guests (else on an empty host)")


class DomainDeleted(BaseModel):
    deleted: str
    kept: list[str] = Field(description="files left on disk (kept disks, or files not Corral's to remove)")


@from_dataclass(SnapshotInfo, describe={"state": "the guest's state when it was taken"})
class Snapshot(BaseModel):
    """One snapshot of a guest."""


class SnapshotDeleted(BaseModel):
    deleted: str
    domain: str


class ExecOutput(BaseModel):
    """What a command run in the guest through its agent gave."""

    exit_code: int
    stdout: str = Field(description="its standard output (UTF-8; undecodable bytes replaced)")
    stderr: str = Field(description="its standard error (UTF-8; undecodable bytes replaced)")


class ConsoleTicket(BaseModel):
    """A one-time ticket for the console WebSockets of this domain, from this session or token only."""

    ticket: str
    domain: str
    state: str
    expires_in_s: float


# --- disks and NICs ---------------------------------------------------------------------------------------
@from_dataclass(DiskChange, describe={
    "host": "the host the guest is on",
    "device": "the disk's target in the guest's definition (vdb)",
    "action": "added, removed, resized or unchanged (a resize to the size it has)",
    "path": "its file: a volume of the host's storage pool",
    "size_bytes": "its virtual size (after a resize); null for a removed disk",
    "live": "the running guest saw the change (hot-plugged, released, grown live); false: the definition only",
    "kept": "removed: its file stays (asked with keep=true, or not Corral's to delete)",
})
class DiskChanged(BaseModel):
    """What a disk request did to a guest."""


@from_dataclass(NicChange, describe={
    "host": "the host the guest is on",
    "action": "added or removed",
    "network": "the libvirt network it joins; null: a user-mode NIC",
    "live": "the running guest saw the change (hot-plugged or released); false: the definition only",
})
class NicChanged(BaseModel):
    """What a NIC request did to a guest."""


# --- images -----------------------------------------------------------------------------------------------
@from_dataclass(ImageRecord, describe={"kind": "kernel (the built-in tiny image), disk or iso",
                                      "path": "the disk image or ISO, where it was imported from",
                                      "format": "qcow2 or raw (disks)"})
class Image(BaseModel):
    """A registered image: the built-in tiny image, a disk image or an ISO."""


class ImageDeleted(BaseModel):
    deleted: str


# --- stats ------------------------------------------------------------------------------------------------
def _metric(name: str, what: str = "") -> Any:
    return Field(description=f"{what}{UNITS[name]}; null: not measurable for that interval")


@with_fields({"time": (Number, Field(description="unix seconds, end of the interval")), "domain": (str, ...),
              "host": (str, Field(description="the host it ran on (each host has its own Domain-0)")),
              **{m: (Number | None, _metric(m)) for m in METRICS}})
class LiveSample(BaseModel):
    """One domain's figures over the sampler's latest interval."""


class StatsNow(BaseModel):
    """The sampler of `corral serve`: whether it runs, and its latest interval."""

    sampler: bool
    interval_s: Number
    error: str | None = Field(description="why the sampler stopped, if it did")
    samples: list[LiveSample]


def _history_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {
        "time": (Number, Field(description="unix seconds (rollups: the bucket's start)")),
        "samples": (int | None, Field(None, description="rollups only: samples in the bucket"))}
    for m in METRICS:
        fields[m] = (Number | None, Field(None, description=f"{UNITS[m]} (rollups: the average)"))
        fields[f"{m}_min"] = (Number | None, Field(None, description="rollups only"))
        fields[f"{m}_max"] = (Number | None, Field(None, description="rollups only"))
    return fields


@with_fields(_history_fields())
class HistoryRow(BaseModel):
    """A raw sample or a 5-minute rollup of one domain; only the asked-for metrics are there."""


# --- plans ------------------------------------------------------------------------------------------------
class PlanEntry(BaseModel):
    name: str
    size_bytes: int
    modified: float = Field(description="unix seconds")


OPEN = ConfigDict(extra="allow")  # a plan's keys that the model does not name go through as they are


class PlanHostKind(BaseModel):
    model_config = OPEN
    name: str


class PlanHost(BaseModel):
    """One host of the plan and the servers placed on it."""

    model_config = OPEN
    kind: str
    servers: list[str]
    peak: dict[str, Any] | None = Field(None, description="per resource, the host's peak utilization (0-1)")
    mean: dict[str, Any] | None = Field(None, description="per resource, its mean utilization")


class Unplaceable(BaseModel):
    model_config = OPEN
    server: str
    reason: str


class PlanKindOption(BaseModel):
    """One host kind of the catalog, every server packed on it the same quick way."""

    model_config = OPEN
    kind: str
    hosts: int
    placed: int = Field(description="servers that fit an empty host of this kind")
    unplaceable: int
    lower_bound: int
    binding: list[str] = Field(description="the resource(s) whose own bound limits the host count")
    cost_per_year: Number
    purchase: Number
    energy_kwh_year: Number
    cheapest: bool = Field(description="the lowest cost per year among the kinds that hold every server")


class PlanKinds(BaseModel):
    """Which hosts to buy: the host kinds of the catalog compared."""

    model_config = OPEN
    planned: str
    method: str
    servers: int
    time_s: Number
    options: list[PlanKindOption]


class PlanDocument(BaseModel):
    """A plan (schema corral.plan/1, see docs/planning.md), plus `summary`: its summary lines."""

    model_config = OPEN
    schema_: str = Field(alias="schema")
    host_kind: PlanHostKind
    cap: Number
    percentile: Number | None
    allowed_over_steps: Any = None
    resources: list[str]
    grid: dict[str, Any]
    hosts: list[PlanHost]
    unplaceable: list[Unplaceable]
    lower_bound: dict[str, Any]
    gap: Number | None
    baselines: dict[str, Any]
    search: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    utilization: dict[str, Any]
    binding: dict[str, Any] | None = Field(None, description="the resource(s) that bound the host count")
    assumed: dict[str, str] | None = Field(None, description="per resource, what of its demand was assumed")
    assumed_capacity: dict[str, str] | None = Field(None, description="per resource, capacities not in the traces")
    gaps_filled: dict[str, Any] | None = None
    costs: dict[str, Any]
    kinds: PlanKinds | None = None
    validation: dict[str, Any] | None = None
    notes: list[str] | None = None
    servers: dict[str, Any] | None = Field(None, description="per server: its host, peak and mean demand")
    chart: dict[str, Any]
    summary: list[str]


# --- changing a guest -----------------------------------------------------------------------------------
@from_dataclass(Resources, describe={"vcpus": "vCPUs it has", "max_vcpus": "how far a live raise can go",
                                     "memory_mib": "memory it has (the balloon)",
                                     "max_memory_mib": "the balloon's ceiling"})
class Figures(BaseModel):
    """A guest's vCPUs and memory (MiB), and the maxima a live raise stays within."""


@from_dataclass(GuestResources, fields={"next_boot": Figures, "live": Figures | None}, describe={
    "next_boot": "its definition: what it has from its next boot",
    "live": "the running guest (null while it does not run); memory is the balloon's target",
})
class DomainResources(BaseModel):
    """A guest's vCPUs and memory, like `corral set` prints them."""


@from_dataclass(BulkOutcome, describe={
    "ok": "the action succeeded on it",
    "state": "its state afterwards (snapshot: its state when the snapshot was taken); null when it failed",
    "error": "why it failed, as the single action's error says it",
    "status": "the HTTP status the single action would have answered",
})
class BulkGuest(BaseModel):
    """One guest's result in a bulk action."""


@from_dataclass(BulkResult, first=("action", "tag", "succeeded", "failed"),
                fields={"results": list[BulkGuest], "succeeded": int, "failed": int},
                describe={"tag": "the tag it acted on (null: names given)"})
class BulkOutcomes(BaseModel):
    """A bulk action's result: one line per guest, each done even when another failed."""
