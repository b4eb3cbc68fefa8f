"""The report: one self-contained HTML file (inline CSS and SVG, no script, no network) and a
short terminal summary, both rendered from plan.json data.

Truth first: the headline names the resource that bounds the host count and shows every planned
resource's utilization before and after, in words that say which way it went; figures that were
assumed rather than measured (``assumed`` in plan.json) are flagged wherever they are shown; the
host kinds of the catalog are compared (``kinds``), the cheapest marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from corral.planning.limits import write_text
from corral.planning.planner import Plan, binding_resources, bounds_by_resource, human
from corral.planning.serialize import assignment_records, check_plan_json, plan_to_json

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac")
RED = "#d62728"
LINE_COLORS = ("#222222", "#8c564b", "#17becf", "#e377c2")  # other resources' lines on a host's chart
RESOURCE_NAMES = {"cpu": "CPU", "mem": "memory", "disk": "disk", "net": "network"}
TABLE_ROWS = 5_000  # the server -> host table in the HTML stops here (the CSV holds every server)


def _data(plan: Plan | Mapping[str, Any]) -> dict[str, Any]:
    return plan_to_json(plan) if isinstance(plan, Plan) else check_plan_json(dict(plan))


def _pct(x: float | None, nd: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{nd}f} %"


def _money(x: float, cur: str) -> str:
    return f"{x:,.0f} {cur}"


def resource_name(r: str) -> str:
    """A resource as the report says it (``mem`` -> ``memory``)."""
    return RESOURCE_NAMES.get(r, r)


def change_words(before: float | None, after: float, nd: int = 1) -> str:
    """How a utilization changed, in words that never call a drop a rise: "rises from 12.3 % to
    15.1 %", "falls from 12.3 % to 9.3 %", "stays at 12.3 %" (equal once rounded to ``nd``
    decimals of a percent), "is 9.3 % after (unknown before)"."""
    b, a = _pct(before, nd), _pct(after, nd)
    if before is None:
        return f"is {a} after (unknown before)"
    if a == b:
        return f"stays at {a}"
    return f"{'rises' if after > before else 'falls'} from {b} to {a}"


def assumed_text(d: Mapping[str, Any], r: str) -> str:
    """What of resource ``r``'s demand was assumed rather than measured ('' when it was measured)."""
    text = d.get("assumed", {}).get(r)
    return text if isinstance(text, str) else ""


def before_flags(d: Mapping[str, Any], r: str) -> list[str]:
    """The assumptions under resource ``r``'s utilization before and after: its demand's, and the
    servers' capacities (which only the figure before rests on)."""
    cap = d.get("assumed_capacity", {}).get(r)
    return [t for t in (assumed_text(d, r), f"before: {cap}" if isinstance(cap, str) and cap else "") if t]


def flagged(d: Mapping[str, Any], r: str) -> str:
    """The resource's name with its assumption, if any: "memory (assumed: CloudSim VM sizes)"."""
    text = assumed_text(d, r)
    return f"{resource_name(r)} ({text})" if text else resource_name(r)


def utilization_by_resource(d: Mapping[str, Any]) -> list[tuple[str, float | None, float]]:
    """(resource, mean before, mean after) for every planned resource: before, each placed server
    of its own capacity; after, each host of its capacity. Plans written before per-resource
    figures have CPU only."""
    util = d["utilization"]
    per = util.get("resources")
    if isinstance(per, dict) and per:
        out: list[tuple[str, float | None, float]] = []
        for r in d["resources"]:
            u = per.get(r)
            if isinstance(u, dict):
                out.append((r, u["before_mean"], u["after_mean"]))
        return out
    return [("cpu", util["before_mean"], util["after_mean"])]


def binding_of(d: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, int], dict[str, float]]:
    """(the binding resource(s), each planned resource's own bound in hosts, each one's busiest-step
    demand in capped hosts when known), from ``binding`` or, for older plans, ``lower_bound.by``."""
    res = list(d["resources"])
    b = d.get("binding")
    if isinstance(b, dict):
        by_r = b["by_resource"]
        by = {r: int(by_r[r]["bound"]) for r in res if isinstance(by_r.get(r), dict)}
        need = {r: float(by_r[r]["peak_hosts"]) for r in res if isinstance(by_r.get(r), dict)}
        return tuple(r for r in b["resources"] if r in res), by, need
    by = bounds_by_resource(d["lower_bound"]["by"], res)
    return binding_resources(by), by, {}


def _binds_phrase(d: Mapping[str, Any], html: bool = False) -> str:
    binding, _, _ = binding_of(d)
    if not binding:
        return "one host holds them all" if len(d["hosts"]) <= 1 else "no single resource binds"
    names = [(_flag_html(d, r) if html else flagged(d, r)) for r in binding]
    return " and ".join(names) + (" binds" if len(binding) == 1 else " bind")


def _who(d: Mapping[str, Any]) -> str:
    servers = d["before"]["servers"]
    u = len(d["unplaceable"])
    return f"{servers - u} of {servers} servers" if u else f"{servers} servers"


