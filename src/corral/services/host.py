"""The hosts themselves: facts (as each host's libvirt describes it), engine, network, and capacity as
the admission guard sees it. Every method takes the host it acts on; None is the default (local) host."""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass
from typing import Any

from corral.adapters.accel import Accelerator, choose_accelerator
from corral.adapters.libvirt_host import ACTIVE_STATES
from corral.adapters.power import driver_for
from corral.config import Settings
from corral.core.capacity import CapacityReport, Footprint, HostFacts, capacity_report, footprint
from corral.core.domxml import build_network_xml, parse_domain_xml
from corral.core.errors import Conflict, CorralError, GuestTimeout, NotFound
from corral.core.hosts import HostSize, HostSpec
from corral.services.registry import Host, HostRegistry

CPU_WINDOW_S = 0.2
WAKE_TIMEOUT_S = 300.0
WAKE_POLL_S = 0.5


@dataclass(frozen=True)
class HostSnapshot:
    """A host now, from its own libvirt (node info, CPU and memory counters)."""

    hostname: str
    cpu_model: str
    cores: int
    memory_total_mib: int
    memory_used_mib: int
    cpu_pct: float  # over a short window
    kernel: str  # the local machine's kernel; "" for a host reached over the network

    @property
    def facts(self) -> HostFacts:
        return HostFacts(cores=self.cores, memory_mib=self.memory_total_mib)


@dataclass(frozen=True)
class HostReport:
    host: str
    uri: str
    snapshot: HostSnapshot
    accelerator: Accelerator
    capacity: CapacityReport
    running_guests: int
    defined_guests: int
    network: str | None
    network_reason: str

    @property
    def libvirt_uri(self) -> str:
        return self.uri

    def as_dict(self) -> dict[str, Any]:
        """The JSON form shared by `corral host --json` and `GET /api/host`."""
        snap, cap = self.snapshot, self.capacity
        return {
            "host": self.host, "hostname": snap.hostname, "cpu_model": snap.cpu_model, "cores": snap.cores,
            "memory_mib": snap.memory_total_mib, "memory_used_mib": snap.memory_used_mib,
            "cpu_pct": snap.cpu_pct, "kernel": snap.kernel,
            "engine": self.accelerator.engine, "engine_reason": self.accelerator.reason,
            "libvirt_uri": self.uri, "guests_running": self.running_guests,
            "guests_defined": self.defined_guests,
            "network": self.network, "network_reason": self.network_reason,
            "limits": dict(cap.limits.__dict__),
            "capacity": {b.resource: {"unit": b.unit, "limit": b.limit, "used": b.used, "free": b.free}
                         for b in cap.budgets},
        }


