from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from corral.planning import (
    PlanFormatError,
    demo_traceset,
    load_catalog,
    make_traceset,
    plan_consolidation,
    plan_to_json,
    read_plan_json,
    render_html,
    summary_lines,
    validate_plan,
    write_html_report,
    write_plan_json,
)

from .pngcheck import decode_png


@pytest.fixture(scope="module")
def sample_plan_json() -> dict[str, object]:
    """60 servers with daily waves at different phases, on legacy-1u hosts, validated on a noisier day."""
    rng = np.random.default_rng(3)
    n, T = 60, 288
    t = np.arange(T) / T
    kind = load_catalog()["legacy-1u"]
    phase = rng.random(n)
    base = rng.uniform(0.03, 0.15, n)[:, None] * (1 + 0.8 * np.sin(2 * np.pi * (t[None, :] + phase[:, None])))
    cpu = np.clip(base * rng.lognormal(0, 0.2, (n, T)), 0, 1) * kind.cpu_mhz
    names = [f"srv-{i:02d}" for i in range(n)]
    ts = make_traceset(names, {"cpu": cpu}, {"cpu": np.full(n, kind.cpu_mhz)})
    other = make_traceset(names, {"cpu": np.clip(cpu * rng.lognormal(0.1, 0.3, (n, T)), 0, kind.cpu_mhz)})
    plan = plan_consolidation(ts, kind, 0.8, time_budget_s=1.0)
    return plan_to_json(validate_plan(plan, other, "next day"))


def test_demo_five_servers_onto_one_host() -> None:
    ts = demo_traceset()
    kind = load_catalog()["legacy-1u"]
    plan = plan_consolidation(ts, kind, 0.85)
    assert ts.n_servers == 5 and plan.n_hosts == 1 and plan.peak_ffd_hosts == 2
    lines = summary_lines(plan)
    assert lines[0].startswith("5 servers -> 1 x legacy-1u host, one host holds them all ")
    assert lines[1:3] == ["CPU utilization rises from 15.0 % to 75.0 %",
                          "memory utilization rises from 15.0 % to 75.0 %"]
    assert plan.costs.savings_per_year > 0 and plan.costs.payback_years is not None


def test_html_is_self_contained(sample_plan_json: dict[str, object], tmp_path: Path) -> None:
    html = render_html(sample_plan_json)
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert html.count("<svg") >= 6 and "<polygon" in html
    for text in ("Before: the sprawl", "lower bound", "Validation on other traces", "payback", "next day"):
        assert text in html
    # round trip through plan.json
    f = tmp_path / "plan.json"
    write_plan_json(sample_plan_json, f)
    again = read_plan_json(f)
    assert render_html(again) == html
    assert summary_lines(again) == summary_lines(sample_plan_json)


def test_plan_json_schema(sample_plan_json: dict[str, object]) -> None:
    d = sample_plan_json
    assert d["schema"] == "corral.plan/1"
    hosts = d["hosts"]
    assert isinstance(hosts, list) and all(set(h) >= {"kind", "servers"} for h in hosts)
    assert json.loads(json.dumps(d)) == d  # plain JSON
    v = d["validation"]
    placed = sum(len(h["servers"]) for h in hosts)
    assert isinstance(v, dict) and v["servers_matched"] == placed and v["over_cap_host_steps"] >= 0


def test_read_plan_json_errors(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text("{not json")
    with pytest.raises(PlanFormatError, match=r"p.json:1: invalid JSON"):
        read_plan_json(f)
    f.write_text('{"schema": "other"}')
    with pytest.raises(PlanFormatError, match="schema"):
        read_plan_json(f)
    f.write_text('{"schema": "corral.plan/1", "hosts": []}')
    with pytest.raises(PlanFormatError, match="missing key"):
        read_plan_json(f)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_charts_in_headless_chromium(sample_plan_json: dict[str, object], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (scripts/setup --dev installs it)")
        pytest.skip("chromium is not installed")
    report = write_html_report(sample_plan_json, tmp_path / "report.html")
    shutil.copy(report, "/tmp/sample_report.html") if os.environ.get("CORRAL_KEEP_REPORT") else None
    png = tmp_path / "out.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000",
             report.resolve().as_uri()],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    px = decode_png(png).astype(np.int64)
    assert px.shape[:2] == (2000, 1280)
    non_white = np.asarray((px < 235).any(axis=2))
    # content all the way down the page: most 200-pixel bands hold ink
    bands = [non_white[y : y + 200].mean() for y in range(0, 2000, 200)]
    assert sum(b > 0.02 for b in bands) >= 7, bands

    def near(rgb: tuple[int, int, int], tol: int = 12) -> int:
        return int((np.abs(px - np.array(rgb)).max(axis=2) <= tol).sum())

    assert near((0x4E, 0x79, 0xA7)) > 5_000  # stacked areas / after histogram (blue)
    assert near((0xF2, 0x8E, 0x2B)) > 2_000  # second layer (orange)
    assert near((0xD6, 0x27, 0x28), 20) > 500  # the cap lines (red)
    assert near((0xBA, 0xB0, 0xAC)) > 1_000  # the before histogram (grey)
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 200  # real charts, not flat boxes
