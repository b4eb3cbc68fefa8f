"""The pure packing core: normalized time-series vectors in, host assignments out.

Every function works on ``D``, an array of shape (servers, resources, steps) holding each
server's demand divided by the *capped* host capacity (cap x host capacity), so a host is
feasible iff, for every resource, its summed demand is <= 1 at every step — or, in percentile
mode, at all but ``k`` steps per resource while never exceeding ``hard`` (= 1 / cap, the host's
physical 100 %).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

EPS = 1e-12  # feasibility tolerance on normalized loads (float rounding only)
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.floating[Any]]  # float64, or float32 inside the repair search


@dataclass(frozen=True)
class Limits:
    """Feasibility rule: at most ``k`` steps per resource above 1, never above ``hard``."""

    k: int = 0
    hard: float = 1.0


def host_ok(load: FloatArray, lim: Limits) -> bool:
    """Is one host's load (resources, steps) feasible?"""
    if lim.k == 0:
        return bool(np.all(load <= 1.0 + EPS))
    if np.any(load > lim.hard + EPS):
        return False
    return bool(np.all((load > 1.0 + EPS).sum(axis=-1) <= lim.k))


def hosts_ok(loads: FloatArray, lim: Limits) -> npt.NDArray[np.bool_]:
    """Feasibility of many hosts at once; ``loads`` has shape (hosts, resources, steps)."""
    if loads.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    flat = loads.reshape(loads.shape[0], -1)
    if lim.k == 0:
        return np.asarray(flat.max(axis=1) <= 1.0 + EPS)
    under_hard = flat.max(axis=1) <= lim.hard + EPS
    over = (loads > 1.0 + EPS).sum(axis=2).max(axis=1)
    return np.asarray(under_hard & (over <= lim.k))


def unplaceable_mask(D: FloatArray, lim: Limits) -> npt.NDArray[np.bool_]:
    """Servers that do not fit even alone on an empty host."""
    return ~hosts_ok(D, lim)


def sizes(D: FloatArray) -> FloatArray:
    """Sort key: sum over resources of normalized peak + mean."""
    return np.asarray(D.max(axis=2).sum(axis=1) + D.mean(axis=2).sum(axis=1))


def host_loads(assign: IntArray, rows: FloatArray, m: int) -> FloatArray:
    """Sum of ``rows`` per host: (m, ...) for hosts 0..m-1 (servers with -1 are left out).
    Sort + reduceat: much faster than np.add.at."""
    keep = (assign >= 0) & (assign < m)
    a = assign[keep]
    r = rows[keep]
    out = np.zeros((m, *rows.shape[1:]), dtype=rows.dtype)
    if a.size == 0:
        return out
    order = np.argsort(a, kind="stable")
    a = a[order]
    hosts, starts = np.unique(a, return_index=True)
    out[hosts] = np.add.reduceat(r[order], starts, axis=0)
    return out


def assignment_to_hosts(assign: IntArray) -> list[list[int]]:
    """Group server indices by host (hosts renumbered 0..m-1 in order of first appearance)."""
    hosts: dict[int, list[int]] = {}
    for i, h in enumerate(assign.tolist()):
        if h >= 0:
            hosts.setdefault(h, []).append(i)
    return [hosts[h] for h in sorted(hosts)]


def check_assignment(D: FloatArray, assign: IntArray, lim: Limits) -> bool:
    """Independent check: every placed server's host is feasible."""
    return all(host_ok(D[members].sum(axis=0), lim) for members in assignment_to_hosts(assign))


