"""The report: one self-contained HTML file (inline CSS and SVG, no script, no network) and a
short terminal summary, both rendered from plan.json data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from corral.planning.limits import write_text
from corral.planning.planner import Plan
from corral.planning.serialize import check_plan_json, plan_to_json

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac")
RED = "#d62728"


def _data(plan: Plan | Mapping[str, Any]) -> dict[str, Any]:
    return plan_to_json(plan) if isinstance(plan, Plan) else check_plan_json(dict(plan))


def _pct(x: float | None, nd: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{nd}f} %"


def _money(x: float, cur: str) -> str:
    return f"{x:,.0f} {cur}"


def summary_lines(plan: Plan | Mapping[str, Any]) -> list[str]:
    """A few lines for the terminal."""
    d = _data(plan)
    lb = d["lower_bound"]["hosts"]
    n_hosts = len(d["hosts"])
    cur = d["costs"]["params"]["currency"]
    lines = [
        f"{d['before']['servers']} servers -> {n_hosts} x {d['host_kind']['name']} {_hosts(n_hosts)} "
        f"(cap {d['cap']:.0%}{', percentile ' + str(d['percentile']) if d['percentile'] is not None else ''}, "
        f"resources {','.join(d['resources'])})",
        f"lower bound {lb} {_hosts(lb)}, gap {_pct(d['gap'])}; packing by peak would need "
        f"{d['baselines']['peak_ffd_hosts']}, plain first fit {d['baselines']['first_fit_hosts']}",
        f"CPU utilization raised from {_pct(d['utilization']['before_mean'])} "
        f"to {_pct(d['utilization']['after_mean'])}",
        f"cost per year {_money(d['costs']['before']['total'], cur)} -> {_money(d['costs']['after']['total'], cur)}"
        f" (saves {_money(d['costs']['savings_per_year'], cur)}"
        + (
            f", payback {12 * d['costs']['payback_years']:.1f} months)"
            if d["costs"]["payback_years"] is not None
            else ", no payback)"
        ),
        f"search: {d['search']['method']}, {d['search']['time_s']:.2f} s",
    ]
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


def _host_chart(ch: Mapping[str, Any], cap: float, kind: str, w: int = 390, h: int = 190) -> str:
    left, bottom, top = 50, 18, 20
    pw, ph = w - left - 8, h - bottom - top
    ymax = 1.05
    layers = ch["layers"]
    n = len(ch["total"])

    def X(i: int) -> float:
        return left + pw * (i / max(n - 1, 1))

    def Y(v: float) -> float:
        return top + ph * (1 - min(v, ymax) / ymax)

    parts = [_text(left, 13, f"host {ch['host'] + 1}: {ch['servers']} servers, {ch['resource']} of {kind}", 11)]
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
    for v, color, dash, lab in ((cap, RED, "6,3", f"cap {cap:.0%}"), (1.0, "#333", "2,2", "100%")):
        parts.append(
            f'<line x1="{left}" y1="{Y(v):.1f}" x2="{left + pw}" y2="{Y(v):.1f}" stroke="{color}" '
            f'stroke-width="1.5" stroke-dasharray="{dash}"/>'
        )
        parts.append(_text(left - 3, Y(v) + 4, lab, 9, "end", color))
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
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


def _heatmap(hm: Mapping[str, Any], cap: float, w: int = 1180) -> str:
    rows = hm["rows"]
    if not rows:
        return ""
    cols = len(rows[0])
    left, top = 56, 8
    cw = (w - left - 10) / cols
    rh = max(3.0, min(14.0, 600 / len(rows)))
    h = int(top + rh * len(rows) + 24)
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
    parts.append(_text(left, h - 6, "time →  (white: idle, blue: up to the cap, red: above the cap)", 10))
    return _svg(w, h, "".join(parts), "utilization of every host over time")


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
.big{display:flex;gap:18px;flex-wrap:wrap}.card{background:#f5f7fa;border-radius:8px;padding:12px 18px;min-width:170px}
.card b{display:block;font-size:28px;color:#1f4e79}.grid{display:flex;flex-wrap:wrap;gap:10px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #e3e3e3;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}.warn{color:#b00020;font-weight:600}.muted{color:#666;font-size:13px}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(plan: Plan | Mapping[str, Any]) -> str:
    """The whole report as one HTML string."""
    d = _data(plan)
    cur = d["costs"]["params"]["currency"]
    kind = d["host_kind"]["name"]
    cap = float(d["cap"])
    c = d["costs"]
    n_hosts = len(d["hosts"])
    servers = _e(d["before"]["servers"])

    def money(x: float) -> str:  # every figure with the currency, escaped (the costs file sets it)
        return _e(_money(x, cur))

    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Corral consolidation plan: {servers} servers on {n_hosts} {_hosts(n_hosts)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{servers} servers → {n_hosts} {_e(kind)} {_hosts(n_hosts)}</h1>",
        f"<p class='muted'>cap {cap:.0%} of each host"
        + (f", percentile {_e(d['percentile'])}" if d["percentile"] is not None else ", at every time step")
        + f"; resources {_e(', '.join(d['resources']))}; {_e(d['grid']['steps'])} steps of "
        f"{d['grid']['step_s']:.0f} s; search: {_e(d['search']['method'])} in {d['search']['time_s']:.2f} s</p>",
        "<div class='big'>",
        f"<div class='card'>machines<b>{servers} → {n_hosts}</b></div>",
        f"<div class='card'>CPU utilization<b>{_pct(d['utilization']['before_mean'], 0)} → "
        f"{_pct(d['utilization']['after_mean'], 0)}</b></div>",
        f"<div class='card'>saved per year<b>{money(c['savings_per_year'])}</b></div>",
        "<div class='card'>payback<b>"
        + (f"{12 * c['payback_years']:.1f} months" if c["payback_years"] is not None else "never")
        + "</b></div>",
        f"<div class='card'>gap to lower bound<b>{_pct(d['gap'], 0)}</b></div></div>",
    ]
    if d["unplaceable"]:
        out.append(
            f"<p class='warn'>{len(d['unplaceable'])} server(s) cannot be placed on any {_e(kind)} host:</p>"
        )
        out.append(_table(["server", "reason"], [[u["server"], u["reason"]] for u in d["unplaceable"][:50]]))
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
            ["", "machines", "mean", "median", "95th pct", "max"],
            [
                [side, str(d[side]["servers" if side == "before" else "hosts"])]
                + [_pct(d[side]["cpu_utilization"][k]) for k in ("mean", "p50", "p95", "max")]
                for side in ("before", "after")
            ],
        ),
        "<h2>After: every host under the cap</h2>",
        f"<p class='muted'>The {len(d['chart']['hosts'])} busiest hosts, each server's demand stacked "
        "(largest first); dashed red: the cap, dotted: 100 %.</p>",
        "<div class='grid'>",
    ]
    out += [_host_chart(ch, cap, kind) for ch in d["chart"]["hosts"]]
    out += ["</div>", "<h3>All hosts over time</h3>", _heatmap(d["chart"]["heatmap"], cap)]
    lb = d["lower_bound"]
    out += [
        "<h2>How good is the plan</h2>",
        _bound_bars(d),
        f"<p>No plan can use fewer than <b>{_e(lb['hosts'])}</b> hosts (bounds: "
        + escape(", ".join(f"{k} {v}" for k, v in lb["by"].items()))
        + f"). This plan uses {n_hosts}: a gap of {_pct(d['gap'])}.</p>",
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
    notes = list(d.get("notes", []))
    gf = d.get("gaps_filled", {})
    if gf.get("points"):
        notes.append(f"{gf['points']} missing samples filled over {gf['servers']} server(s)")
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
