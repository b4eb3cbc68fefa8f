"""A guest's vCPUs and memory, current and maximum, read from its domain XML; what `corral set` asks for,
checked and worked out before anything changes. Pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.core.errors import InvalidInput
from corral.core.spec import MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB

KIB_PER_MIB = 1024
_UNITS_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1024**2,
              "gib": 1024**2, "kb": 1000 / 1024, "mb": 1000**2 / 1024, "gb": 1000**3 / 1024}


@dataclass(frozen=True)
class Resources:
    """vCPUs and memory (MiB) a guest has now, and the maximum it can be raised to without a restart."""

    vcpus: int
    max_vcpus: int
    memory_mib: int
    max_memory_mib: int


def read_resources(xml: str) -> Resources:
    """From a domain's XML (live or inactive): `<vcpu current=…>N</vcpu>`, `<memory>` and `<currentMemory>`."""
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    max_vcpus = int(vcpu.text or "1") if vcpu is not None else 1
    current = int(vcpu.get("current", max_vcpus)) if vcpu is not None else max_vcpus
    max_memory = _mib(root.find("memory"))
    memory = _mib(root.find("currentMemory")) or max_memory
    return Resources(current, max_vcpus, memory, max_memory)


def _mib(el: ET.Element | None) -> int:
    if el is None or not el.text:
        return 0
    return round(int(el.text) * _UNITS_KIB.get(el.get("unit", "KiB").lower(), 1) / KIB_PER_MIB)


@dataclass(frozen=True)
class Change:
    """What `corral set` was asked for (None: unchanged)."""

    vcpus: int | None = None
    memory_mib: int | None = None
    max_vcpus: int | None = None
    max_memory_mib: int | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.vcpus, self.memory_mib, self.max_vcpus, self.max_memory_mib))

    def check(self) -> Change:
        """Each figure in range (InvalidInput naming the first that is not)."""
        if self.empty:
            raise InvalidInput("nothing to change: give --vcpus, --memory, --max-vcpus or --max-memory")
        for label, value in (("vcpus", self.vcpus), ("max-vcpus", self.max_vcpus)):
            if value is not None and not 1 <= value <= MAX_VCPUS:
                raise InvalidInput(f"{label}={value} must be between 1 and {MAX_VCPUS}")
        for label, value in (("memory", self.memory_mib), ("max-memory", self.max_memory_mib)):
            if value is not None and not MIN_MEMORY_MIB <= value <= MAX_MEMORY_MIB:
                raise InvalidInput(f"{label}={value} MiB must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}")
        return self


def next_boot(now: Resources, change: Change) -> Resources:
    """The definition after `change`: the current figures as asked, each maximum raised to them when they
    go beyond it (so a later live raise up to it is possible), lowered only when a maximum is asked for.
    InvalidInput when an asked maximum is below the figure the guest would have."""
    vcpus = change.vcpus if change.vcpus is not None else now.vcpus
    memory = change.memory_mib if change.memory_mib is not None else now.memory_mib
    max_vcpus = change.max_vcpus if change.max_vcpus is not None else max(now.max_vcpus, vcpus)
    max_memory = change.max_memory_mib if change.max_memory_mib is not None else max(now.max_memory_mib, memory)
    if vcpus > max_vcpus:
        raise InvalidInput(f"max-vcpus={max_vcpus} is below the {vcpus} vCPUs the guest would have")
    if memory > max_memory:
        raise InvalidInput(f"max-memory={max_memory} MiB is below the {memory} MiB the guest would have")
    return Resources(vcpus, max_vcpus, memory, max_memory)


def live_now(name: str, now: Resources, change: Change) -> Resources:
    """The running guest after `change`: vCPUs and memory within the maxima it was started with (a running
    guest's maximum cannot change; InvalidInput says how to raise it for the next boot)."""
    vcpus = change.vcpus if change.vcpus is not None else now.vcpus
    memory = change.memory_mib if change.memory_mib is not None else now.memory_mib
    if vcpus > now.max_vcpus:
        raise InvalidInput(f"{name} can have at most {now.max_vcpus} vCPUs while it runs (its maximum): raise "
                           "it for the next boot with --max-vcpus (without --live), then restart it")
    if memory > now.max_memory_mib:
        raise InvalidInput(f"{name} can have at most {now.max_memory_mib} MiB while it runs (its maximum): raise "
                           "it for the next boot with --max-memory (without --live), then restart it")
    return Resources(vcpus, now.max_vcpus, memory, now.max_memory_mib)
