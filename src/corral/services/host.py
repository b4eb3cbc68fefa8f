"""The host itself: facts, engine, and its capacity as the admission guard sees it."""

from __future__ import annotations

from dataclasses import dataclass

from corral.adapters.accel import Accelerator, choose_accelerator
from corral.adapters.hostinfo import HostSnapshot, host_snapshot
from corral.adapters.libvirt_host import ACTIVE_STATES, LibvirtHost
from corral.config import Settings
from corral.core.capacity import CapacityReport, Footprint, capacity_report, footprint
from corral.core.domxml import parse_domain_xml


@dataclass(frozen=True)
class HostReport:
    snapshot: HostSnapshot
    accelerator: Accelerator
    capacity: CapacityReport
    libvirt_uri: str
    running_guests: int
    defined_guests: int


class HostService:
    def __init__(self, settings: Settings, libvirt_host: LibvirtHost) -> None:
        self.settings = settings
        self.libvirt = libvirt_host
        self._accel: Accelerator | None = None

    def accelerator(self) -> Accelerator:
        if self._accel is None:
            self._accel = choose_accelerator(self.settings.accelerator, self.settings.cache_dir)
        return self._accel

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
        )
