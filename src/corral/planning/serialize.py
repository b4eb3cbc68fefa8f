"""plan.json: the documented, self-contained form of a plan (schema "corral.plan/1")."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from corral.planning.errors import PlanFormatError
from corral.planning.limits import MAX_PLAN_BYTES, read_small_text, write_text
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
    """Write plan.json (replaced whole; any failure is one PlanningError naming the file)."""
    data = plan_to_json(plan) if isinstance(plan, Plan) else dict(plan)
    try:
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    except (ValueError, TypeError) as exc:
        raise PlanFormatError(f"plan {path}: cannot be written as JSON: {exc}") from None
    write_text(path, text, "plan")


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
    heat = c.obj(c.key(chart, "heatmap", "chart"), "chart.heatmap")
    rows = c.seq(c.key(heat, "rows", "chart.heatmap"), "chart.heatmap.rows")
    hosts = c.seq(c.key(heat, "hosts", "chart.heatmap"), "chart.heatmap.hosts")
    for i, h in enumerate(hosts):
        c.count(h, f"chart.heatmap.hosts[{i}]")
    if len(hosts) < len(rows):
        raise c.fail("chart.heatmap.hosts", f"must name a host for each of the {len(rows)} rows")
    width = None
    for i, row in enumerate(rows):
        values = c.nums(row, f"chart.heatmap.rows[{i}]")
        if not values or (width is not None and len(values) != width):
            raise c.fail(f"chart.heatmap.rows[{i}]", "rows must be non-empty and all of the same length")
        width = len(values)


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
