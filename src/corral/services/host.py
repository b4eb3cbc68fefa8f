"""The host itself: facts, engine, and its capacity as the admission guard sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.adapters.accel import Accelerator, choose_accelerator
from corral.adapters.hostinfo import HostSnapshot, host_snapshot
from corral.adapters.libvirt_host import ACTIVE_STATES, LibvirtHost
from corral.config import Settings
from corral.core.capacity import CapacityReport, Footprint, capacity_report, footprint
from corral.core.domxml import build_network_xml, parse_domain_xml
from corral.core.errors import CorralError


@dataclass(frozen=True)
class HostReport:
    snapshot: HostSnapshot
    accelerator: Accelerator
    capacity: CapacityReport
    libvirt_uri: str
    running_guests: int
    defined_guests: int
    network: str | None
    network_reason: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON form shared by `corral host --json` and `GET /api/host`."""
        snap, cap = self.snapshot, self.capacity
        return {
            "hostname": snap.hostname, "cpu_model": snap.cpu_model, "cores": snap.cores,
            "physical_cores": snap.physical_cores, "memory_mib": snap.memory_total_mib,
            "memory_used_mib": snap.memory_used_mib, "cpu_pct": snap.cpu_pct, "kernel": snap.kernel,
            "engine": self.accelerator.engine, "engine_reason": self.accelerator.reason,
            "libvirt_uri": self.libvirt_uri, "guests_running": self.running_guests,
            "guests_defined": self.defined_guests,
            "network": self.network, "network_reason": self.network_reason,
            "limits": dict(cap.limits.__dict__),
            "capacity": {b.resource: {"unit": b.unit, "limit": b.limit, "used": b.used, "free": b.free}
                         for b in cap.budgets},
        }


class HostService:
    def __init__(self, settings: Settings, libvirt_host: LibvirtHost) -> None:
        self.settings = settings
        self.libvirt = libvirt_host
        self._accel: Accelerator | None = None
        self._network: tuple[str | None, str] | None = None

    def accelerator(self) -> Accelerator:
        if self._accel is None:
            self._accel = choose_accelerator(self.settings.accelerator, self.settings.cache_dir)
        return self._accel

    def network(self) -> tuple[str | None, str]:
        """(libvirt network for guests' NICs or None for user-mode NICs, why)."""
        if self._network is None:
            name = self.settings.network
            if not name:
                self._network = (None, "user-mode NICs (network = \"\" in the config): no host-side counters")
            else:
                bridge = f"{name[:10]}br0"
                try:
                    self.libvirt.ensure_network(name, build_network_xml(
                        name, bridge, self.settings.network_cidr, self.settings.network_mode))
                    self._network = (name, f"libvirt network {name} ({self.settings.network_mode}, "
                                           f"{self.settings.network_cidr}): taps with host-side counters")
                except (CorralError, ValueError) as exc:
                    why = exc.message if isinstance(exc, CorralError) else str(exc)
                    self._network = (None, f"user-mode NICs because network {name} is unavailable: {why}")
        return self._network

    def running_footprints(self) -> list[Footprint]:
        """What the running guests take from the host, each by its declared load if it has one."""
        result = []
        for row in self.libvirt.rows():
            if row.state not in ACTIVE_STATES:
                continue
            facts = parse_domain_xml(self.libvirt.xml(row.name))
            load = facts.meta.load.declared_cpu_pct if facts.meta else None
            result.append(footprint(row.name, row.vcpus, row.memory_mib, load, self.settings.limits))
        return result

    def report(self) -> HostReport:
        snapshot = host_snapshot(cpu_interval=0.2)
        rows = self.libvirt.rows()
        running = self.running_footprints()
        return HostReport(
            snapshot=snapshot,
            accelerator=self.accelerator(),
            capacity=capacity_report(snapshot.facts, self.settings.limits, running),
            libvirt_uri=self.libvirt.uri,
            running_guests=sum(1 for r in rows if r.state in ACTIVE_STATES),
            defined_guests=len(rows),
            network=self.network()[0],
            network_reason=self.network()[1],
        )
