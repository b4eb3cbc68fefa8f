"""Plain data of the planner: one server's raw trace, and a set of traces aligned on a common grid.

Units, for every importer:
- ``cpu``: MHz-equivalents (cores x MHz x relative speed; PlanetLab's MIPS are used as is),
- ``mem``: bytes used,
- ``disk``: bytes/s read + written,
- ``net``: bytes/s received + transmitted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from corral.planning.errors import EmptyInputError, PlanningError
from corral.planning.limits import MAX_TIMESTAMP_S, InputLimits
from corral.planning.names import RESOURCES

RESOURCE_UNITS: Mapping[str, str] = {"cpu": "MHz", "mem": "bytes", "disk": "bytes/s", "net": "bytes/s"}

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ServerTrace:
    """One server as measured: sample times (unix seconds, ascending) and demand per resource.

    ``demand[r]`` has the same length as ``timestamps``; NaN marks a missing sample (a gap).
    ``capacity[r]`` is the server's own capacity in the same unit (used for its utilization before);
    a resource without one gets the server's peak demand (``align`` records that as assumed).
    """

    name: str
    timestamps: FloatArray
    demand: Mapping[str, FloatArray]
    capacity: Mapping[str, float]
    source: str = ""


@dataclass(frozen=True)
class TraceSet:
    """Servers aligned on one grid: ``demand[r]`` has shape (servers, steps), no NaN, all >= 0.

    ``assumed[r]`` says, in a few words, what of resource ``r``'s demand was assumed rather than
    measured (e.g. ``"assumed: CloudSim VM sizes"``); ``assumed_capacity[r]``, for which servers
    the traces gave no capacity of ``r`` (their peak stands in: only their utilization "before"
    rests on it). A resource absent from both is measured. The report flags them wherever it shows
    the figures they touch.
    """

    names: tuple[str, ...]
    start_s: float
    step_s: float
    demand: Mapping[str, FloatArray]
    capacity: Mapping[str, FloatArray]
    filled: npt.NDArray[np.int64]
    notes: tuple[str, ...] = field(default=())
    assumed: Mapping[str, str] = field(default_factory=dict)
    assumed_capacity: Mapping[str, str] = field(default_factory=dict)

    @property
    def n_servers(self) -> int:
        return len(self.names)

    @property
    def n_steps(self) -> int:
        first = next(iter(self.demand.values()))
        return int(first.shape[1])

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(r for r in RESOURCES if r in self.demand)

    def subset(self, names: Sequence[str]) -> TraceSet:
        """The same traces restricted to ``names`` (in that order)."""
        index = {n: i for i, n in enumerate(self.names)}
        idx = np.array([index[n] for n in names], dtype=np.int64)
        return TraceSet(
            names=tuple(names),
            start_s=self.start_s,
            step_s=self.step_s,
            demand={r: a[idx] for r, a in self.demand.items()},
            capacity={r: a[idx] for r, a in self.capacity.items()},
            filled=self.filled[idx],
            notes=self.notes,
            assumed=dict(self.assumed),
            assumed_capacity=dict(self.assumed_capacity),
        )


def make_traceset(
    names: Sequence[str],
    demand: Mapping[str, npt.ArrayLike],
    capacity: Mapping[str, npt.ArrayLike] | None = None,
    *,
    step_s: float = 300.0,
    start_s: float = 0.0,
    assumed: Mapping[str, str] | None = None,
) -> TraceSet:
    """Build an aligned TraceSet from arrays already on one grid (tests, synthetic data, the demo).

    A resource without a capacity gets each server's peak (recorded in ``assumed_capacity``);
    ``assumed`` says what of the demand was assumed rather than measured (see TraceSet). Raises
    PlanningError on mismatched shapes, NaN or negative values.
    """
    if not names:
        raise EmptyInputError("no servers given")
    if len(set(names)) != len(names):
        raise PlanningError("server names are not unique")
    dem: dict[str, FloatArray] = {}
    for r, a in demand.items():
        if r not in RESOURCES:
            raise PlanningError(f"unknown resource {r!r} (known: {', '.join(RESOURCES)})")
        arr = np.asarray(a, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(names):
            raise PlanningError(f"{r}: demand must have shape (servers={len(names)}, steps), got {arr.shape}")
        if arr.shape[1] == 0:
            raise PlanningError(f"{r}: no time steps")
        if not np.all(np.isfinite(arr)):
            raise PlanningError(f"{r}: demand contains NaN or infinite values")
        if np.any(arr < 0):
            raise PlanningError(f"{r}: demand contains negative values")
        dem[r] = arr
    if not dem:
        raise PlanningError("no resource given")
    steps = {a.shape[1] for a in dem.values()}
    if len(steps) != 1:
        raise PlanningError(f"resources have different numbers of steps: {sorted(steps)}")
    cap: dict[str, FloatArray] = {}
    no_capacity: dict[str, str] = {}
    for r, a in dem.items():
        c = None if capacity is None else capacity.get(r)
        if c is None:
            no_capacity[r] = CAPACITY_FROM_PEAK
        cap[r] = a.max(axis=1) if c is None else np.broadcast_to(np.asarray(c, np.float64), (len(names),)).copy()
        if np.any(~np.isfinite(cap[r]) | (cap[r] < 0)):
            raise PlanningError(f"{r}: capacities must be finite and non-negative")
        cap[r] = np.where(cap[r] > 0, cap[r], 1.0)  # an idle server with no stated capacity: 0 %
    return TraceSet(
        names=tuple(names),
        start_s=float(start_s),
        step_s=float(step_s),
        demand=dem,
        capacity=cap,
        filled=np.zeros(len(names), dtype=np.int64),
        assumed={r: v for r, v in (assumed or {}).items() if r in dem and v},
        assumed_capacity=no_capacity,
    )


#: What ``assumed_capacity`` says of a resource whose servers' capacities were not in the traces.
CAPACITY_FROM_PEAK = "capacity unknown: each server's peak used"


def _fill_gaps(v: FloatArray) -> tuple[FloatArray, int]:
    """Fill NaNs: inside the series by the larger of the two neighbouring samples, at the ends by
    the series' own peak (conservative: a gap never makes a server look lighter than it was)."""
    missing = np.isnan(v)
    n_missing = int(missing.sum())
    if n_missing == 0:
        return v, 0
    ok = np.flatnonzero(~missing)
    out = v.copy()
    if ok.size == 0:
        return np.zeros_like(v), n_missing
    peak = float(v[ok].max())
    out[: ok[0]] = peak
    out[ok[-1] + 1 :] = peak
    idx = np.flatnonzero(missing)
    idx = idx[(idx > ok[0]) & (idx < ok[-1])]
    if idx.size:
        right = ok[np.searchsorted(ok, idx)]
        left = ok[np.searchsorted(ok, idx) - 1]
        out[idx] = np.maximum(v[left], v[right])
    return out, n_missing


