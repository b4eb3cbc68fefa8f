"""The compiled inner loop of the planner's search (strict mode), in Numba.

The repair search spends all its time evaluating moves: for every server of an overloaded host
and every other host, the weighted overflow the host would have with the server added, over every
step. In NumPy each evaluation allocates temporaries; compiled, the loops are branch-free and
vectorized, about 50 times faster (bench/plan.py), so within the same time budget the search
gets to fewer hosts. Pure functions over arrays: no I/O, no state kept between calls other than
what the caller passes in (and Numba's random generator, seeded by ``seed_rng``).

The kernel is compiled on first use and cached on disk next to this module (or in Numba's user
cache when that folder is read-only); ``warm_up`` compiles it ahead of a timed search.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True)
def _overflow(row: Any, w: Any) -> float:
    """Weighted overflow of one host: sum over steps of w x max(0, load - 1)."""
    s = 0.0
    for t in range(row.shape[0]):
        s += w[t] * max(0.0, row[t] - 1.0)
    return s


@njit(cache=True, fastmath=True)
def _overflow_with(row: Any, d: Any, sign: float, w: Any) -> float:
    """Weighted overflow of a host whose load is ``row + sign * d``."""
    s = 0.0
    for t in range(row.shape[0]):
        s += w[t] * max(0.0, row[t] + sign * d[t] - 1.0)
    return s


@njit(cache=True, fastmath=True)
def _swap_overflow(lb: Any, lg: Any, di: Any, dj: Any, w: Any) -> float:
    """Weighted overflow of hosts b and g after server i (on b) and j (on g) trade places."""
    s = 0.0
    for t in range(lb.shape[0]):
        diff = dj[t] - di[t]
        s += w[t] * (max(0.0, lb[t] + diff - 1.0) + max(0.0, lg[t] - diff - 1.0))
    return s


@njit(cache=True)
def seed_rng(seed: int) -> None:
    """Seed the compiled code's random generator (it is separate from NumPy's)."""
    np.random.seed(seed)


@njit(cache=True)
def repair_steps(
    demand: Any,
    assign: Any,
    m: int,
    weights: Any,
    tabu_until: Any,
    first_iteration: int,
    iterations: int,
    tenure: int,
    bump: float,
    swap_servers: int,
    targets: int,
) -> int:
    """Run up to ``iterations`` iterations of the overflow repair on ``m`` hosts; ``assign``,
    ``weights`` (per step) and ``tabu_until`` (server x host) are updated in place, so a caller
    can run the search in slices and look at the clock between them.

    Each iteration takes an overloaded host b (the worst, or a random one 30 % of the time) and
    applies the best non-tabu move of one of its servers to another host; when no move lowers
    the overflow, the best swap of one of its ``swap_servers`` servers whose removal helps most
    with a server of another host, if that is better (on more than ``targets`` hosts, the other
    hosts are the ``targets`` with the least load at b's overloaded steps); else the steps where
    b is overloaded gain ``bump`` in weight (breakout) and the best move is made anyway (tabu
    keeps it from being undone for ``tenure`` iterations). Returns the iteration at which no host is
    overloaded, or -1 when the slice ends first."""
    n, T = demand.shape
    loads = np.zeros((m, T))
    for i in range(n):
        loads[assign[i]] += demand[i]
    over = np.zeros(m)
    for h in range(m):
        over[h] = _overflow(loads[h], weights)
    members = np.empty(n, dtype=np.int64)
    out_gain = np.empty(n)
    near = np.ones(m, dtype=np.bool_)  # the hosts evaluated as targets: all of them up to `targets`
    room = np.zeros(m)
    for it in range(first_iteration + 1, first_iteration + iterations + 1):
        n_bad = 0
        worst = -1
        worst_over = 0.0
        for h in range(m):
            if over[h] > 0.0:
                n_bad += 1
                if over[h] > worst_over:
                    worst_over = over[h]
                    worst = h
        if n_bad == 0:
            return it
        b = worst
        if np.random.random() < 0.3:
            k = np.random.randint(n_bad)
            for h in range(m):
                if over[h] > 0.0:
                    if k == 0:
                        b = h
                        break
                    k -= 1
        k_b = 0
        for i in range(n):
            if assign[i] == b:
                members[k_b] = i
                k_b += 1
        for a in range(k_b):
            out_gain[a] = _overflow_with(loads[b], demand[members[a]], -1.0, weights) - over[b]
        # on many hosts, only the `targets` with the most room where b overflows are evaluated
        if m > targets:
            room[:] = 0.0
            for t in range(T):
                if loads[b, t] > 1.0:
                    for g in range(m):
                        room[g] += loads[g, t]
            room[b] = np.inf
            near[:] = False
            near[np.argsort(room)[:targets]] = True
        best, best_i, best_g = np.inf, -1, -1
        for a in range(k_b):
            i = members[a]
            for g in range(m):
                if g == b or not near[g] or tabu_until[i, g] >= it:
                    continue
                delta = out_gain[a] + _overflow_with(loads[g], demand[i], 1.0, weights) - over[g]
                if delta < best:
                    best, best_i, best_g = delta, i, g
        if best > -1e-12:
            # no improving move: try trading one of the servers that relieve b most
            order = np.argsort(out_gain[:k_b])
            swap_best, swap_i, swap_j = best, -1, -1
            for a in range(min(swap_servers, k_b)):
                i = members[order[a]]
                for j in range(n):
                    g = assign[j]
                    if g == b or not near[g] or tabu_until[i, g] >= it or tabu_until[j, b] >= it:
                        continue
                    delta = _swap_overflow(loads[b], loads[g], demand[i], demand[j], weights) - over[b] - over[g]
                    if delta < swap_best:
                        swap_best, swap_i, swap_j = delta, i, j
            if swap_i >= 0:
                g = assign[swap_j]
                loads[b] += demand[swap_j] - demand[swap_i]
                loads[g] += demand[swap_i] - demand[swap_j]
                assign[swap_i] = g
                assign[swap_j] = b
                tabu_until[swap_i, b] = it + tenure + np.random.randint(4)
                tabu_until[swap_j, g] = it + tenure + np.random.randint(4)
                over[b] = _overflow(loads[b], weights)
                over[g] = _overflow(loads[g], weights)
                continue
            # a local minimum: the steps where b stays overloaded weigh more from now on
            for t in range(T):
                if loads[b, t] > 1.0:
                    weights[t] += bump
            for h in range(m):
                over[h] = _overflow(loads[h], weights)
        if best_i < 0:
            continue
        loads[b] -= demand[best_i]
        loads[best_g] += demand[best_i]
        assign[best_i] = best_g
        tabu_until[best_i, b] = it + tenure + np.random.randint(4)
        over[b] = _overflow(loads[b], weights)
        over[best_g] = _overflow(loads[best_g], weights)
    return -1


def warm_up() -> None:
    """Compile (or load from the cache) the kernel on a tiny instance, outside any time budget.
    The argument types are those ``packing.repair_compiled`` passes (Numba compiles per type)."""
    demand = np.array([[0.6, 0.2], [0.6, 0.2]])
    tabu_until = np.zeros((2, 2), dtype=np.int32)
    seed_rng(0)
    repair_steps(demand, np.zeros(2, dtype=np.int64), 2, np.ones(2), tabu_until, 0, 4, 7, 0.5, 4, 64)
