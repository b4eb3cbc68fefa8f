"""plan.json: the documented, self-contained form of a plan (schema "corral.plan/1")."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from corral.planning.errors import PlanFormatError
from corral.planning.planner import Plan, Validation, allowed_over_steps, before_utilization, host_utilization

SCHEMA = "corral.plan/1"
CHART_POINTS = 288  # time series in the chart section are max-pooled to at most this many points
CHART_HOSTS = 12  # hosts drawn one by one (the busiest); all hosts appear in the heat map
HEATMAP_COLS = 96
HEATMAP_ROWS = 300
LAYERS = 6  # per host chart: the largest servers, then "others"


def _pool(a: npt.NDArray[np.float64], points: int) -> npt.NDArray[np.float64]:
    """Max-pool the last axis to at most ``points`` values (peaks are kept, never averaged away)."""
    T = a.shape[-1]
    if points >= T:
        return a
    edges = np.linspace(0, T, points + 1).astype(int)
    return np.stack([a[..., s:e].max(axis=-1) for s, e in itertools.pairwise(edges)], axis=-1)


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def _dist(values: npt.NDArray[np.float64]) -> dict[str, Any]:
    v = values.ravel()
    if v.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0, "histogram": {"edges": [], "counts": []}}
    counts, edges = np.histogram(np.clip(v, 0, 1), bins=20, range=(0.0, 1.0))
    return {
        "mean": _r(v.mean()),
        "p50": _r(float(np.percentile(v, 50))),
        "p95": _r(float(np.percentile(v, 95))),
        "max": _r(v.max()),
        "histogram": {"edges": [_r(e, 3) for e in edges], "counts": [int(c) for c in counts]},
    }


def validation_to_json(v: Validation) -> dict[str, Any]:
    return {
        "label": v.label,
        "steps": v.steps,
        "servers_matched": v.servers_matched,
        "servers_missing": list(v.servers_missing),
        "servers_new": list(v.servers_new),
        "host_steps": v.host_steps,
        "over_cap_host_steps": v.over_cap_host_steps,
        "over_cap_fraction": _r(v.over_cap_fraction, 6),
        "over_100_host_steps": v.over_100_host_steps,
        "over_100_fraction": _r(v.over_100_fraction, 6),
        "hosts_ever_over_cap": v.hosts_ever_over_cap,
        "hosts_ever_over_100": v.hosts_ever_over_100,
        "max_utilization": _r(v.max_utilization),
        "mean_excess_over_cap": _r(v.mean_excess_over_cap),
        "per_host_over_cap_steps": list(v.per_host_over_cap),
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON data (see docs/planning.md, "plan.json")."""
    ts = plan.traces
    hosts = plan.hosts
    kind = plan.host_kind
    util = {r: host_utilization(ts, kind, plan.assignment, r) for r in plan.resources}
    host_rows = []
    for h, members in enumerate(hosts):
        host_rows.append(
            {
                "kind": kind.name,
                "servers": [ts.names[i] for i in members],
                "peak": {r: _r(util[r][h].max()) for r in plan.resources},
                "mean": {r: _r(util[r][h].mean()) for r in plan.resources},
            }
        )
    before_u = before_utilization(ts)
    after_cpu = host_utilization(ts, kind, plan.assignment, "cpu")
    placed_before = before_u[plan.assignment >= 0] if len(hosts) else before_u
    return {
        "schema": SCHEMA,
        "host_kind": kind.to_json(),
        "cap": plan.cap,
        "percentile": plan.percentile,
        "allowed_over_steps": allowed_over_steps(plan.percentile, ts.n_steps),
        "resources": list(plan.resources),
        "grid": {"start_s": ts.start_s, "step_s": ts.step_s, "steps": ts.n_steps},
        "hosts": host_rows,
        "unplaceable": [{"server": u.server, "reason": u.reason} for u in plan.unplaceable],
        "lower_bound": {"hosts": plan.lower_bound, "by": dict(plan.bound_details)},
        "gap": None if plan.gap is None else _r(plan.gap),
        "baselines": {"peak_ffd_hosts": plan.peak_ffd_hosts, "first_fit_hosts": plan.first_fit_hosts},
        "search": {"method": plan.method, "optimal": plan.optimal, "time_s": _r(plan.elapsed_s, 3)},
        "before": {"servers": ts.n_servers, "cpu_utilization": _dist(before_u)},
        "after": {"hosts": len(hosts), "cpu_utilization": _dist(after_cpu)},
        "utilization": {
            "before_mean": _r(placed_before.mean()) if placed_before.size else 0.0,
            "after_mean": _r(after_cpu.mean()) if after_cpu.size else 0.0,
        },
        "gaps_filled": {"servers": int((ts.filled > 0).sum()), "points": int(ts.filled.sum())},
        "costs": plan.costs.to_json(),
        "validation": None if plan.validation is None else validation_to_json(plan.validation),
        "notes": list(plan.notes),
        "chart": _chart(plan, util),
    }


