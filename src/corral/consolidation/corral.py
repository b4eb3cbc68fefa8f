"""Corral's own consolidation policy: forecasts with their uncertainty, costed moves, hysteresis.

What the 2012 heuristics ignore, this policy uses:

1. **Each guest's own history.** For every guest, the level of its demand now and the spread of
   its recent one-interval changes (the last ``WINDOW`` intervals), shrunk towards the spread of
   all guests while its history is short (a prior worth ``PRIOR_WEIGHT`` intervals). A guest with
   no history at all is assumed to use ``PRIOR_UTILIZATION`` of its size (Corral's admission
   default), with the pooled spread.
2. **A forecast with its uncertainty.** A host's demand next interval is forecast as the sum of
   its guests' levels, with variance the sum of their variances (independent guests: the more
   guests, the smaller the relative margin). Its *upper forecast* is mean + ``z`` x standard
   deviation. A host is overloaded when its upper forecast exceeds its capacity; a guest may be
   placed only where the upper forecast stays under ``target`` x capacity.
3. **Cost against gain.** Relieving an overload takes off the guests that fix it at the least
   migration cost (migration time x demand lost); a host is emptied (and switched off) only when
   all its guests fit elsewhere under the stricter ``target - margin`` and the power it saves over
   the next hour pays for its migrations at ``migration_wh`` each.
4. **Hysteresis.** Three bands (overload at capacity, placement under ``target``, consolidation
   under ``target - margin``) and a dwell time: a guest that moved, or a host that woke, is left
   alone for ``dwell`` intervals unless it overloads. No guest ping-pongs.

Hosts are preferred by energy efficiency (watts per MIPS at full load), then fullest first. Two
service-level constants (``z``, ``target``) and three tunables (``margin``, ``dwell``,
``migration_wh``) chosen by leave-one-day-out cross-validation on the five PlanetLab days
(docs/simulation.md); ``corral:key=value,...`` overrides any of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from corral.consolidation.policies import PolicySpec
from corral.consolidation.power import power_at
from corral.consolidation.state import ClusterState, Decision, Histories, Migrate, Place, SwitchOff, SwitchOn

DEFAULTS: dict[str, float] = {
    # service level, set not tuned: the upper forecast is mean + 2 sd, and it must stay under capacity
    "z": 2.0,
    "target": 1.0,
    # chosen by leave-one-day-out cross-validation on the five PlanetLab days (bench/simulate.py --cv)
    "margin": 0.05,  # consolidation keeps the upper forecast under (target - margin) x capacity
    "dwell": 6.0,  # intervals a moved guest / woken host is left alone (30 min)
    "migration_wh": 10.0,  # Wh-equivalent cost of one migration when emptying a host
}
WINDOW = 24  # intervals of history for the spread of a guest's changes
PRIOR_WEIGHT = 6.0  # intervals the pooled spread is worth
PRIOR_UTILIZATION = 0.25  # a guest with no history: Corral's assumed_guest_utilization
HORIZON_S = 3600.0  # the gain of emptying a host is counted over the next hour
REASON_OVERLOAD, REASON_CONSOLIDATE = 0, 1


def forecast(state: ClusterState, histories: Histories) -> tuple[np.ndarray, np.ndarray]:
    """Per guest: the forecast mean and variance (MIPS, MIPS^2) of its demand next interval."""
    n = state.n_vms
    full, length = histories.full, histories.full_len
    mips = state.vm_mips
    w = WINDOW
    var_own = np.zeros(n)
    n_obs = np.zeros(n)
    k = int(length.max()) if n else 0
    if k >= 2:
        lo = max(0, k - w - 1)
        seg = full[:, lo:k]
        valid = (np.arange(lo, k)[None, :] < length[:, None])
        d = np.diff(seg, axis=1)
        vd = valid[:, 1:] & valid[:, :-1]
        n_obs = vd.sum(axis=1).astype(np.float64)
        s2 = np.where(vd, d * d, 0.0).sum(axis=1)
        var_own = np.divide(s2, n_obs, out=np.zeros(n), where=n_obs > 0)
    pooled = float(var_own[n_obs > 0].mean()) if np.any(n_obs > 0) else 0.01
    var_u = (n_obs * var_own + PRIOR_WEIGHT * pooled) / (n_obs + PRIOR_WEIGHT)
    have = length > 0
    level = np.where(have, state.vm_demand / np.maximum(mips, 1e-12), PRIOR_UTILIZATION)
    if not np.any(have):  # time 0: nothing measured yet
        level = np.full(n, PRIOR_UTILIZATION)
    mean = level * mips
    var = var_u * mips * mips
    return mean, var


@njit(cache=True)
def _efficiency(curve: Any, capacity: Any) -> Any:
    m = capacity.shape[0]
    out = np.empty(m)
    for h in range(m):
        out[h] = curve[h, 10] / capacity[h]
    return out


@njit(cache=True)
def _upper(mu: float, var: float, z: float) -> float:
    return mu + z * math.sqrt(max(var, 0.0))


@njit(cache=True)
def _others_fit(v: int, g: int, vm_other: Any, other_used: Any, host_other: Any, limit: float) -> bool:
    """Disk, network, ... (when known) stay under limit x capacity with guest v added."""
    for k in range(vm_other.shape[1]):  # noqa: SIM110 (compiled: no generator expressions)
        if other_used[g, k] + vm_other[v, k] > limit * host_other[g, k]:
            return False
    return True


@njit(cache=True)
def _others_ok(h: int, other_used: Any, host_other: Any, limit: float) -> bool:
    for k in range(other_used.shape[1]):  # noqa: SIM110 (compiled: no generator expressions)
        if other_used[h, k] > limit * host_other[h, k]:
            return False
    return True


@njit(cache=True)
def _shift(
    v: int, g: int, sign: float, mu: Any, var: Any, vm_ram: Any, vm_other: Any, h_mu: Any, h_var: Any, h_n: Any,
    mem_used: Any, other_used: Any,
) -> None:
    """Add (sign 1) or take away (-1) guest v's forecast and footprint on host g."""
    h_mu[g] += sign * mu[v]
    h_var[g] += sign * var[v]
    h_n[g] += 1 if sign > 0 else -1
    mem_used[g] += sign * vm_ram[v]
    for k in range(vm_other.shape[1]):
        other_used[g, k] += sign * vm_other[v, k]


