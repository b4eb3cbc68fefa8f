"""Synthetic traces for ``corral demo``: the classic five servers at 15 % onto one host."""

from __future__ import annotations

import numpy as np

from corral.planning.catalog import HostKind, load_catalog
from corral.planning.model import TraceSet, make_traceset


def demo_traceset(
    n: int = 5, mean_util: float = 0.15, steps: int = 288, kind: HostKind | None = None, seed: int = 0
) -> TraceSet:
    """``n`` servers of ``kind`` (default legacy-1u), each busy ``mean_util`` of its CPU on average
    over a day (a daily wave, peaks staggered, some noise) and using the same share of its memory."""
    kind = kind or load_catalog()["legacy-1u"]
    rng = np.random.default_rng(seed)
    t = np.arange(steps) / steps
    cpu = np.empty((n, steps))
    for i in range(n):
        wave = 1 + 0.5 * np.sin(2 * np.pi * (t + i / n))
        noise = rng.normal(1.0, 0.05, steps)
        cpu[i] = np.clip(mean_util * wave * noise, 0.0, 1.0) * kind.cpu_mhz
    mem = np.full((n, steps), kind.mem_bytes * mean_util)
    return make_traceset(
        [f"server-{i + 1}" for i in range(n)],
        {"cpu": cpu, "mem": mem},
        {"cpu": np.full(n, kind.cpu_mhz), "mem": np.full(n, kind.mem_bytes)},
    )