# ---------------------------------------------------------------- greedy packers
class _OpenHosts:
    """The hosts a greedy packer has opened so far: their load per (resource x step), summed load
    and peak, in arrays that double when full."""

    def __init__(self, width: int) -> None:
        self.m = 0
        self.flat = np.zeros((16, width))
        self.total = np.zeros(16)
        self.hmax = np.zeros(16)

    def place(self, chosen: int, d_flat: FloatArray) -> int:
        """Add a server's flat demand to host `chosen`, or to a new host when `chosen` is -1."""
        if chosen < 0:
            if self.m == len(self.total):
                self.flat = np.concatenate([self.flat, np.zeros_like(self.flat)])
                self.total = np.concatenate([self.total, np.zeros_like(self.total)])
                self.hmax = np.concatenate([self.hmax, np.zeros_like(self.hmax)])
            chosen = self.m
            self.m += 1
        self.flat[chosen] += d_flat
        self.total[chosen] += float(d_flat.sum())
        self.hmax[chosen] = float(self.flat[chosen].max())
        return chosen


def first_fit_decreasing(D: FloatArray, lim: Limits, order: IntArray | None = None) -> IntArray:
    """Best-fit decreasing over the time series: each server (largest first) goes to the feasible
    open host with the highest summed load, or to a new host. Servers that fit nowhere get -1."""
    n, R, T = D.shape
    if order is None:
        order = np.argsort(-sizes(D), kind="stable")
    assign = np.full(n, -1, dtype=np.int64)
    hosts = _OpenHosts(R * T)
    alone = hosts_ok(D, lim)
    d_flat = D.reshape(n, -1)
    peaks = d_flat.max(axis=1)
    n_top = min(4, d_flat.shape[1])
    top_steps = np.argpartition(d_flat, -n_top, axis=1)[:, -n_top:]
    for i in order.tolist():
        if not alone[i]:
            continue
        chosen = -1
        m = hosts.m
        if m:
            # hosts whose peak + the server's peak stays under 1 need no full check
            sure = (hosts.hmax[:m] + peaks[i]) <= 1.0 + EPS
            if lim.k:
                cand = np.ones(m, dtype=bool)
            else:
                # cheap filter first: the server's busiest steps must fit
                top = top_steps[i]
                cand = ~sure & np.all(hosts.flat[:m][:, top] + d_flat[i, top] <= 1.0 + EPS, axis=1)
            ok = sure.copy()
            if cand.any():
                idx = np.flatnonzero(cand)
                ok[idx] = hosts_ok((hosts.flat[idx] + d_flat[i]).reshape(-1, R, T), lim)
            if ok.any():
                score = np.where(ok, hosts.total[:m], -np.inf)
                chosen = int(np.argmax(score))
        assign[i] = hosts.place(chosen, d_flat[i])
    return assign


def least_peak_fit(D: FloatArray, lim: Limits, order: IntArray | None = None) -> IntArray:
    """Decreasing-size placement that keeps hosts flat: each server goes to the feasible open
    host whose peak (over resources and steps) it raises least — zero when it fits under the
    host's current peak, i.e. in the host's valleys — ties to the fullest host; else a new host.
    Servers that fit nowhere get -1. Usually a few hosts fewer than best fit, and a better start
    for the search."""
    n, R, T = D.shape
    if order is None:
        order = np.argsort(-sizes(D), kind="stable")
    assign = np.full(n, -1, dtype=np.int64)
    hosts = _OpenHosts(R * T)
    alone = hosts_ok(D, lim)
    d_flat = D.reshape(n, R * T)
    for i in order.tolist():
        if not alone[i]:
            continue
        d = d_flat[i]
        chosen = -1
        m = hosts.m
        if m:
            new = hosts.flat[:m] + d
            peak = new.max(axis=1)
            ok = peak <= 1.0 + EPS if lim.k == 0 else hosts_ok(new.reshape(m, R, T), lim)
            if ok.any():
                # peak increase first; among hosts it leaves flat, the fullest
                score = np.where(ok, (peak - hosts.hmax[:m]) - 1e-9 * hosts.total[:m], np.inf)
                chosen = int(np.argmin(score))
        assign[i] = hosts.place(chosen, d)
    return assign


def peak_ffd(D: FloatArray, lim: Limits) -> IntArray:
    """The classic baseline: each server sized by its peak per resource (time ignored), packed by
    first-fit decreasing on those peak vectors."""
    peaks = D.max(axis=2)[:, :, None]
    return first_fit_decreasing(peaks, Limits(0, 1.0))