@njit(cache=True)
def _pick_target(
    v: int, src: int, mu: Any, var: Any, h_mu: Any, h_var: Any, h_n: Any, capacity: Any, core: Any, eff: Any,
    vm_cores: Any, vm_req: Any, vm_ram: Any, mem_used: Any, host_mem: Any, enforce_mem: bool, blocked: Any,
    z: float, limit: float, allow_empty: bool, vm_other: Any, other_used: Any, host_other: Any,
) -> int:
    """The best host for guest v: among non-blocked active hosts where the upper forecast stays
    under limit x capacity (and memory, disk and network fit when known), the most efficient kind,
    then the fullest after the move; else (if allowed) the most efficient empty host."""
    best = -1
    best_eff = np.inf
    best_fill = -np.inf
    for g in range(capacity.shape[0]):
        if g == src or blocked[g] or h_n[g] == 0:
            continue
        if core[g] * vm_cores[v] < vm_req[v]:
            continue
        if enforce_mem and mem_used[g] + vm_ram[v] > host_mem[g]:
            continue
        up = _upper(h_mu[g] + mu[v], h_var[g] + var[v], z)
        if up > limit * capacity[g] or not _others_fit(v, g, vm_other, other_used, host_other, limit):
            continue
        fill = up / capacity[g]
        if eff[g] < best_eff - 1e-12 or (abs(eff[g] - best_eff) <= 1e-12 and fill > best_fill):
            best, best_eff, best_fill = g, eff[g], fill
    if best >= 0 or not allow_empty:
        return best
    for g in range(capacity.shape[0]):
        if g == src or blocked[g] or h_n[g] != 0:
            continue
        if core[g] * vm_cores[v] < vm_req[v] or _upper(mu[v], var[v], z) > limit * capacity[g]:
            continue
        if enforce_mem and vm_ram[v] > host_mem[g]:
            continue
        if not _others_fit(v, g, vm_other, other_used, host_other, limit):
            continue
        if eff[g] < best_eff - 1e-12:
            best, best_eff = g, eff[g]
    return best