def _chart(plan: Plan, util: Mapping[str, npt.NDArray[np.float64]]) -> dict[str, Any]:
    ts = plan.traces
    kind = plan.host_kind
    hosts = plan.hosts
    res = plan.resources
    if not hosts:
        return {"points": 0, "step_s": ts.step_s, "hosts": [], "heatmap": {"rows": [], "hosts": []}}
    worst = np.max(np.stack([util[r] for r in res]), axis=0)  # (hosts, steps)
    points = min(CHART_POINTS, ts.n_steps)
    busiest = np.argsort(-worst.max(axis=1), kind="stable")[:CHART_HOSTS]
    charts = []
    for h in sorted(busiest.tolist()):
        members = hosts[h]
        r = res[int(np.argmax([util[x][h].max() for x in res]))]
        series = ts.demand[r][members] / kind.capacity(r)
        order = np.argsort(-series.mean(axis=1), kind="stable")
        layers = [
            {"name": ts.names[members[j]], "values": [_r(v) for v in _pool(series[j], points)]}
            for j in order[:LAYERS].tolist()
        ]
        if len(members) > LAYERS:
            rest = series[order[LAYERS:]].sum(axis=0)
            layers.append({"name": f"{len(members) - LAYERS} others", "values": [_r(v) for v in _pool(rest, points)]})
        charts.append(
            {
                "host": h,
                "resource": r,
                "servers": len(members),
                "total": [_r(v) for v in _pool(series.sum(axis=0), points)],
                "layers": layers,
            }
        )
    rows_idx = np.argsort(-worst.max(axis=1), kind="stable")[:HEATMAP_ROWS]
    heat = _pool(worst[np.sort(rows_idx)], min(HEATMAP_COLS, ts.n_steps))
    return {
        "points": points,
        "step_s": ts.step_s * ts.n_steps / points,
        "hosts": charts,
        "heatmap": {"hosts": [int(i) for i in np.sort(rows_idx)], "rows": [[_r(v, 3) for v in row] for row in heat]},
    }


def write_plan_json(plan: Plan | Mapping[str, Any], path: str | Path) -> None:
    data = plan_to_json(plan) if isinstance(plan, Plan) else dict(plan)
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def check_plan_json(data: Any, where: str = "plan.json") -> dict[str, Any]:
    """Check the parts of the schema that the report and independent checkers rely on."""
    if not isinstance(data, dict):
        raise PlanFormatError(f"{where}: not a JSON object")
    if data.get("schema") != SCHEMA:
        raise PlanFormatError(f"{where}: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("hosts", "cap", "resources", "host_kind", "lower_bound", "costs", "before", "after", "chart"):
        if key not in data:
            raise PlanFormatError(f"{where}: missing key {key!r}")
    hosts = data["hosts"]
    if not isinstance(hosts, list) or not all(
        isinstance(h, dict) and isinstance(h.get("servers"), list) and "kind" in h for h in hosts
    ):
        raise PlanFormatError(f"{where}: 'hosts' must be a list of {{'kind': ..., 'servers': [...]}}")
    return data


def read_plan_json(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFormatError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFormatError(f"{p}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    return check_plan_json(data, str(p))
