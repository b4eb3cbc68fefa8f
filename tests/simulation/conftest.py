"""Shared helpers of the simulator's tests.

The real traces are found relative to the project (``../shared/data`` next to the repository);
the simulator unpacks archives into temporary folders itself. Without them the tests that need
them skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from corral.consolidation.state import ClusterState, Histories

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
PLANETLAB = DATA / "planetlab"
BITBRAINS = DATA / "bitbrains-rnd" / "2013-7-week1-100vms.tar.gz"
DAYS = ("20110303", "20110306", "20110309", "20110322", "20110325")
CORRAL_BIN = ROOT / ".venv" / "bin" / "corral"


def need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is required under CI=true")
        pytest.skip(f"{path} not available")
    return path


def day_archive(day: str) -> Path:
    return need(PLANETLAB / f"{day}.tar.gz")


def reference_table() -> dict[tuple[str, str], dict[str, float]]:
    """CloudSim 4.0's figures per (day, policy) from ../shared/data/README.md."""
    text = need(DATA / "README.md").read_text(encoding="utf-8")
    out: dict[tuple[str, str], dict[str, float]] = {}
    row = re.compile(r"^\| (\d{8}) \| ([A-Z]+-[A-Z]+-[\d.]+) \| ([\d.]+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| "
                     r"([\d.]+) \| (\d+) \|$")
    for line in text.splitlines():
        m = row.match(line.strip())
        if m:
            day, pol, e, mig, slatah, pdm, slav, shut = m.groups()
            out[(day, pol)] = {"energy": float(e), "migrations": float(mig), "slatah": float(slatah),
                               "pdm": float(pdm), "slav": float(slav), "shutdowns": float(shut)}
    return out


def floor_table() -> dict[str, float]:
    """The energy floor per day (kWh) tabled in ../shared/data/README.md."""
    text = need(DATA / "README.md").read_text(encoding="utf-8")
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (\d{8}) \| ([\d.]+) \|$", text, re.M)}


def tiny_state(
    capacity: list[float],
    members: list[list[int]],
    demand: list[float],
    *,
    mips: list[float] | None = None,
    ram: list[float] | None = None,
    core: list[float] | None = None,
    utilization: list[float] | None = None,
    curve: list[float] | None = None,
    time_s: float = 300.0,
) -> ClusterState:
    """A hand-made cluster: host h holds ``members[h]`` (in order); guest v asks ``demand[v]`` MIPS."""
    m, n = len(capacity), len(demand)
    width = max(n, 1)
    cnt = np.array([len(x) for x in members], dtype=np.int64)
    mem = np.zeros((m, width), dtype=np.int64)
    host = np.full(n, -1, dtype=np.int64)
    for h, vs in enumerate(members):
        for k, v in enumerate(vs):
            mem[h, k] = v
            host[v] = h
    cap = np.array(capacity, dtype=np.float64)
    pw = np.array(curve or [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135], dtype=np.float64)
    util = np.array(utilization, dtype=np.float64) if utilization is not None else np.array(
        [sum(demand[v] for v in vs) / c for vs, c in zip(members, capacity, strict=True)])
    return ClusterState(
        time_s=time_s,
        step_s=300.0,
        host_names=tuple(f"h{i}" for i in range(m)),
        capacity=cap,
        core_mips=np.array(core, dtype=np.float64) if core is not None else cap / 2,
        power_curve=np.tile(pw, (m, 1)),
        memory_mb=np.full(m, 4096.0),
        migration_mbps=np.full(m, 62.5),
        utilization=util,
        count=cnt,
        members=mem,
        incoming=np.zeros((m, width), dtype=np.bool_),
        vm_names=tuple(f"v{i}" for i in range(n)),
        vm_mips=np.array(mips or [2500.0] * n, dtype=np.float64),
        vm_ram_mb=np.array(ram or [870.0] * n, dtype=np.float64),
        vm_demand=np.array(demand, dtype=np.float64),
        vm_host=host,
        vm_in_migration=np.zeros(n, dtype=np.bool_),
        vm_cores=np.ones(n),
    )


def no_history(n: int) -> Histories:
    return Histories(np.zeros((n, 30)), np.zeros(n, dtype=np.int64), np.zeros((n, 1)), np.zeros(n, dtype=np.int64))