def headline(d: Mapping[str, Any]) -> str:
    """The plan in one line: servers -> hosts, what binds, what does not fit."""
    n_hosts = len(d["hosts"])
    kind = d["host_kind"]["name"]
    u = len(d["unplaceable"])
    return (
        f"{_who(d)} -> {n_hosts} x {kind} {_hosts(n_hosts)}, {_binds_phrase(d)}"
        + (f"; {u} fit no {kind} host" if u else "")
    )


def bound_words(d: Mapping[str, Any]) -> str:
    """What bounds the host count, in words: which resource, why no plan can use fewer hosts, what
    the others alone would need, and how far this plan is from the bound."""
    binding, by, need = binding_of(d)
    lb = d["lower_bound"]["hosts"]
    n_hosts = len(d["hosts"])
    parts = []
    if binding:
        r = binding[0]
        who = " and ".join(flagged(d, x) for x in binding)
        parts.append(
            f"{who[:1].upper()}{who[1:]} {'bounds' if len(binding) == 1 else 'bound'} the count: "
            f"{resource_name(r)} alone needs at least {by.get(r, lb)} {_hosts(by.get(r, lb))} "
            f"({_why_bound(d, r, need.get(r))}), so no plan can use fewer than {lb}."
        )
    elif n_hosts <= 1:
        parts.append(f"One host holds every placed server: no resource needs more (lower bound {lb}).")
    else:
        parts.append(f"No resource alone needs more than one host; the servers' shapes over time "
                     f"make the rest. No plan can use fewer than {lb} {_hosts(lb)}.")  # fmt: skip
    others = [r for r in by if r not in binding]
    if others:
        parts.append(
            "Alone, "
            + ", ".join(f"{resource_name(r)} would need {by[r]}" + (f" ({need[r]:.1f} at its busiest step)"
                                                                     if r in need else "") for r in others)
            + "."
        )  # fmt: skip
    gap = d["gap"]
    parts.append(
        f"This plan uses {n_hosts}"
        + (f": {_pct(gap)} above the bound." if gap is not None and n_hosts != lb else
           (": the bound, so no plan uses fewer." if n_hosts == lb and n_hosts else "."))
    )  # fmt: skip
    return " ".join(parts)


def _why_bound(d: Mapping[str, Any], r: str, need: float | None) -> str:
    by = d["lower_bound"]["by"]
    name = resource_name(r)
    total, big, l2, pctl = (by.get(f"{r}_{k}") for k in ("total", "big", "l2", "percentile"))
    if isinstance(pctl, int | float):
        return f"even with {d.get('allowed_over_steps', 0)} steps per host above the cap, its summed demand needs them"
    best = max((v for v in (total, big, l2) if isinstance(v, int | float)), default=0)
    if isinstance(big, int | float) and big >= best and big > (total or 0):
        return f"{big:g} servers each need more than half a host's {name} at the same step: no two can share one"
    if isinstance(total, int | float) and total >= best:
        if need is not None:
            return f"at its busiest step the servers' {name} sums to {need:.1f} hosts at the cap"
        return f"at its busiest step the servers' {name} fills {total:g} hosts at the cap"
    return f"at one step its summed demand and the servers too big to share a host need {best:g}"


