"""Which guest to take off an overloaded host: the selection policies of CCPE 2012 (CloudSim 4.0).

- MMT (minimum migration time): the guest with the least memory (first in the host's list on ties);
- MU (minimum utilization): the guest using the smallest share of its own size now;
- RS (random selection): any movable guest, uniformly (Numba's generator, seeded by the caller);
- MC (maximum correlation): the guest whose CPU history the other guests' histories explain best
  (largest R^2 of a multiple regression with intercept); MMT when the regression is impossible.

Guests already migrating are never selected. Pure compiled functions over arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from corral.consolidation.detectors import HISTORY_LENGTH

MMT, MC, RS, MU = 0, 1, 2, 3
SELECTION_CODES = {"mmt": MMT, "mc": MC, "rs": RS, "mu": MU}


@njit(cache=True)
def seed_rng(seed: int) -> None:
    """Seed the compiled code's random generator (RS), which is separate from NumPy's."""
    np.random.seed(seed)


@njit(cache=True)
def select_vm(
    h: int, sel: int, count: Any, members: Any, vm_in_mig: Any, vm_req: Any, vm_mips: Any, vm_ram: Any,
    vm_hist: Any, vm_hist_len: Any,
) -> int:
    """The guest the selection policy takes off host ``h`` (``-1``: none can move)."""
    n = count[h]
    cand = np.empty(n, dtype=np.int64)
    nc = 0
    for k in range(n):
        v = members[h, k]
        if not vm_in_mig[v]:
            cand[nc] = v
            nc += 1
    if nc == 0:
        return -1
    if sel == RS:
        return int(cand[np.random.randint(nc)])
    if sel == MC and nc > 1:
        best = _max_correlation(cand, nc, vm_hist, vm_hist_len)
        if best >= 0:
            return best
    best_v = -1
    best_m = np.inf
    for j in range(nc):
        v = cand[j]
        metric = vm_req[v] / vm_mips[v] if sel == MU else vm_ram[v]
        if metric < best_m:
            best_m = metric
            best_v = v
    return best_v


@njit(cache=True)
def _max_correlation(cand: Any, nc: int, vm_hist: Any, vm_hist_len: Any) -> int:
    """MC: the guest whose history the others' histories explain best (largest R^2 of a multiple
    regression with intercept); -1 when the regression is impossible (too little history or a
    singular design), so the caller falls back to MMT, as CloudSim does."""
    m = HISTORY_LENGTH
    for j in range(nc):
        m = min(m, vm_hist_len[cand[j]])
    if m < nc:
        return -1
    best_v = cand[0]
    best_r2 = 4.9e-324
    x = np.ones((m, nc))
    for i in range(nc):
        col = 1
        for j in range(nc):
            if j != i:
                for t in range(m):
                    x[t, col] = vm_hist[cand[j], t]
                col += 1
        y = np.empty(m)
        for t in range(m):
            y[t] = vm_hist[cand[i], t]
        r2 = _r_squared(x, y)
        if r2 == -np.inf:
            return -1
        if r2 > best_r2:
            best_r2 = r2
            best_v = cand[i]
    return int(best_v)


@njit(cache=True)
def _r_squared(x: Any, y: Any) -> float:
    """R^2 of the least-squares fit of y on the columns of x (modified Gram-Schmidt); -inf when
    the columns are linearly dependent (CloudSim's QR solver throws, and MC falls back)."""
    m, p = x.shape
    q = x.copy()
    for j in range(p):
        norm0 = 0.0
        for t in range(m):
            norm0 += x[t, j] * x[t, j]
        for i in range(j):
            dot = 0.0
            for t in range(m):
                dot += q[t, i] * q[t, j]
            for t in range(m):
                q[t, j] -= dot * q[t, i]
        norm = 0.0
        for t in range(m):
            norm += q[t, j] * q[t, j]
        if norm <= 1e-20 * max(norm0, 1e-300):
            return -np.inf
        norm = math.sqrt(norm)
        for t in range(m):
            q[t, j] /= norm
    fit = np.zeros(m)
    for j in range(p):
        dot = 0.0
        for t in range(m):
            dot += q[t, j] * y[t]
        for t in range(m):
            fit[t] += dot * q[t, j]
    ybar = y.mean()
    ss_res = 0.0
    ss_tot = 0.0
    for t in range(m):
        ss_res += (y[t] - fit[t]) ** 2
        ss_tot += (y[t] - ybar) ** 2
    if ss_tot <= 0.0:
        return math.nan
    return 1.0 - ss_res / ss_tot