def compact(assign: IntArray) -> IntArray:
    """Renumber hosts 0..m-1 (keeping -1 for unplaced servers)."""
    out = assign.copy()
    used = np.unique(assign[assign >= 0])
    remap = np.full(int(used.max()) + 1 if used.size else 1, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    placed = assign >= 0
    out[placed] = remap[assign[placed]]
    return out


# ---------------------------------------------------------------- local search
def empty_hosts(D: FloatArray, assign: IntArray, lim: Limits, deadline: float) -> IntArray:
    """Try to empty hosts, lightest first: move each of its servers to another host where it fits
    (least-correlated first); when one cannot be moved, try swapping it with a smaller server of a
    host that has room for it, the smaller one moving on to a third host. A host is emptied only if
    all its servers find a place; otherwise nothing changes. Stops at ``deadline``
    (time.perf_counter()) or when a full round empties nothing."""
    n, R, T = D.shape
    assign = compact(assign)
    flat = D.reshape(n, R * T)
    m = int(assign.max()) + 1 if (assign >= 0).any() else 0
    loads = host_loads(assign, flat, m).astype(np.float64)
    alive = np.ones(m, dtype=bool)
    sz = sizes(D)

    def ok_many(rows: FloatArray) -> npt.NDArray[np.bool_]:
        if lim.k == 0:
            return np.asarray(rows.max(axis=1) <= 1.0 + EPS)
        return hosts_ok(rows.reshape(rows.shape[0], R, T), lim)

    improved = True
    tried_fail: set[tuple[int, int]] = set()
    while improved and time.perf_counter() < deadline:
        improved = False
        order = np.argsort(np.where(alive, loads.sum(axis=1), np.inf))
        for h in order.tolist():
            if not alive[h] or time.perf_counter() > deadline:
                continue
            members = np.flatnonzero(assign == h)
            key = (h, len(members))
            if key in tried_fail:
                continue
            members = members[np.argsort(-sz[members])]
            trial_loads = loads.copy()
            trial_assign = assign.copy()
            trial_alive = alive.copy()
            trial_alive[h] = False
            success = True
            for i in members.tolist():
                d = flat[i]
                others = np.flatnonzero(trial_alive)
                new = trial_loads[others] + d
                ok = ok_many(new)
                if ok.any():
                    score = trial_loads[others] @ d
                    score[~ok] = np.inf
                    g = int(others[int(np.argmin(score))])
                    trial_loads[g] += d
                    trial_loads[h] -= d
                    trial_assign[i] = g
                    continue
                if _swap_in(flat, sz, i, h, trial_assign, trial_loads, trial_alive, ok_many):
                    continue
                success = False
                break
            if success:
                loads, assign, alive = trial_loads, trial_assign, trial_alive
                loads[h] = 0.0
                improved = True
                tried_fail.clear()
            else:
                tried_fail.add(key)
    return compact(assign)


def _swap_in(
    flat: FloatArray,
    sz: FloatArray,
    i: int,
    h: int,
    assign: IntArray,
    loads: FloatArray,
    alive: npt.NDArray[np.bool_],
    ok_many: object,
) -> bool:
    """Place server ``i`` (leaving host ``h``) on some host g by moving a smaller server j of g to a
    third host. Mutates ``assign``/``loads`` only on success."""
    check = ok_many  # typed as object to keep the signature simple; it is a callable
    assert callable(check)
    d = flat[i]
    hosts = np.flatnonzero(alive)
    # candidate hosts: where i fits after removing one of its servers; try most room first
    room = loads[hosts].max(axis=1)
    for g in hosts[np.argsort(room)][:8].tolist():
        cands = np.flatnonzero(assign == g)
        cands = cands[sz[cands] < sz[i]]
        if cands.size == 0:
            continue
        after = loads[g] + d - flat[cands]
        fit = check(after)
        for j in cands[fit][np.argsort(-sz[cands[fit]])][:6].tolist():
            third = hosts[(hosts != g)]
            new = loads[third] + flat[j]
            ok = check(new)
            if ok.any():
                t = int(third[int(np.argmax(ok))])
                loads[g] += d - flat[j]
                loads[h] -= d
                loads[t] += flat[j]
                assign[i] = g
                assign[j] = t
                return True
    return False


# ---------------------------------------------------------------- lower bound
def lower_bound(D: FloatArray, lim: Limits) -> tuple[int, dict[str, int]]:
    """Provably valid lower bounds on the number of hosts of any feasible plan.

    Strict mode (k = 0), per resource and step c, the column is a 1-D bin-packing instance that
    every plan must also solve, so hosts >= max(ceil(sum_i d_ic), #{i: d_ic > 1/2}) (the
    Martello-Toth L2 bound at alpha = 0). Percentile mode: a host may exceed 1 at <= k steps per
    resource and never ``hard``; at step t a total above H needs >= ceil((total - H) / (hard - 1))
    exceeding hosts, and all of them together have at most H*k exceedances, so the smallest H with
    sum_t ceil(max(0, total_t - H) / (hard - 1)) <= H*k (and max total <= H*hard) is a bound.
    """
    n, R, _T = D.shape
    details: dict[str, int] = {}
    tot = D.sum(axis=0)  # (R, T)
    if lim.k == 0:
        for r in range(R):
            col = tot[r]
            details[f"r{r}_total"] = math.ceil(float(col.max()) - 1e-7) if n else 0
            details[f"r{r}_big"] = int((D[:, r, :] > 0.5 + EPS).sum(axis=0).max()) if n else 0
            both = np.maximum(np.ceil(col - 1e-7), (D[:, r, :] > 0.5 + EPS).sum(axis=0))
            details[f"r{r}_l2"] = int(both.max()) if n else 0
    else:
        spread = max(lim.hard - 1.0, 1e-12)
        for r in range(R):
            col = tot[r]
            H = max(1, math.ceil(float(col.max()) / lim.hard - 1e-7))
            while True:
                need = np.ceil(np.maximum(0.0, col - H - 1e-7) / spread).sum()
                if need <= H * lim.k:
                    break
                H += 1
            details[f"r{r}_percentile"] = H
    return (max(details.values()) if details and n else 0), details


# ---------------------------------------------------------------- exact
def exact_cpsat(
    D: FloatArray, upper: int, time_limit_s: float, scale: int = 10_000, workers: int = 2
) -> tuple[IntArray | None, bool, int]:
    """Minimum number of hosts by CP-SAT (strict mode only). Demands are rounded *up* to
    1/``scale`` of the capped capacity, so every solution it returns is feasible. Returns
    (assignment or None, proven optimal, its best bound on the optimum of the rounded instance)."""
    from ortools.sat.python import cp_model

    n, R, T = D.shape
    W = np.ceil(D.reshape(n, R * T) * scale - 1e-6).astype(np.int64)
    cols = [c for c in range(R * T) if W[:, c].sum() > scale]  # columns that can never bind are skipped
    model = cp_model.CpModel()
    B = upper
    x = [[model.new_bool_var(f"x{i}_{b}") for b in range(B)] for i in range(n)]
    y = [model.new_bool_var(f"y{b}") for b in range(B)]
    for i in range(n):
        model.add_exactly_one(x[i][: min(i + 1, B)])  # symmetry: server i uses one of hosts 0..i
        for b in range(i + 1, B):
            model.add(x[i][b] == 0)
    for b in range(B):
        for i in range(n):
            model.add_implication(x[i][b], y[b])
        if b:
            model.add_implication(y[b], y[b - 1])
        for c in cols:
            terms = [(int(W[i, c]), x[i][b]) for i in range(n) if W[i, c] > 0]
            if terms:
                model.add(sum(w * v for w, v in terms) <= scale * y[b])
    model.minimize(sum(y))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.05, time_limit_s)
    solver.parameters.num_workers = workers
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, False, 0
    assign = np.array([next(b for b in range(B) if solver.value(x[i][b])) for i in range(n)], dtype=np.int64)
    return compact(assign), status == cp_model.OPTIMAL, math.ceil(solver.best_objective_bound - 1e-6)


