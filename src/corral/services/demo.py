"""`corral demo`: the classic server-sprawl case, run for real.

Five departmental servers, each once alone on its own machine at 8-18 % utilization, become
five guests of the built-in image, each running a workload that reproduces its server's load
(CPU, disk and network), side by side on one host. The planner then answers the same question
from a day of the servers' traces: one host of the same kind holds all five, under the cap.

`corral demo --hosts 5` tells the rest live: five private libvirt hosts on this machine stand in for
the five machines (as the tests' lab hosts do), each server starts alone on its own host, and the
balancer consolidates them by live migration onto one host under the cap and puts the emptied hosts
in standby; the energy per year before and after comes from the cost model.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.adapters.files import write_atomic
from corral.adapters.libvirt_host import ACTIVE_STATES
from corral.config import Settings
from corral.core.capacity import DEFAULT_CAP
from corral.core.errors import Conflict, CorralError, InvalidInput
from corral.core.spec import GuestSpec, LoadSpec
from corral.planning.names import DEFAULT_BEFORE_KIND
from corral.services.guests import GuestService, ListedDomain
from corral.services.images import TINY, ImageService
from corral.services.plans import PlanRequest, PlanService
from corral.services.registry import HostRegistry

if TYPE_CHECKING:
    from corral.services.balancer import BalancerService
    from corral.services.host import HostService
    from corral.services.monitoring import MonitoringService

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
                 plans: PlanService, monitoring: MonitoringService) -> None:
        self.settings = settings
        self.hosts = hosts
        self.guests = guests
        self.images = images
        self.plans = plans
        self._monitoring = monitoring

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
        """Delete the guests the demo made (never a user's guest that shares a name) and the demo's lab
        hosts; return what went."""
        ours = self._made_by_demo()
        deleted = []
        for server in DEMO_SERVERS:
            if server.name in ours and self.hosts.owner(server.name) is not None:
                self.guests.delete(server.name)
                deleted.append(server.name)
            ours.discard(server.name)
        self._record(ours)
        lab_hosts = self._demo_hosts()
        if lab_hosts:
            from corral.adapters.lab import Lab

            lab = Lab(self.settings.data_dir / "lab")
            for name in lab_hosts:
                with contextlib.suppress(CorralError):
                    lab.stop(name)
                with contextlib.suppress(CorralError):
                    self.hosts.drop(name)
                deleted.append(f"host {name}")
            lab.forget(lab_hosts)
            write_atomic(self._hosts_ledger, "[]")
        return deleted

    # --- several hosts ------------------------------------------------------------------------------
    @property
    def _hosts_ledger(self) -> Path:
        return self.settings.data_dir / "demo" / "hosts.json"

    def _demo_hosts(self) -> list[str]:
        try:
            names = json.loads(self._hosts_ledger.read_text())
        except (OSError, ValueError):
            return []
        return [n for n in names if isinstance(n, str)]

    def run_cluster(self, host: HostService, balancer: Callable[[float], BalancerService], n_hosts: int = 5,
                    step: Step | None = None, step_s: float = 5.0) -> ClusterDemoResult:
        """Five servers each alone on its own lab host, then the balancer's rounds until it is done."""
        import threading
        import time

        from corral.adapters.lab import Lab
        from corral.core.hosts import HostSpec, PowerSpec

        if n_hosts != len(DEMO_SERVERS):
            raise InvalidInput(f"--hosts {n_hosts}: the demo's story has {len(DEMO_SERVERS)} servers, one host each")
        say = step or (lambda _what, _done, _total: None)
        ours = self._made_by_demo()
        for server in DEMO_SERVERS:
            if self.hosts.owner(server.name) is not None and server.name not in ours:
                raise Conflict(f"a guest named {server.name!r} exists and was not made by the demo; the demo "
                               "leaves it alone: rename or delete it")
            if self.hosts.owner(server.name) is not None:
                raise Conflict(f"the demo's {server.name} exists already: corral demo --clean first")
        if not self.images.exists(TINY):
            self.images.build_tiny(lambda what, fraction: say(f"image: {what}", int(fraction * 100), 100))
        names = [f"{s.name}-host" for s in DEMO_SERVERS]
        lab = Lab(self.settings.data_dir / "lab")
        say("starting five hosts", 0, 5)
        made = lab.create(names)
        write_atomic(self._hosts_ledger, json.dumps(names))
        corral = str(Path(sys.executable).with_name("corral"))
        env = f"env CORRAL_DATA_DIR={self.settings.data_dir}" + (
            f" CORRAL_CONFIG={self.settings.config_path}" if self.settings.config_path else "")
        known = {h.name for h in self.hosts}
        for lab_host in made:
            if lab_host.name not in known:
                host.add(HostSpec(lab_host.name, lab_host.uri, storage="shared", network="", power=PowerSpec(
                    "command", (("standby", f"{env} {corral} lab stop {lab_host.name}"),
                                ("wake", f"{env} {corral} lab start {lab_host.name}")))))
        for done, (server, where) in enumerate(zip(DEMO_SERVERS, names, strict=True)):
            say(f"{server.name}: booting on {where}", done, len(DEMO_SERVERS))
            spec = GuestSpec(server.name, TINY, vcpus=1, memory_mib=server.memory_mib, load=server.load)
            self.guests.create(spec, host=where, start=True, wait=True)
            ours.add(server.name)
            self._record(ours)
        stop = threading.Event()
        sampler = threading.Thread(target=self._monitoring.run, kwargs={"stop": stop, "interval_s": 1.0},
                                   daemon=True)
        sampler.start()
        try:
            say("measuring the servers", 0, 1)
            time.sleep(3 * step_s)  # a few intervals of history for the policy
            before = self._spread(names)
            rounds: list[str] = []
            service = balancer(step_s)
            quiet = 0
            for index in range(MAX_ROUNDS):
                say(f"balancing, round {index + 1}", index, MAX_ROUNDS)
                report = service.round(apply=True)
                rounds.append(report.plan.summary)
                # Done when the policy has nothing more to do for a few rounds running: a round that holds
                # back (the guests' forecasts still spread wide on a few measured intervals, on a busy
                # machine) is not the end; more history narrows them.
                quiet = quiet + 1 if report.plan.empty else 0
                if quiet >= QUIET_ROUNDS:
                    break
                time.sleep(step_s)
            after = self._spread(names)
        finally:
            stop.set()
            sampler.join(10)
        return ClusterDemoResult(before, after, tuple(rounds), energy(before), energy(after))

    def _spread(self, names: list[str]) -> tuple[HostLoad, ...]:
        """Each demo host: on or in standby, its guests, their measured CPU as a share of the host."""
        latest = {s.domain: s for s in self._monitoring.latest}
        loads = []
        for name in names:
            target = self.hosts.get(name)
            if target.standby:
                loads.append(HostLoad(name, "standby", (), 0.0))
                continue
            rows = [r for r in target.libvirt.rows() if r.state in ACTIVE_STATES]
            cores = target.libvirt.node_info().cores
            busy = 0.0
            for row in rows:
                sample = latest.get(row.name)
                pct = sample.values.get("cpu_pct") if sample is not None else None
                busy += (pct or 0.0) / 100 * row.vcpus
            loads.append(HostLoad(name, "on", tuple(r.name for r in rows), busy / max(cores, 1)))
        return tuple(loads)


MAX_ROUNDS = 16
QUIET_ROUNDS = 3  # rounds in a row with nothing to do: the demo's balancing is over


@dataclass(frozen=True)
class HostLoad:
    host: str
    state: str  # on | standby
    guests: tuple[str, ...]
    utilization: float  # its guests' CPU as a share of the host's


@dataclass(frozen=True)
class ClusterDemoResult:
    before: tuple[HostLoad, ...]
    after: tuple[HostLoad, ...]
    rounds: tuple[str, ...]
    energy_before: tuple[float, float, str]  # kWh a year, its cost, the currency
    energy_after: tuple[float, float, str]


def energy(loads: tuple[HostLoad, ...]) -> tuple[float, float, str]:
    """A year of the hosts that are on, at their utilization, from the cost model (power curve of the
    demo's host kind, PUE, energy price); hosts in standby draw nothing."""
    import numpy as np

    from corral.planning import load_catalog
    from corral.planning.cost import CostParams, side_cost

    params = CostParams()
    on = np.array([[h.utilization] for h in loads if h.state == "on"], dtype=np.float64).reshape(-1, 1)
    cost = side_cost(load_catalog()[BEFORE_KIND], on, params)
    return cost.energy_kwh_year, cost.energy, params.currency


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