@njit(cache=True)
def _pick_relief(
    v: int, src: int, mu: Any, var: Any, h_mu: Any, h_var: Any, h_n: Any, capacity: Any, core: Any, vm_cores: Any,
    vm_req: Any, vm_ram: Any, mem_used: Any, host_mem: Any, enforce_mem: bool, blocked: Any, z: float, limit: float,
    vm_other: Any, other_used: Any, host_other: Any,
) -> int:
    """The overloaded source's last resort, when no host keeps its upper forecast under the limit with
    guest v and none can be woken: the running host where v's expected demand fits under the limit and
    whose upper forecast after the move, as a share of its capacity, is the lowest and below the
    source's now. A certain overload is traded for a smaller risk (a guest whose load just stepped up
    carries the step in its spread for a window, which alone would keep it where it overloads)."""
    best = -1
    best_peak = _upper(h_mu[src], h_var[src], z) / capacity[src]
    for g in range(capacity.shape[0]):
        if g == src or blocked[g] or h_n[g] == 0:
            continue
        if core[g] * vm_cores[v] < vm_req[v] or h_mu[g] + mu[v] > limit * capacity[g]:
            continue
        if enforce_mem and mem_used[g] + vm_ram[v] > host_mem[g]:
            continue
        if not _others_fit(v, g, vm_other, other_used, host_other, limit):
            continue
        peak = _upper(h_mu[g] + mu[v], h_var[g] + var[v], z) / capacity[g]
        if peak < best_peak - 1e-12:
            best, best_peak = g, peak
    return best


