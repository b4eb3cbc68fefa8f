"""Where a guest goes: small filters and weighers, and CloudSim's power-aware best fit.

Filters say whether a host can take a guest at all; weighers rank the hosts that can. All are
pure compiled functions over plain numbers, callable from Python (tests, the live balancer) and
from the compiled policies.

``find_host`` is CloudSim 4.0's ``findHostForVm`` (power-aware best-fit decreasing, when the
caller hands it guests largest first): among the hosts not excluded that pass the filters and
that the overload detector does not flag with the guest added, the one whose power grows least
(ties: the lowest host id). The detector runs only for a host that would win, which gives the
same answer as CloudSim's order with far fewer detector runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from corral.consolidation.detectors import host_overloaded
from corral.consolidation.power import power_at


@njit(cache=True)
def core_fits(core_mips: float, demand_mips: float) -> bool:
    """The guest's demand fits on its vCPUs: ``core_mips`` is one core's MIPS x the guest's
    vCPUs (CloudSim's PE capacity check for a 1-vCPU guest)."""
    return core_mips >= demand_mips


@njit(cache=True)
def cpu_fits(free_mips: float, demand_mips: float) -> bool:
    """The host's free MIPS hold the guest's demand."""
    return free_mips >= demand_mips


@njit(cache=True)
def memory_fits(used_mb: float, capacity_mb: float, guest_mb: float) -> bool:
    """The host's memory holds the guest (enforced in the realistic model only)."""
    return used_mb + guest_mb <= capacity_mb


@njit(cache=True)
def power_increase(curve: Any, used_mips: float, demand_mips: float, capacity_mips: float, power_now_w: float) -> float:
    """Watts the host draws after taking the guest minus what it draws now (CloudSim reads "now"
    at the last measurement, which for an empty host is its idle power)."""
    return power_at(curve, (used_mips + demand_mips) / capacity_mips) - power_now_w


@njit(cache=True)
def find_host(
    v: int, excluded: Any, kind: int, param: float, fallback: float, robust: bool, count: Any, members: Any,
    vm_req: Any, vm_mips: Any, vm_ram: Any, vm_hist: Any, vm_hist_len: Any, vm_cores: Any, capacity: Any, core: Any,
    curve: Any,
    p_now: Any, migration_mbps: Any, step_s: float, c_util: Any, c_avail: Any, mem_used: Any, host_mem: Any,
    enforce_mem: bool, hbuf: Any,
) -> int:
    """Power-aware best fit (``findHostForVm``): among suitable hosts (a core can run the guest,
    the free MIPS hold it, and memory when enforced) that the detector does not flag with the
    guest added, the one whose power grows least; ties go to the lowest host id."""
    best = -1
    min_power = np.inf
    req = vm_req[v]
    for h in range(capacity.shape[0]):
        if excluded[h]:
            continue
        if not core_fits(core[h] * vm_cores[v], req) or not cpu_fits(c_avail[h], req):
            continue
        if enforce_mem and not memory_fits(mem_used[h], host_mem[h], vm_ram[v]):
            continue
        diff = power_increase(curve[h], c_util[h], req, capacity[h], p_now[h])
        if diff < min_power:
            if c_util[h] != 0.0 and host_overloaded(
                h, v, kind, param, fallback, robust, count, members, vm_req, vm_mips, vm_ram, vm_hist,
                vm_hist_len, capacity, migration_mbps, step_s, hbuf,
            ):
                continue
            min_power = diff
            best = h
    return best
