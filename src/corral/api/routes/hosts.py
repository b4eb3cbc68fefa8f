"""The hosts Corral manages: list, add, remove, show; maintenance (which evacuates), evacuation, standby, wake.
Like `corral host …`."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from corral.api.errors import ERRORS
from corral.api.models import HostBody, HostParam, MaintenanceBody, host_spec_of
from corral.api.routes import ApiContext
from corral.api.schemas import Evacuation, HostLoad, HostRemoved, HostRow, HostStatus, HostWoken, Maintenance
from corral.monitoring.collector import parse_duration
from corral.services.host import WAKE_TIMEOUT_S
from corral.services.migration import DEFAULT_PARALLEL, MAX_PARALLEL

Parallel = Annotated[int, Query(ge=1, le=MAX_PARALLEL, description="migrations at a time")]


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS, tags=["hosts"])

    @api.get("/hosts", response_model=list[HostRow])
    def list_hosts() -> list[dict[str, Any]]:
        """Every host with its state (up, unreachable, maintenance, standby), size, what its running guests
        take, CPU %, like `corral host list --json`. A host that cannot be asked is a row saying so."""
        return [row.as_dict() for row in corral.host.summaries()]

    @api.post("/hosts", status_code=201, response_model=HostRow)
    def add_host(body: HostBody) -> dict[str, Any]:
        """Register a host (`corral host add`): its libvirt must answer and not be a host already registered
        (same URI or libvirt host UUID). A `command` power driver's commands run as the server's user."""
        return corral.host.add(host_spec_of(body)).as_dict()

    @api.get("/hosts/{name}/load", response_model=HostLoad)
    def host_load(name: HostParam, since: Annotated[str, Query(description="e.g. 30m, 6h")] = "1h") -> dict[str, Any]:
        """What the host's guests took of it over time (% of its cores) against the cap, and the balancer's
        migrations into and out of it (the Hosts page's chart)."""
        span = parse_duration(since, "since")
        points = corral.monitoring.host_load(name, span)
        began = time.time() - span
        moves = [{"time": e.time, "guest": e.guest, "source": e.source, "dest": e.dest, "outcome": e.outcome}
                 for e in corral.balancer.timeline(500)
                 if e.kind == "move" and name in (e.source, e.dest) and e.guest and e.source and e.dest
                 and e.time >= began and e.outcome.startswith("done")]
        return {"host": name, "cap_pct": 100 * corral.settings.limits.cap, "points": points, "moves": moves[::-1]}

    @api.get("/hosts/{name}", response_model=HostStatus)
    def show_host(name: HostParam) -> dict[str, Any]:
        """One host's report, like `corral host show NAME --json` (GET /api/host: the default host's)."""
        return corral.host.report(name).as_dict()

    @api.delete("/hosts/{name}")
    def remove_host(name: HostParam) -> HostRemoved:
        """Forget a host; refused (409) for the configured host and while guests are defined there."""
        corral.host.remove(name)
        return HostRemoved(removed=name)

    @api.post("/hosts/{name}/maintenance")
    def maintenance(name: HostParam, body: MaintenanceBody, parallel: Parallel = DEFAULT_PARALLEL) -> Maintenance:
        """`{"on": true}`: refused (507, naming the guests that fit nowhere) before anything changes when the
        other hosts cannot hold its guests; otherwise the host takes no new guests and every guest is moved
        away (placement spreads them), `parallel` at a time; returns when they have gone. `{"on": false}`:
        the host takes guests again."""
        if body.on:
            result = corral.migration.enter_maintenance(name, parallel=parallel)
            return Maintenance(host=name, maintenance=True, evacuation=Evacuation.model_validate(result.as_dict()))
        corral.hosts.set_state(name, maintenance=False)
        return Maintenance(host=name, maintenance=False, evacuation=None)

    @api.post("/hosts/{name}/evacuate", response_model=Evacuation)
    def evacuate(name: HostParam, parallel: Parallel = DEFAULT_PARALLEL) -> dict[str, Any]:
        """Move every guest off the host (`corral host evacuate`), refused before anything moves when the
        others cannot hold them all; returns when they have gone. Run it again after an interruption."""
        return corral.migration.evacuate(name, parallel=parallel).as_dict()

    @api.post("/hosts/{name}/standby", response_model=HostRow)
    def standby(name: HostParam) -> dict[str, Any]:
        """Power the host down through its power driver; refused while guests run there."""
        corral.host.standby(name)
        return corral.host.summary(name).as_dict()

    @api.post("/hosts/{name}/wake")
    def wake(name: HostParam, timeout: Annotated[float, Query(gt=0, le=3600)] = WAKE_TIMEOUT_S) -> HostWoken:
        """Power the host up through its power driver; returns once its libvirt answers (504 after
        `timeout` s: it stays in standby)."""
        seconds = corral.host.wake(name, timeout)
        return HostWoken(host=HostRow.model_validate(corral.host.summary(name).as_dict()), after_s=seconds)

    return api
