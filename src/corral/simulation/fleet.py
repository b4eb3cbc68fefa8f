"""The hosts of a simulated data center, from the planner's host catalog.

CCPE 2012's setup is 800 hosts, host i of kind i % 2 among (ML110 G4, ML110 G5): ``build_fleet()``.
A host's MIPS are its cores x MHz x speed, one core's MIPS bound a 1-vCPU guest, memory is the
catalog's (4096 MB for the ML110s), and a live migration into it gets half its network
bandwidth (CloudSim: RAM / (bw / 2), 62.5 MB/s on 1 Gbit/s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from corral.planning.catalog import HostKind, get_kind, load_catalog
from corral.simulation.errors import SimulationError

FloatArray = npt.NDArray[np.float64]
DEFAULT_KINDS = ("ml110-g4", "ml110-g5")
DEFAULT_HOSTS = 800


@dataclass(frozen=True)
class Fleet:
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    capacity: FloatArray
    core_mips: FloatArray
    power_curve: FloatArray
    memory_mb: FloatArray
    migration_mbps: FloatArray
    bw_kbit: FloatArray
    disk_bps: FloatArray
    net_bps: FloatArray

    @property
    def n_hosts(self) -> int:
        return len(self.names)


def build_fleet(
    n_hosts: int = DEFAULT_HOSTS,
    kinds: Sequence[str] = DEFAULT_KINDS,
    catalog: Mapping[str, HostKind] | None = None,
) -> Fleet:
    """``n_hosts`` hosts, host i of kind ``kinds[i % len(kinds)]``."""
    if n_hosts <= 0:
        raise SimulationError(f"--hosts must be positive, got {n_hosts}")
    if not kinds:
        raise SimulationError("no host kind given")
    cat = catalog if catalog is not None else load_catalog()
    ks = [get_kind(cat, k) for k in kinds]
    chosen = [ks[i % len(ks)] for i in range(n_hosts)]
    return Fleet(
        names=tuple(f"host{i}" for i in range(n_hosts)),
        kinds=tuple(k.name for k in chosen),
        capacity=np.array([k.cores * k.core_mhz * k.speed for k in chosen], dtype=np.float64),
        core_mips=np.array([k.core_mhz * k.speed for k in chosen], dtype=np.float64),
        power_curve=np.array([k.power_w for k in chosen], dtype=np.float64),
        memory_mb=np.array([round(k.mem_bytes / 2**20) for k in chosen], dtype=np.float64),
        migration_mbps=np.array([k.net_bps / 2 / 1e6 for k in chosen], dtype=np.float64),
        bw_kbit=np.array([k.net_bps * 8 / 1000 for k in chosen], dtype=np.float64),
        disk_bps=np.array([k.disk_bps for k in chosen], dtype=np.float64),
        net_bps=np.array([k.net_bps for k in chosen], dtype=np.float64),
    )
