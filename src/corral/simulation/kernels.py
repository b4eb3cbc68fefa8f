"""The simulator's compiled core: CloudSim 4.0's accounting over plain arrays.

State lives in two tuples of arrays built by ``engine.Engine`` (H: hosts, V: guests) and one
float array of accumulators (ACC). Every function here mirrors a CloudSim method, named in its
docstring, operation for operation where the order of floating-point operations or of list
entries decides a tie. No I/O, no state outside the arrays passed in.

Accounting (Helper.java): a host's state history gets an entry (time, allocated MIPS, requested
MIPS, active) at every update, a later entry at the same time replacing the earlier; SLATAH is
the time active hosts spend with allocated < requested over their active time; PDM the MIPS
guests lose while migrating over all MIPS they requested; energy integrates each host's power
linearly between updates, from 0 when the host was off (utilization 0) at the interval's start.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from corral.consolidation.detectors import HISTORY_LENGTH
from corral.consolidation.hostmodel import MIGRATION_OUT_SHARE, allocate_host
from corral.consolidation.power import clamp_utilization, energy_ws, power_at

# H: host arrays
H_CAP, H_CORE, H_CURVE, H_MEM, H_MBPS, H_COUNT, H_MEMBERS, H_INCOMING = 0, 1, 2, 3, 4, 5, 6, 7
H_UTIL, H_PREV_UTIL, H_LAST_T, H_LAST_ALLOC, H_LAST_REQ, H_LAST_ACTIVE, H_FINAL_ACTIVE = 8, 9, 10, 11, 12, 13, 14
H_ON_UNTIL, H_ALLOC_BUF, H_PREV_ON, H_DISK, H_NET, H_AWAKE_SINCE = 15, 16, 17, 18, 19, 20
# V: guest arrays
V_MIPS, V_RAM, V_DATA, V_REQ, V_REQ_T, V_HOST, V_IN_MIG, V_HIST, V_HIST_LEN = 0, 1, 2, 3, 4, 5, 6, 7, 8
V_HIST_T, V_LAST_T, V_LAST_ALLOC, V_LAST_REQ, V_LAST_MIG, V_FULL, V_FULL_LEN, V_GONE_T = 9, 10, 11, 12, 13, 14, 15, 16
V_CORES, V_DISK, V_NET, V_LAST_MOVE = 17, 18, 19, 20
# ACC: accumulators
A_ENERGY, A_ACTIVE_T, A_VIOL_T, A_REQ_INT, A_ALLOC_INT, A_MIG_LOSS, A_SHUTDOWNS, A_MIGRATIONS = 0, 1, 2, 3, 4, 5, 6, 7
A_LAST_PROCESS, A_FIRST_T, A_LAST_T, A_GONE, A_DOWNTIME_LOSS, A_WAKES, A_SERVED_FLOOR = 8, 9, 10, 11, 12, 13, 14
N_ACC = 16
# P: model parameters
P_STEP, P_OFFSET, P_REALISTIC, P_DOWNTIME, P_WAKE, P_IN_SHARE = 0, 1, 2, 3, 4, 5
N_PARAMS = 6


@njit(cache=True)
def utilization_at(data: Any, v: int, t: float, step: float) -> float:
    """UtilizationModelPlanetLabInMemory.getUtilization: the sample at a multiple of the step,
    linear interpolation between the two neighbouring samples otherwise."""
    if t % step == 0.0:  # non-negative: Java % and Python % agree
        return float(data[v, int(t) // int(step)])
    t1 = math.floor(t / step)
    t2 = math.ceil(t / step)
    last = data.shape[1] - 1
    if t2 > last:
        t2 = last
    if t1 > last:
        t1 = last
    u1 = data[v, t1]
    u2 = data[v, t2]
    if t2 == t1:
        return float(u1)
    delta = (u2 - u1) / ((t2 - t1) * step)
    return float(u1 + delta * (t - t1 * step))


@njit(cache=True, inline="always")
def touch_vm(
    v: int, t: float, step: float, offset: float, realistic: bool, data: Any, mips: Any, req: Any, req_t: Any,
    hist: Any, hist_len: Any, hist_t: Any, full: Any, full_len: Any,
) -> None:
    """Vm.updateVmProcessing at ``t``: the guest's demand now, and (PowerVm) one more history value
    when ``t`` is a scheduling instant."""
    if req_t[v] == t:
        return
    u = utilization_at(data, v, t, step)
    req[v] = 0.0 + u * mips[v]
    req_t[v] = t
    if t > hist_t[v] and (t - offset) % step == 0.0:
        if t != 0.0 or u != 0.0 or realistic:
            n = hist_len[v]
            top = min(n, HISTORY_LENGTH - 1)
            for i in range(top, 0, -1):
                hist[v, i] = hist[v, i - 1]
            hist[v, 0] = u
            hist_len[v] = min(n + 1, HISTORY_LENGTH)
            fl = full_len[v]
            if fl < full.shape[1]:
                full[v, fl] = u
                full_len[v] = fl + 1
        hist_t[v] = t


@njit(cache=True, inline="always")
def _host_entry(h: int, t: float, alloc: float, req: float, active: bool, H: Any, ACC: Any) -> None:
    # (a shortfall of another resource is recorded as alloc = -1, so that alloc < req)
    """HostDynamicWorkload.addStateHistoryEntry and, for the entry it closes, Helper's SLATAH and
    host-shutdown counting."""
    last_t = H[H_LAST_T]
    if last_t[h] == t:
        H[H_LAST_ALLOC][h] = alloc
        H[H_LAST_REQ][h] = req
        H[H_LAST_ACTIVE][h] = active
        return
    if last_t[h] >= 0.0:
        _close_host_entry(h, H, ACC)
        if H[H_LAST_ACTIVE][h]:
            dt = t - last_t[h]
            ACC[A_ACTIVE_T] += dt
            if H[H_LAST_ALLOC][h] < H[H_LAST_REQ][h]:
                ACC[A_VIOL_T] += dt
    last_t[h] = t
    H[H_LAST_ALLOC][h] = alloc
    H[H_LAST_REQ][h] = req
    H[H_LAST_ACTIVE][h] = active


@njit(cache=True)
def _close_host_entry(h: int, H: Any, ACC: Any) -> None:
    if H[H_FINAL_ACTIVE][h] and not H[H_LAST_ACTIVE][h]:
        ACC[A_SHUTDOWNS] += 1.0
    H[H_FINAL_ACTIVE][h] = H[H_LAST_ACTIVE][h]


@njit(cache=True, inline="always")
def _vm_entry(
    v: int, t: float, alloc: float, req: float, migrating: bool, last_t: Any, last_alloc: Any, last_req: Any,
    last_mig: Any, ACC: Any,
) -> None:
    """Vm.addStateHistoryEntry and, for the entry it closes, Helper's SLA metrics."""
    if last_t[v] == t:
        last_alloc[v] = alloc
        last_req[v] = req
        last_mig[v] = migrating
        return
    if last_t[v] >= 0.0:
        dt = t - last_t[v]
        a = last_alloc[v]
        r = last_req[v]
        ACC[A_ALLOC_INT] += a * dt
        ACC[A_REQ_INT] += r * dt
        ACC[A_SERVED_FLOOR] += min(a, alloc) * dt  # MIPS*s served for sure over the interval
        if a < r and last_mig[v]:
            ACC[A_MIG_LOSS] += (r - a) * dt
    last_t[v] = t
    last_alloc[v] = alloc
    last_req[v] = req
    last_mig[v] = migrating