# ---------------------------------------------------------------- fixed-m overflow repair
def _overflow(rows: FloatArray) -> FloatArray:
    """Sum of the loads above 1 along the last axis."""
    return np.asarray(np.maximum(rows - 1.0, 0.0).sum(axis=-1))


def penalty_fn(lim: Limits, R: int, T: int) -> Callable[[FloatArray], FloatArray]:
    """The overflow to drive to zero for hosts whose flattened loads (..., R*T) are given.
    Strict mode: the sum of loads above 1. Percentile mode: per resource, the sum of all but the
    ``k`` largest excesses above 1 (zero iff at most k steps are above), plus 100 x the excess
    above ``hard``. Zero (up to EPS) iff the host is feasible."""
    if lim.k == 0:
        return _overflow
    k = lim.k

    def pen(rows: FloatArray) -> FloatArray:
        x = rows.reshape(*rows.shape[:-1], R, T)
        hard = np.maximum(x - lim.hard, 0.0).sum(axis=(-1, -2)) * 100.0
        if k >= T:
            return np.asarray(hard)
        ex = np.maximum(x - 1.0, 0.0)
        smallest = np.partition(ex, T - k - 1, axis=-1)[..., : T - k]
        return np.asarray(smallest.sum(axis=(-1, -2)) + hard)

    return pen


