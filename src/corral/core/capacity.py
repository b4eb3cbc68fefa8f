"""The capacity model: one answer to "does this guest fit on this host?", pure, over plain data.

`place(host_state, guest)` returns the host with the guest added, or the limits it would break
(failures as values, as Ganeti's `Node.addPri`). The admission guard, the planner's reasons for a
server that fits no host, and the placement of guests across hosts all ask it.

Three limits, each configurable:
- vCPUs: at most `cores x vcpu_overcommit` vCPUs of running guests;
- memory: guests' memory within `(total - reserve) x memory_overcommit` (1.0: no overcommit);
- utilization: the expected CPU demand of running guests within `cap x cores`. A guest's
  expected demand is its declared load (vCPUs x load %) or, when it declares none,
  vCPUs x `assumed_guest_utilization`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

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
class Footprint:
    """What one guest takes from the host while it runs."""

    name: str
    vcpus: int
    memory_mib: int
    cpu_demand_cores: float  # expected average CPU use, in host cores


def footprint(name: str, vcpus: int, memory_mib: int, load_cpu_pct: float | None,
              limits: CapacityLimits) -> Footprint:
    utilization = limits.assumed_guest_utilization if load_cpu_pct is None else load_cpu_pct / 100
    return Footprint(name, vcpus, memory_mib, vcpus * utilization)


@dataclass(frozen=True)
class Budget:
    """One limit: what the host allows, what running guests use, what is free."""

    resource: str
    unit: str
    limit: float
    used: float

    @property
    def free(self) -> float:
        return self.limit - self.used


@dataclass(frozen=True)
class CapacityReport:
    host: HostFacts
    limits: CapacityLimits
    budgets: tuple[Budget, ...]


def capacity_report(host: HostFacts, limits: CapacityLimits, running: Iterable[Footprint]) -> CapacityReport:
    guests = list(running)
    return CapacityReport(
        host,
        limits,
        (
            Budget("vcpus", "vCPUs", host.cores * limits.vcpu_overcommit, sum(g.vcpus for g in guests)),
            Budget(
                "memory",
                "MiB",
                max(0.0, (host.memory_mib - limits.memory_reserve_mib) * limits.memory_overcommit),
                sum(g.memory_mib for g in guests),
            ),
            Budget("cpu", "cores", host.cores * limits.cap, sum(g.cpu_demand_cores for g in guests)),
        ),
    )


@dataclass(frozen=True)
class Violation:
    resource: str
    unit: str
    limit: float
    would_use: float

    @property
    def excess(self) -> float:
        return self.would_use - self.limit

    def describe(self) -> str:
        what = {
            "vcpus": "vCPUs (cores x overcommit)",
            "memory": "memory for guests (total - reserve)",
            "cpu": "expected CPU demand (cap x cores)",
        }[self.resource]
        return (
            f"{what}: would use {_fmt(self.would_use)} of {_fmt(self.limit)} {self.unit}, "
            f"{_fmt(self.excess)} {self.unit} over"
        )


@dataclass(frozen=True)
class HostState:
    """A host as the capacity model sees it: what it has, its limits, the guests it holds."""

    name: str
    facts: HostFacts
    limits: CapacityLimits
    guests: tuple[Footprint, ...] = ()

    def report(self) -> CapacityReport:
        return capacity_report(self.facts, self.limits, self.guests)

    def without(self, name: str) -> HostState:
        return replace(self, guests=tuple(g for g in self.guests if g.name != name))


def place(host: HostState, guest: Footprint) -> HostState | tuple[Violation, ...]:
    """The host with `guest` added (replacing a guest of the same name), or every limit that would break
    and by how much. Never both: a value to branch on, not an exception."""
    after = replace(host, guests=(*host.without(guest.name).guests, guest))
    broken = tuple(Violation(b.resource, b.unit, b.limit, b.used) for b in after.report().budgets
                   if b.used > b.limit + 1e-9)
    return broken or after


def admission_violations(host: HostFacts, limits: CapacityLimits, running: Iterable[Footprint],
                         candidate: Footprint) -> list[Violation]:
    """The limits that `candidate` would break if it started beside `running` (empty: admit)."""
    result = place(HostState("host", host, limits, tuple(running)), candidate)
    return list(result) if isinstance(result, tuple) else []


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-9 or abs(value) >= 100 else f"{value:.2f}"