def _kinds(d: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    k = d.get("kinds")
    if not isinstance(k, dict):
        return [], None
    options = [o for o in k["options"] if isinstance(o, dict)]
    return options, next((o for o in options if o["cheapest"] is True), None)


def kinds_line(d: Mapping[str, Any]) -> str | None:
    """The host-kind comparison in one line (None for plans without one)."""
    options, best = _kinds(d)
    if not options:
        return None
    cur = d["costs"]["params"]["currency"]
    kind = d["host_kind"]["name"]
    if best is None:
        return "host kinds: no kind in the catalog holds every server (add a larger one with --catalog)"
    mine = next((o for o in options if o["kind"] == d.get("kinds", {}).get("planned", kind)), None)
    line = (f"cheapest host kind: {best['kind']}, {best['hosts']} {_hosts(best['hosts'])}, "
            f"{_money(best['cost_per_year'], cur)} per year")  # fmt: skip
    if mine is not None and mine is not best:
        held = mine["placed"] + mine["unplaceable"]
        line += (f" ({mine['kind']}: {mine['hosts']} {_hosts(mine['hosts'])}, "
                 + (f"holds only {mine['placed']} of {held} servers)" if mine["unplaceable"] else
                    f"{_money(mine['cost_per_year'], cur)}, same quick packing)"))  # fmt: skip
    elif mine is best:
        line += " (the planned kind)"
    return line


def summary_lines(plan: Plan | Mapping[str, Any]) -> list[str]:
    """A few lines for the terminal: the headline (what binds), every planned resource's
    utilization before -> after, the bound, the cost, the cheapest host kind, the search."""
    d = _data(plan)
    lb = d["lower_bound"]["hosts"]
    cur = d["costs"]["params"]["currency"]
    _, by, _ = binding_of(d)
    pct = f", percentile {d['percentile']}" if d["percentile"] is not None else ""
    lines = [f"{headline(d)} (cap {d['cap']:.0%}{pct}, resources {','.join(d['resources'])})"]
    for r, before, after in utilization_by_resource(d):
        flags = "; ".join(before_flags(d, r))
        lines.append(f"{resource_name(r)} utilization {change_words(before, after)}" + (f" ({flags})" if flags else ""))
    alone = ", ".join(f"{resource_name(r)} {v}" for r, v in by.items())
    lines += [
        f"lower bound {lb} {_hosts(lb)}, gap {_pct(d['gap'])}"
        + (f"; each resource alone needs {alone}" if alone else "") + "; packing by peak would need "
        f"{d['baselines']['peak_ffd_hosts']}, plain first fit {d['baselines']['first_fit_hosts']}",
        f"cost per year {_money(d['costs']['before']['total'], cur)} -> {_money(d['costs']['after']['total'], cur)}"
        f" (saves {_money(d['costs']['savings_per_year'], cur)}"
        + (
            f", payback {12 * d['costs']['payback_years']:.1f} months)"
            if d["costs"]["payback_years"] is not None
            else ", no payback)"
        ),
    ]
    kinds = kinds_line(d)
    if kinds:
        lines.append(kinds)
    lines.append(f"search: {d['search']['method']}, {d['search']['time_s']:.2f} s")
    if d["unplaceable"]:
        lines.append(f"UNPLACEABLE: {len(d['unplaceable'])} server(s), e.g. {d['unplaceable'][0]['reason']}")
    v = d.get("validation")
    if v:
        lines.append(
            f"validation on {v['label'] or 'other traces'}: over the cap {_pct(v['over_cap_fraction'], 2)} of "
            f"host-steps ({v['hosts_ever_over_cap']} hosts ever), over 100 % {_pct(v['over_100_fraction'], 2)} "
            f"({v['hosts_ever_over_100']} hosts ever), worst {_pct(v['max_utilization'])}"
        )
    return lines


# ---------------------------------------------------------------- SVG helpers
def _svg(w: int, h: int, body: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'role="img" aria-label="{escape(label)}">{body}</svg>'
    )


def _text(x: float, y: float, s: str, size: int = 11, anchor: str = "start", fill: str = "#333") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}">{escape(s)}</text>'


def _histogram(counts: Sequence[int], color: str, title: str, w: int = 380, h: int = 200) -> str:
    left, bottom, top = 36, 30, 22
    pw, ph = w - left - 10, h - bottom - top
    total = sum(counts) or 1
    frac = [c / total for c in counts]
    mx = max(frac) if frac and max(frac) > 0 else 1.0
    bw = pw / max(len(counts), 1)
    parts = [_text(w / 2, 14, title, 12, "middle")]
    for i, f in enumerate(frac):
        bh = ph * f / mx
        parts.append(
            f'<rect x="{left + i * bw + 1:.1f}" y="{top + ph - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
            f'fill="{color}"/>'
        )
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#666"/>')
    for p in (0, 25, 50, 75, 100):
        parts.append(_text(left + pw * p / 100, top + ph + 14, f"{p}%", 10, "middle"))
    parts.append(_text(4, top + 8, f"{100 * mx:.0f}%", 10))
    parts.append(_text(w / 2, h - 2, "utilization (share of samples)", 10, "middle", "#666"))
    return _svg(w, h, "".join(parts), title)


def _host_chart(ch: Mapping[str, Any], cap: float, kind: str, w: int = 390, h: int = 206) -> str:
    """One host over time: its servers' demand of one resource stacked (largest first), the host's
    other resources as lines, the cap and 100 %."""
    left, bottom, top = 50, 34, 20
    pw, ph = w - left - 8, h - bottom - top
    ymax = 1.05
    layers = ch["layers"]
    n = len(ch["total"])

    def X(i: int) -> float:
        return left + pw * (i / max(n - 1, 1))

    def Y(v: float) -> float:
        return top + ph * (1 - max(0.0, min(v, ymax)) / ymax)

    parts = [_text(left, 13, f"host {ch['host'] + 1}: {ch['servers']} servers, {resource_name(ch['resource'])} "
                   f"of {kind}, stacked by server", 11)]  # fmt: skip
    cum = [0.0] * n
    for k, layer in enumerate(layers):
        vals = layer["values"]
        upper = [c + v for c, v in zip(cum, vals, strict=True)]
        pts = [f"{X(i):.1f},{Y(upper[i]):.1f}" for i in range(n)] + [
            f"{X(i):.1f},{Y(cum[i]):.1f}" for i in range(n - 1, -1, -1)
        ]
        parts.append(
            f'<polygon points="{" ".join(pts)}" fill="{PALETTE[k % len(PALETTE)]}">'
            f"<title>{escape(layer['name'])}</title></polygon>"
        )
        cum = upper
    legend_x = float(left)
    for k, line in enumerate(ch.get("lines", [])):
        color = LINE_COLORS[k % len(LINE_COLORS)]
        vals = line["values"]
        line_pts = " ".join(f"{X(i):.1f},{Y(v):.1f}" for i, v in enumerate(vals))
        label = resource_name(line["resource"])
        if vals and max(vals) - min(vals) <= 0.005:
            label += f" flat at {_pct(vals[0], 0)}"
        parts.append(f'<polyline points="{line_pts}" fill="none" stroke="{color}" stroke-width="1.6">'
                     f"<title>{escape(label)}</title></polyline>")  # fmt: skip
        parts.append(f'<line x1="{legend_x:.1f}" y1="{h - 6}" x2="{legend_x + 14:.1f}" y2="{h - 6}" '
                     f'stroke="{color}" stroke-width="2"/>')  # fmt: skip
        parts.append(_text(legend_x + 17, h - 2, label, 9))
        legend_x += 26 + 5.2 * len(label)
    for v, color, dash, lab in ((cap, RED, "6,3", f"cap {cap:.0%}"), (1.0, "#333", "2,2", "100%")):
        parts.append(
            f'<line x1="{left}" y1="{Y(v):.1f}" x2="{left + pw}" y2="{Y(v):.1f}" stroke="{color}" '
            f'stroke-width="1.5" stroke-dasharray="{dash}"/>'
        )
        parts.append(_text(left - 3, Y(v) + 4, lab, 9, "end", color))
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    parts.append(_text(left + pw, top + ph + 12, "time →" + ("   lines: the host's other resources"
                                                             if ch.get("lines") else ""), 9, "end", "#666"))
    return _svg(w, h, "".join(parts), f"host {ch['host'] + 1} demand over time")