def repair_to_m(
    D: FloatArray,
    assign: IntArray,
    m: int,
    deadline: float,
    rng: np.random.Generator,
    tenure: int = 7,
    max_targets: int = 64,
    lim: Limits = Limits(),
    swaps: bool = True,
) -> IntArray | None:
    """Percentile mode's repair (strict mode runs the compiled ``repair_compiled``): starting from
    ``assign`` (hosts 0..m-1, possibly overloaded), move servers between hosts to drive the total
    penalty (``penalty_fn``) to zero: each iteration takes one overloaded host and applies the
    best move of one of its servers to another host, or a better swap (tabu for ``tenure``
    iterations on the reverse move, so plateaus are crossed). Returns a feasible assignment on
    <= m hosts, or None at ``deadline``."""
    n, R, T = D.shape
    flat = D.reshape(n, R * T)
    loads = host_loads(assign, flat, m)
    _overflow = penalty_fn(lim, R, T)
    over = _overflow(loads)
    tabu_until = np.zeros((n, m), dtype=np.int64)
    it = 0
    while True:
        bad = np.flatnonzero(over > EPS)
        if bad.size == 0:
            return assign
        if time.perf_counter() > deadline:  # every iteration: on long series one can take 0.1 s
            return None
        if (it & 255) == 255:  # no drift from incremental updates
            loads = host_loads(assign, flat, m)
            over = _overflow(loads)
        it += 1
        b = int(bad[rng.integers(bad.size)]) if rng.random() < 0.3 else int(bad[np.argmax(over[bad])])
        members = np.flatnonzero(assign == b)
        dm = flat[members]  # (k, C)
        out_gain = _overflow(loads[b][None, :] - dm) - over[b]  # (k,) <= 0
        if m > max_targets:
            # only the hosts with the most room where host b overflows are worth evaluating
            cols = loads[b] > 1.0 + EPS
            room = loads[:, cols].sum(axis=1)
            room[b] = np.inf
            targets = np.argpartition(room, max_targets)[:max_targets]
        else:
            targets = np.flatnonzero(np.arange(m) != b)
        new = loads[targets][None, :, :] + dm[:, None, :]  # (k, targets, C)
        in_cost = _overflow(new) - over[targets][None, :]
        delta = in_cost + out_gain[:, None]
        delta[tabu_until[members][:, targets] >= it] = np.inf
        flat_idx = int(np.argmin(delta))
        if swaps and delta.flat[flat_idx] > -EPS and _try_swap(
            flat, assign, loads, over, b, members, targets, tabu_until, it, tenure, rng, _overflow,
            float(delta.flat[flat_idx]),
        ):  # fmt: skip
            continue
        if not np.isfinite(delta.flat[flat_idx]):
            continue
        j, gi = divmod(flat_idx, targets.size)
        g = int(targets[gi])
        i = int(members[j])
        loads[b] -= flat[i]
        loads[g] += flat[i]
        over[b] = float(_overflow(loads[b]))
        over[g] = float(_overflow(loads[g]))
        assign[i] = g
        tabu_until[i, b] = it + tenure + int(rng.integers(0, 4))