def _step(traces: Sequence[ServerTrace]) -> float:
    """The median interval between samples over all servers (of the positive ones when most are
    duplicates); 300 s when no server has two samples."""
    diffs = [np.diff(t.timestamps) for t in traces if t.timestamps.size > 1]
    if not diffs:
        return 300.0
    all_diffs = np.concatenate(diffs)
    step = float(np.median(all_diffs))
    if not step > 0:
        positive = all_diffs[all_diffs > 0]
        step = float(np.median(positive)) if positive.size else 300.0
    return step


def _check_trace(t: ServerTrace, resources: Sequence[str]) -> None:
    ts = t.timestamps
    if ts.ndim != 1:
        raise PlanningError(f"{t.name}: timestamps must be one-dimensional")
    if ts.size == 0:
        raise PlanningError(f"{t.name}: no samples")
    if not np.all(np.isfinite(ts)) or np.any(np.abs(ts) > MAX_TIMESTAMP_S):
        raise PlanningError(f"{t.name}: timestamps must be finite seconds within +-{MAX_TIMESTAMP_S:g}")
    if np.any(np.diff(ts) < 0):
        raise PlanningError(f"{t.name}: timestamps must be in ascending order")
    for r in resources:
        d = t.demand[r]
        if d.shape != ts.shape:
            raise PlanningError(f"{t.name}: {r} has {d.size} samples for {ts.size} timestamps")
        if np.any(np.isinf(d)) or np.any(d < 0):
            raise PlanningError(f"{t.name}: {r} demand must be finite and non-negative (NaN marks a gap)")


