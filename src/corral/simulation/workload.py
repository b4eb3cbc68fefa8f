"""The guests to simulate, read through the planner's importers (the imperative edge).

PlanetLab folders (CloudSim's layout) become CloudSim's experiment exactly: one 1-vCPU guest per
file, sized by contiguous blocks of ceil(n/4) files (MIPS 2500/2000/1000/500, RAM
870/1740/1740/613 MB, 100 Mbit/s), utilization = the file's percent / 100. CloudSim numbers the
files in the order ``File.listFiles()`` returns them, which is not sorted: Corral takes them in
the order of the archive (or of the directory listing) by default, and by name with
``vm_order="name"``. The block a file falls in decides its size, so the order changes the results;
the figures tabled in ../shared/data/README.md were made in archive order.

Bitbrains, ``corral collect`` and plain CSV traces go through ``load_traces`` (aligned on one
grid): a guest's size is its provisioned CPU (MHz), its utilization its demand over that size
(clipped to 1), its memory its provisioned memory; disk and network demand are kept for the
realistic model.
"""

from __future__ import annotations

import math
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from corral.planning.errors import EmptyInputError, TraceFormatError
from corral.planning.importers import (
    PlanetLabSizes,
    detect_format,
    load_traces,
    read_planetlab_file,
    unpacked,
)
from corral.planning.names import FORMATS
from corral.simulation.errors import SimulationError

FloatArray = npt.NDArray[np.float64]
MIB = 1024.0 * 1024.0
VM_BW_KBIT = 100_000.0  # CloudSim's VM_BW: 100 Mbit/s
VM_ORDERS = ("input", "name")


@dataclass(frozen=True)
class Workload:
    """Guests on one time grid. ``utilization[v, k]`` is guest v's CPU demand as a fraction of its
    size at sample k; the array has one extra column repeating the last sample (CloudSim's)."""

    names: tuple[str, ...]
    mips: FloatArray
    ram_mb: FloatArray
    bw_kbit: FloatArray
    utilization: FloatArray
    step_s: float
    fmt: str = "planetlab"
    source: str = ""
    extra: Mapping[str, FloatArray] = field(default_factory=dict)  # realistic model: mem (MB), disk, net (B/s)
    notes: tuple[str, ...] = ()
    vcpus: FloatArray | None = None  # None: as many as the size needs on the fleet's fastest core

    @property
    def n_vms(self) -> int:
        return len(self.names)

    @property
    def n_steps(self) -> int:
        return int(self.utilization.shape[1]) - 1

    @property
    def duration_s(self) -> float:
        return self.n_steps * self.step_s

    def demand_mips(self) -> FloatArray:
        """(guests, steps) CPU demand in MIPS at each sample."""
        return self.utilization[:, :-1] * self.mips[:, None]


def workload_from_arrays(
    names: Sequence[str],
    utilization: npt.ArrayLike,
    mips: npt.ArrayLike,
    ram_mb: npt.ArrayLike,
    *,
    step_s: float = 300.0,
    bw_kbit: float = VM_BW_KBIT,
) -> Workload:
    """A workload from arrays (tests, synthetic data): ``utilization`` is (guests, steps) in 0..1;
    1-vCPU guests, as CloudSim's."""
    u = np.asarray(utilization, dtype=np.float64)
    if u.ndim != 2 or u.shape[0] != len(names) or u.shape[1] == 0:
        raise SimulationError(f"utilization must have shape (guests={len(names)}, steps>0), got {u.shape}")
    if not np.all(np.isfinite(u)) or np.any(u < 0) or np.any(u > 1):
        raise SimulationError("utilization must be finite and within 0..1")
    full = np.concatenate([u, u[:, -1:]], axis=1)
    n = len(names)
    return Workload(
        names=tuple(names),
        mips=np.broadcast_to(np.asarray(mips, dtype=np.float64), (n,)).copy(),
        ram_mb=np.broadcast_to(np.asarray(ram_mb, dtype=np.float64), (n,)).copy(),
        bw_kbit=np.full(n, float(bw_kbit)),
        utilization=full,
        step_s=float(step_s),
        fmt="arrays",
        vcpus=np.ones(n),
    )


def _archive_order(archive: Path) -> list[str]:
    with tarfile.open(archive, "r:gz") as tf:
        return [Path(m.name).name for m in tf.getmembers() if m.isfile()]


def _listing(folder: Path) -> list[Path]:
    """The folder's files in directory order, as Java's File.listFiles returns them."""
    return [folder / e for e in os.listdir(folder) if not e.startswith(".") and (folder / e).is_file()]


