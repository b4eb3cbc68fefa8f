"""Host overload detectors of Beloglazov & Buyya (CCPE 2012), as CloudSim 4.0 computes them.

Every function is pure and compiled (Numba), callable from Python and from the compiled
simulator alike. A host's *history* is CloudSim's: for each of the last ``HISTORY_LENGTH``
scheduling intervals (newest first), the sum over its guests of the guest's CPU utilization
times the guest's MIPS, divided by the host's MIPS; trailing zeros (the oldest end) are cut.

- THR: overloaded when requested MIPS / capacity > threshold.
- IQR, MAD: threshold = 1 - s x (inter-quartile range | median absolute deviation) of the
  history; with fewer than 12 values, the fallback THR 0.7.
- LR: ordinary least squares over the last 10 values (CloudSim's "loess" weights are never
  applied, see ``lr_estimates``), extrapolated one migration interval ahead, times s;
  overloaded when >= 1; with fewer than 10 values, the fallback THR 0.7.
- LRR: in CloudSim 4.0 exactly LR (its robust weights are never applied either, and its runner
  builds the LR policy for ``lrr``); ``lrr_estimates`` is the robust fit for the realistic model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

HISTORY_LENGTH = 30  # PowerVm.HISTORY_LENGTH
MIN_IQR_MAD = 12  # "12 has been suggested as a safe value"
LR_LENGTH = 10  # "we use 10 to make the regression responsive enough to latest values"
FALLBACK_THRESHOLD = 0.7  # the runner's fallback StaticThreshold for iqr, mad, lr, lrr

THR, IQR, MAD, LR, LRR = 0, 1, 2, 3, 4
DETECTOR_CODES = {"thr": THR, "iqr": IQR, "mad": MAD, "lr": LR, "lrr": LRR}


@njit(cache=True)
def trimmed_length(data: Any, n: int) -> int:
    """MathUtil.countNonZeroBeginning: the length up to the last non-zero value."""
    i = n - 1
    while i >= 0:
        if data[i] != 0.0:
            break
        i -= 1
    return i + 1


@njit(cache=True)
def percentile_sorted(values: Any, n: int, p: float) -> float:
    """commons-math3 Percentile (legacy estimation) of the first ``n`` sorted values, p in (0, 100)."""
    if n == 0:
        return math.nan
    if n == 1:
        return float(values[0])
    pos = p / 100.0 * (n + 1)
    fpos = math.floor(pos)
    int_pos = int(fpos)
    dif = pos - fpos
    if pos < 1.0:
        return float(values[0])
    if pos >= n:
        return float(values[n - 1])
    lower = values[int_pos - 1]
    upper = values[int_pos]
    return float(lower + dif * (upper - lower))


@njit(cache=True)
def median(data: Any, n: int) -> float:
    """MathUtil.median of the first ``n`` values (not modified)."""
    s = np.sort(data[:n])
    return percentile_sorted(s, n, 50.0)


@njit(cache=True)
def mad(data: Any, n: int) -> float:
    """MathUtil.mad: the median of the absolute deviations from the median."""
    if n == 0:
        return 0.0
    med = median(data, n)
    dev = np.empty(n)
    for i in range(n):
        dev[i] = abs(med - data[i])
    return median(dev, n)


@njit(cache=True)
def iqr(data: Any, n: int) -> float:
    """MathUtil.iqr: sorted[round(0.75 (n+1)) - 1] - sorted[round(0.25 (n+1)) - 1]."""
    s = np.sort(data[:n])
    q1 = math.floor(0.25 * (n + 1) + 0.5) - 1
    q3 = math.floor(0.75 * (n + 1) + 0.5) - 1
    return float(s[q3] - s[q1])


@njit(cache=True)
def lr_estimates(y: Any, n: int) -> tuple[float, float]:
    """Intercept and slope of y[0..n) against x = 1..n, with commons-math3 SimpleRegression's
    updating formulas. CloudSim's ``getLoessParameterEstimates`` computes tricube weights but
    weighs the data only when at least 40 % of the weights are <= 0, which never happens (they are
    1 / tricube, all positive): the fit is plain least squares."""
    sum_x = 0.0
    sum_y = 0.0
    sum_xx = 0.0
    sum_xy = 0.0
    xbar = 0.0
    ybar = 0.0
    for k in range(n):
        x = float(k + 1)
        yk = y[k]
        if k == 0:
            xbar = x
            ybar = yk
        else:
            fact1 = 1.0 + k
            fact2 = k / (1.0 + k)
            dx = x - xbar
            dy = yk - ybar
            sum_xx += dx * dx * fact2
            sum_xy += dx * dy * fact2
            xbar += dx / fact1
            ybar += dy / fact1
        sum_x += x
        sum_y += yk
    if n < 3 or abs(sum_xx) <= 2.2250738585072014e-308:
        return math.nan, math.nan
    slope = sum_xy / sum_xx
    return (sum_y - slope * sum_x) / n, slope


@njit(cache=True)
def lrr_estimates(y: Any, n: int) -> tuple[float, float]:
    """A genuinely robust local regression (the realistic model's LRR): least squares with
    tricube weights by recency, then three rounds re-weighted by the bisquare of the residuals
    over six median absolute residuals (Cleveland's robustness iterations)."""
    base = np.empty(n)
    for k in range(n):
        d = (n - 1 - k) / max(n - 1, 1)
        base[k] = (1.0 - d * d * d) ** 3 + 1e-6
    a, b = _wls(y, base, n)
    if math.isnan(a):
        return a, b
    w = np.empty(n)
    res = np.empty(n)
    for _ in range(3):
        for k in range(n):
            res[k] = abs(y[k] - (a + b * (k + 1)))
        s6 = 6.0 * median(res, n)
        if s6 <= 0.0:
            break
        for k in range(n):
            r = res[k] / s6
            w[k] = base[k] * ((1.0 - r * r) ** 2 if r < 1.0 else 0.0)
        a2, b2 = _wls(y, w, n)
        if math.isnan(a2):
            break
        a, b = a2, b2
    return a, b


@njit(cache=True)
def _wls(y: Any, w: Any, n: int) -> tuple[float, float]:
    sw = swx = swy = swxx = swxy = 0.0
    for k in range(n):
        x = float(k + 1)
        sw += w[k]
        swx += w[k] * x
        swy += w[k] * y[k]
        swxx += w[k] * x * x
        swxy += w[k] * x * y[k]
    det = sw * swxx - swx * swx
    if sw <= 0.0 or abs(det) < 1e-12:
        return math.nan, math.nan
    b = (sw * swxy - swx * swy) / det
    return (swy - b * swx) / sw, b


@njit(cache=True)
def thr_overloaded(requested_mips: float, capacity_mips: float, threshold: float) -> bool:
    """THR: requested / capacity > threshold."""
    return requested_mips / capacity_mips > threshold


@njit(cache=True)
def lr_prediction(history: Any, n: int, safety: float, intervals_ahead: float, robust: bool) -> float:
    """s x the utilization LR (or robust LR) predicts ``intervals_ahead`` past the last of the 10
    newest history values (history newest first); NaN when there are fewer than 10."""
    if n < LR_LENGTH:
        return math.nan
    y = np.empty(LR_LENGTH)
    for i in range(LR_LENGTH):
        y[i] = history[LR_LENGTH - i - 1]
    if robust:
        a, b = lrr_estimates(y, LR_LENGTH)
    else:
        a, b = lr_estimates(y, LR_LENGTH)
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return (a + b * (LR_LENGTH + intervals_ahead)) * safety


@njit(cache=True)
def overloaded(
    kind: int,
    param: float,
    fallback: float,
    requested_mips: float,
    capacity_mips: float,
    history: Any,
    n_history: int,
    intervals_ahead: float,
    robust_lrr: bool,
) -> bool:
    """The detector ``kind`` (THR, IQR, MAD, LR, LRR) with parameter ``param`` on one host: its
    requested MIPS now, its capacity and its (trimmed) history. Falls back to THR ``fallback``
    when the history is too short, as CloudSim's runner configures it."""
    if kind == THR:
        return requested_mips / capacity_mips > param
    if kind == IQR or kind == MAD:  # noqa: SIM109 (compiled: no tuple membership)
        if n_history < MIN_IQR_MAD:
            return requested_mips / capacity_mips > fallback
        spread = iqr(history, n_history) if kind == IQR else mad(history, n_history)
        return requested_mips / capacity_mips > 1.0 - param * spread
    pred = lr_prediction(history, n_history, param, intervals_ahead, kind == LRR and robust_lrr)
    if math.isnan(pred):
        return requested_mips / capacity_mips > fallback
    return pred >= 1.0


def detector_threshold(kind: str, param: float, history: Any) -> float:
    """The utilization above which a host counts as overloaded (THR, IQR, MAD), for reasons and
    reports; NaN when the history is too short (the fallback applies) or for LR/LRR."""
    h = np.asarray(history, dtype=np.float64)
    n = trimmed_length(h, h.size)
    if kind == "thr":
        return float(param)
    if kind in ("iqr", "mad") and n >= MIN_IQR_MAD:
        return 1.0 - param * (iqr(h, n) if kind == "iqr" else mad(h, n))
    return math.nan


_INT_MIN = -2147483648.0  # Java's Integer.MIN_VALUE: LR's max guest RAM on an empty host


@njit(cache=True)
def host_history(
    h: int, count: Any, members: Any, extra: int, vm_hist: Any, vm_hist_len: Any, vm_mips: Any, capacity: float,
    out: Any,
) -> int:
    """CloudSim's host utilization history (newest first) of host ``h`` (plus guest ``extra`` if
    >= 0) into ``out``; returns its trimmed length."""
    for i in range(HISTORY_LENGTH):
        out[i] = 0.0
    n = count[h]
    for k in range(n + (1 if extra >= 0 else 0)):
        v = members[h, k] if k < n else extra
        for i in range(vm_hist_len[v]):
            out[i] += vm_hist[v, i] * vm_mips[v] / capacity
    return trimmed_length(out, HISTORY_LENGTH)


@njit(cache=True)
def host_overloaded(
    h: int, extra: int, kind: int, param: float, fallback: float, robust: bool, count: Any, members: Any,
    vm_req: Any, vm_mips: Any, vm_ram: Any, vm_hist: Any, vm_hist_len: Any, capacity: Any, migration_mbps: Any,
    step_s: float, hbuf: Any,
) -> bool:
    """``isHostOverUtilized`` for host ``h`` with guest ``extra`` added (``-1``: none)."""
    n = count[h]
    req = 0.0
    for k in range(n):
        req += vm_req[members[h, k]]
    if extra >= 0:
        req += vm_req[extra]
    if kind == THR:
        return bool(req / capacity[h] > param)
    nh = host_history(h, count, members, extra, vm_hist, vm_hist_len, vm_mips, capacity[h], hbuf)
    ahead = 0.0
    if kind >= LR:
        max_ram = _INT_MIN
        for k in range(n + (1 if extra >= 0 else 0)):
            v = members[h, k] if k < n else extra
            if vm_ram[v] > max_ram:
                max_ram = vm_ram[v]
        ahead = math.ceil(max_ram / migration_mbps[h] / step_s)
    return overloaded(kind, param, fallback, req, capacity[h], hbuf, nh, ahead, robust)