def repair_compiled(
    demand: FloatArray,
    assign: IntArray,
    m: int,
    deadline: float,
    tenure: int = 7,
    bump: float = 0.5,
    swap_servers: int = 4,
    targets: int = 64,
) -> IntArray | None:
    """Strict mode's repair: the tabu search with breakout weights of ``kernels.repair_steps`` on
    ``demand`` (servers, resources x steps), run in slices of about 20 ms until no host of the
    ``m`` is overloaded (returns the assignment) or ``deadline`` (returns None)."""
    from corral.planning import kernels

    n, C = demand.shape
    work = assign.copy()
    weights = np.ones(C)
    tabu_until = np.zeros((n, m), dtype=np.int32)  # 20,000 servers x 1,000 hosts: 80 MB
    done, slice_its = 0, 64
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        if kernels.repair_steps(
            demand, work, m, weights, tabu_until, done, slice_its, tenure, bump, swap_servers, targets
        ) > 0:
            return work
        done += slice_its
        took = time.perf_counter() - t
        slice_its = max(1, min(4 * slice_its, int(slice_its * 0.02 / max(took, 1e-6))))
    return None


def _try_swap(
    flat: FloatArray,
    assign: IntArray,
    loads: FloatArray,
    over: FloatArray,
    b: int,
    members: IntArray,
    targets: IntArray,
    tabu_until: npt.NDArray[np.int64],
    it: int,
    tenure: int,
    rng: np.random.Generator,
    pen: Callable[[FloatArray], FloatArray],
    best_move: float,
    swap_hosts: int = 32,
    top_servers: int = 4,
) -> bool:
    """Exchange one of the ``top_servers`` servers most responsible for host b's overflow with a
    server of one of the ``swap_hosts`` candidate hosts with the most room where b overflows, if
    that beats the best single move; every candidate is evaluated exactly (screening them on b's
    overloaded steps only was tried: it loses hosts). Mutates the state on success."""
    excess = np.maximum(loads[b] - 1.0, 0.0)
    contrib = np.minimum(flat[members], excess).sum(axis=1)
    top = members[np.argsort(-contrib)[:top_servers]]
    room = loads[targets][:, excess > 0].sum(axis=1)
    near = targets[np.argsort(room)[:swap_hosts]]
    cand = np.flatnonzero(np.isin(assign, near))
    if cand.size == 0:
        return False
    fc = flat[cand]
    hosts_j = assign[cand]
    best = (best_move - EPS, -1, -1)
    base_g = loads[hosts_j] - fc
    for i in top.tolist():
        d = flat[i]
        newb = fc + (loads[b] - d)
        newg = base_g + d
        dsw = pen(newb) - over[b] + pen(newg) - over[hosts_j]
        dsw[(tabu_until[cand, b] >= it) | (tabu_until[i, hosts_j] >= it)] = np.inf
        j = int(np.argmin(dsw))
        if dsw[j] < best[0]:
            best = (float(dsw[j]), i, int(cand[j]))
    _, i, j = best
    if i < 0:
        return False
    g = int(assign[j])
    loads[b] += flat[j] - flat[i]
    loads[g] += flat[i] - flat[j]
    over[b] = float(pen(loads[b]))
    over[g] = float(pen(loads[g]))
    assign[i], assign[j] = g, b
    tabu_until[i, b] = it + tenure + int(rng.integers(0, 4))
    tabu_until[j, g] = it + tenure + int(rng.integers(0, 4))
    return True