@njit(cache=True)
def update_host(h: int, t: float, H: Any, V: Any, P: Any, ACC: Any) -> None:
    """HostDynamicWorkload.updateVmsProcessing: refresh the guests, reallocate the CPU in list
    order, record the guests' and the host's state. In the realistic model a host is on while it
    holds a guest or wakes up, and a host whose guests' disk or network demand exceeds its
    throughput is short too."""
    count = H[H_COUNT]
    members = H[H_MEMBERS]
    incoming = H[H_INCOMING]
    n = count[h]
    step = P[P_STEP]
    offset = P[P_OFFSET]
    realistic = P[P_REALISTIC] != 0.0
    data = V[V_DATA]
    mips = V[V_MIPS]
    req = V[V_REQ]
    req_t = V[V_REQ_T]
    hist = V[V_HIST]
    hist_len = V[V_HIST_LEN]
    hist_t = V[V_HIST_T]
    full = V[V_FULL]
    full_len = V[V_FULL_LEN]
    for k in range(n):
        touch_vm(members[h, k], t, step, offset, realistic, data, mips, req, req_t, hist, hist_len, hist_t, full,
                 full_len)
    H[H_PREV_UTIL][h] = H[H_UTIL][h]
    H[H_PREV_ON][h] = H[H_LAST_ACTIVE][h]
    buf = H[H_ALLOC_BUF]
    allocate_host(h, count, members, incoming, V[V_REQ], V[V_IN_MIG], V[V_CORES], H[H_CAP][h], H[H_CORE][h], buf,
                  P[P_IN_SHARE])
    util = 0.0
    hreq = 0.0
    in_mig = V[V_IN_MIG]
    v_last_t = V[V_LAST_T]
    v_last_alloc = V[V_LAST_ALLOC]
    v_last_req = V[V_LAST_REQ]
    v_last_mig = V[V_LAST_MIG]
    for k in range(n):
        v = members[h, k]
        a = buf[k]
        r = req[v]
        if incoming[h, k]:
            util += a
        else:
            _vm_entry(v, t, a, r, in_mig[v], v_last_t, v_last_alloc, v_last_req, v_last_mig, ACC)
            if in_mig[v]:
                a = a / MIGRATION_OUT_SHARE
            util += a
        hreq += r
    H[H_UTIL][h] = util
    if not realistic:
        _host_entry(h, t, util, hreq, util > 0.0, H, ACC)
        return
    active = n > 0 or H[H_ON_UNTIL][h] > t
    if active and not H[H_LAST_ACTIVE][h]:
        H[H_AWAKE_SINCE][h] = t
    short = False
    disk = V[V_DISK]
    net = V[V_NET]
    if disk.shape[1] > 0 or net.shape[1] > 0:
        k_t = min(int(t // P[P_STEP]), max(disk.shape[1], net.shape[1]) - 1)
        sd = 0.0
        sn = 0.0
        for k in range(n):
            v = members[h, k]
            if disk.shape[1] > 0:
                sd += disk[v, k_t]
            if net.shape[1] > 0:
                sn += net[v, k_t]
        short = sd > H[H_DISK][h] or sn > H[H_NET][h]
    if short:
        _host_entry(h, t, -1.0, max(hreq, 0.0), active, H, ACC)
    else:
        _host_entry(h, t, util, hreq, active, H, ACC)


@njit(cache=True)
def _remove_member(h: int, v: int, want_incoming: bool, H: Any) -> bool:
    count = H[H_COUNT]
    members = H[H_MEMBERS]
    incoming = H[H_INCOMING]
    n = count[h]
    k = 0
    while k < n and not (members[h, k] == v and incoming[h, k] == want_incoming):
        k += 1
    if k == n:
        return False
    for j in range(k, n - 1):
        members[h, j] = members[h, j + 1]
        incoming[h, j] = incoming[h, j + 1]
    count[h] = n - 1
    return True


@njit(cache=True)
def _append_member(h: int, v: int, is_incoming: bool, H: Any) -> None:
    count = H[H_COUNT]
    H[H_MEMBERS][h, count[h]] = v
    H[H_INCOMING][h, count[h]] = is_incoming
    count[h] += 1


@njit(cache=True)
def _drop_finished(h: int, t: float, H: Any, V: Any, ACC: Any) -> None:
    """PowerDatacenter's "remove completed VMs": a guest on ``h`` that is not migrating and asks
    for 0 MIPS is destroyed (its cloudlet counts as finished) and never comes back."""
    count = H[H_COUNT]
    members = H[H_MEMBERS]
    req = V[V_REQ]
    in_mig = V[V_IN_MIG]
    vm_host = V[V_HOST]
    k = 0
    while k < count[h]:
        v = members[h, k]
        if not in_mig[v] and req[v] == 0.0 and vm_host[v] >= 0:
            home = vm_host[v]
            _remove_member(home, v, False, H)
            vm_host[v] = -1
            V[V_GONE_T][v] = t
            ACC[A_GONE] += 1.0
            if home == h:
                continue
        k += 1


@njit(cache=True)
def datacenter_update(t: float, H: Any, V: Any, P: Any, ACC: Any, realistic: bool) -> None:
    """PowerDatacenter.updateCloudetProcessingWithoutSchedulingFutureEventsForce: update every host,
    add the energy since the last update, and (CloudSim only) drop the guests whose demand is 0
    (CloudSim treats them as finished and destroys them)."""
    m = H[H_CAP].shape[0]
    dt = t - ACC[A_LAST_PROCESS]
    count = H[H_COUNT]
    util = H[H_UTIL]
    prev_util = H[H_PREV_UTIL]
    last_active = H[H_LAST_ACTIVE]
    last_t = H[H_LAST_T]
    on_until = H[H_ON_UNTIL]
    for h in range(m):
        if count[h] == 0 and util[h] == 0.0 and not last_active[h] and last_t[h] >= 0.0 and on_until[h] <= t:
            # an empty host that was already off: its new entry (off, 0, 0) changes nothing
            prev_util[h] = 0.0
            H[H_PREV_ON][h] = False
            continue
        update_host(h, t, H, V, P, ACC)
    if dt > 0.0:
        cap = H[H_CAP]
        curve = H[H_CURVE]
        for h in range(m):
            u_from = clamp_utilization(H[H_PREV_UTIL][h] / cap[h])
            u_to = clamp_utilization(H[H_UTIL][h] / cap[h])
            if realistic:
                if H[H_PREV_ON][h]:  # on at the start of the interval: idle power at least
                    ACC[A_ENERGY] += (power_at(curve[h], u_from) + power_at(curve[h], u_to)) / 2.0 * dt
            else:
                ACC[A_ENERGY] += energy_ws(curve[h], u_from, u_to, dt)
    if not realistic:
        for h in range(m):
            if count[h] > 0:
                _drop_finished(h, t, H, V, ACC)
    ACC[A_LAST_PROCESS] = t
    if ACC[A_FIRST_T] < 0.0:
        ACC[A_FIRST_T] = t
    ACC[A_LAST_T] = t


@njit(cache=True)
def start_migrations(
    t: float, vms: Any, targets: Any, n: int, H: Any, V: Any, P: Any, ACC: Any, pend_t: Any, pend_vm: Any,
    pend_dst: Any, n_pend: int,
) -> int:
    """PowerDatacenter: for each planned migration in order, Host.addMigratingInVm on the target
    (which updates the target and the source at once) and a completion event after RAM / (half
    the bandwidth); in the realistic model after the wake-up too when the target was off."""
    realistic = P[P_REALISTIC] != 0.0
    m = H[H_CAP].shape[0]
    touched = np.zeros(m, dtype=np.bool_)
    touched_list = np.empty(m, dtype=np.int64)
    n_touched = 0
    for j in range(n):
        v = vms[j]
        dst = targets[j]
        V[V_IN_MIG][v] = True
        _append_member(dst, v, True, H)
        ACC[A_MIGRATIONS] += 1.0
        delay = V[V_RAM][v] / H[H_MBPS][dst]
        V[V_LAST_MOVE][v] = t
        if realistic:
            if H[H_COUNT][dst] == 1 and not H[H_LAST_ACTIVE][dst] and H[H_ON_UNTIL][dst] <= t:
                delay += P[P_WAKE]  # the target was in standby: it wakes first
                ACC[A_WAKES] += 1.0
            H[H_ON_UNTIL][dst] = max(H[H_ON_UNTIL][dst], t + delay)
        for h in (dst, V[V_HOST][v]):
            if h >= 0 and not touched[h]:
                touched[h] = True
                touched_list[n_touched] = h
                n_touched += 1
        pend_t[n_pend] = t + delay
        pend_vm[n_pend] = v
        pend_dst[n_pend] = dst
        n_pend += 1
    # Host.addMigratingInVm updates the target and the source at once; a later update at the same
    # time replaces an earlier one, so each touched host is updated once, after all the additions
    for j in range(n_touched):
        update_host(touched_list[j], t, H, V, P, ACC)
    return n_pend


@njit(cache=True)
def complete_migrations(
    until: float, H: Any, V: Any, P: Any, ACC: Any, pend_t: Any, pend_vm: Any, pend_dst: Any, n_pend: int
) -> int:
    """Process the completion events before ``until`` in time order (ties in the order they were
    sent): an update at the completion time (PowerDatacenter.processVmMigrate), each migration
    (Datacenter.processVmMigrate: the guest leaves its host and is created on the target), then
    one more update after the last completion at that time. Returns the events left."""
    realistic = P[P_REALISTIC] != 0.0
    m = H[H_CAP].shape[0]
    touched = np.zeros(m, dtype=np.bool_)
    touched_list = np.empty(m, dtype=np.int64)
    done_src = np.empty(n_pend, dtype=np.int64)
    done_dst = np.empty(n_pend, dtype=np.int64)
    while n_pend > 0:
        # earliest time; stable among equals
        t = pend_t[0]
        for j in range(1, n_pend):
            if pend_t[j] < t:
                t = pend_t[j]
        if t >= until:
            break
        if t > ACC[A_LAST_PROCESS]:
            datacenter_update(t, H, V, P, ACC, realistic)
        keep = 0
        n_done = 0
        for j in range(n_pend):
            if pend_t[j] == t:
                v = pend_vm[j]
                dst = pend_dst[j]
                home = V[V_HOST][v]
                done_src[n_done] = home
                done_dst[n_done] = dst
                n_done += 1
                if home >= 0:
                    _remove_member(home, v, False, H)
                V[V_HOST][v] = -1
                _remove_member(dst, v, True, H)
                V[V_IN_MIG][v] = False
                _append_member(dst, v, False, H)
                V[V_HOST][v] = dst
                if realistic and P[P_DOWNTIME] > 0.0:
                    loss = V[V_REQ][v] * P[P_DOWNTIME]
                    ACC[A_DOWNTIME_LOSS] += loss
                    ACC[A_MIG_LOSS] += loss
                    ACC[A_ALLOC_INT] -= loss
            else:
                pend_t[keep] = pend_t[j]
                pend_vm[keep] = pend_vm[j]
                pend_dst[keep] = pend_dst[j]
                keep += 1
        n_pend = keep
        # PowerDatacenter forces one more update after the last completion at this time; only the
        # hosts the migrations touched can differ from the update just made at the same time
        n_touched = 0
        for j in range(n_done):
            for h in (done_src[j], done_dst[j]):
                if h >= 0 and not touched[h]:
                    touched[h] = True
                    touched_list[n_touched] = h
                    n_touched += 1
        for j in range(n_touched):
            h = touched_list[j]
            touched[h] = False
            update_host(h, t, H, V, P, ACC)
        if not realistic:
            for j in range(n_touched):
                _drop_finished(touched_list[j], t, H, V, ACC)
    return n_pend


@njit(cache=True)
def finish(H: Any, V: Any, ACC: Any) -> None:
    """Close the last state entries (for the shutdown count; their intervals end the run)."""
    for h in range(H[H_CAP].shape[0]):
        if H[H_LAST_T][h] >= 0.0:
            _close_host_entry(h, H, ACC)


@njit(cache=True)
def snapshot(t: float, H: Any, out: Any) -> None:
    """Per-step figures for the report: active hosts, total power (W), hosts short of CPU."""
    cap = H[H_CAP]
    active = 0
    power = 0.0
    short = 0
    for h in range(cap.shape[0]):
        u = H[H_UTIL][h]
        if H[H_LAST_ACTIVE][h]:
            active += 1
            power += power_at(H[H_CURVE][h], clamp_utilization(u / cap[h]))
            if H[H_LAST_ALLOC][h] < H[H_LAST_REQ][h]:
                short += 1
    out[0] = active
    out[1] = power
    out[2] = short