@njit(cache=True)
def corral_round(
    t: float, step: float, z: float, target: float, margin: float, dwell: float, migration_wh: float,
    capacity: Any, core: Any, curve: Any, migration_mbps: Any, host_mem: Any, enforce_mem: bool,
    awake_since: Any, count: Any, members: Any, vm_host: Any, vm_in_mig: Any, vm_req: Any, vm_ram: Any,
    vm_cores: Any, vm_last_move: Any, mu: Any, var: Any, vm_other: Any, host_other: Any,
    out_vm: Any, out_src: Any, out_dst: Any, out_reason: Any, out_gain: Any,
) -> int:
    """One round of Corral's policy; fills ``out_*`` (guest, source, target, reason, watts the
    move is expected to save; NaN for overload relief) and returns the number of migrations."""
    m = capacity.shape[0]
    eff = _efficiency(curve, capacity)
    h_mu = np.zeros(m)
    h_var = np.zeros(m)
    h_n = np.zeros(m, dtype=np.int64)
    mem_used = np.zeros(m)
    other_used = np.zeros((m, vm_other.shape[1]))
    for h in range(m):
        for k in range(count[h]):
            _shift(members[h, k], h, 1.0, mu, var, vm_ram, vm_other, h_mu, h_var, h_n, mem_used, other_used)
    touched = np.zeros(m, dtype=np.bool_)  # source or target this round
    blocked = np.zeros(m, dtype=np.bool_)  # not a target this round
    moved = np.zeros(vm_req.shape[0], dtype=np.bool_)
    n_out = 0
    recent = dwell * step
    # 1. overloads: the upper forecast above capacity
    for h in range(m):
        if h_n[h] == 0 or (_upper(h_mu[h], h_var[h], z) <= capacity[h] and _others_ok(h, other_used, host_other, 1.0)):
            continue
        blocked[h] = True
        touched[h] = True
        while _upper(h_mu[h], h_var[h], z) > target * capacity[h] or not _others_ok(h, other_used, host_other, target):
            # the cheapest guest that fixes it alone, else the one relieving most per cost
            best_fix = -1
            best_fix_cost = np.inf
            best_rel = -1
            best_rel_score = -np.inf
            for k in range(count[h]):
                v = members[h, k]
                if vm_in_mig[v] or moved[v] or vm_host[v] != h:
                    continue
                cost = vm_ram[v] / migration_mbps[h] * (1.0 + vm_req[v] / capacity[h])
                after = _upper(h_mu[h] - mu[v], h_var[h] - var[v], z)
                others_after = True
                relief = (_upper(h_mu[h], h_var[h], z) - after) / capacity[h]
                for k in range(vm_other.shape[1]):
                    if other_used[h, k] - vm_other[v, k] > target * host_other[h, k]:
                        others_after = False
                    if other_used[h, k] > target * host_other[h, k] and host_other[h, k] > 0:
                        relief += vm_other[v, k] / host_other[h, k]
                if after <= target * capacity[h] and others_after and cost < best_fix_cost:
                    best_fix, best_fix_cost = v, cost
                if relief / cost > best_rel_score:
                    best_rel, best_rel_score = v, relief / cost
            v = best_fix if best_fix >= 0 else best_rel
            if v < 0:
                break
            g = _pick_target(v, h, mu, var, h_mu, h_var, h_n, capacity, core, eff, vm_cores, vm_req, vm_ram,
                             mem_used, host_mem, enforce_mem, blocked, z, target, True, vm_other, other_used,
                             host_other)
            if g < 0:
                g = _pick_relief(v, h, mu, var, h_mu, h_var, h_n, capacity, core, vm_cores, vm_req, vm_ram, mem_used,
                                 host_mem, enforce_mem, blocked, z, target, vm_other, other_used, host_other)
            moved[v] = True
            if g < 0:
                continue
            out_vm[n_out] = v
            out_src[n_out] = h
            out_dst[n_out] = g
            out_reason[n_out] = REASON_OVERLOAD
            out_gain[n_out] = _upper(h_mu[g] + mu[v], h_var[g] + var[v], z) / capacity[g]
            n_out += 1
            _shift(v, h, -1.0, mu, var, vm_ram, vm_other, h_mu, h_var, h_n, mem_used, other_used)
            _shift(v, g, 1.0, mu, var, vm_ram, vm_other, h_mu, h_var, h_n, mem_used, other_used)
            touched[g] = True
    # 2. consolidation: empty the least useful hosts when their guests fit and it pays
    order = np.empty(m, dtype=np.int64)
    key = np.empty(m)
    n_cand = 0
    for h in range(m):
        if h_n[h] == 0 or touched[h] or t - awake_since[h] < recent:
            continue
        ok = True
        for k in range(count[h]):
            v = members[h, k]
            if vm_in_mig[v] or vm_host[v] != h or t - vm_last_move[v] < recent:
                ok = False
                break
        if not ok:
            continue
        order[n_cand] = h
        # least efficient kind first, then least loaded
        key[n_cand] = -eff[h] * 1e6 + _upper(h_mu[h], h_var[h], z) / capacity[h]
        n_cand += 1
    idx = np.argsort(key[:n_cand])
    place_to = np.empty(vm_req.shape[0], dtype=np.int64)
    limit = target - margin
    for j in range(n_cand):
        h = order[idx[j]]
        if touched[h] or h_n[h] == 0:
            continue
        blocked[h] = True
        nv = 0
        vs = np.empty(count[h], dtype=np.int64)
        for k in range(count[h]):
            vs[nv] = members[h, k]
            nv += 1
        # largest first
        for a in range(1, nv):
            x = vs[a]
            b = a - 1
            while b >= 0 and mu[vs[b]] < mu[x]:
                vs[b + 1] = vs[b]
                b -= 1
            vs[b + 1] = x
        ok = True
        p_saved = power_at(curve[h], min(h_mu[h] / capacity[h], 1.0))
        for a in range(nv):
            v = vs[a]
            g = _pick_target(v, h, mu, var, h_mu, h_var, h_n, capacity, core, eff, vm_cores, vm_req, vm_ram,
                             mem_used, host_mem, enforce_mem, blocked, z, limit, False, vm_other, other_used,
                             host_other)
            if g < 0:
                ok = False
                for b in range(a):
                    _shift(vs[b], place_to[vs[b]], -1.0, mu, var, vm_ram, vm_other, h_mu, h_var, h_n, mem_used,
                           other_used)
                break
            place_to[v] = g
            _shift(v, g, 1.0, mu, var, vm_ram, vm_other, h_mu, h_var, h_n, mem_used, other_used)
            p_saved -= power_at(curve[g], min(h_mu[g] / capacity[g], 1.0)) - power_at(
                curve[g], min((h_mu[g] - mu[v]) / capacity[g], 1.0))
        if not ok:
            blocked[h] = False
            continue
        if p_saved * HORIZON_S / 3600.0 < migration_wh * nv:
            for b in range(nv):
                _shift(vs[b], place_to[vs[b]], -1.0, mu, var, vm_ram, vm_other, h_mu, h_var, h_n, mem_used,
                       other_used)
            blocked[h] = False
            continue
        for a in range(nv):
            v = vs[a]
            out_vm[n_out] = v
            out_src[n_out] = h
            out_dst[n_out] = place_to[v]
            out_reason[n_out] = REASON_CONSOLIDATE
            out_gain[n_out] = p_saved / nv
            n_out += 1
            touched[place_to[v]] = True
        for a in range(nv):
            _shift(vs[a], h, -1.0, mu, var, vm_ram, vm_other, h_mu, h_var, h_n, mem_used, other_used)
        touched[h] = True
    return n_out


