"""`corral demo`: the classic server-sprawl case, run for real on this host.

Five departmental servers, each once alone on its own machine at 8-18 % utilization, become
five guests of the built-in image, each running a workload that reproduces its server's load
(CPU, disk and network), side by side on one host. The planner then answers the same question
from a day of the servers' traces: one host of the same kind holds all five, under the cap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.adapters.files import write_atomic
from corral.adapters.libvirt_host import ACTIVE_STATES
from corral.config import Settings
from corral.core.capacity import DEFAULT_CAP
from corral.core.errors import Conflict
from corral.core.spec import GuestSpec, LoadSpec
from corral.planning.names import DEFAULT_BEFORE_KIND
from corral.services.guests import GuestService, ListedDomain
from corral.services.images import TINY, ImageService
from corral.services.plans import PlanRequest, PlanService
from corral.services.registry import HostRegistry

BEFORE_KIND = DEFAULT_BEFORE_KIND
CAP = DEFAULT_CAP
Step = Callable[[str, int, int], None]  # (what is happening, done, total)


@dataclass(frozen=True)
class DemoServer:
    name: str
    role: str
    load: LoadSpec  # what the physical server was measured doing, on average
    peak_hour: float  # when in the day it is busiest
    memory_mib: int = 160


DEMO_SERVERS = (
    DemoServer("web", "intranet web server", LoadSpec(cpu_pct=15, disk_kbps=32, net_kbps=96), peak_hour=11),
    DemoServer("mail", "mail server", LoadSpec(cpu_pct=12, disk_kbps=64, net_kbps=48), peak_hour=9),
    DemoServer("files", "file server", LoadSpec(cpu_pct=10, disk_kbps=256, net_kbps=128), peak_hour=15),
    DemoServer("db", "database server", LoadSpec(cpu_pct=18, disk_kbps=128, net_kbps=32), peak_hour=2),
    DemoServer("directory", "directory (LDAP/DNS)", LoadSpec(cpu_pct=8, disk_kbps=8, net_kbps=16), peak_hour=8),
)


@dataclass(frozen=True)
class DemoResult:
    listing: list[ListedDomain]
    plan: dict[str, Any]  # plan.json
    summary: list[str]
    plan_path: Path
    report_path: Path


class DemoService:
    """`corral demo`: the five servers as loaded guests, and their plan. It keeps a ledger of the guests it
    made, and touches no others."""

    def __init__(self, settings: Settings, hosts: HostRegistry, guests: GuestService, images: ImageService,
                 plans: PlanService) -> None:
        self.settings = settings
        self.hosts = hosts
        self.guests = guests
        self.images = images
        self.plans = plans

    @property
    def _ledger(self) -> Path:
        """The demo's own record of the guests it made: only those are ever reused or deleted."""
        return self.settings.data_dir / "demo" / "guests.json"

    def _made_by_demo(self) -> set[str]:
        try:
            return set(json.loads(self._ledger.read_text()))
        except (OSError, ValueError):
            return set()

    def _record(self, names: set[str]) -> None:
        write_atomic(self._ledger, json.dumps(sorted(names)))

    def run(self, step: Step | None = None) -> DemoResult:
        """Build the image if needed, create and boot the five guests, plan their consolidation."""
        say = step or (lambda _what, _done, _total: None)
        ours = self._made_by_demo()
        for server in DEMO_SERVERS:
            if self.hosts.owner(server.name) is not None and server.name not in ours:
                raise Conflict(f"a guest named {server.name!r} exists and was not made by the demo; the demo "
                               "leaves it alone: rename or delete it, or point CORRAL_LIBVIRT_URI elsewhere")
        if not self.images.exists(TINY):
            self.images.build_tiny(lambda what, fraction: say(f"image: {what}", int(fraction * 100), 100))
        total = len(DEMO_SERVERS)
        for done, server in enumerate(DEMO_SERVERS):
            owner = self.hosts.owner(server.name)
            if owner is None:
                say(f"{server.name}: creating", done, total)
                spec = GuestSpec(server.name, TINY, vcpus=1, memory_mib=server.memory_mib, load=server.load)
                self.guests.create(spec)
                ours.add(server.name)
                self._record(ours)
                owner = self.hosts.locate(server.name)
            if owner.libvirt.state(server.name) not in ACTIVE_STATES:
                say(f"{server.name}: booting", done, total)
                self.guests.start(server.name, wait=True)
        say("all five up; planning", total, total)
        plan, summary, plan_path, report_path = plan_demo(self.plans)
        return DemoResult(self.guests.listing(sample_s=1.0, fresh=True), plan, summary, plan_path, report_path)

    def clean(self) -> list[str]:
        """Delete the guests the demo made (never a user's guest that shares a name); return their names."""
        ours = self._made_by_demo()
        deleted = []
        for server in DEMO_SERVERS:
            if server.name in ours and self.hosts.owner(server.name) is not None:
                self.guests.delete(server.name)
                deleted.append(server.name)
            ours.discard(server.name)
        self._record(ours)
        return deleted


def plan_demo(plans: PlanService) -> tuple[dict[str, Any], list[str], Path, Path]:
    """A day of the five servers' traces, planned onto hosts of their own kind; kept as plan "demo"
    in the plan library, with its HTML report beside it."""
    from corral.planning import demo_traceset, load_catalog, summary_lines, write_html_report

    traces = demo_traceset(
        names=[s.name for s in DEMO_SERVERS],
        mean_utils=[s.load.cpu_pct / 100 for s in DEMO_SERVERS],
        peak_hours=[s.peak_hour for s in DEMO_SERVERS],
        kind=load_catalog()[BEFORE_KIND],
    )
    request = PlanRequest(host_kind=BEFORE_KIND, before_kind=BEFORE_KIND, cap=CAP, time_budget_s=2.0)
    plan = plans.plan(traces, request).data
    plan_path = plans.save("demo", plan)
    report_path = plan_path.with_suffix(".html")
    write_html_report(plan, report_path)
    return plan, summary_lines(plan), plan_path, report_path
