"""What Prometheus scrapes from `corral serve`'s /metrics and from `corral monitor --prometheus`: every
host and every defined guest read from libvirt at each scrape (counters need no sampler; the sampler's
last interval adds CPU utilization where it runs), the capacity model beside the running guests, the
admission refusals of this process and the balancer's decisions. The families are made by
corral.monitoring.prometheus."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import platform

from prometheus_client.registry import CollectorRegistry

from corral.adapters.libvirt_host import library_version
from corral.config import Settings
from corral.core.capacity import MIB, capacity_report
from corral.core.errors import CorralError
from corral.core.hosts import host_state
from corral.monitoring.collector import HostReader
from corral.monitoring.metrics import HOST_DOMAIN
from corral.monitoring.prometheus import DomainReading, HostReading, Reading, corral_registry
from corral.services.balancer import BalancerService
from corral.services.guests import GuestService
from corral.services.host import HostService
from corral.services.monitoring import MonitoringService
from corral.services.registry import Host, HostRegistry


def build_info() -> dict[str, str]:
    try:
        version = importlib.metadata.version("corral")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        version = "0+unknown"
    return {"version": version, "python_version": platform.python_version(), "libvirt_version": library_version()}


class PrometheusService:
    def __init__(self, settings: Settings, hosts: HostRegistry, host: HostService, guests: GuestService,
                 monitoring: MonitoringService, balancer: BalancerService) -> None:
        self.settings = settings
        self.hosts = hosts
        self.host = host
        self.guests = guests
        self.monitoring = monitoring
        self.balancer = balancer

    @functools.cached_property
    def registry(self) -> CollectorRegistry:
        """Corral's registry: what both endpoints serve."""
        return corral_registry(self.read, build_info())

    @functools.cached_property
    def _devices(self) -> HostReader:
        """This machine's physical disks and NICs (psutil), for the hosts on it."""
        return HostReader(cpu_mhz=0.0)  # no clock speed needed

    def read(self) -> Reading:
        utilization = {(s.host, s.domain): s.values.get("cpu_pct") for s in self.monitoring.latest}
        hosts: list[HostReading] = []
        domains: list[DomainReading] = []
        for target in self.hosts:
            host, guests = self._read_host(target, utilization)
            hosts.append(host)
            domains += guests
        balancer = None
        with contextlib.suppress(CorralError):  # an unreadable audit log: the rest is still worth a scrape
            balancer = self.balancer.figures()
        return Reading(hosts, domains, balancer)

    def _read_host(self, target: Host, utilization: dict[tuple[str, str], float | None]
                   ) -> tuple[HostReading, list[DomainReading]]:
        refusals = self.guests.admission_refusals.get(target.name, 0)
        if target.standby:  # off: not asked
            return HostReading(target.name, "standby", admission_refusals=refusals), []
        lv = target.libvirt
        try:
            node = lv.node_info()
            counters = lv.node_counters()
            rows = lv.rows()
            stats = {name: values for name, _id, values in lv.all_stats()}
            capacity = capacity_report(self.host.facts(target.name), self.settings.limits,
                                       self.host.running_footprints(target.name))
        except CorralError:
            return HostReading(target.name, host_state(target.record, False), admission_refusals=refusals), []
        disks: dict[str, tuple[int, int, int, int]] = {}
        nics: dict[str, tuple[int, int]] = {}
        if target.spec.on_this_machine:
            snap = self._devices.read()
            disks = {d: (*snap.disk[d], *snap.disk_ops.get(d, (0, 0))) for d in snap.disk}
            nics = dict(snap.net)

        def ratio(domain: str) -> float | None:
            pct = utilization.get((target.name, domain))
            return None if pct is None else pct / 100

        host = HostReading(
            target.name, host_state(target.record, True), hostname=node.hostname, cpu_model=node.cpu_model,
            cores=node.cores, cpu_busy_s=counters.cpu_busy_ns / 1e9, cpu_idle_s=counters.cpu_idle_ns / 1e9,
            memory_bytes=counters.memory_total_kib * 1024.0,
            memory_used_bytes=(counters.memory_total_kib - counters.memory_available_kib) * 1024.0,
            disks=disks, nics=nics, budgets=capacity.budgets, cpu_utilization=ratio(HOST_DOMAIN),
            admission_refusals=refusals)
        guests = [DomainReading(target.name, row.name, row.uuid, row.state, row.vcpus, float(row.memory_mib * MIB),
                                stats.get(row.name, {}), ratio(row.name)) for row in rows]
        return host, guests