def _planetlab_files(originals: Sequence[Path], paths: Sequence[Path], vm_order: str) -> list[Path]:
    files: list[Path] = []
    for orig, p in zip(originals, paths, strict=True):
        if p.is_dir():
            if orig.is_file():  # an archive unpacked to p: its member order
                listed = [p / name for name in _archive_order(orig)]
                found = [f for f in listed if f.is_file()]
                found += [f for f in _listing(p) if f not in set(found)]
            else:
                found = _listing(p)
            files += found
        else:
            files.append(p)
    if vm_order == "name":
        files.sort(key=lambda f: f.name)
    return files


def load_workload(
    paths: Sequence[str | Path],
    fmt: str = "auto",
    *,
    vm_order: str = "input",
    sizes: PlanetLabSizes | None = None,
) -> Workload:
    """Read traces (folders, files or .tar.gz) in one format; raises a planning or simulation
    error (one line) on empty input, unequal PlanetLab traces or a malformed file."""
    if fmt not in FORMATS:
        raise SimulationError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if vm_order not in VM_ORDERS:
        raise SimulationError(f"unknown VM order {vm_order!r} (choose from {', '.join(VM_ORDERS)})")
    if not paths:
        raise EmptyInputError("no trace paths given")
    originals = [Path(p) for p in paths]
    with unpacked(originals) as ps:
        kinds = {detect_format(p) for p in ps} if fmt == "auto" else {fmt}
        if len(kinds) > 1:
            raise SimulationError(f"the inputs mix formats: {', '.join(sorted(kinds))}")
        kind = kinds.pop()
        if kind == "planetlab":
            return _load_planetlab(_planetlab_files(originals, ps, vm_order), sizes or PlanetLabSizes(), originals)
    return _load_aligned(originals, kind)


def _load_planetlab(files: list[Path], sizes: PlanetLabSizes, originals: Sequence[Path]) -> Workload:
    if not files:
        raise EmptyInputError("no trace files")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise SimulationError("two trace files share a name (the name is the guest's)")
    series = [read_planetlab_file(f) for f in files]
    lengths = np.array([s.size for s in series])
    common = int(np.bincount(lengths).argmax())
    for f, s in zip(files, series, strict=True):
        if s.size != common:
            raise TraceFormatError(str(f), None, f"{s.size} samples while the other files have {common}")
    n = len(files)
    block = math.ceil(n / len(sizes.mips))
    kind = np.minimum(np.arange(n) // block, len(sizes.mips) - 1)
    u = np.empty((n, common + 1))
    for i, s in enumerate(series):
        u[i, :common] = s / 100.0
    u[:, common] = u[:, common - 1]
    return Workload(
        names=tuple(names),
        mips=np.asarray(sizes.mips, dtype=np.float64)[kind],
        ram_mb=np.asarray(sizes.ram_mb, dtype=np.float64)[kind],
        bw_kbit=np.full(n, VM_BW_KBIT),
        utilization=u,
        step_s=float(sizes.step_s),
        fmt="planetlab",
        source=", ".join(str(p) for p in originals),
        vcpus=np.ones(n),  # CloudSim's VM_PES
    )


def _load_aligned(originals: Sequence[Path], fmt: str) -> Workload:
    ts = load_traces(originals, fmt)
    if "cpu" not in ts.demand:
        raise SimulationError("the traces have no CPU column: the simulator needs CPU demand")
    mips = np.asarray(ts.capacity["cpu"], dtype=np.float64)
    raw = ts.demand["cpu"] / mips[:, None]
    clipped = int((raw > 1.0).sum())
    u = np.clip(raw, 0.0, 1.0)
    u = np.concatenate([u, u[:, -1:]], axis=1)
    notes = list(ts.notes)
    if clipped:
        notes.append(f"{clipped} CPU samples above the guest's size were clipped to 100 %")
    ram = ts.capacity["mem"] / MIB if "mem" in ts.capacity else np.full(ts.n_servers, 1024.0)
    extra: dict[str, FloatArray] = {}
    if "mem" in ts.demand:
        extra["mem"] = ts.demand["mem"] / MIB
    for r in ("disk", "net"):
        if r in ts.demand:
            extra[r] = np.asarray(ts.demand[r], dtype=np.float64)
    return Workload(
        names=ts.names,
        mips=mips,
        ram_mb=np.asarray(ram, dtype=np.float64),
        bw_kbit=np.full(ts.n_servers, VM_BW_KBIT),
        utilization=u,
        step_s=ts.step_s,
        fmt=fmt,
        source=", ".join(str(p) for p in originals),
        extra=extra,
        notes=tuple(notes),
    )