def align(
    traces: Sequence[ServerTrace], *, step_s: float | None = None, limits: InputLimits | None = None
) -> TraceSet:
    """Put raw traces on one common grid (documented in docs/planning.md, "Alignment").

    - step: ``step_s`` or the median interval between samples over all servers;
    - window: from the median first sample to the median last sample over all servers (so one
      server recorded in another period does not stretch the grid over weeks of gaps);
    - a server that covers less than half of that window is re-anchored: its own first sample
      is taken as the window's start (reported in ``notes``);
    - each sample goes to the nearest grid point (clock drift of a few seconds disappears); two
      samples on one point keep the larger;
    - missing points are filled: inside a series by the larger neighbouring sample, before its
      first or after its last sample by the series' peak. Their count per server is ``filled``.

    The grid is bounded by ``limits`` (steps, and servers x steps): traces whose timestamps span
    more are refused with a PlanningError before anything is allocated.
    """
    limits = limits or InputLimits()
    if not traces:
        raise EmptyInputError("no traces to align")
    names = [t.name for t in traces]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PlanningError(f"duplicate server names: {', '.join(repr(n) for n in dup[:5])}")
    resources = [r for r in RESOURCES if all(r in t.demand for t in traces)]
    if not resources:
        raise PlanningError("the traces share no resource")
    for t in traces:
        _check_trace(t, resources)
    if step_s is None:
        step_s = _step(traces)
    if not (math.isfinite(step_s) and step_s > 0):
        raise PlanningError(f"invalid step {step_s} s")
    starts = np.array([t.timestamps[0] for t in traces])
    ends = np.array([t.timestamps[-1] for t in traces])
    w0 = float(np.median(starts))
    w1 = float(np.median(ends))
    span = (w1 - w0) / step_s
    if not math.isfinite(span) or span + 1 > limits.grid_steps:
        raise PlanningError(
            f"the traces span {w1 - w0:g} s, more than {limits.grid_steps:,} steps of {step_s:g} s "
            "(the limit of the time grid): check the timestamps, or plan a shorter period"
        )
    n_steps = max(1, round(span) + 1)
    if n_steps * len(traces) > limits.grid_cells:
        raise PlanningError(
            f"{len(traces):,} servers x {n_steps:,} steps is more than {limits.grid_cells:,} grid points "
            "(the limit): plan fewer servers or a shorter period"
        )
    notes: list[str] = []
    dem = {r: np.full((len(traces), n_steps), np.nan) for r in resources}
    filled = np.zeros(len(traces), dtype=np.int64)
    reanchored: list[str] = []
    for i, t in enumerate(traces):
        with np.errstate(over="ignore", invalid="ignore"):  # far-away samples: +-inf, outside the grid
            fpos = np.rint((t.timestamps - w0) / step_s)
            inside = (fpos >= 0) & (fpos < n_steps)
            if inside.sum() < 0.5 * min(n_steps, t.timestamps.size):
                fpos = np.rint((t.timestamps - t.timestamps[0]) / step_s)
                inside = (fpos >= 0) & (fpos < n_steps)
                reanchored.append(t.name)
        p = fpos[inside].astype(np.int64)
        for r in resources:
            row = dem[r][i]
            vals = t.demand[r][inside]
            good = ~np.isnan(vals)
            # keep the larger of two samples landing on one grid point
            np.fmax.at(row, p[good], vals[good])
        counts = []
        for r in resources:
            dem[r][i], c = _fill_gaps(dem[r][i])
            counts.append(c)
        filled[i] = max(counts)
    if reanchored:
        notes.append(
            f"{len(reanchored)} server(s) recorded outside the common window were re-anchored to its start: "
            + ", ".join(reanchored[:5])
            + (" ..." if len(reanchored) > 5 else "")
        )
    n_filled = int((filled > 0).sum())
    if n_filled:
        notes.append(
            f"{int(filled.sum())} missing grid points over {n_filled} server(s) filled "
            "(inside: larger neighbour; edges: the server's peak)"
        )
    cap = {r: np.array([float(t.capacity.get(r, np.nan)) for t in traces]) for r in resources}
    no_capacity: dict[str, str] = {}
    for r in resources:
        bad = ~np.isfinite(cap[r]) | (cap[r] <= 0)
        cap[r][bad] = np.maximum(dem[r][bad].max(axis=1), 1e-12)
        n_bad = int(bad.sum())
        if n_bad == len(traces):
            no_capacity[r] = CAPACITY_FROM_PEAK
        elif n_bad:
            no_capacity[r] = f"capacity unknown for {n_bad} of {len(traces)} servers: their peak used"
    return TraceSet(
        names=tuple(names),
        start_s=w0,
        step_s=float(step_s),
        demand=dem,
        capacity=cap,
        filled=filled,
        notes=tuple(notes),
        assumed_capacity=no_capacity,
    )
