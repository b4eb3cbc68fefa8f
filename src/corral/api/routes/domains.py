"""Domains: the listing, create and the admission check, actions, clones, snapshots, console tickets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request

from corral.api.auth import TICKET_TTL_S
from corral.api.errors import ERRORS
from corral.api.models import ExecBody, NameBody, NameParam, SnapshotParam, SpecBody, spec_of
from corral.api.routes import ApiContext, principal_of
from corral.api.schemas import (
    AdmissionAnswer,
    ConsoleTicket,
    DomainDeleted,
    DomainDetails,
    DomainRow,
    ExecOutput,
    Snapshot,
    SnapshotDeleted,
)
from corral.core.errors import AdmissionRefused
from corral.core.tags import check_tag
from corral.services.guests import GuestInfo, SnapshotInfo

T = TypeVar("T")
HostQuery = Annotated[str | None, Query(max_length=63, description="A host name (default: every host for "
                                                                    "listings, the default host for a new guest)")]


async def unless_abandoned(request: Request, work: Callable[[Callable[[], bool]], T]) -> T:
    """Run `work(still_wanted)` in a thread while watching the client: once it has gone, `still_wanted()`
    is False, so a request given up on while it waited (for the admission lock) starts nothing later."""
    gone = threading.Event()

    async def watch() -> None:
        while not gone.is_set():
            if await request.is_disconnected():
                gone.set()
                return
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        return await asyncio.to_thread(work, lambda: not gone.is_set())
    finally:
        watcher.cancel()


def router(ctx: ApiContext) -> APIRouter:
    corral, auth = ctx.corral, ctx.auth
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/domains", tags=["domains"], response_model=list[DomainRow])
    def list_domains(host: HostQuery = None, long: Annotated[bool, Query(
            description="each guest's NICs and addresses too, like `corral list --long`")] = False,
                     tag: Annotated[str | None, Query(max_length=200, description="only the guests with this "
                                                                                  "tag")] = None,
                     ) -> list[dict[str, Any]]:
        """Per host, Domain-0 first, then its guests, like `corral list --json`; CPU % since the background
        sampler's last reading. An unreachable host is one row with state "unreachable"."""
        if tag is not None:
            check_tag(tag)
        rows = corral.guests.listing(since=corral.monitoring.latest_counters(), host=host, nics=long)
        return [row.as_dict() for row in rows if tag is None or tag in row.tags]

    @api.post("/domains", tags=["domains"], status_code=201, response_model=DomainDetails)
    async def create_domain(body: SpecBody, request: Request, start: bool = False, wait: bool = False,
                            host: HostQuery = None) -> GuestInfo:
        """Define a guest from a spec (and start it with ?start=true; wait until up with &wait=true).
        Refused with 507 when it would overload the host."""
        spec = spec_of(body)
        return await unless_abandoned(request, lambda wanted: corral.guests.create(
            spec, start=start, wait=wait, still_wanted=wanted, host=host))

    @api.post("/domains/check", tags=["domains"])
    def check_domain(body: SpecBody, start: bool = True, host: HostQuery = None) -> AdmissionAnswer:
        """Would this guest be made? The same checks as create, in the same order (image and its files,
        ISO, load, name, then the admission guard beside the running guests (?start=true, the default)
        or on an empty host (?start=false)): a refusal by the guard is `fits: false`; anything else is
        the error create would give."""
        spec = spec_of(body)
        try:
            corral.guests.check(spec, start=start, host=host)
        except AdmissionRefused as exc:
            return AdmissionAnswer(fits=False, exceeded=exc.message, beside_running=start)
        return AdmissionAnswer(fits=True, exceeded=None, beside_running=start)

    @api.get("/domains/{name}", tags=["domains"], response_model=DomainDetails)
    def domain_info(name: NameParam) -> GuestInfo:
        """Everything about one guest, like `corral info --json`."""
        return corral.guests.info(name)

    @api.delete("/domains/{name}", tags=["domains"])
    def delete_domain(name: NameParam, keep_disks: bool = False) -> DomainDeleted:
        """Delete a guest (powered off first): the domain, its overlay disks, its console log."""
        kept = corral.guests.delete(name, keep_disks=keep_disks)
        return DomainDeleted(deleted=name, kept=kept)

    @api.post("/domains/{name}/start", tags=["domains"], response_model=DomainDetails)
    async def start_domain(name: NameParam, request: Request, wait: bool = False) -> GuestInfo:
        """Start a guest (507 when it would overload the host, 503 when the host's admission lock is held
        too long); ?wait=true returns when it is up. A request whose client gives up while it waits starts
        nothing."""
        return await unless_abandoned(request, lambda wanted: corral.guests.start(name, wait=wait,
                                                                                  still_wanted=wanted))

    @api.post("/domains/{name}/shutdown", tags=["domains"], response_model=DomainDetails)
    def shutdown_domain(name: NameParam, timeout: Annotated[float, Query(gt=0, le=3600)] = 60,
                        force: bool = False) -> GuestInfo:
        """ACPI power button, then wait up to `timeout` s; with force, power off what is still running."""
        return corral.guests.shutdown(name, timeout_s=timeout, force=force)

    @api.post("/domains/{name}/poweroff", tags=["domains"], response_model=DomainDetails)
    def poweroff_domain(name: NameParam) -> GuestInfo:
        """Pull the plug."""
        return corral.guests.poweroff(name)

    @api.post("/domains/{name}/reboot", tags=["domains"], response_model=DomainDetails)
    def reboot_domain(name: NameParam) -> GuestInfo:
        return corral.guests.reboot(name)

    @api.post("/domains/{name}/pause", tags=["domains"], response_model=DomainDetails)
    def pause_domain(name: NameParam) -> GuestInfo:
        return corral.guests.pause(name)

    @api.post("/domains/{name}/resume", tags=["domains"], response_model=DomainDetails)
    def resume_domain(name: NameParam) -> GuestInfo:
        return corral.guests.resume(name)

    @api.post("/domains/{name}/media/eject", tags=["domains"], response_model=DomainDetails)
    def eject_media(name: NameParam, device: Annotated[str | None, Query(
            pattern=r"^[hsv]d[a-z]{1,2}$", description="Only this CD drive (e.g. sda)")] = None) -> GuestInfo:
        """Take the ISO out of the guest's CD drive(s), running or not; it boots from its disk."""
        return corral.guests.media_eject(name, device)

    @api.post("/domains/{name}/exec", tags=["domains"])
    def exec_in_domain(name: NameParam, body: ExecBody) -> ExecOutput:
        """Run a program in the guest through its QEMU guest agent (no network needed): its exit code
        and output, as `corral exec NAME -- CMD` gives them."""
        result = corral.guests.exec(name, body.command, timeout_s=body.timeout)
        return ExecOutput(exit_code=result.exit_code, stdout=result.stdout.decode(errors="replace"),
                          stderr=result.stderr.decode(errors="replace"))

    @api.post("/domains/{name}/clone", tags=["domains"], status_code=201, response_model=DomainDetails)
    def clone_domain(name: NameParam, body: NameBody) -> GuestInfo:
        """Copy a shut-off guest under a new name (`{"name": "copy"}`)."""
        return corral.guests.clone(name, body.name)

    @api.get("/domains/{name}/snapshots", tags=["snapshots"], response_model=list[Snapshot])
    def list_snapshots(name: NameParam) -> list[SnapshotInfo]:
        """The guest's snapshots, oldest first."""
        return corral.guests.snapshot_list(name)

    @api.post("/domains/{name}/snapshots", tags=["snapshots"], status_code=201, response_model=Snapshot)
    def create_snapshot(name: NameParam, body: NameBody) -> SnapshotInfo:
        """Snapshot a guest (`{"name": "before-upgrade"}`), memory too when it runs."""
        return corral.guests.snapshot_create(name, body.name)

    @api.post("/domains/{name}/snapshots/{snapshot}/revert", tags=["snapshots"], response_model=DomainDetails)
    def revert_snapshot(name: NameParam, snapshot: SnapshotParam) -> GuestInfo:
        return corral.guests.snapshot_revert(name, snapshot)

    @api.delete("/domains/{name}/snapshots/{snapshot}", tags=["snapshots"])
    def delete_snapshot(name: NameParam, snapshot: SnapshotParam) -> SnapshotDeleted:
        corral.guests.snapshot_delete(name, snapshot)
        return SnapshotDeleted(deleted=snapshot, domain=name)

    @api.post("/domains/{name}/console-ticket", tags=["domains"])
    def console_ticket(name: NameParam, request: Request) -> ConsoleTicket:
        """A one-time ticket (valid 30 s, tied to this session or token) for the guest's console."""
        info = corral.guests.info(name)  # NotFound for an unknown domain
        ticket = auth.issue_ticket(principal_of(request), info.name)
        return ConsoleTicket(ticket=ticket, domain=info.name, state=info.state, expires_in_s=TICKET_TTL_S)

    return api