class HostService:
    def __init__(self, settings: Settings, hosts: HostRegistry) -> None:
        self.settings = settings
        self.hosts = hosts
        self._accel: dict[str, Accelerator] = {}
        self._network: dict[str, tuple[str | None, str]] = {}

    def facts(self, host: str | None = None) -> HostFacts:
        """Cores and memory the guests of a host share, from that host's libvirt."""
        node = self.hosts.get(host).libvirt.node_info()
        return HostFacts(cores=node.cores, memory_mib=node.memory_mib)

    def snapshot(self, host: str | None = None, cpu_window_s: float = CPU_WINDOW_S) -> HostSnapshot:
        target = self.hosts.get(host)
        node = target.libvirt.node_info()
        before = target.libvirt.node_counters()
        time.sleep(cpu_window_s)
        after = target.libvirt.node_counters()
        busy = after.cpu_busy_ns - before.cpu_busy_ns
        total = busy + after.cpu_idle_ns - before.cpu_idle_ns
        return HostSnapshot(
            hostname=node.hostname, cpu_model=node.cpu_model, cores=node.cores,
            memory_total_mib=after.memory_total_kib // 1024,
            memory_used_mib=(after.memory_total_kib - after.memory_available_kib) // 1024,
            cpu_pct=round(100.0 * busy / total, 1) if total > 0 else 0.0,
            kernel=platform.release() if target.spec.on_this_machine else "",
        )

    def accelerator(self, host: str | None = None) -> Accelerator:
        """KVM where it really works on that host, TCG otherwise. A host on this machine is probed (a
        /dev/kvm that exists may still fail, as under PVM); a remote one is trusted to run KVM when its
        libvirt offers it, unless its registration says otherwise."""
        target = self.hosts.get(host)
        if target.name not in self._accel:
            preference = target.spec.accelerator
            if preference == "tcg" or target.spec.on_this_machine:
                accel = choose_accelerator(preference, self.settings.cache_dir)
            elif target.libvirt.kvm_offered():
                accel = Accelerator("kvm", f"libvirt on {target.name} offers KVM")
            else:
                why = "KVM asked for, but" if preference == "kvm" else "TCG because"
                accel = Accelerator("tcg", f"{why} libvirt on {target.name} offers no KVM")
            self._accel[target.name] = accel
        return self._accel[target.name]

    def network(self, host: str | None = None) -> tuple[str | None, str]:
        """(libvirt network for guests' NICs or None for user-mode NICs, why), on that host."""
        target = self.hosts.get(host)
        if target.name not in self._network:
            name = self.settings.network if target.spec.network is None else target.spec.network
            if not name:
                result: tuple[str | None, str] = (
                    None, "user-mode NICs (network = \"\" in the config): no host-side counters")
            else:
                bridge = f"{name[:10]}br0"
                try:
                    target.libvirt.ensure_network(name, build_network_xml(
                        name, bridge, self.settings.network_cidr, self.settings.network_mode))
                    result = (name, f"libvirt network {name} ({self.settings.network_mode}, "
                                    f"{self.settings.network_cidr}): taps with host-side counters")
                except (CorralError, ValueError) as exc:
                    why = exc.message if isinstance(exc, CorralError) else str(exc)
                    result = (None, f"user-mode NICs because network {name} is unavailable: {why}")
            self._network[target.name] = result
        return self._network[target.name]

    def running_footprints(self, host: str | None = None) -> list[Footprint]:
        """What the running guests of a host take from it, each by its declared load if it has one."""
        return self._footprints(self.hosts.get(host))

    def _footprints(self, target: Host) -> list[Footprint]:
        result = []
        for row in target.libvirt.rows():
            if row.state not in ACTIVE_STATES:
                continue
            try:
                facts = parse_domain_xml(target.libvirt.xml(row.name))
            except NotFound:
                continue  # it went away after the listing: it takes nothing any more
            load = facts.meta.load.declared_cpu_pct if facts.meta else None
            result.append(footprint(row.name, row.vcpus, row.memory_mib, load, self.settings.limits))
        return result

    # --- the registry ---------------------------------------------------------------------------
    def summaries(self, cpu_window_s: float = 0.1) -> list[HostSummary]:
        """Every host with its state, size, what its running guests take and its CPU %; a host that cannot
        be reached (or is in standby) is a row saying so."""
        return [self.summary(h.name, cpu_window_s) for h in self.hosts]

    def summary(self, host: str, cpu_window_s: float = 0.1) -> HostSummary:
        target = self.hosts.get(host)
        power = target.spec.power.driver

        def unread(state: str, error: str | None = None) -> HostSummary:
            return HostSummary(target.name, target.uri, state, target.spec.storage, None, None, None, 0, 0, None, 0,
                               0, power, error)

        if target.standby:
            return unread("standby")
        try:
            snap = self.snapshot(target.name, cpu_window_s)
            rows = target.libvirt.rows()
            running = self._footprints(target)
        except CorralError as exc:
            return unread("maintenance" if target.maintenance else "unreachable", exc.message)
        return HostSummary(
            target.name, target.uri, "maintenance" if target.maintenance else "up", target.spec.storage,
            snap.cores, snap.memory_total_mib, snap.cpu_pct, sum(f.vcpus for f in running),
            sum(f.memory_mib for f in running), snap.cores * self.settings.limits.cap,
            sum(1 for r in rows if r.state in ACTIVE_STATES), len(rows), power)

    def add(self, spec: HostSpec) -> HostSummary:
        self.hosts.add(spec)
        return self.summary(spec.name)

    def remove(self, name: str) -> None:
        self.hosts.remove(name)
        self._accel.pop(name, None)
        self._network.pop(name, None)

    def standby(self, name: str) -> None:
        """Power a host down through its power driver; refused while guests run there, and for the host
        Corral is configured with (it may be the one it runs on)."""
        target = self.hosts.get(name)
        if target.name == self.hosts.default.name:
            raise Conflict(f"{name} is the configured host: Corral does not put it in standby")
        if target.standby:
            return
        try:
            running = [row.name for row in target.libvirt.rows() if row.state in ACTIVE_STATES]
        except CorralError as exc:
            raise Conflict(f"cannot tell whether guests run on {name} ({exc.message})") from None
        if running:
            raise Conflict(f"guests run on {name}: {', '.join(running)}; migrate them or shut them down first")
        with contextlib.suppress(CorralError):  # its size, for the balancer to count on while it is off
            node = target.libvirt.node_info()
            self.hosts.remember_size(name, HostSize(node.cores, float(node.mhz or 1000), node.memory_mib))
        driver_for(target.name, target.spec.power).standby()
        self.hosts.set_state(name, standby=True)

    def wake(self, name: str, timeout_s: float = WAKE_TIMEOUT_S) -> float:
        """Power a host up through its power driver and return once its libvirt answers (seconds taken);
        only then does it count as up."""
        target = self.hosts.get(name)
        began = time.monotonic()
        if target.standby or not target.reachable():
            driver_for(target.name, target.spec.power).wake()
            while not target.reachable():
                if time.monotonic() - began > timeout_s:
                    raise GuestTimeout(f"{name} was woken but its libvirt did not answer within {timeout_s:g} s; "
                                       "it stays in standby")
                time.sleep(WAKE_POLL_S)
        self.hosts.set_state(name, standby=False)
        return time.monotonic() - began

    def report(self, host: str | None = None) -> HostReport:
        target = self.hosts.get(host)
        snapshot = self.snapshot(target.name)
        rows = target.libvirt.rows()
        running = self._footprints(target)
        network = self.network(target.name)
        return HostReport(
            host=target.name,
            uri=target.uri,
            snapshot=snapshot,
            accelerator=self.accelerator(target.name),
            capacity=capacity_report(snapshot.facts, self.settings.limits, running),
            running_guests=sum(1 for r in rows if r.state in ACTIVE_STATES),
            defined_guests=len(rows),
            network=network[0],
            network_reason=network[1],
        )


@dataclass(frozen=True)
class HostSummary:
    """One row of `corral host list`."""

    name: str
    uri: str
    state: str  # up | unreachable | maintenance | standby
    storage: str
    cores: int | None
    memory_mib: int | None
    cpu_pct: float | None
    vcpus_allocated: int
    memory_allocated_mib: int
    cpu_cap_cores: float | None  # what the admission guard allows of expected CPU demand
    guests_running: int
    guests_defined: int
    power: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