def _heat_color(v: float, cap: float) -> str:
    if v > 1.0:
        return "#000000"
    if v > cap + 1e-9:
        return RED
    t = max(0.0, min(1.0, v / cap))
    r = int(247 - t * (247 - 33))
    g = int(251 - t * (251 - 102))
    b = int(255 - t * (255 - 172))
    return f"#{r:02x}{g:02x}{b:02x}"


def _heatmap(hm: Mapping[str, Any], cap: float, label: str, w: int = 1180) -> str:
    rows = hm["rows"]
    if not rows:
        return ""
    cols = len(rows[0])
    left, top = 56, 8
    cw = (w - left - 10) / cols
    rh = max(3.0, min(14.0, 600 / len(rows)))
    h = int(top + rh * len(rows) + 10)
    parts = []
    for k, row in enumerate(rows):
        y = top + k * rh
        for j, v in enumerate(row):
            parts.append(
                f'<rect x="{left + j * cw:.1f}" y="{y:.1f}" width="{cw + 0.3:.1f}" height="{rh + 0.3:.1f}" '
                f'fill="{_heat_color(v, cap)}"/>'
            )
        if len(rows) <= 40 or k % max(1, len(rows) // 20) == 0:
            parts.append(_text(left - 4, y + rh - 1, f"host {hm['hosts'][k] + 1}", 9, "end"))
    return _svg(w, h, "".join(parts), label)


def _heat_scale(cap: float, what: str, w: int = 720, h: int = 40) -> str:
    """The heat map's colour scale: the share of the host's capacity each colour stands for."""
    left, top, sw, steps = 8, 4, 34, 10
    parts = []
    for i in range(steps + 1):
        v = cap * i / steps
        parts.append(f'<rect x="{left + i * sw}" y="{top}" width="{sw}" height="14" fill="{_heat_color(v, cap)}" '
                     f'stroke="#ccc" stroke-width="0.5"/>')  # fmt: skip
    for i in (0, steps // 2, steps):
        parts.append(_text(left + i * sw + sw / 2, top + 28, _pct(cap * i / steps, 0), 10, "middle"))
    x = left + (steps + 1) * sw + 16
    for color, lab in ((RED, f"above the cap ({cap:.0%})"), ("#000000", "above 100 %")):
        parts.append(f'<rect x="{x}" y="{top}" width="{sw}" height="14" fill="{color}"/>')
        parts.append(_text(x + sw + 5, top + 12, lab, 10))
        x += sw + 12 + 6 * len(lab)
    parts.append(_text(left, h - 1, f"colour: {what} in use, share of the host's capacity; time runs left to right",
                       10, "start", "#666"))  # fmt: skip
    return _svg(w, h + 4, "".join(parts), f"colour scale of the {what} heat map")


def _cost_bars(costs: Mapping[str, Any], w: int = 760, h: int = 150) -> str:
    comps = ("energy", "amortization", "upkeep", "admin", "rack")
    left, top = 70, 26
    pw = w - left - 150
    mx = max(costs["before"]["total"], costs["after"]["total"], 1e-9)
    parts = []
    for row, side in enumerate(("before", "after")):
        y = top + row * 50
        x = float(left)
        parts.append(_text(left - 6, y + 22, side, 12, "end"))
        for k, c in enumerate(comps):
            bw = pw * costs[side][c] / mx
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{bw:.1f}" height="34" fill="{PALETTE[k]}">'
                f"<title>{c}: {costs[side][c]:,.0f}</title></rect>"
            )
            x += bw
        parts.append(_text(x + 6, y + 22, f"{costs[side]['total']:,.0f} {costs['params']['currency']}/yr", 12))
    for k, c in enumerate(comps):
        parts.append(f'<rect x="{left + k * 110}" y="{h - 14}" width="10" height="10" fill="{PALETTE[k]}"/>')
        parts.append(_text(left + k * 110 + 14, h - 5, c, 10))
    return _svg(w, h, "".join(parts), "yearly cost before and after")


def _bound_bars(d: Mapping[str, Any], w: int = 520, h: int = 150) -> str:
    items = [
        ("packing by peak", d["baselines"]["peak_ffd_hosts"], "#bab0ac"),
        ("first fit (time series)", d["baselines"]["first_fit_hosts"], "#76b7b2"),
        ("this plan", len(d["hosts"]), "#4e79a7"),
        ("lower bound", d["lower_bound"]["hosts"], "#59a14f"),
    ]
    mx = max(v for _, v, _ in items) or 1
    left = 150
    parts = []
    for k, (lab, v, color) in enumerate(items):
        y = 8 + k * 34
        bw = (w - left - 60) * v / mx
        parts.append(_text(left - 6, y + 18, lab, 11, "end"))
        parts.append(f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="26" fill="{color}"/>')
        parts.append(_text(left + bw + 6, y + 18, str(v), 12))
    return _svg(w, h, "".join(parts), "hosts: plan, baselines and lower bound")


# ---------------------------------------------------------------- page
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:26px;margin-bottom:4px}h2{font-size:19px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:16px;margin-top:18px}
.big{display:flex;gap:18px;flex-wrap:wrap}.card{background:#f5f7fa;border-radius:8px;padding:12px 18px;min-width:170px}
.card b{display:block;font-size:28px;color:#1f4e79}.card small{display:block;color:#555;font-size:12px;max-width:240px}
.card.binds{outline:2px solid #1f4e79}.grid{display:flex;flex-wrap:wrap;gap:10px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #e3e3e3;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}.warn{color:#b00020;font-weight:600}.muted{color:#666;font-size:13px}
.assumed{background:#fff3cd;color:#7a5300;border-radius:4px;padding:0 5px;font-size:.8em;font-weight:600;
white-space:nowrap}.truth{font-size:16px;max-width:1000px}
.badge{background:#1f4e79;color:#fff;border-radius:4px;padding:0 6px;font-size:12px;font-weight:600;margin-left:6px}
tr.cheapest td{background:#e8f5e9}.mark{color:#1b5e20;font-weight:700;white-space:nowrap}
tr.planned td:first-child{font-weight:600}details summary{cursor:default;margin:8px 0}
.card .assumed{white-space:normal;display:inline-block;margin-top:3px}table.text td{text-align:left}
#host-kinds td:nth-child(n+2):not(:nth-child(5)),#host-kinds th{white-space:nowrap}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], attrs: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attrs}><tr>{head}</tr>{body}</table>"


def _flag_html(d: Mapping[str, Any], r: str) -> str:
    """A resource's name, and its assumption flagged beside it."""
    text = assumed_text(d, r)
    name = escape(resource_name(r))
    return f"{name} <span class='assumed' title='{escape(text)}'>({escape(text)})</span>" if text else name


def _truth(d: Mapping[str, Any]) -> str:
    """The first paragraph: what bounds the count, and which figures are assumed."""
    out = [f"<p class='truth' id='bound-words'>{escape(bound_words(d))}</p>"]
    assumed = [r for r in d["resources"] if before_flags(d, r)]
    if assumed:
        out.append(
            "<p class='truth' id='assumed'>Assumed, not measured: "
            + "; ".join(f"{escape(resource_name(r))} "
                        + " ".join(f"<span class='assumed'>{escape(t)}</span>" for t in before_flags(d, r))
                        for r in assumed)
            + ". The figures that rest on them are flagged so.</p>"
        )  # fmt: skip
    return "".join(out)


def _cards(d: Mapping[str, Any], money: Any) -> list[str]:
    c = d["costs"]
    n_hosts = len(d["hosts"])
    binding, _, _ = binding_of(d)
    placed = d["before"]["servers"] - len(d["unplaceable"])
    out = ["<div class='big' id='cards'>", f"<div class='card'>machines<b>{_e(placed)} → {n_hosts}</b>"
           + (f"<small>{len(d['unplaceable'])} more fit no host</small>" if d["unplaceable"] else "") + "</div>"]
    for r, before, after in utilization_by_resource(d):
        binds = r in binding
        out.append(
            f"<div class='card{' binds' if binds else ''}' data-resource='{_e(r)}'>"
            f"{escape(resource_name(r))} utilization" + ("<span class='badge'>binds</span>" if binds else "")
            + f"<b>{_pct(before, 0)} → {_pct(after, 0)}</b><small>{escape(change_words(before, after))}</small>"
            + "".join(f"<small><span class='assumed'>{escape(t)}</span></small>" for t in before_flags(d, r))
            + "</div>"
        )  # fmt: skip
    out += [
        f"<div class='card'>saved per year<b>{money(c['savings_per_year'])}</b></div>",
        "<div class='card'>payback<b>"
        + (f"{12 * c['payback_years']:.1f} months" if c["payback_years"] is not None else "never")
        + "</b></div>",
        f"<div class='card'>gap to lower bound<b>{_pct(d['gap'], 0)}</b></div></div>",
    ]
    return out


def _kinds_section(d: Mapping[str, Any], money: Any) -> list[str]:
    options, best = _kinds(d)
    out = ["<h2 id='which-hosts'>Which hosts to buy</h2>"]
    if not options:
        out.append("<p class='muted'>No comparison of host kinds in this plan (it was made before Corral compared "
                   "them, or without a catalog): plan it again to see one.</p>")  # fmt: skip
        return out
    k = d["kinds"]
    planned = k["planned"]
    out.append(
        f"<p>Every kind of the catalog, all {_e(k['servers'])} servers packed on it the same quick way "
        f"({_e(k['method'])}, cap {d['cap']:.0%}"
        + (f", percentile {_e(d['percentile'])}" if d["percentile"] is not None else "")
        + "); cost per year from the cost model below (energy, amortization, upkeep, administration, rack "
        "space). The search gains a few hosts on any kind; <i>at least</i> is the lower bound.</p>"
    )
    head = "".join(f"<th>{h}</th>" for h in ("host kind", "servers held", "hosts", "at least", "binds",
                                              "cost per year", "purchase", ""))  # fmt: skip
    rows = []
    for o in sorted(options, key=lambda o: (o["unplaceable"] > 0, o["cost_per_year"], o["kind"])):
        name = _e(o["kind"])
        if o["kind"] == planned:
            n_plan = len(d["hosts"])
            name += f" <span class='muted'>(planned: {n_plan} {_hosts(n_plan)} after the search)</span>"
        held = f"{_e(o['placed'])} of {_e(o['placed'] + o['unplaceable'])}"
        if o["unplaceable"]:
            held = f"<span class='warn'>{held}</span>"
        binds = ", ".join(_flag_html(d, r) for r in o["binding"]) or "none"
        mark = "<span class='mark'>★ cheapest</span>" if o["cheapest"] is True else ""
        cls = " ".join(c for c in ("cheapest" if o["cheapest"] is True else "",
                                   "planned" if o["kind"] == planned else "") if c)  # fmt: skip
        cells = [name, held, _e(o["hosts"]), _e(o["lower_bound"]), binds, money(o["cost_per_year"]),
                 money(o["purchase"]), mark]  # fmt: skip
        rows.append(f"<tr class='{cls}' data-kind='{_e(o['kind'])}'>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")  # fmt: skip
    out.append(f"<table id='host-kinds'><tr>{head}</tr>{''.join(rows)}</table>")
    if best is None:
        out.append("<p class='warn'>No kind in the catalog holds every server: add a larger one "
                   "(<code>corral plan … --catalog hosts.toml</code>, see <code>corral host-kinds --toml</code>).</p>")
    elif best["kind"] == planned:
        out.append(f"<p>The planned kind, {_e(planned)}, is the cheapest that holds every server.</p>")
    else:
        out.append(
            f"<p id='cheapest'>Cheapest that holds every server: <b>{_e(best['kind'])}</b>, "
            f"{_e(best['hosts'])} {_hosts(best['hosts'])} for {money(best['cost_per_year'])} per year. "
            f"Plan on it with <code>corral plan … --host-kind {_e(best['kind'])}</code>.</p>"
        )
    return out


def _utilization_table(d: Mapping[str, Any]) -> str:
    binding, _, _ = binding_of(d)
    rows = []
    for r, before, after in utilization_by_resource(d):
        flags = before_flags(d, r)
        rows.append(
            "<tr>" + f"<td>{escape(resource_name(r))}" + ("<span class='badge'>binds</span>" if r in binding else "")
            + f"</td><td>{_pct(before)}</td><td>{_pct(after)}</td><td>{escape(change_words(before, after))}</td>"
            + "<td>" + (" ".join(f"<span class='assumed'>{escape(t)}</span>" for t in flags) or "measured")
            + "</td></tr>"
        )  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in ("resource", "before", "after", "", "source"))
    return (
        "<table id='utilization'><tr>" + head + "</tr>" + "".join(rows) + "</table>"
        "<p class='muted'>Mean utilization over time: before, each placed server of its own capacity; after, "
        "each host of its capacity.</p>"
    )


def _heatmaps(d: Mapping[str, Any], cap: float) -> list[str]:
    chart = d["chart"]
    out = ["<h3>All hosts over time</h3>"]
    if "heatmaps" not in chart:  # a plan written before one heat map per resource: the worst resource
        heat = _heatmap(chart["heatmap"], cap, "utilization of every host over time")
        return [*out, heat, _heat_scale(cap, "busiest resource") if heat else ""]
    for hm in chart["heatmaps"]:
        r = hm["resource"]
        what = resource_name(r)
        if hm["flat"] is True:
            lo, hi = _pct(hm["low"], 0), _pct(hm["high"], 0)
            out.append(f"<p><b>{_flag_html(d, r)}</b>: every host is flat over time, "
                       + (f"at {lo}" if lo == hi else f"from {lo} to {hi}")
                       + f" of its {escape(what)}: nothing to draw over time.</p>")  # fmt: skip
            continue
        heat = _heatmap(hm, cap, f"{what} of every host over time")
        if heat:
            out += [f"<h4>{_flag_html(d, r)}</h4>", heat, _heat_scale(cap, what)]
    return out


def _assignment_table(d: Mapping[str, Any]) -> list[str]:
    records = assignment_records(d)
    per = d.get("servers") or {}
    res = [r for r in d["resources"] if r in per.get("peak", {}) and r in per.get("mean", {})]
    n = len(records)
    out = [
        "<h2 id='assignment'>Server → host</h2>",
        f"<p>{_e(n)} servers, {len(d['hosts'])} {_hosts(len(d['hosts']))}. The same table as CSV: "
        "<code>corral report plan.json --csv servers.csv</code> (or <code>corral plan … --csv FILE</code>).</p>",
        f"<details{' open' if n <= 60 else ''}><summary>the table ({_e(min(n, TABLE_ROWS))} rows"
        + (f" of {_e(n)}; the CSV holds them all" if n > TABLE_ROWS else "") + ")</summary>",
    ]
    head = ["server", "host", "kind"]
    for r in res:
        tag = " (assumed)" if assumed_text(d, r) else ""
        head += [f"{resource_name(r)} peak{tag}", f"{resource_name(r)} mean{tag}"]
    head.append("note")
    rows = []
    for rec in records[:TABLE_ROWS]:
        row = [rec["server"], "-" if rec["host"] is None else str(rec["host"]), rec["kind"] or "fits no host"]
        for r in res:
            row += [_human(rec["peak"].get(r), r), _human(rec["mean"].get(r), r)]
        row.append(rec["note"])
        rows.append(row)
    out += [_table(head, rows, " id='assignment-table' class='text'"), "</details>"]
    return out


def _human(v: float | None, r: str) -> str:
    return "-" if v is None else human(v, r)


def render_html(plan: Plan | Mapping[str, Any]) -> str:
    """The whole report as one HTML string."""
    d = _data(plan)
    cur = d["costs"]["params"]["currency"]
    kind = d["host_kind"]["name"]
    cap = float(d["cap"])
    c = d["costs"]
    n_hosts = len(d["hosts"])

    def money(x: float) -> str:  # every figure with the currency, escaped (the costs file sets it)
        return _e(_money(x, cur))

    u = len(d["unplaceable"])
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Corral consolidation plan: {_e(headline(d))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1 id='headline'>{_e(_who(d))} → {n_hosts} {_e(kind)} {_hosts(n_hosts)}: {_binds_phrase(d, html=True)}"
        + (f"; <span class='warn'>{u} fit no {_e(kind)} host</span>" if u else "") + "</h1>",
        f"<p class='muted'>cap {cap:.0%} of each host"
        + (f", percentile {_e(d['percentile'])}" if d["percentile"] is not None else ", at every time step")
        + f"; resources {_e(', '.join(resource_name(r) for r in d['resources']))}; {_e(d['grid']['steps'])} steps of "
        f"{d['grid']['step_s']:.0f} s; search: {_e(d['search']['method'])} in {d['search']['time_s']:.2f} s</p>",
        _truth(d),
        *_cards(d, money),
    ]
    if d["unplaceable"]:
        out.append(f"<p class='warn'>{u} server(s) cannot be placed on any {_e(kind)} host: the host kinds "
                   "below say which would hold them; the reasons follow them.</p>")  # fmt: skip
    out += _kinds_section(d, money)
    if d["unplaceable"]:
        shown = d["unplaceable"][:50]
        out += [
            f"<h3 id='unplaceable'>Servers that fit no {_e(kind)} host</h3>",
            f"<details{' open' if len(shown) <= 10 else ''}><summary>{len(shown)} "
            + (f"of {u} " if u > len(shown) else "") + "with the reason</summary>",
            _table(["server", "reason"], [[x["server"], x["reason"]] for x in shown], " class='text'"),
            "</details>",
        ]
    out += ["<h2>Utilization, before and after</h2>", _utilization_table(d)]
    out += [
        "<h2>Before: the sprawl</h2>",
        "<div class='grid'>",
        _histogram(
            d["before"]["cpu_utilization"]["histogram"]["counts"],
            "#bab0ac",
            f"before: {d['before']['servers']} servers, CPU utilization",
        ),
        _histogram(
            d["after"]["cpu_utilization"]["histogram"]["counts"],
            "#4e79a7",
            f"after: {n_hosts} {_hosts(n_hosts)}, CPU utilization",
        ),
        "</div>",
        _table(
            ["CPU", "machines", "mean", "median", "95th pct", "max"],
            [
                [side, str(d[side]["servers" if side == "before" else "hosts"])]
                + [_pct(d[side]["cpu_utilization"][k]) for k in ("mean", "p50", "p95", "max")]
                for side in ("before", "after")
            ],
        ),
        "<h2>After: every host under the cap</h2>",
        f"<p class='muted'>The {len(d['chart']['hosts'])} busiest hosts over time: each server's demand stacked "
        "(largest first) for a resource that moves over time, the host's other resources as lines; dashed red: "
        "the cap, dotted: 100 %.</p>",
        "<div class='grid'>",
    ]
    out += [_host_chart(ch, cap, kind) for ch in d["chart"]["hosts"]]
    out += ["</div>", *_heatmaps(d, cap)]
    out += [
        "<h2>How good is the plan</h2>",
        _bound_bars(d),
        f"<p>{escape(bound_words(d))}</p>",
        "<p class='muted'>Bounds per resource and step (see docs/planning.md): "
        + escape(", ".join(f"{k} {v}" for k, v in d["lower_bound"]["by"].items()))
        + ".</p>",
    ]
    v = d.get("validation")
    out.append("<h2>Validation on other traces</h2>")
    if v:
        out.append(
            f"<p>The plan replayed against <b>{_e(v['label'] or 'other traces')}</b> "
            f"({_e(v['servers_matched'])} servers matched, {len(v['servers_missing'])} missing, "
            f"{len(v['servers_new'])} new and ignored; missing servers count as no demand):</p>"
        )
        out.append(
            _table(
                ["", "host-steps", "share", "hosts ever"],
                [
                    [
                        f"above the cap ({cap:.0%})",
                        str(v["over_cap_host_steps"]),
                        _pct(v["over_cap_fraction"], 2),
                        str(v["hosts_ever_over_cap"]),
                    ],
                    [
                        "above 100 %",
                        str(v["over_100_host_steps"]),
                        _pct(v["over_100_fraction"], 2),
                        str(v["hosts_ever_over_100"]),
                    ],
                ],
            )
        )
        if d["percentile"] is not None:
            out.append(
                f"<p>The plan allows each host {_pct(1 - d['percentile'] / 100, 1)} of its steps above the cap "
                f"(percentile {_e(d['percentile'])}); compare with the share above.</p>"
            )
        out.append(
            f"<p>Worst host utilization {_pct(v['max_utilization'])}; mean excess over the cap when above it "
            f"{_pct(v['mean_excess_over_cap'])}. The cap and the percentile are the lever for this risk: a "
            "lower cap leaves more headroom for days unlike the planning period.</p>"
        )
    else:
        out.append("<p class='muted'>Not validated: run <code>corral plan ... --validate-on OTHER_TRACES</code>.</p>")
    rows = [
        [label, _money(c["before"][k], cur), _money(c["after"][k], cur)]
        for k, label in (
            ("energy", "energy (with cooling)"),
            ("amortization", "hardware amortization"),
            ("upkeep", "upkeep"),
            ("admin", "administration"),
            ("rack", "rack space"),
            ("total", "total per year"),
        )
    ]
    rows.insert(0, ["machines", str(c["before"]["machines"]), str(c["after"]["machines"])])
    rows.insert(
        1, ["energy kWh/year", f"{c['before']['energy_kwh_year']:,.0f}", f"{c['after']['energy_kwh_year']:,.0f}"]
    )
    p = c["params"]
    out += [
        "<h2>Cost</h2>",
        _cost_bars(c),
        _table(["per year", f"before ({c['before']['kind']})", f"after ({c['after']['kind']})"], rows),
        f"<p>Savings {money(c['savings_per_year'])} per year; buying the {_e(c['after']['machines'])} "
        f"{_hosts(c['after']['machines'])} costs "
        f"{money(c['capex'])}, paid back in "
        + (f"{12 * c['payback_years']:.1f} months" if c["payback_years"] is not None else "never")
        + " by the operating savings.</p>",
        "<p class='muted'>Assumptions (change them with a cost TOML, see docs/planning.md): "
        + escape(
            f"energy {p['energy_price_per_kwh']} {cur}/kWh, PUE {p['pue']}, amortization over "
            f"{p['amortization_years']} years, administration {p['admin_per_machine_year']} {cur} per machine "
            f"per year, rack space {p['rack_unit_per_year']} {cur} per unit per year; each server 'before' is "
            f"a {c['before']['kind']} at its own CPU utilization; power from each kind's 11-point curve"
        )
        + ".</p>",
    ]
    out += _assignment_table(d)
    notes = list(d.get("notes", []))
    gf = d.get("gaps_filled", {})
    if gf.get("points"):
        notes.append(f"{gf['points']} missing samples filled over {gf['servers']} server(s)")
    notes += [f"{resource_name(r)}: {t}" for r in d["resources"] for t in before_flags(d, r)]
    if notes:
        out.append("<h2>Data notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)


def write_html_report(plan: Plan | Mapping[str, Any], path: str | Path) -> Path:
    """Write the self-contained HTML report; returns its path."""
    return write_text(path, render_html(plan), "report")


def _e(value: object) -> str:
    """Any value as HTML text: every string of a plan reaches the page only through here or escape()."""
    return escape(str(value))


def _hosts(count: int) -> str:
    return "host" if count == 1 else "hosts"
