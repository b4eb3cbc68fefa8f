"""plan.json: the documented, self-contained form of a plan (schema "corral.plan/1")."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from corral.planning.errors import PlanFormatError
from corral.planning.limits import MAX_PLAN_BYTES, read_small_text, write_text
from corral.planning.planner import (
    KindComparison,
    Plan,
    Validation,
    allowed_over_steps,
    before_utilization,
    binding_resources,
    bounds_by_resource,
    host_utilization,
    peak_need,
)

SCHEMA = "corral.plan/1"
CHART_POINTS = 288  # time series in the chart section are max-pooled to at most this many points
CHART_HOSTS = 12  # hosts drawn one by one (the busiest); all hosts appear in the heat map
HEATMAP_COLS = 96
HEATMAP_ROWS = 300
LAYERS = 6  # per host chart: the largest servers, then "others"
FLAT = 0.005  # a host's utilization that moves less than this (share of the host) is flat over time


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


def kinds_to_json(k: KindComparison, planned: str) -> dict[str, Any]:
    return {
        "planned": planned,
        "method": k.method,
        "servers": k.servers,
        "time_s": _r(k.time_s, 3),
        "options": [
            {
                "kind": o.kind,
                "hosts": o.hosts,
                "placed": o.placed,
                "unplaceable": o.unplaceable,
                "lower_bound": o.lower_bound,
                "binding": list(o.binding),
                "cost_per_year": _r(o.cost_per_year, 2),
                "purchase": _r(o.purchase, 2),
                "energy_kwh_year": _r(o.energy_kwh_year, 1),
                "cheapest": o.cheapest,
            }
            for o in k.options
        ],
    }


def _servers(plan: Plan, hosts: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Per server (in the traces' order): its host (index into ``hosts``, -1: unplaceable), and its
    peak and mean demand per planned resource in the units of corral.planning.model."""
    ts = plan.traces
    host_of = np.full(ts.n_servers, -1, dtype=np.int64)
    for h, members in enumerate(hosts):
        host_of[members] = h
    return {
        "names": list(ts.names),
        "host": [int(h) for h in host_of],
        "peak": {r: [_r(v, 3) for v in ts.demand[r].max(axis=1)] for r in plan.resources},
        "mean": {r: [_r(v, 3) for v in ts.demand[r].mean(axis=1)] for r in plan.resources},
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON data (see docs/planning.md, "plan.json")."""
    ts = plan.traces
    hosts = plan.hosts
    kind = plan.host_kind
    util = {r: host_utilization(ts, kind, plan.assignment, r) for r in plan.resources}
    placed = plan.assignment >= 0
    by_resource = bounds_by_resource(plan.bound_details, plan.resources)
    need = peak_need(ts, kind, plan.cap, plan.resources, placed)
    binding = binding_resources(by_resource, need)
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
            "resources": {
                r: {
                    "before_mean": _r(before_utilization(ts, r)[placed].mean()) if placed.any() else 0.0,
                    "after_mean": _r(util[r].mean()) if util[r].size else 0.0,
                }
                for r in plan.resources
            },
        },
        "binding": {
            "resources": list(binding),
            "by_resource": {r: {"bound": by_resource.get(r, 0), "peak_hosts": _r(need[r], 3)} for r in plan.resources},
        },
        "assumed": {r: ts.assumed[r] for r in plan.resources if ts.assumed.get(r)},
        "assumed_capacity": {r: ts.assumed_capacity[r] for r in plan.resources if ts.assumed_capacity.get(r)},
        "gaps_filled": {"servers": int((ts.filled > 0).sum()), "points": int(ts.filled.sum())},
        "costs": plan.costs.to_json(),
        "kinds": None if plan.kinds is None else kinds_to_json(plan.kinds, kind.name),
        "validation": None if plan.validation is None else validation_to_json(plan.validation),
        "notes": list(plan.notes),
        "servers": _servers(plan, hosts),
        "chart": _chart(plan, util, binding),
    }


def _chart_resource(res: Sequence[str], util: Mapping[str, npt.NDArray[np.float64]], h: int,
                    binding: Sequence[str]) -> str:
    """The resource a host's chart stacks its servers on: one that moves over time (a flat band shows
    nothing of the servers' demand), the binding one first, else the busiest; if none moves, the busiest."""
    moving = [r for r in res if float(np.ptp(util[r][h])) > FLAT]
    for r in binding:
        if r in moving:
            return r
    pool = moving or list(res)
    return pool[int(np.argmax([util[r][h].max() for r in pool]))]


def _chart(plan: Plan, util: Mapping[str, npt.NDArray[np.float64]], binding: Sequence[str]) -> dict[str, Any]:
    ts = plan.traces
    kind = plan.host_kind
    hosts = plan.hosts
    res = plan.resources
    if not hosts:
        return {"points": 0, "step_s": ts.step_s, "hosts": [], "heatmaps": []}
    worst = np.max(np.stack([util[r] for r in res]), axis=0)  # (hosts, steps)
    points = min(CHART_POINTS, ts.n_steps)
    busiest = np.argsort(-worst.max(axis=1), kind="stable")[:CHART_HOSTS]
    charts = []
    for h in sorted(busiest.tolist()):
        members = hosts[h]
        r = _chart_resource(res, util, h, binding)
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
                "lines": [
                    {"resource": x, "values": [_r(v) for v in _pool(util[x][h], points)]} for x in res if x != r
                ],
            }
        )
    rows_idx = np.sort(np.argsort(-worst.max(axis=1), kind="stable")[:HEATMAP_ROWS])
    heatmaps = []
    for r in res:
        u = util[r]
        if float(np.ptp(u, axis=1).max()) <= FLAT:  # every host flat: a table of one colour per row says it better
            means = u.mean(axis=1)
            heatmaps.append({"resource": r, "flat": True, "low": _r(means.min()), "high": _r(means.max()),
                             "hosts": [], "rows": []})  # fmt: skip
            continue
        heat = _pool(u[rows_idx], min(HEATMAP_COLS, ts.n_steps))
        heatmaps.append({"resource": r, "flat": False, "hosts": [int(i) for i in rows_idx],
                         "rows": [[_r(v, 3) for v in row] for row in heat]})  # fmt: skip
    return {
        "points": points,
        "step_s": ts.step_s * ts.n_steps / points,
        "hosts": charts,
        "heatmaps": heatmaps,
    }


