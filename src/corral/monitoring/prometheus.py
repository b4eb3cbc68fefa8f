"""Corral's figures for Prometheus: a prometheus_client collector over plain readings.

The service layer reads the hosts when Prometheus scrapes (services/prometheus.py) and hands a
`Reading` over; everything here turns it into metric families and is pure. What is exported:

- `corral_domain_*`, labelled `host` and `domain`: every defined guest (shut-off ones too) with its
  info, state, vCPUs and maximum memory; a running guest's CPU time, memory, and per-device disk and
  NIC counters (`target_device`, as prometheus-libvirt-exporter labels them). The hosts themselves
  (Domain-0) are never among them, so a `sum()` over domains counts guests only;
- `corral_host_*`, labelled `host`: each host's state, size, CPU time and memory, this machine's
  disks and NICs (`device`), and the capacity model (limit, allocated, free per resource);
- `corral_admission_refusals_total` and the balancer's `corral_balancer_*`;
- `corral_build_info`; the process and platform collectors add `process_*` and `python_info`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from corral.adapters.libvirt_host import STATE_NAMES
from corral.config import BALANCER_MODES
from corral.core.capacity import MIB, Budget
from corral.core.hosts import HOST_STATES
from corral.monitoring.rates import guest_counters

DOMAIN_STATES = tuple(STATE_NAMES.values())  # each guest has one series per state
# The capacity model's units, in Prometheus' base units: memory is stated in MiB there, in bytes here.
CAPACITY_SCALE = {"memory": float(MIB)}


@dataclass(frozen=True)
class DomainReading:
    """One defined guest of one host; `stats` (libvirt's bulk statistics) only while it runs."""

    host: str
    name: str
    uuid: str
    state: str
    vcpus: int
    memory_max_bytes: float
    stats: Mapping[str, object] = field(default_factory=dict)
    cpu_utilization: float | None = None  # 0..1 of its vCPUs over the sampler's last interval


@dataclass(frozen=True)
class HostReading:
    """One host: `state` always; the rest when its libvirt could be read (not in standby, reachable)."""

    name: str
    state: str  # up | unreachable | maintenance | standby
    hostname: str = ""
    cpu_model: str = ""
    cores: int | None = None
    cpu_busy_s: float | None = None
    cpu_idle_s: float | None = None
    memory_bytes: float | None = None
    memory_used_bytes: float | None = None
    # This machine's physical disks, device -> (read bytes, written bytes, reads, writes), and NICs,
    # device -> (received bytes, sent bytes): for a host on the machine Corral runs on, from psutil.
    disks: Mapping[str, tuple[int, int, int, int]] = field(default_factory=dict)
    nics: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()  # the admission guard's capacities beside the running guests
    cpu_utilization: float | None = None  # 0..1 of its cores over the sampler's last interval
    admission_refusals: int = 0  # guests this process refused to create or start there


@dataclass(frozen=True)
class BalancerFigures:
    """The balancer's decisions by (kind, outcome) from its audit log, the hosts' states, its mode."""

    decisions: Mapping[tuple[str, str], int]
    hosts_active: int
    hosts_standby: int
    mode: str


@dataclass(frozen=True)
class Reading:
    hosts: Sequence[HostReading]
    domains: Sequence[DomainReading]
    balancer: BalancerFigures | None = None


def _gauge(name: str, help_text: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, labels=labels)


def _counter(name: str, help_text: str, labels: Sequence[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, labels=labels)


def _states(family: GaugeMetricFamily, labels: list[str], state: str, known: Sequence[str]) -> None:
    """One series per state: 1 for the one it is in, 0 for the others (an unknown state is added)."""
    for name in (*known, *(() if state in known else (state,))):
        family.add_metric([*labels, name], 1.0 if name == state else 0.0)


def _num(stats: Mapping[str, object], key: str) -> float | None:
    value = stats.get(key)
    return float(value) if isinstance(value, int | float) else None


# libvirt's bulk-stats keys per device: (family, help, key); counters unless the family is a gauge.
DISK_FIELDS = (
    ("corral_domain_disk_read_bytes", "Bytes read from the guest's disk.", "rd.bytes"),
    ("corral_domain_disk_written_bytes", "Bytes written to the guest's disk.", "wr.bytes"),
    ("corral_domain_disk_reads", "Read requests completed on the guest's disk.", "rd.reqs"),
    ("corral_domain_disk_writes", "Write requests completed on the guest's disk.", "wr.reqs"),
)
NIC_FIELDS = (
    ("corral_domain_network_receive_bytes", "Bytes received by the guest's NIC (host-side counters).", "rx.bytes"),
    ("corral_domain_network_transmit_bytes", "Bytes sent by the guest's NIC (host-side counters).", "tx.bytes"),
    ("corral_domain_network_receive_packets", "Packets received by the guest's NIC.", "rx.pkts"),
    ("corral_domain_network_transmit_packets", "Packets sent by the guest's NIC.", "tx.pkts"),
)


def domain_families(domains: Sequence[DomainReading]) -> list[Metric]:
    who = ["host", "domain"]
    device = [*who, "target_device"]
    info = InfoMetricFamily("corral_domain", "A guest defined on a host.", labels=[*who, "uuid"])
    state = _gauge("corral_domain_state", "1 for the state the guest is in (libvirt's), 0 for the others.",
                   [*who, "state"])
    vcpus = _gauge("corral_domain_vcpus", "vCPUs of the guest.", who)
    memory_max = _gauge("corral_domain_memory_maximum_bytes", "Memory the guest is defined with.", who)
    cpu = _counter("corral_domain_cpu_seconds", "CPU time used by the running guest, summed over its vCPUs.", who)
    utilization = _gauge("corral_domain_cpu_utilization_ratio",
                         "Busy share of the guest's own vCPUs over the sampler's last interval (0-1).", who)
    memory = _gauge("corral_domain_memory_bytes", "Memory the running guest has (as its balloon driver reports).",
                    who)
    memory_used = _gauge("corral_domain_memory_used_bytes", "Memory in use in the guest (its own view).", who)
    disk_capacity = _gauge("corral_domain_disk_capacity_bytes", "Size of the guest's disk as the guest sees it.",
                           device)
    disks = [(_counter(name, text, device), key) for name, text, key in DISK_FIELDS]
    nics = [(_counter(name, text, device), key) for name, text, key in NIC_FIELDS]
    for d in domains:
        labels = [d.host, d.name]
        info.add_metric([*labels, d.uuid], {})
        _states(state, labels, d.state, DOMAIN_STATES)
        vcpus.add_metric(labels, float(d.vcpus))
        memory_max.add_metric(labels, d.memory_max_bytes)
        if d.cpu_utilization is not None:
            utilization.add_metric(labels, d.cpu_utilization)
        if not d.stats:
            continue
        counters = guest_counters(d.name, "", d.stats, 0.0)
        if "cpu.time" in d.stats:
            cpu.add_metric(labels, counters.cpu_time_s)
        if counters.mem_total_bytes is not None:
            memory.add_metric(labels, counters.mem_total_bytes)
        if counters.mem_used_bytes is not None:
            memory_used.add_metric(labels, counters.mem_used_bytes)
        for i in range(int(_num(d.stats, "block.count") or 0)):
            target = d.stats.get(f"block.{i}.name")
            if not isinstance(target, str):
                continue
            for family, key in disks:
                value = _num(d.stats, f"block.{i}.{key}")
                if value is not None:
                    family.add_metric([*labels, target], value)
            size = _num(d.stats, f"block.{i}.capacity")
            if size is not None:
                disk_capacity.add_metric([*labels, target], size)
        # Only NICs with a host-side device (a tap) have counters; a user-mode NIC has none.
        for i in range(int(_num(d.stats, "net.count") or 0)):
            target = d.stats.get(f"net.{i}.name")
            if not isinstance(target, str) or f"net.{i}.rx.bytes" not in d.stats:
                continue
            for family, key in nics:
                value = _num(d.stats, f"net.{i}.{key}")
                if value is not None:
                    family.add_metric([*labels, target], value)
    return [info, state, vcpus, memory_max, cpu, utilization, memory, memory_used,
            *(f for f, _ in disks), disk_capacity, *(f for f, _ in nics)]


HOST_DISK_FIELDS = (
    ("corral_host_disk_read_bytes", "Bytes read from the host's physical disk."),
    ("corral_host_disk_written_bytes", "Bytes written to the host's physical disk."),
    ("corral_host_disk_reads", "Read requests completed on the host's physical disk."),
    ("corral_host_disk_writes", "Write requests completed on the host's physical disk."),
)
HOST_NIC_FIELDS = (
    ("corral_host_network_receive_bytes", "Bytes received by the host's physical NIC."),
    ("corral_host_network_transmit_bytes", "Bytes sent by the host's physical NIC."),
)


def host_families(hosts: Sequence[HostReading]) -> list[Metric]:
    who = ["host"]
    info = InfoMetricFamily("corral_host", "A host as its libvirt describes it.",
                            labels=[*who, "hostname", "cpu_model"])
    state = _gauge("corral_host_state", "1 for the state the host is in, 0 for the others.", [*who, "state"])
    cores = _gauge("corral_host_cpus", "Logical CPUs of the host, which its guests share.", who)
    cpu = _counter("corral_host_cpu_seconds", "CPU time of the host, summed over its CPUs, by mode (busy or idle).",
                   [*who, "mode"])
    utilization = _gauge("corral_host_cpu_utilization_ratio",
                         "Busy share of the host's CPUs over the sampler's last interval (0-1).", who)
    memory = _gauge("corral_host_memory_bytes", "Memory of the host.", who)
    memory_used = _gauge("corral_host_memory_used_bytes", "Memory in use on the host (total - available).", who)
    disks = [_counter(name, text, [*who, "device"]) for name, text in HOST_DISK_FIELDS]
    nics = [_counter(name, text, [*who, "device"]) for name, text in HOST_NIC_FIELDS]
    resource = [*who, "resource"]
    units = "; vcpus in vCPUs, memory in bytes, cpu in cores."
    limit = _gauge("corral_host_capacity_limit",
                   "What the admission guard lets the running guests of the host take of a resource" + units, resource)
    allocated = _gauge("corral_host_capacity_allocated",
                       "What the running guests of the host take of a resource" + units, resource)
    free = _gauge("corral_host_capacity_free", "Limit minus allocated, negative when over" + units, resource)
    refusals = _counter("corral_admission_refusals",
                        "Guests the admission guard refused to create or start on the host (this process).", who)
    for h in hosts:
        _states(state, [h.name], h.state, HOST_STATES)
        refusals.add_metric([h.name], float(h.admission_refusals))
        if h.cores is not None:
            info.add_metric([h.name, h.hostname, h.cpu_model], {})
            cores.add_metric([h.name], float(h.cores))
        if h.cpu_busy_s is not None and h.cpu_idle_s is not None:
            cpu.add_metric([h.name, "busy"], h.cpu_busy_s)
            cpu.add_metric([h.name, "idle"], h.cpu_idle_s)
        if h.cpu_utilization is not None:
            utilization.add_metric([h.name], h.cpu_utilization)
        if h.memory_bytes is not None:
            memory.add_metric([h.name], h.memory_bytes)
        if h.memory_used_bytes is not None:
            memory_used.add_metric([h.name], h.memory_used_bytes)
        for device, values in sorted(h.disks.items()):
            for family, value in zip(disks, values, strict=True):
                family.add_metric([h.name, device], float(value))
        for device, sent in sorted(h.nics.items()):
            for family, value in zip(nics, sent, strict=True):
                family.add_metric([h.name, device], float(value))
        for budget in h.budgets:
            scale = CAPACITY_SCALE.get(budget.resource, 1.0)
            limit.add_metric([h.name, budget.resource], budget.limit * scale)
            allocated.add_metric([h.name, budget.resource], budget.used * scale)
            free.add_metric([h.name, budget.resource], budget.free * scale)
    return [info, state, cores, cpu, utilization, memory, memory_used, *disks, *nics, limit, allocated, free,
            refusals]


def balancer_families(figures: BalancerFigures) -> list[Metric]:
    counts = figures.decisions
    migrations = CounterMetricFamily("corral_balancer_migrations", "Guests the balancer migrated.",
                                     value=float(counts.get(("move", "done"), 0)))
    failed = CounterMetricFamily("corral_balancer_migrations_failed", "Migrations the balancer tried that failed.",
                                 value=float(counts.get(("move", "failed"), 0)))
    decisions = _counter("corral_balancer_decisions",
                         "The balancer's decisions by kind (wake, move, standby, refused) and what happened.",
                         ["kind", "outcome"])
    for (kind, outcome), n in sorted(counts.items()):
        decisions.add_metric([kind, outcome], float(n))
    active = GaugeMetricFamily("corral_balancer_hosts_active", "Hosts up.", value=float(figures.hosts_active))
    standby = GaugeMetricFamily("corral_balancer_hosts_standby", "Hosts in standby.",
                                value=float(figures.hosts_standby))
    mode = _gauge("corral_balancer_mode", "1 for the balancer's mode, 0 for the others.", ["mode"])
    _states(mode, [], figures.mode, BALANCER_MODES)
    return [migrations, failed, decisions, active, standby, mode]


def families(reading: Reading) -> Iterator[Metric]:
    """Every family of the reading that has a sample."""
    groups = [host_families(reading.hosts), domain_families(reading.domains)]
    if reading.balancer is not None:
        groups.append(balancer_families(reading.balancer))
    for group in groups:
        yield from (family for family in group if family.samples)


def flat(metrics: Iterable[Metric]) -> dict[str, float]:
    """Samples as `name{label="value",...}` -> value (labels sorted, as the text exposition has them)."""
    result: dict[str, float] = {}
    for metric in metrics:
        for s in metric.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            result[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return result


class CorralCollector(Collector):
    """Reads Corral's figures at every scrape (`read`, from the service layer) and yields them, after
    `corral_build_info` (what this process runs: Corral's, Python's and libvirt's library versions)."""

    def __init__(self, read: Callable[[], Reading], build: Mapping[str, str]) -> None:
        self._read = read
        self._build = InfoMetricFamily("corral_build", "The Corral that serves these metrics.", value=dict(build))

    def collect(self) -> Iterator[Metric]:
        yield self._build
        yield from families(self._read())


def corral_registry(read: Callable[[], Reading], build: Mapping[str, str]) -> CollectorRegistry:
    """A registry of Corral's own (not prometheus_client's global one): Corral's collector, and the
    process's CPU, memory and file descriptors, and Python's version."""
    registry = CollectorRegistry()
    registry.register(CorralCollector(read, build))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry

