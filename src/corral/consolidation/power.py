"""Host power: the SPECpower curve of a host kind, interpolated exactly as CloudSim does.

A curve is 11 numbers, watts at 0, 10, ..., 100 % CPU. ``power_at`` reproduces CloudSim 4.0's
``PowerModelSpecPower.getPower`` operation for operation (so ties between hosts in the
power-aware placement break the same way), and ``energy_ws`` its ``getEnergyLinearInterpolation``:
a host whose utilization at the start of an interval is 0 is off and draws nothing.
"""

from __future__ import annotations

import math
from typing import Any

from numba import njit


@njit(cache=True)
def power_at(curve: Any, utilization: float) -> float:
    """Watts of a host at ``utilization`` (0..1, clamped) on the 11-point curve."""
    u = utilization
    if u < 0.0:
        u = 0.0
    if u > 1.0:
        u = 1.0
    if u % 0.1 == 0.0:  # Java % on non-negative doubles (exact, as fmod)
        return float(curve[int(u * 10.0)])
    u1 = math.floor(u * 10.0)
    u2 = math.ceil(u * 10.0)
    p1 = curve[u1]
    p2 = curve[u2]
    delta = (p2 - p1) / 10.0
    return float(p1 + delta * (u - u1 / 10.0) * 100.0)


@njit(cache=True)
def clamp_utilization(u: float) -> float:
    """CloudSim's ``getUtilizationOfCpu``: values just above 1 (up to 1.01) count as 1."""
    if u > 1.0 and u < 1.01:
        return 1.0
    return u


@njit(cache=True)
def energy_ws(curve: Any, u_from: float, u_to: float, seconds: float) -> float:
    """Energy (W*s) over an interval whose utilization moves linearly from ``u_from`` to ``u_to``;
    0 when the host was off (utilization 0) at the start, as in CloudSim."""
    if u_from == 0.0:
        return 0.0
    p_from = power_at(curve, u_from)
    p_to = power_at(curve, u_to)
    return (p_from + (p_to - p_from) / 2.0) * seconds
