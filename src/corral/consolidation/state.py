"""Plain data the policies read and the decisions they return.

A ``ClusterState`` is what a balancer knows at one moment: each host's capacity, power curve,
guests (in order) and measured utilization; each guest's size, current demand and whether it is
migrating. ``Histories`` is each guest's measured CPU history (utilization of its own size, one
value per scheduling interval). Both are read-only views (NumPy arrays); a policy never changes
them. The simulator builds them from its trace replay; the live balancer (issue 13) will build
them from the monitoring store (5-minute samples) and libvirt.

Hosts and guests are referred to by index into these arrays; ``host_names`` and ``vm_names`` say
who they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ClusterState:
    """One moment of a cluster. Units: CPU in MIPS (MHz-equivalents), memory in MB, time in s."""

    time_s: float
    step_s: float
    host_names: tuple[str, ...]
    capacity: FloatArray  # (hosts,) total MIPS
    core_mips: FloatArray  # (hosts,) MIPS of one core: the most a 1-vCPU guest can get
    power_curve: FloatArray  # (hosts, 11) watts at 0, 10, ..., 100 % CPU
    memory_mb: FloatArray  # (hosts,)
    migration_mbps: FloatArray  # (hosts,) MB/s a live migration into the host gets
    utilization: FloatArray  # (hosts,) CPU in use / capacity at the last measurement (0: off)
    count: IntArray  # (hosts,) guests listed on each host
    members: IntArray  # (hosts, width) guest indices, in order, first count[h] valid
    incoming: BoolArray  # (hosts, width) the guest is migrating in (not yet running there)
    vm_names: tuple[str, ...]
    vm_mips: FloatArray  # (guests,) the guest's size (1 vCPU)
    vm_ram_mb: FloatArray  # (guests,)
    vm_demand: FloatArray  # (guests,) MIPS it asks for now
    vm_host: IntArray  # (guests,) host it runs on, -1 when gone
    vm_in_migration: BoolArray  # (guests,)
    vm_cores: FloatArray  # (guests,) vCPUs: it gets at most vm_cores x core_mips
    host_bw_kbit: FloatArray = field(default_factory=lambda: np.zeros(0))  # (hosts,) network, kbit/s
    vm_bw_kbit: FloatArray = field(default_factory=lambda: np.zeros(0))  # (guests,) reserved at creation
    vm_last_move_s: FloatArray = field(default_factory=lambda: np.zeros(0))  # (guests,) -inf: never moved
    awake_since_s: FloatArray = field(default_factory=lambda: np.zeros(0))  # (hosts,) when it last woke, -inf
    enforce_memory: bool = False  # memory is a hard limit at placement (the realistic model)
    other_names: tuple[str, ...] = ()  # further resources with a demand now and a capacity (e.g. disk, net)
    vm_other: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (guests, len(other_names))
    host_other: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (hosts, len(other_names))

    @property
    def n_hosts(self) -> int:
        return int(self.capacity.shape[0])

    @property
    def n_vms(self) -> int:
        return int(self.vm_mips.shape[0])

    def guests_of(self, h: int) -> IntArray:
        """Guests listed on host ``h`` (in order, migrating-in ones included)."""
        return self.members[h, : self.count[h]]


@dataclass(frozen=True)
class Histories:
    """Each guest's CPU utilization (fraction of its size) per past interval.

    ``recent[v, :recent_len[v]]`` are the newest ``HISTORY_LENGTH`` values, newest first (what
    CloudSim's policies read); ``full[v, :length]`` every value so far, oldest first (what Corral's
    policy reads). Values of a guest that is gone stop at its last interval (``full_len[v]``)."""

    recent: FloatArray
    recent_len: IntArray
    full: FloatArray
    full_len: IntArray


@dataclass(frozen=True)
class Migrate:
    """Live-migrate guest ``vm`` from host ``source`` to host ``target``."""

    vm: int
    source: int
    target: int
    reason: str
    kind: Literal["overload", "underload", "rebalance"] = "overload"
    expected_gain_w: float = float("nan")  # power saved (W) if the plan holds; NaN when not estimated


@dataclass(frozen=True)
class SwitchOff:
    """Put host ``host`` in standby (it holds no guest once the migrations before it are done)."""

    host: int
    reason: str


@dataclass(frozen=True)
class SwitchOn:
    """Wake host ``host`` from standby (a migration to it follows)."""

    host: int
    reason: str


@dataclass(frozen=True)
class Place:
    """Start guest ``vm`` on host ``host`` (initial placement); ``host`` -1: it fits nowhere."""

    vm: int
    host: int
    reason: str


Decision = Migrate | SwitchOff | SwitchOn
