"""The capacity model: one answer to "does this guest fit on this host?", pure, over plain data.

A host offers capacities (one per resource: how much its guests may use); a guest needs amounts of
those resources. `place(host, guest)` returns the host with the guest added, or every capacity the
guest would exceed and by how much (failures as values, as Ganeti's `Node.addPri`). The admission
guard, the planner's reasons for a server that fits no host, and placement across hosts all ask it;
they differ only in how they state capacities and needs.

The admission guard's capacities, each configurable:
- vCPUs: at most `cores x vcpu_overcommit` vCPUs of running guests;
- memory: guests' memory within `(total - reserve) x memory_overcommit` (1.0: no overcommit);
- utilization: the expected CPU demand of running guests within `cap x cores`. A guest's
  expected demand is its declared load (vCPUs x load %; a load trace declares its mean, since this
  is expected average use and the balancer forecasts peaks from measured history) or, when it
  declares none, vCPUs x `assumed_guest_utilization`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

MIB = 1024 * 1024
DEFAULT_CAP = 0.85  # the utilization cap, everywhere a default is needed (admission, planner, policy)


@dataclass(frozen=True)
class CapacityLimits:
    cap: float = DEFAULT_CAP
    vcpu_overcommit: float = 4.0
    memory_reserve_mib: int = 1024
    memory_overcommit: float = 1.0
    assumed_guest_utilization: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.cap <= 1:
            raise ValueError(f"cap={self.cap} must be in (0, 1]")
        if self.vcpu_overcommit <= 0 or self.memory_overcommit <= 0:
            raise ValueError("overcommit ratios must be positive")
        if self.memory_reserve_mib < 0:
            raise ValueError("memory_reserve_mib must not be negative")
        if not 0 <= self.assumed_guest_utilization <= 1:
            raise ValueError("assumed_guest_utilization must be in [0, 1]")


@dataclass(frozen=True)
class HostFacts:
    cores: int  # logical CPUs the guests share
    memory_mib: int


@dataclass(frozen=True)
class Capacity:
    """What a host's guests may use of one resource, and how to say it."""

    resource: str
    unit: str
    limit: float
    label: str = ""  # e.g. "vCPUs (cores x overcommit)"; the resource name when empty


@dataclass(frozen=True)
class Demand:
    """What one guest (or server) needs of each resource."""

    name: str
    needs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Footprint:
    """What one running guest takes from a host, in the admission guard's terms."""

    name: str
    vcpus: int
    memory_mib: int
    cpu_demand_cores: float  # expected average CPU use, in host cores

    @property
    def demand(self) -> Demand:
        return Demand(self.name, {"vcpus": self.vcpus, "memory": self.memory_mib, "cpu": self.cpu_demand_cores})


def footprint(name: str, vcpus: int, memory_mib: int, load_cpu_pct: float | None,
              limits: CapacityLimits) -> Footprint:
    utilization = limits.assumed_guest_utilization if load_cpu_pct is None else load_cpu_pct / 100
    return Footprint(name, vcpus, memory_mib, vcpus * utilization)


@dataclass(frozen=True)
class Budget:
    """One capacity: what the host allows, what its guests use, what is free."""

    resource: str
    unit: str
    limit: float
    used: float

    @property
    def free(self) -> float:
        return self.limit - self.used


@dataclass(frozen=True)
class Violation:
    resource: str
    unit: str
    limit: float
    would_use: float
    label: str = ""

    @property
    def excess(self) -> float:
        return self.would_use - self.limit

    def describe(self) -> str:
        return (
            f"{self.label or self.resource}: would use {_fmt(self.would_use)} of {_fmt(self.limit)} {self.unit}, "
            f"{_fmt(self.excess)} {self.unit} over"
        )


@dataclass(frozen=True)
class HostState:
    """A host as the capacity model sees it: its capacities and the guests it holds."""

    name: str
    capacity: tuple[Capacity, ...]
    guests: tuple[Demand, ...] = ()

    def used(self, resource: str) -> float:
        return sum(g.needs.get(resource, 0.0) for g in self.guests)

    def budgets(self) -> tuple[Budget, ...]:
        return tuple(Budget(c.resource, c.unit, c.limit, self.used(c.resource)) for c in self.capacity)

    def without(self, name: str) -> HostState:
        return replace(self, guests=tuple(g for g in self.guests if g.name != name))


def place(host: HostState, guest: Demand) -> HostState | tuple[Violation, ...]:
    """The host with `guest` added (replacing a guest of the same name), or every capacity it would
    exceed and by how much. Never both: a value to branch on, not an exception."""
    after = replace(host, guests=(*host.without(guest.name).guests, guest))
    broken = tuple(Violation(c.resource, c.unit, c.limit, after.used(c.resource), c.label)
                   for c in host.capacity if after.used(c.resource) > c.limit + 1e-9)
    return broken or after


# --- the admission guard's statement of capacities and needs --------------------------------------
ADMISSION_LABELS = {
    "vcpus": "vCPUs (cores x overcommit)",
    "memory": "memory for guests (total - reserve)",
    "cpu": "expected CPU demand (cap x cores)",
}


def admission_capacity(host: HostFacts, limits: CapacityLimits) -> tuple[Capacity, ...]:
    return (
        Capacity("vcpus", "vCPUs", host.cores * limits.vcpu_overcommit, ADMISSION_LABELS["vcpus"]),
        Capacity("memory", "MiB", max(0.0, (host.memory_mib - limits.memory_reserve_mib) * limits.memory_overcommit),
                 ADMISSION_LABELS["memory"]),
        Capacity("cpu", "cores", host.cores * limits.cap, ADMISSION_LABELS["cpu"]),
    )


def admission_state(name: str, host: HostFacts, limits: CapacityLimits, running: Iterable[Footprint]) -> HostState:
    return HostState(name, admission_capacity(host, limits), tuple(g.demand for g in running))


@dataclass(frozen=True)
class CapacityReport:
    host: HostFacts
    limits: CapacityLimits
    budgets: tuple[Budget, ...]


def capacity_report(host: HostFacts, limits: CapacityLimits, running: Iterable[Footprint]) -> CapacityReport:
    return CapacityReport(host, limits, admission_state("host", host, limits, running).budgets())


def admission_violations(host: HostFacts, limits: CapacityLimits, running: Iterable[Footprint],
                         candidate: Footprint) -> list[Violation]:
    """The limits that `candidate` would break if it started beside `running` (empty: admit)."""
    result = place(admission_state("host", host, limits, running), candidate.demand)
    return list(result) if isinstance(result, tuple) else []


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-9 or abs(value) >= 100 else f"{value:.2f}"
