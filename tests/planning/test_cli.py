from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from corral.cli.plan import register

from .conftest import PLANETLAB


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def main() -> None:
        """test app"""

    register(a)
    return a


def _csv(path: Path, servers: dict[str, list[float]], extra: str = "") -> Path:
    rows = ["server,timestamp,cpu,mem" + extra]
    for name, vals in servers.items():
        rows += [f"{name},{300 * t},{v},{1e9}" for t, v in enumerate(vals)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_host_kinds_json(app: typer.Typer) -> None:
    r = CliRunner().invoke(app, ["host-kinds", "--json"])
    assert r.exit_code == 0, r.output
    kinds = {k["name"]: k for k in json.loads(r.stdout)}
    assert kinds["ml110-g5"]["cores"] == 2 and kinds["ml110-g5"]["core_mhz"] == 2660
    assert kinds["ml110-g4"]["power_w"][0] == 86 and kinds["ml110-g5"]["power_w"][-1] == 135
    r = CliRunner().invoke(app, ["host-kinds"])
    assert r.exit_code == 0 and "ml110-g4" in r.stdout
    r = CliRunner().invoke(app, ["hosts-kinds", "--json"])  # alias
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["name"] == "ml110-g4"


def test_plan_and_report(app: typer.Typer, tmp_path: Path) -> None:
    traces = _csv(tmp_path / "t.csv", {f"s{i}": [300.0 + 100 * ((t + i) % 4) for t in range(8)] for i in range(6)})
    out, html = tmp_path / "plan.json", tmp_path / "r.html"
    r = CliRunner().invoke(
        app, ["plan", str(traces), "--host-kind", "ml110-g5", "--cap", "0.85", "--out", str(out), "-q"]
    )
    assert r.exit_code == 0, r.output
    plan = json.loads(out.read_text())
    assert sorted(s for h in plan["hosts"] for s in h["servers"]) == [f"s{i}" for i in range(6)]
    assert plan["resources"] == ["cpu", "mem"]
    r = CliRunner().invoke(app, ["report", str(out), "--html", str(html)])
    assert r.exit_code == 0 and "servers ->" in r.stdout and html.stat().st_size > 1000
    r = CliRunner().invoke(app, ["report", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["schema"] == "corral.plan/1"


def test_plan_validate_on_planetlab(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(
        app,
        ["plan", str(PLANETLAB / "20110322.tar.gz"), "--resources", "cpu", "--time-budget", "0.5",
         "--validate-on", str(PLANETLAB / "20110325.tar.gz"), "--out", str(out), "--json", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    v = d["validation"]
    assert v["servers_matched"] > 300 and v["servers_missing"] and v["servers_new"]
    assert 0 <= v["over_cap_fraction"] < 0.05
    assert "chart" not in d and "chart" in json.loads(out.read_text())


def test_errors_are_one_line_and_nonzero(app: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("server,timestamp,cpu\na,0,1\na,300,oops\n")
    for args, needle in [
        (["plan", str(bad), "-q"], "bad.csv:3: cpu: not a number"),
        (["plan", str(tmp_path / "none"), "-q"], "no such file"),
        (["plan", str(bad), "--host-kind", "nope"], "unknown host kind 'nope'"),
        (["plan", str(bad), "--cap", "1.7"], "impossible cap"),
        (["plan", str(bad), "--resources", "gpu"], "unknown resource"),
        (["report", str(bad)], "invalid JSON"),
    ]:
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("corral: error: ") and needle in lines[0], r.stderr


def test_unplaceable_exits_3_and_keeps_the_server(app: typer.Typer, tmp_path: Path) -> None:
    traces = _csv(tmp_path / "t.csv", {"small": [100.0, 200.0], "huge": [9000.0, 100.0]})
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(app, ["plan", str(traces), "--resources", "cpu", "--out", str(out), "-q"])
    assert r.exit_code == 3
    assert "unplaceable" in r.stderr and "huge" in out.read_text()
    assert "it would fit on: " in r.stderr and "dl360-g10" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert json.loads(out.read_text())["unplaceable"][0]["server"] == "huge"


def test_costs_file(app: typer.Typer, tmp_path: Path) -> None:
    traces = _csv(tmp_path / "t.csv", {"a": [100.0, 200.0], "b": [300.0, 100.0]})
    costs = tmp_path / "costs.toml"
    costs.write_text('[costs]\nenergy_price_per_kwh = 0.5\npue = 1.2\ncurrency = "USD"\n')
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(app, ["plan", str(traces), "--costs", str(costs), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    p = json.loads(out.read_text())["costs"]["params"]
    assert p["energy_price_per_kwh"] == 0.5 and p["pue"] == 1.2 and p["currency"] == "USD"
    costs.write_text("[costs]\nwat = 1\n")
    r = CliRunner().invoke(app, ["plan", str(traces), "--costs", str(costs), "-q"])
    assert r.exit_code == 1 and "unknown cost setting" in r.stderr
