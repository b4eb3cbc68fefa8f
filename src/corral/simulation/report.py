"""The simulator's outputs: the side-by-side terminal table, JSON, and a self-contained HTML report
(inline CSS and SVG, no script, no network) with one line per policy over time: active hosts,
power, hosts short of CPU (SLATAH's "at 100 %") and migrations per interval."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from corral.simulation.engine import SimulationResult

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")

METRICS: tuple[tuple[str, str], ...] = (
    ("energy (kWh)", "energy"),
    ("SLATAH (%)", "slatah"),
    ("PDM (%)", "pdm"),
    ("SLAV (x1e-5)", "slav"),
    ("ESV (x1e-3)", "esv"),
    ("migrations", "migrations"),
    ("host shutdowns", "shutdowns"),
    ("mean active hosts", "active"),
    ("run time (s)", "time"),
)


def label(r: SimulationResult, models: int) -> str:
    return f"{r.policy} ({r.model})" if models > 1 else r.policy


def metric(r: SimulationResult, key: str) -> str:
    """One figure, formatted as the CloudSim tables print it."""
    values = {
        "energy": f"{r.energy_kwh:.2f}",
        "slatah": f"{100 * r.slatah:.2f}",
        "pdm": f"{100 * r.pdm:.3f}",
        "slav": f"{1e5 * r.slav:.2f}",
        "esv": f"{1e3 * r.esv:.3f}",
        "migrations": f"{r.migrations}",
        "shutdowns": f"{r.host_shutdowns}",
        "active": f"{r.mean_active_hosts:.1f}",
        "time": f"{r.run_time_s:.2f}",
    }
    return values[key]


def table_rows(results: Sequence[SimulationResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table (one column per policy/model)."""
    models = len({r.model for r in results})
    header = ["", *(label(r, models) for r in results)]
    rows = [[name, *(metric(r, key) for r in results)] for name, key in METRICS]
    return header, rows


def results_json(results: Sequence[SimulationResult], meta: dict[str, Any], series: bool = False) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for r in results:
        d = r.to_json()
        if not series:
            d.pop("series", None)
        out.append(d)
    return {**meta, "results": out}


# ---------------------------------------------------------------- SVG
def _line_chart(title: str, unit: str, series: Sequence[tuple[str, np.ndarray, np.ndarray]], w: int = 560,
                h: int = 230) -> str:
    left, right, top, bottom = 52, 12, 26, 34
    pw, ph = w - left - right, h - top - bottom
    xs = [x for _, x, _ in series if x.size]
    ys = [y for _, _, y in series if y.size]
    x0 = min((float(x.min()) for x in xs), default=0.0)
    x1 = max((float(x.max()) for x in xs), default=1.0)
    y_all = max((float(y.max()) for y in ys), default=1.0) or 1.0
    # CloudSim's guests start spread over every host: the first hour can dwarf the day; clip it
    y_rest = max((float(y[12:].max()) for y in ys if y.size > 12), default=y_all)
    y1 = y_rest * 1.1 if 0 < y_rest < y_all / 2 else y_all
    clipped = y1 < y_all
    x1 = x1 if x1 > x0 else x0 + 1.0

    def X(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def Y(v: float) -> float:
        return top + ph - min(v, y1) / y1 * ph

    parts = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>']
    for frac in (0.0, 0.5, 1.0):
        yv = y1 * frac
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(yv):.1f}" y2="{Y(yv):.1f}" stroke="#e5e5e5"/>')
        parts.append(_text(left - 4, Y(yv) + 4, f"{yv:,.0f}" if y1 >= 10 else f"{yv:.2f}", anchor="end"))
    hours = (x1 - x0) / 3600.0
    tick = 6 if hours <= 48 else 24
    k = 0.0
    while k <= hours + 1e-9:
        xv = x0 + k * 3600.0
        parts.append(_text(X(xv), top + ph + 14, f"{k:.0f} h", anchor="middle"))
        k += tick
    for i, (name, x, y) in enumerate(series):
        if not x.size:
            continue
        step = max(1, x.size // 600)
        pts = " ".join(f"{X(float(a)):.1f},{Y(float(b)):.1f}" for a, b in zip(x[::step], y[::step], strict=True))
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.4" points="{pts}"><title>'
                     f"{escape(name)}</title></polyline>")
    parts.append(_text(left, 16, f"{title} ({unit})" if unit else title, size=13))
    if clipped:
        parts.append(_text(left + pw, 16, f"first hour off the scale (up to {y_all:,.0f})", size=10, anchor="end"))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{escape(title)}">{"".join(parts)}</svg>')


def _text(x: float, y: float, s: str, size: int = 11, anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="#333">{escape(s)}</text>'


def render_html(results: Sequence[SimulationResult], meta: dict[str, Any]) -> str:
    """The whole report as one HTML string."""
    header, rows = table_rows(results)
    models = len({r.model for r in results})
    names = [label(r, models) for r in results]
    legend = "".join(
        f'<span class="key"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{escape(n)}</span>'
        for i, n in enumerate(names)
    )
    table = "<table><tr>" + "".join(f"<th>{escape(c)}</th>" for c in header) + "</tr>"
    for row in rows:
        table += "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
    table += "</table>"

    def series(attr: str, scale: float = 1.0) -> list[tuple[str, np.ndarray, np.ndarray]]:
        out = []
        for n, r in zip(names, results, strict=True):
            if r.series is None:
                continue
            out.append((n, r.series.time_s, np.asarray(getattr(r.series, attr), dtype=np.float64) * scale))
        return out

    charts = "".join([
        _line_chart("Active hosts", "", series("active_hosts")),
        _line_chart("Power", "kW", series("power_w", 1e-3)),
        _line_chart("Hosts short of CPU after each decision", "hosts", series("short_hosts")),
        _line_chart("Migrations started per interval", "", series("migrations")),
    ])
    facts = "".join(
        f"<li>{escape(k.replace('_', ' '))}: {escape(', '.join(map(str, v)) if isinstance(v, list) else str(v))}</li>"
        for k, v in meta.items() if k != "notes"
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in meta.get("notes", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Corral simulation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}}
table{{border-collapse:collapse;font-size:14px}} td,th{{border:1px solid #ddd;padding:4px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}} th{{background:#f3f3f3}}
.charts{{display:flex;flex-wrap:wrap;gap:12px}} .key{{margin-right:14px;font-size:13px}}
.key i{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}}
ul{{font-size:13px}}
</style></head><body>
<h1>Dynamic consolidation: {escape(", ".join(names))}</h1>
<ul>{facts}</ul>
<h2>Results</h2>{table}
<p style="font-size:13px">SLATAH: share of active hosts' time at 100 % CPU (allocated &lt; requested);
PDM: demand lost to migrations over all demand; SLAV = SLATAH x PDM; ESV = energy x SLAV.
Method and accounting: docs/simulation.md.</p>
<h2>Over time</h2><div>{legend}</div><div class="charts">{charts}</div>
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
</body></html>
"""


def write_html_report(results: Sequence[SimulationResult], meta: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.write_text(render_html(results, meta), encoding="utf-8")
    return p