@njit(cache=True)
def _place_initial(
    mu: Any, var: Any, demand: Any, vm_ram: Any, vm_bw: Any, vm_cores: Any, capacity: Any, core: Any, curve: Any,
    host_mem: Any, host_bw: Any, z: float, target: float, full_request: bool, out: Any,
) -> int:
    """Time 0: largest forecast first, each guest to the most efficient, fullest host where its
    upper forecast fits under the target (and, in the CloudSim model, where its full request,
    memory and bandwidth fit, as CloudSim requires at creation)."""
    n = mu.shape[0]
    m = capacity.shape[0]
    eff = _efficiency(curve, capacity)
    order = np.argsort(-mu)
    h_mu = np.zeros(m)
    h_var = np.zeros(m)
    alloc = np.zeros(m)
    mem = np.zeros(m)
    bw = np.zeros(m)
    failed = 0
    for i in range(n):
        v = order[i]
        best = -1
        best_eff = np.inf
        best_fill = -np.inf
        for g in range(m):
            if core[g] * vm_cores[v] < demand[v]:
                continue
            if full_request and (capacity[g] - alloc[g] < demand[v] or host_bw[g] - bw[g] < vm_bw[v]):
                continue
            if (full_request or host_mem[g] < np.inf) and host_mem[g] - mem[g] < vm_ram[v]:
                continue
            up = _upper(h_mu[g] + mu[v], h_var[g] + var[v], z)
            if up > target * capacity[g]:
                continue
            fill = up / capacity[g]
            if eff[g] < best_eff - 1e-12 or (abs(eff[g] - best_eff) <= 1e-12 and fill > best_fill):
                best, best_eff, best_fill = g, eff[g], fill
        out[v] = best
        if best < 0:
            failed += 1
            continue
        h_mu[best] += mu[v]
        h_var[best] += var[v]
        alloc[best] += demand[v]
        mem[best] += vm_ram[v]
        bw[best] += vm_bw[v]
    return failed