def drop_one_host(
    D: FloatArray,
    assign: IntArray,
    lim: Limits = Limits(),
    h: int | None = None,
) -> IntArray:
    """From a plan on m hosts, a (possibly overloaded) one on m-1: host ``h``'s servers (default:
    the lightest host's) are spread over the others, each where it adds the least overflow (ties:
    least correlated)."""
    n, R, T = D.shape
    flat = D.reshape(n, R * T)
    m = int(assign.max()) + 1
    loads = host_loads(assign, flat, m).astype(np.float64)
    if h is None:
        h = int(np.argmin(loads.sum(axis=1)))
    keep = np.flatnonzero(np.arange(m) != h)
    remap = np.full(m, -1, dtype=np.int64)
    remap[keep] = np.arange(m - 1)
    out = remap[assign]
    loads = loads[keep]
    movers = np.flatnonzero(assign == h)
    movers = movers[np.argsort(-flat[movers].sum(axis=1))]
    _overflow = penalty_fn(lim, R, T)
    for i in movers.tolist():
        d = flat[i]
        cost = _overflow(loads + d) - _overflow(loads)
        score = cost * 1e6 + loads @ d
        g = int(np.argmin(score))
        loads[g] += d
        out[i] = g
    return out


def _best_drop(D: FloatArray, assign: IntArray, lim: Limits, tries: int) -> IntArray:
    """Of the ``tries`` lightest hosts, drop the one whose servers leave the least overflow."""
    n, R, T = D.shape
    flat = D.reshape(n, R * T)
    m = int(assign.max()) + 1
    loads = host_loads(assign, flat, m).astype(np.float64)
    pen = penalty_fn(lim, R, T)
    best: tuple[float, IntArray] | None = None
    for h in np.argsort(loads.sum(axis=1))[: max(1, tries)].tolist():
        trial = drop_one_host(D, assign, lim, h)
        after = host_loads(trial, flat, m - 1)
        total = float(pen(after).sum())
        if best is None or total < best[0]:
            best = (total, trial)
    assert best is not None
    return best[1]


def minimize_hosts(
    D: FloatArray,
    assign: IntArray,
    lower: int,
    deadline: float,
    seed: int = 0,
    lim: Limits = Limits(),
    tries: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> IntArray:
    """From a feasible plan, repeatedly drop a host and repair, until the lower bound
    is reached or ``deadline``. Returns the best feasible plan found."""
    rng = np.random.default_rng(seed)
    best = compact(assign)
    placed = best >= 0
    if not placed.any():
        return best
    idx = np.flatnonzero(placed)
    exact = D[idx]
    # the NumPy parts (dropping a host; percentile mode's repair) run in float32 on demands
    # inflated by 1e-5 (twice as fast; the rounding can only make them stricter); every plan is
    # re-checked in float64 on the true demands
    sub = (exact * (1 + 1e-5)).astype(np.float32)
    if lim.k == 0 and time.perf_counter() < deadline:
        # the compiled repair works in float64; 1e-9 of headroom covers its rounding
        from corral.planning import kernels

        kernels.seed_rng(seed)
        compiled = np.ascontiguousarray((exact * (1 + 1e-9)).reshape(exact.shape[0], -1), dtype=np.float64)
    cur = best[idx]
    while int(cur.max()) + 1 > max(lower, 1) and time.perf_counter() < deadline:
        trial = _best_drop(sub, cur, lim, tries)
        if lim.k == 0:
            fixed = repair_compiled(compiled, trial, int(cur.max()), deadline)
        else:
            fixed = repair_to_m(sub, trial, int(cur.max()), deadline, rng, lim=lim)
        if fixed is None or not check_assignment(exact, fixed, lim):
            break
        cur = compact(fixed)
        if on_progress is not None:
            on_progress(int(cur.max()) + 1)
        out = best.copy()
        out[idx] = cur
        best = out
    return best
