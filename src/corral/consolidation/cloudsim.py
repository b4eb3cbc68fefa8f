"""The 2012 heuristics exactly as CloudSim 4.0's ``PowerVmAllocationPolicyMigrationAbstract`` runs them.

``optimize_allocation`` is one scheduling round over plain arrays (compiled): find the
overloaded hosts (host id order), take guests off each with the selection policy until the
detector no longer fires, place them by power-aware best-fit decreasing on the other hosts,
then repeatedly evacuate the least-utilized host whose guests all fit elsewhere. It works on a
private copy of the host lists (CloudSim's save/restore) and returns the migrations in
CloudSim's order. The oddities it keeps, on purpose (docs/simulation.md):

- the targets of the overload migrations are not excluded from the underload search (CloudSim
  builds that exclusion from an empty list), so a guest can be planned twice in one round;
- a host's power "now" is read at the last update, its power "after" from the planned
  allocation, and an empty host's power now is its idle power, not 0;
- IQR/MAD/LR read the host history of 30 intervals; LR is plain least squares (see
  ``detectors.lr_estimates``) one interval ahead; ``lrr`` is ``lr``.

``place_initial`` is the placement of the guests at time 0, when CloudSim's guests ask for their
full MIPS while being instantiated (and memory and bandwidth are reserved).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from corral.consolidation.detectors import HISTORY_LENGTH, THR, host_overloaded
from corral.consolidation.hostmodel import MIGRATION_IN_SHARE, MIGRATION_OUT_SHARE, allocate_host
from corral.consolidation.placement import find_host
from corral.consolidation.power import power_at
from corral.consolidation.selection import RS, select_vm

REASON_OVERLOAD, REASON_UNDERLOAD = 0, 1


@njit(cache=True)
def _refresh(
    h: int, count: Any, members: Any, incoming: Any, vm_req: Any, vm_in_mig: Any, vm_cores: Any, capacity: Any,
    core: Any, alloc_buf: Any, c_util: Any, c_avail: Any,
) -> None:
    avail, _ = allocate_host(h, count, members, incoming, vm_req, vm_in_mig, vm_cores, capacity[h], core[h], alloc_buf)
    s = 0.0
    for k in range(count[h]):
        if incoming[h, k]:
            s += alloc_buf[k] * MIGRATION_OUT_SHARE / MIGRATION_IN_SHARE
        s += alloc_buf[k]
    c_util[h] = s
    c_avail[h] = avail


@njit(cache=True)
def _remove(h: int, v: int, count: Any, members: Any, incoming: Any) -> None:
    n = count[h]
    k = 0
    while k < n and members[h, k] != v:
        k += 1
    if k == n:
        return
    for j in range(k, n - 1):
        members[h, j] = members[h, j + 1]
        incoming[h, j] = incoming[h, j + 1]
    count[h] = n - 1


@njit(cache=True)
def _append(h: int, v: int, count: Any, members: Any, incoming: Any) -> None:
    members[h, count[h]] = v
    incoming[h, count[h]] = False
    count[h] += 1


@njit(cache=True)
def _sort_desc(vms: Any, n: int, vm_req: Any) -> None:
    """Stable sort of vms[:n] by requested MIPS, largest first (Collections.sort)."""
    for i in range(1, n):
        x = vms[i]
        j = i - 1
        while j >= 0 and vm_req[vms[j]] < vm_req[x]:
            vms[j + 1] = vms[j]
            j -= 1
        vms[j + 1] = x


@njit(cache=True)
def optimize_allocation(
    kind: int, param: float, fallback: float, sel: int, robust: bool, seed: int,
    capacity: Any, core: Any, curve: Any, host_util: Any, migration_mbps: Any, host_mem: Any, enforce_mem: bool,
    count0: Any, members0: Any, incoming0: Any,
    vm_req: Any, vm_mips: Any, vm_ram: Any, vm_in_mig: Any, vm_cores: Any, vm_hist: Any, vm_hist_len: Any,
    step_s: float, out_vm: Any, out_src: Any, out_dst: Any, out_reason: Any, out_load: Any,
) -> int:
    """One CloudSim scheduling round; fills the ``out_*`` arrays (guest, the host it leaves in the
    plan, destination, REASON_OVERLOAD/UNDERLOAD, that host's utilization) and returns how many
    migrations it plans. The inputs are not modified."""
    if sel == RS:
        np.random.seed(seed)
    m = capacity.shape[0]
    count = count0.copy()
    width = members0.shape[1]
    members = np.empty((m, width), dtype=np.int64)
    incoming = np.zeros((m, width), dtype=np.bool_)
    mem_used = np.zeros(m)
    for h in range(m):
        for k in range(count[h]):
            members[h, k] = members0[h, k]
            incoming[h, k] = incoming0[h, k]
            mem_used[h] += vm_ram[members0[h, k]]
    alloc_buf = np.empty(width)
    hbuf = np.empty(HISTORY_LENGTH)
    c_util = np.zeros(m)
    c_avail = np.zeros(m)
    p_now = np.empty(m)  # host.getPower(): read at the last update, not changed by the plan
    for h in range(m):
        p_now[h] = power_at(curve[h], host_util[h])
        _refresh(h, count, members, incoming, vm_req, vm_in_mig, vm_cores, capacity, core, alloc_buf, c_util, c_avail)
    n_vm = vm_req.shape[0]
    n_out = 0
    # 1. overloaded hosts, in host order
    over = np.zeros(m, dtype=np.bool_)
    for h in range(m):
        if host_overloaded(h, -1, kind, param, fallback, robust, count, members, vm_req, vm_mips, vm_ram, vm_hist,
                           vm_hist_len, capacity, migration_mbps, step_s, hbuf):
            over[h] = True
    # 2. guests to take off them
    to_move = np.empty(n_vm, dtype=np.int64)
    move_src = np.empty(n_vm, dtype=np.int64)
    n_move = 0
    for h in range(m):
        if not over[h]:
            continue
        while True:
            v = select_vm(h, sel, count, members, vm_in_mig, vm_req, vm_mips, vm_ram, vm_hist, vm_hist_len)
            if v < 0:
                break
            to_move[n_move] = v
            move_src[v] = h
            n_move += 1
            _remove(h, v, count, members, incoming)
            mem_used[h] -= vm_ram[v]
            _refresh(h, count, members, incoming, vm_req, vm_in_mig, vm_cores, capacity, core, alloc_buf, c_util,
                     c_avail)
            if not host_overloaded(h, -1, kind, param, fallback, robust, count, members, vm_req, vm_mips, vm_ram,
                                   vm_hist, vm_hist_len, capacity, migration_mbps, step_s, hbuf):
                break
    # 3. place them, largest demand first, away from the overloaded hosts
    _sort_desc(to_move, n_move, vm_req)
    for j in range(n_move):
        v = to_move[j]
        h = find_host(v, over, kind, param, fallback, robust, count, members, vm_req, vm_mips, vm_ram, vm_hist,
                      vm_hist_len, vm_cores, capacity, core, curve, p_now, migration_mbps, step_s, c_util,
                      c_avail, mem_used, host_mem, enforce_mem, hbuf)
        if h >= 0:
            _append(h, v, count, members, incoming)
            mem_used[h] += vm_ram[v]
            _refresh(h, count, members, incoming, vm_req, vm_in_mig, vm_cores, capacity, core, alloc_buf, c_util,
                     c_avail)
            out_vm[n_out] = v
            out_src[n_out] = move_src[v]
            out_dst[n_out] = h
            out_reason[n_out] = REASON_OVERLOAD
            out_load[n_out] = host_util[move_src[v]]
            n_out += 1
    # 4. evacuate under-utilized hosts, least utilized first
    excl_under = np.zeros(m, dtype=np.bool_)
    excl_place = np.zeros(m, dtype=np.bool_)
    n_excl = 0
    for h in range(m):
        if over[h] or host_util[h] == 0.0:
            excl_under[h] = True
            excl_place[h] = True
            n_excl += 1
    vms = np.empty(n_vm, dtype=np.int64)
    placed = np.empty(n_vm, dtype=np.int64)
    while n_excl < m:
        u_host = -1
        min_u = 1.0
        for h in range(m):
            if excl_under[h]:
                continue
            u = host_util[h]
            if u > 0.0 and u < min_u:
                busy = True  # areAllVmsMigratingOutOrAnyVmMigratingIn
                for k in range(count[h]):
                    if not vm_in_mig[members[h, k]]:
                        busy = False
                        break
                    if incoming[h, k]:
                        break
                if not busy:
                    min_u = u
                    u_host = h
        if u_host < 0:
            break
        excl_under[u_host] = True
        n_excl += 1
        excl_place[u_host] = True
        nv = 0
        for k in range(count[u_host]):
            v = members[u_host, k]
            if not vm_in_mig[v]:
                vms[nv] = v
                nv += 1
        if nv == 0:
            continue
        _sort_desc(vms, nv, vm_req)
        ok = True
        for j in range(nv):
            v = vms[j]
            h = find_host(v, excl_place, kind, param, fallback, robust, count, members, vm_req, vm_mips, vm_ram,
                          vm_hist, vm_hist_len, vm_cores, capacity, core, curve, p_now, migration_mbps, step_s,
                          c_util, c_avail, mem_used, host_mem, enforce_mem, hbuf)
            if h < 0:
                ok = False
                for i in range(j):
                    g = placed[i]
                    _remove(g, vms[i], count, members, incoming)
                    mem_used[g] -= vm_ram[vms[i]]
                    _refresh(g, count, members, incoming, vm_req, vm_in_mig, vm_cores, capacity, core, alloc_buf,
                             c_util, c_avail)
                break
            _append(h, v, count, members, incoming)
            mem_used[h] += vm_ram[v]
            _refresh(h, count, members, incoming, vm_req, vm_in_mig, vm_cores, capacity, core, alloc_buf, c_util,
                     c_avail)
            placed[j] = h
        if not ok:
            continue
        for j in range(nv):
            g = placed[j]
            if not excl_under[g]:
                excl_under[g] = True
                n_excl += 1
            out_vm[n_out] = vms[j]
            out_src[n_out] = u_host
            out_dst[n_out] = g
            out_reason[n_out] = REASON_UNDERLOAD
            out_load[n_out] = host_util[u_host]
            n_out += 1
    return n_out


@njit(cache=True)
def place_initial(
    kind: int, param: float, fallback: float, capacity: Any, core: Any, curve: Any, host_mem: Any, host_bw: Any,
    vm_mips: Any, vm_ram: Any, vm_bw: Any, vm_cores: Any, out_host: Any,
) -> int:
    """Time 0: each guest in order, asking for its full MIPS, memory and bandwidth, goes to the
    host whose power grows least (every host is off, so its power now is its idle power). Guests
    already created ask for nothing yet, so only the newcomer counts for the detector (its
    fallback THR when there is no history). Writes ``out_host`` (-1: no host) and returns how
    many guests found no host."""
    m = capacity.shape[0]
    n = vm_mips.shape[0]
    alloc = np.zeros(m)
    mem = np.zeros(m)
    bw = np.zeros(m)
    failed = 0
    for v in range(n):
        best = -1
        min_power = np.inf
        req = vm_mips[v]
        limit = param if kind == THR else fallback
        for h in range(m):
            if core[h] * vm_cores[v] < req or capacity[h] - alloc[h] < req:
                continue
            if host_mem[h] - mem[h] < vm_ram[v] or host_bw[h] - bw[h] < vm_bw[v]:
                continue
            diff = power_at(curve[h], (alloc[h] + req) / capacity[h]) - power_at(curve[h], 0.0)
            if diff < min_power:
                if alloc[h] != 0.0 and req / capacity[h] > limit:
                    continue
                min_power = diff
                best = h
        out_host[v] = best
        if best < 0:
            failed += 1
        else:
            alloc[best] += req
            mem[best] += vm_ram[v]
            bw[best] += vm_bw[v]
    return failed