class CorralPolicy:
    """Corral's policy (``corral`` or ``corral:z=2,target=0.95,...``)."""

    def __init__(self, spec: PolicySpec, *, realistic: bool = False) -> None:
        self.spec = spec
        self.params = {**DEFAULTS, **spec.options}
        self.realistic = realistic

    def place(self, state: ClusterState) -> list[Place]:
        p = self.params
        empty = Histories(np.zeros((state.n_vms, 0)), np.zeros(state.n_vms, dtype=np.int64),
                          np.zeros((state.n_vms, 0)), np.zeros(state.n_vms, dtype=np.int64))
        mean, var = forecast(state, empty)
        out = np.full(state.n_vms, -1, dtype=np.int64)
        vm_bw = state.vm_bw_kbit if state.vm_bw_kbit.size else np.zeros(state.n_vms)
        host_bw = state.host_bw_kbit if state.host_bw_kbit.size else np.full(state.n_hosts, np.inf)
        host_mem = state.memory_mb if (state.enforce_memory or not self.realistic) else np.full(state.n_hosts, np.inf)
        _place_initial(mean, var, state.vm_demand, state.vm_ram_mb, vm_bw, state.vm_cores, state.capacity,
                       state.core_mips, state.power_curve, host_mem, host_bw, p["z"], p["target"],
                       not self.realistic, out)
        return [Place(int(v), int(h), "forecast fits (most efficient host, fullest first)" if h >= 0
                      else "no host has room for it") for v, h in enumerate(out)]

    def decide(self, state: ClusterState, histories: Histories) -> list[Decision]:
        p = self.params
        mean, var = forecast(state, histories)
        n = state.n_vms
        cap = 2 * n + 16
        out_vm = np.empty(cap, dtype=np.int64)
        out_src = np.empty(cap, dtype=np.int64)
        out_dst = np.empty(cap, dtype=np.int64)
        out_reason = np.empty(cap, dtype=np.int64)
        out_gain = np.empty(cap)
        last_move = state.vm_last_move_s if state.vm_last_move_s.size else np.full(n, -np.inf)
        vm_other = state.vm_other if state.vm_other.shape[0] == n else np.zeros((n, 0))
        host_other = state.host_other if state.host_other.shape[0] == state.n_hosts else np.zeros((state.n_hosts, 0))
        awake = state.awake_since_s if state.awake_since_s.size else np.full(state.n_hosts, -np.inf)
        k = corral_round(
            state.time_s, state.step_s, p["z"], p["target"], p["margin"], p["dwell"], p["migration_wh"],
            state.capacity, state.core_mips, state.power_curve, state.migration_mbps, state.memory_mb,
            state.enforce_memory, awake, state.count, state.members, state.vm_host, state.vm_in_migration,
            state.vm_demand, state.vm_ram_mb, state.vm_cores, last_move, mean, var, vm_other, host_other,
            out_vm, out_src, out_dst, out_reason, out_gain,
        )
        decisions: list[Decision] = []
        woken: set[int] = set()
        emptied: list[int] = []
        for j in range(k):
            v, src, dst = int(out_vm[j]), int(out_src[j]), int(out_dst[j])
            if state.count[dst] == 0 and dst not in woken:
                woken.add(dst)
                decisions.append(SwitchOn(dst, f"host {dst} wakes: no running host has room for guest {v}"))
            if out_reason[j] == REASON_OVERLOAD:
                decisions.append(Migrate(
                    v, src, dst, f"corral: host {src} forecast over capacity next interval; guest {v} is the "
                    f"cheapest fix; host {dst}'s upper forecast becomes {float(out_gain[j]):.0%} of its capacity",
                    "overload"))
            else:
                if not emptied or emptied[-1] != src:
                    emptied.append(src)
                gain = float(out_gain[j])
                decisions.append(Migrate(
                    v, src, dst, f"corral: emptying host {src} saves about {gain:.1f} W per migration; host {dst} "
                    f"keeps its forecast under {p['target'] - p['margin']:.0%}", "underload",
                    expected_gain_w=gain))
        decisions.extend(SwitchOff(h, f"corral: host {h} emptied, standby") for h in emptied)
        return decisions
