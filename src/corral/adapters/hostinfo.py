"""Facts and live figures about the physical host (Domain-0), through psutil and /proc."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import psutil

from corral.core.capacity import MIB, HostFacts


@dataclass(frozen=True)
class HostSnapshot:
    hostname: str
    cpu_model: str
    cores: int
    physical_cores: int
    memory_total_mib: int
    memory_used_mib: int
    cpu_pct: float  # since the previous call (psutil semantics); 0.0 on the first call
    kernel: str

    @property
    def facts(self) -> HostFacts:
        return HostFacts(cores=self.cores, memory_mib=self.memory_total_mib)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_snapshot(cpu_interval: float | None = None) -> HostSnapshot:
    memory = psutil.virtual_memory()
    return HostSnapshot(
        hostname=platform.node(),
        cpu_model=cpu_model(),
        cores=psutil.cpu_count(logical=True) or 1,
        physical_cores=psutil.cpu_count(logical=False) or psutil.cpu_count() or 1,
        memory_total_mib=memory.total // MIB,
        memory_used_mib=(memory.total - memory.available) // MIB,
        cpu_pct=psutil.cpu_percent(interval=cpu_interval),
        kernel=platform.release(),
    )