def write_plan_json(plan: Plan | Mapping[str, Any], path: str | Path) -> None:
    """Write plan.json (replaced whole; any failure is one PlanningError naming the file)."""
    data = plan_to_json(plan) if isinstance(plan, Plan) else dict(plan)
    try:
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    except (ValueError, TypeError) as exc:
        raise PlanFormatError(f"plan {path}: cannot be written as JSON: {exc}") from None
    write_text(path, text, "plan")


# ---------------------------------------------------------------- the server -> host table
CSV_UNITS: Mapping[str, str] = {"cpu": "mhz", "mem": "bytes", "disk": "bytes_per_s", "net": "bytes_per_s"}


def assignment_records(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each server of a (checked) plan.json with its host: ``server``, ``host`` (numbered from 1 as
    in the report; None when unplaceable), ``kind`` (None when unplaceable), ``peak`` and ``mean``
    per planned resource (empty for plans written before per-server figures), ``note`` (why it is
    unplaceable). Placed servers host by host, then the unplaceable ones."""
    per = data.get("servers") or {}
    index = {n: i for i, n in enumerate(per.get("names", []))}
    peak, mean = per.get("peak", {}), per.get("mean", {})
    res = [r for r in data["resources"] if r in peak and r in mean]

    def figures(name: str) -> tuple[dict[str, float], dict[str, float]]:
        i = index.get(name)
        if i is None:
            return {}, {}
        return {r: peak[r][i] for r in res}, {r: mean[r][i] for r in res}

    out = []
    for h, host in enumerate(data["hosts"]):
        for name in host["servers"]:
            pk_, mn = figures(name)
            out.append({"server": name, "host": h + 1, "kind": host["kind"], "peak": pk_, "mean": mn, "note": ""})
    for u in data["unplaceable"]:
        pk_, mn = figures(u["server"])
        out.append({"server": u["server"], "host": None, "kind": None, "peak": pk_, "mean": mn, "note": u["reason"]})
    return out


def assignment_csv(data: Mapping[str, Any]) -> str:
    """The server -> host table as CSV: ``server,host,kind``, then per planned resource its peak and
    mean demand (``cpu_peak_mhz``, ``mem_mean_bytes``, ...) and where they come from (``cpu_source``:
    ``measured``, or what was assumed), then ``note`` (why a server is unplaceable: host and kind
    empty)."""
    records = assignment_records(data)
    per = data.get("servers") or {}
    res = [r for r in data["resources"] if r in per.get("peak", {}) and r in per.get("mean", {})]
    assumed = data.get("assumed", {})
    header = ["server", "host", "kind"]
    for r in res:
        unit = CSV_UNITS.get(r, "value")
        header += [f"{r}_peak_{unit}", f"{r}_mean_{unit}", f"{r}_source"]
    header.append("note")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for rec in records:
        row = [rec["server"], "" if rec["host"] is None else str(rec["host"]), rec["kind"] or ""]
        for r in res:
            row += [_csv_number(rec["peak"].get(r)), _csv_number(rec["mean"].get(r)), assumed.get(r) or "measured"]
        row.append(rec["note"])
        w.writerow(row)
    return buf.getvalue()


def _csv_number(v: float | None) -> str:
    return "" if v is None else f"{v:.10g}"


def write_assignment_csv(data: Plan | Mapping[str, Any], path: str | Path) -> Path:
    """Write the server -> host table (``assignment_csv``); any failure is one PlanningError naming the file."""
    d = plan_to_json(data) if isinstance(data, Plan) else data
    return write_text(path, assignment_csv(d), "CSV")


# ---------------------------------------------------------------- reading it back
MAX_DEPTH = 32  # plan.json nests 5 levels deep
MAX_NUMBER = 1e300  # finite, and far from overflowing when the report scales it
MAX_COUNT = 10**15


class _Check:
    """Type checks of plan.json, each naming where in the document it failed."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, at: str, problem: str) -> PlanFormatError:
        return PlanFormatError(f"{self.where}: {at}: {problem}")

    def obj(self, v: Any, at: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(at, f"must be an object, got {_kind(v)}")
        return v

    def key(self, d: dict[str, Any], key: str, at: str) -> Any:
        if key not in d:
            raise PlanFormatError(f"{self.where}: missing key {(f'{at}.{key}' if at else key)!r}")
        return d[key]

    def num(self, v: Any, at: str, *, lo: float = -MAX_NUMBER, hi: float = MAX_NUMBER, none: bool = False) -> Any:
        if v is None and none:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(at, f"must be a number{' or null' if none else ''}, got {_kind(v)}")
        if not (math.isfinite(v) and lo <= v <= hi):
            raise self.fail(at, f"must be a number from {lo:g} to {hi:g}, got {v!r}"[:200])
        return v

    def flag(self, v: Any, at: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(at, f"must be true or false, got {_kind(v)}")
        return v

    def count(self, v: Any, at: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
            raise self.fail(at, f"must be a whole number from 0 to {MAX_COUNT:g}, got {_kind(v)}")
        return v

    def text(self, v: Any, at: str, *, none: bool = False) -> Any:
        if v is None and none:
            return v
        if not isinstance(v, str):
            raise self.fail(at, f"must be a string, got {_kind(v)}")
        return v

    def seq(self, v: Any, at: str) -> list[Any]:
        if not isinstance(v, list):
            raise self.fail(at, f"must be a list, got {_kind(v)}")
        return v

    def nums(self, v: Any, at: str) -> list[Any]:
        items = self.seq(v, at)
        for i, x in enumerate(items):
            self.num(x, f"{at}[{i}]")
        return items

    def fields(self, d: dict[str, Any], at: str, check: str, keys: tuple[str, ...]) -> None:
        for k in keys:
            v = self.key(d, k, at)
            getattr(self, check)(v, f"{at}.{k}")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, int | float) else type(v).__name__
    )


def _walk(data: Any, c: _Check) -> None:
    """Every string in the document is printable (it may reach a terminal), every number finite,
    and nothing is nested deeper than MAX_DEPTH (no recursion: any depth is walked safely)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        v, at, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise c.fail(at or "(top)", f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str) or not k.isprintable():
                    raise c.fail(at or "(top)", "a key contains control or unprintable characters")
                stack.append((x, f"{at}.{k}" if at else k, depth + 1))
        elif isinstance(v, list):
            stack.extend((x, f"{at}[{i}]", depth + 1) for i, x in enumerate(v))
        elif isinstance(v, str):
            if not v.isprintable():
                raise c.fail(at, "contains control or unprintable characters")
        elif isinstance(v, float) and not math.isfinite(v):
            raise c.fail(at, "not a finite number")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_COUNT:
            raise c.fail(at, f"number above {MAX_COUNT:g}")
        elif not (v is None or isinstance(v, bool | int | float)):
            raise c.fail(at, f"unexpected {_kind(v)}")


def _check_dist(c: _Check, d: Any, at: str) -> None:
    dist = c.obj(d, at)
    c.fields(dist, at, "num", ("mean", "p50", "p95", "max"))
    hist = c.obj(c.key(dist, "histogram", at), f"{at}.histogram")
    counts = c.seq(c.key(hist, "counts", f"{at}.histogram"), f"{at}.histogram.counts")
    for i, x in enumerate(counts):
        c.count(x, f"{at}.histogram.counts[{i}]")
    c.nums(c.key(hist, "edges", f"{at}.histogram"), f"{at}.histogram.edges")


def _check_heatmap(c: _Check, heat: dict[str, Any], at: str) -> None:
    rows = c.seq(c.key(heat, "rows", at), f"{at}.rows")
    hosts = c.seq(c.key(heat, "hosts", at), f"{at}.hosts")
    for i, h in enumerate(hosts):
        c.count(h, f"{at}.hosts[{i}]")
    if len(hosts) < len(rows):
        raise c.fail(f"{at}.hosts", f"must name a host for each of the {len(rows)} rows")
    width = None
    for i, row in enumerate(rows):
        values = c.nums(row, f"{at}.rows[{i}]")
        if not values or (width is not None and len(values) != width):
            raise c.fail(f"{at}.rows[{i}]", "rows must be non-empty and all of the same length")
        width = len(values)


def _check_chart(c: _Check, chart: dict[str, Any]) -> None:
    for i, ch in enumerate(c.seq(c.key(chart, "hosts", "chart"), "chart.hosts")):
        at = f"chart.hosts[{i}]"
        ch = c.obj(ch, at)
        c.fields(ch, at, "count", ("host", "servers"))
        c.text(c.key(ch, "resource", at), f"{at}.resource")
        total = c.nums(c.key(ch, "total", at), f"{at}.total")
        for j, layer in enumerate(c.seq(c.key(ch, "layers", at), f"{at}.layers")):
            lat = f"{at}.layers[{j}]"
            layer = c.obj(layer, lat)
            c.text(c.key(layer, "name", lat), f"{lat}.name")
            if len(c.nums(c.key(layer, "values", lat), f"{lat}.values")) != len(total):
                raise c.fail(f"{lat}.values", f"must have as many values as {at}.total ({len(total)})")
        for j, line in enumerate(c.seq(ch.get("lines", []), f"{at}.lines")):
            lat = f"{at}.lines[{j}]"
            line = c.obj(line, lat)
            c.text(c.key(line, "resource", lat), f"{lat}.resource")
            if len(c.nums(c.key(line, "values", lat), f"{lat}.values")) != len(total):
                raise c.fail(f"{lat}.values", f"must have as many values as {at}.total ({len(total)})")
    if "heatmaps" in chart:  # one per planned resource (plans before it: one "heatmap", the worst resource)
        for i, heat in enumerate(c.seq(chart["heatmaps"], "chart.heatmaps")):
            at = f"chart.heatmaps[{i}]"
            heat = c.obj(heat, at)
            c.text(c.key(heat, "resource", at), f"{at}.resource")
            if c.flag(c.key(heat, "flat", at), f"{at}.flat"):
                c.fields(heat, at, "num", ("low", "high"))
            _check_heatmap(c, heat, at)
    else:
        _check_heatmap(c, c.obj(c.key(chart, "heatmap", "chart"), "chart.heatmap"), "chart.heatmap")


def _check_kinds(c: _Check, k: dict[str, Any]) -> None:
    at = "kinds"
    c.text(c.key(k, "planned", at), f"{at}.planned")
    c.text(c.key(k, "method", at), f"{at}.method")
    c.count(c.key(k, "servers", at), f"{at}.servers")
    c.num(c.key(k, "time_s", at), f"{at}.time_s", lo=0.0)
    for i, o in enumerate(c.seq(c.key(k, "options", at), f"{at}.options")):
        oat = f"{at}.options[{i}]"
        o = c.obj(o, oat)
        c.text(c.key(o, "kind", oat), f"{oat}.kind")
        c.fields(o, oat, "count", ("hosts", "placed", "unplaceable", "lower_bound"))
        c.fields(o, oat, "num", ("cost_per_year", "purchase", "energy_kwh_year"))
        c.flag(c.key(o, "cheapest", oat), f"{oat}.cheapest")
        for j, r in enumerate(c.seq(c.key(o, "binding", oat), f"{oat}.binding")):
            c.text(r, f"{oat}.binding[{j}]")


def _check_servers(c: _Check, d: dict[str, Any]) -> None:
    at = "servers"
    names = c.seq(c.key(d, "names", at), f"{at}.names")
    for i, n in enumerate(names):
        c.text(n, f"{at}.names[{i}]")
    host = c.seq(c.key(d, "host", at), f"{at}.host")
    for i, h in enumerate(host):
        if isinstance(h, bool) or not isinstance(h, int) or not -1 <= h <= MAX_COUNT:
            raise c.fail(f"{at}.host[{i}]", f"must be a host index or -1, got {_kind(h)}")
    if len(host) != len(names):
        raise c.fail(f"{at}.host", f"must have one entry per server ({len(names)})")
    for key in ("peak", "mean"):
        for r, values in c.obj(c.key(d, key, at), f"{at}.{key}").items():
            if len(c.nums(values, f"{at}.{key}.{r}")) != len(names):
                raise c.fail(f"{at}.{key}.{r}", f"must have one value per server ({len(names)})")


def _check_added(c: _Check, data: dict[str, Any]) -> None:
    """Sections plans carry since the report tells what binds and what was assumed (optional: older
    plans have none of them, and render without them)."""
    for key in ("assumed", "assumed_capacity"):
        for r, text in c.obj(data.get(key, {}), key).items():
            c.text(text, f"{key}.{r}")
    util = data["utilization"]
    for r, u in c.obj(util.get("resources", {}), "utilization.resources").items():
        at = f"utilization.resources.{r}"
        c.fields(c.obj(u, at), at, "num", ("before_mean", "after_mean"))
    if "binding" in data:
        b = c.obj(data["binding"], "binding")
        for i, r in enumerate(c.seq(c.key(b, "resources", "binding"), "binding.resources")):
            c.text(r, f"binding.resources[{i}]")
        for r, v in c.obj(c.key(b, "by_resource", "binding"), "binding.by_resource").items():
            at = f"binding.by_resource.{r}"
            v = c.obj(v, at)
            c.count(c.key(v, "bound", at), f"{at}.bound")
            c.num(c.key(v, "peak_hosts", at), f"{at}.peak_hosts", lo=0.0)
    if data.get("kinds") is not None:
        _check_kinds(c, c.obj(data["kinds"], "kinds"))
    if "servers" in data:
        _check_servers(c, c.obj(data["servers"], "servers"))


def _check_costs(c: _Check, costs: dict[str, Any]) -> None:
    for side in ("before", "after"):
        at = f"costs.{side}"
        d = c.obj(c.key(costs, side, "costs"), at)
        c.count(c.key(d, "machines", at), f"{at}.machines")
        c.text(c.key(d, "kind", at), f"{at}.kind")
        c.fields(d, at, "num", ("energy_kwh_year", "energy", "amortization", "upkeep", "admin", "rack", "total"))
    c.fields(costs, "costs", "num", ("capex", "savings_per_year"))
    c.num(c.key(costs, "payback_years", "costs"), "costs.payback_years", none=True)
    params = c.obj(c.key(costs, "params", "costs"), "costs.params")
    c.text(c.key(params, "currency", "costs.params"), "costs.params.currency")
    c.fields(
        params, "costs.params", "num",
        ("energy_price_per_kwh", "pue", "amortization_years", "admin_per_machine_year", "rack_unit_per_year"),
    )  # fmt: skip


def _check_validation(c: _Check, v: dict[str, Any]) -> None:
    at = "validation"
    c.text(c.key(v, "label", at), f"{at}.label", none=True)
    c.fields(
        v, at, "count",
        ("servers_matched", "over_cap_host_steps", "over_100_host_steps", "hosts_ever_over_cap", "hosts_ever_over_100"),
    )  # fmt: skip
    c.fields(v, at, "num", ("over_cap_fraction", "over_100_fraction", "max_utilization", "mean_excess_over_cap"))
    for key in ("servers_missing", "servers_new"):
        for i, x in enumerate(c.seq(c.key(v, key, at), f"{at}.{key}")):
            c.text(x, f"{at}.{key}[{i}]")


def check_plan_json(data: Any, where: str = "plan.json") -> dict[str, Any]:
    """Check everything the report, the terminal summary and independent checkers read: a plan that
    passes renders without error; anything else is a PlanFormatError naming the field."""
    c = _Check(where)
    if not isinstance(data, dict):
        raise PlanFormatError(f"{where}: not a JSON object")
    if data.get("schema") != SCHEMA:
        schema = data.get("schema")
        shown = repr(schema)[:60] if isinstance(schema, str | int | float | type(None)) else _kind(schema)
        raise PlanFormatError(f"{where}: schema is {shown}, expected {SCHEMA!r}")
    for key in ("hosts", "cap", "resources", "host_kind", "lower_bound", "costs", "before", "after", "chart"):
        if key not in data:
            raise PlanFormatError(f"{where}: missing key {key!r}")
    _walk(data, c)
    hosts = data["hosts"]
    if not isinstance(hosts, list) or not all(
        isinstance(h, dict) and isinstance(h.get("servers"), list) and "kind" in h for h in hosts
    ):
        raise PlanFormatError(f"{where}: 'hosts' must be a list of {{'kind': ..., 'servers': [...]}}")
    for i, h in enumerate(hosts):
        c.text(h["kind"], f"hosts[{i}].kind")
        for j, s in enumerate(h["servers"]):
            c.text(s, f"hosts[{i}].servers[{j}]")
    kind = c.obj(data["host_kind"], "host_kind")
    c.text(c.key(kind, "name", "host_kind"), "host_kind.name")
    c.num(data["cap"], "cap", lo=1e-9, hi=1.0)
    c.num(c.key(data, "percentile", ""), "percentile", lo=1e-9, hi=100.0, none=True)
    for i, r in enumerate(c.seq(data["resources"], "resources")):
        c.text(r, f"resources[{i}]")
    grid = c.obj(c.key(data, "grid", ""), "grid")
    c.count(c.key(grid, "steps", "grid"), "grid.steps")
    c.num(c.key(grid, "step_s", "grid"), "grid.step_s", lo=0.0)
    for i, u in enumerate(c.seq(c.key(data, "unplaceable", ""), "unplaceable")):
        u = c.obj(u, f"unplaceable[{i}]")
        c.text(c.key(u, "server", f"unplaceable[{i}]"), f"unplaceable[{i}].server")
        c.text(c.key(u, "reason", f"unplaceable[{i}]"), f"unplaceable[{i}].reason")
    lb = c.obj(data["lower_bound"], "lower_bound")
    c.count(c.key(lb, "hosts", "lower_bound"), "lower_bound.hosts")
    for k, v in c.obj(c.key(lb, "by", "lower_bound"), "lower_bound.by").items():
        c.num(v, f"lower_bound.by.{k}")
    c.num(c.key(data, "gap", ""), "gap", none=True)
    base = c.obj(c.key(data, "baselines", ""), "baselines")
    c.fields(base, "baselines", "count", ("peak_ffd_hosts", "first_fit_hosts"))
    search = c.obj(c.key(data, "search", ""), "search")
    c.text(c.key(search, "method", "search"), "search.method")
    c.num(c.key(search, "time_s", "search"), "search.time_s", lo=0.0)
    for side, count_key in (("before", "servers"), ("after", "hosts")):
        d = c.obj(data[side], side)
        c.count(c.key(d, count_key, side), f"{side}.{count_key}")
        _check_dist(c, c.key(d, "cpu_utilization", side), f"{side}.cpu_utilization")
    util = c.obj(c.key(data, "utilization", ""), "utilization")
    c.fields(util, "utilization", "num", ("before_mean", "after_mean"))
    _check_added(c, data)
    if "gaps_filled" in data:
        c.fields(c.obj(data["gaps_filled"], "gaps_filled"), "gaps_filled", "count", ("servers", "points"))
    _check_costs(c, c.obj(data["costs"], "costs"))
    v = data.get("validation")
    if v is not None:
        _check_validation(c, c.obj(v, "validation"))
    for i, n in enumerate(c.seq(data.get("notes", []), "notes")):
        c.text(n, f"notes[{i}]")
    _check_chart(c, c.obj(data["chart"], "chart"))
    return data


def read_plan_json(path: str | Path) -> dict[str, Any]:
    """A plan.json file, checked (check_plan_json); at most MAX_PLAN_BYTES of UTF-8 JSON."""
    p = Path(path)
    text = read_small_text(p, "plan", MAX_PLAN_BYTES, PlanFormatError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFormatError(f"{p}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise PlanFormatError(f"{p}: invalid JSON: {str(exc)[:100] or 'nested too deeply'}") from None
    return check_plan_json(data, str(p))
