"""Synthetic traces for ``corral demo``: the classic five servers at 15 % onto one host."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from corral.planning.catalog import HostKind, load_catalog
from corral.planning.model import TraceSet, make_traceset
from corral.planning.names import DEFAULT_BEFORE_KIND


def demo_traceset(
    n: int = 5,
    mean_util: float = 0.15,
    steps: int = 288,
    kind: HostKind | None = None,
    seed: int = 0,
    *,
    names: Sequence[str] | None = None,
    mean_utils: Sequence[float] | None = None,
    peak_hours: Sequence[float] | None = None,
) -> TraceSet:
    """A day of 5-minute samples for servers of ``kind`` (default legacy-1u), each busy on average
    its ``mean_utils`` (default ``mean_util``) of its CPU in a daily wave that peaks at its
    ``peak_hours`` (default: staggered over the day), with some noise, and using the same share of
    its memory. ``names`` (default server-1..n) sets how many servers there are."""
    kind = kind or load_catalog()[DEFAULT_BEFORE_KIND]
    names = list(names) if names is not None else [f"server-{i + 1}" for i in range(n)]
    count = len(names)
    utils = list(mean_utils) if mean_utils is not None else [mean_util] * count
    peaks = list(peak_hours) if peak_hours is not None else [24.0 * i / count for i in range(count)]
    if not len(utils) == len(peaks) == count:
        raise ValueError("names, mean_utils and peak_hours must have the same length")
    rng = np.random.default_rng(seed)
    t = np.arange(steps) / steps
    cpu = np.empty((count, steps))
    for i in range(count):
        wave = 1 + 0.5 * np.cos(2 * np.pi * (t - peaks[i] / 24.0))
        noise = rng.normal(1.0, 0.05, steps)
        cpu[i] = np.clip(utils[i] * wave * noise, 0.0, 1.0) * kind.cpu_mhz
    mem = np.array([np.full(steps, kind.mem_bytes * u) for u in utils])
    return make_traceset(
        names,
        {"cpu": cpu, "mem": mem},
        {"cpu": np.full(count, kind.cpu_mhz), "mem": np.full(count, kind.mem_bytes)},
    )
