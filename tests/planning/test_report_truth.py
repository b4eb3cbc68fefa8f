"""The plan report tells the truth first (issue 15, item 1): the headline and the summary name the
resource that binds and show every planned resource's utilization before and after, a drop is never
called a rise, assumed figures are flagged where they are shown, the host kinds of the catalog are
compared (cheapest marked), the server -> host table is in the HTML and exported as CSV, and the
charts show what moves over time. Checked on the real PlanetLab and Bitbrains traces."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from corral.cli.plan import register
from corral.planning import load_catalog, load_traces, make_traceset, plan_consolidation, plan_to_json
from corral.planning.planner import binding_resources, bounds_by_resource, compare_kinds
from corral.planning.report import bound_words, change_words, render_html, summary_lines
from corral.planning.serialize import assignment_csv, check_plan_json

from .conftest import BITBRAINS, PLANETLAB


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def main() -> None:
        """test app"""

    register(a)
    return a


def _plan_cli(app: typer.Typer, traces: Path, folder: Path, *extra: str) -> tuple[Any, dict[str, Any], Path, Path]:
    out, html, table = folder / "plan.json", folder / "report.html", folder / "servers.csv"
    r = CliRunner().invoke(app, ["plan", str(traces), "--out", str(out), "--html", str(html), "--csv", str(table),
                                 "--time-budget", "0.5", "-q", *extra])  # fmt: skip
    return r, json.loads(out.read_text()), html, table


@pytest.fixture(scope="module")
def planetlab(app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path, Path]:
    """PlanetLab 20110303 planned with the defaults (host kind, cap, resources: all the traces carry)."""
    if not (PLANETLAB / "20110303.tar.gz").exists():
        pytest.skip("the PlanetLab traces are not available")
    r, data, html, table = _plan_cli(app, PLANETLAB / "20110303.tar.gz", tmp_path_factory.mktemp("pl"))
    assert r.exit_code == 0, r.output
    return r, data, html, table


@pytest.fixture(scope="module")
def bitbrains(app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path, Path]:
    """The Bitbrains week on the default host kind (ml110-g5): 60 of its 100 VMs fit no such host."""
    if not BITBRAINS.exists():
        pytest.skip("the Bitbrains traces are not available")
    r, data, html, table = _plan_cli(app, BITBRAINS, tmp_path_factory.mktemp("bb"))
    assert r.exit_code == 3, r.output  # unplaceable servers: written, reported, exit 3
    return r, data, html, table


# ---------------------------------------------------------------- words
def test_a_drop_is_never_called_a_rise() -> None:
    assert change_words(0.123, 0.093) == "falls from 12.3 % to 9.3 %"
    assert change_words(0.037, 0.151) == "rises from 3.7 % to 15.1 %"
    assert change_words(0.5, 0.50001) == "stays at 50.0 %"
    assert change_words(None, 0.2) == "is 20.0 % after (unknown before)"
    for before, after in np.random.default_rng(1).uniform(0, 1, (200, 2)):
        words = change_words(float(before), float(after))
        if after < before - 0.001:
            assert words.startswith("falls") and "rise" not in words and "raise" not in words
        elif after > before + 0.001:
            assert words.startswith("rises")


# ---------------------------------------------------------------- PlanetLab with the defaults
def test_planetlab_headline_names_memory_and_every_resource(planetlab: tuple[Any, dict[str, Any], Path, Path]) -> None:
    r, data, html_path, _ = planetlab
    assert data["resources"] == ["cpu", "mem"] and data["host_kind"]["name"] == "ml110-g5"
    assert data["binding"]["resources"] == ["mem"]
    by = data["binding"]["by_resource"]
    assert by["mem"]["bound"] > 5 * by["cpu"]["bound"]  # 375 against 47: memory, not CPU, sets the count
    lines = r.stdout.splitlines()
    n = len(data["hosts"])
    assert lines[0] == (f"1052 servers -> {n} x ml110-g5 hosts, memory (assumed: CloudSim VM sizes) binds "
                        "(cap 85%, resources cpu,mem)")  # fmt: skip
    cpu = r"CPU utilization falls from 12\.3 % to \d+\.\d % \(measured %, sizes assumed: CloudSim VM MIPS\)"
    assert re.fullmatch(cpu, lines[1]), lines[1]
    assert re.fullmatch(r"memory utilization falls from 100\.0 % to \d+\.\d % \(assumed: CloudSim VM sizes\)",
                        lines[2]), lines[2]  # fmt: skip
    assert "raise" not in r.stdout and "rises" not in r.stdout
    assert f"each resource alone needs CPU {by['cpu']['bound']}, memory {by['mem']['bound']}" in lines[3]
    cheapest = next(line for line in lines if line.startswith("cheapest host kind: "))
    assert f"(ml110-g5: {n} hosts" in cheapest
    html = html_path.read_text()
    h1 = re.search(r"<h1 id='headline'>(.*?)</h1>", html)
    assert h1 is not None
    assert h1.group(1).startswith(f"1052 servers → {n} ml110-g5 hosts: memory <span class='assumed'")
    assert "(assumed: CloudSim VM sizes)</span> binds" in h1.group(1)
    cards = re.findall(r"<div class='card[^']*' data-resource='(\w+)'>(.*?)</div>", html)
    assert [c[0] for c in cards] == ["cpu", "mem"]
    assert "12 % → 9 %" in cards[0][1] and "falls from 12.3 %" in cards[0][1]
    assert "binds" in cards[1][1] and "100 % → 8" in cards[1][1] and "assumed: CloudSim VM sizes" in cards[1][1]


def test_the_bounds_say_in_words_what_bounds_the_count(planetlab: tuple[Any, dict[str, Any], Path, Path]) -> None:
    _, data, html_path, _ = planetlab
    words = bound_words(data)
    bound = data["lower_bound"]["hosts"]
    assert words.startswith(f"Memory (assumed: CloudSim VM sizes) bounds the count: memory alone needs at least "
                            f"{bound} hosts (at its busiest step the servers' memory sums to ")  # fmt: skip
    assert f"so no plan can use fewer than {bound}." in words
    assert f"Alone, CPU would need {data['binding']['by_resource']['cpu']['bound']}" in words
    assert f"This plan uses {len(data['hosts'])}" in words
    assert "<p class='truth' id='bound-words'>Memory (assumed: CloudSim VM sizes) bounds the count" in \
        html_path.read_text()


def test_assumed_figures_are_flagged_where_they_are_shown(planetlab: tuple[Any, dict[str, Any], Path, Path]) -> None:
    _, data, html_path, table = planetlab
    assert data["assumed"] == {"cpu": "measured %, sizes assumed: CloudSim VM MIPS",
                               "mem": "assumed: CloudSim VM sizes"}
    assert data["assumed_capacity"] == {}
    html = html_path.read_text()
    assert "id='assumed'>Assumed, not measured: CPU <span class='assumed'>measured %, sizes assumed" in html
    # the utilization table, the host-kind comparison (what binds each kind), the server table's header
    assert re.search(r"<td>memory<span class='badge'>binds</span></td>.*?<span class='assumed'>assumed: CloudSim VM "
                     r"sizes</span>", html)  # fmt: skip
    assert html.count("memory <span class='assumed' title='assumed: CloudSim VM sizes'>") >= 6
    assert "<th>memory peak (assumed)</th>" in html
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert {r["mem_source"] for r in rows} == {"assumed: CloudSim VM sizes"}
    assert {r["cpu_source"] for r in rows} == {"measured %, sizes assumed: CloudSim VM MIPS"}


def test_bitbrains_flags_only_the_capacities_it_lacks(bitbrains: tuple[Any, dict[str, Any], Path, Path]) -> None:
    """Bitbrains measures demand: nothing of it is flagged; its disk and network have no capacity in the
    files (and 12 VMs state none for CPU and memory), which only the utilization before rests on."""
    r, data, _, table = bitbrains
    assert data["assumed"] == {}
    assert data["assumed_capacity"]["disk"] == "capacity unknown: each server's peak used"
    assert data["assumed_capacity"]["cpu"] == "capacity unknown for 12 of 100 servers: their peak used"
    lines = r.stdout.splitlines()
    assert lines[0] == ("40 of 100 servers -> 7 x ml110-g5 hosts, memory binds; 60 fit no ml110-g5 host "
                        "(cap 85%, resources cpu,mem,disk,net)")  # fmt: skip
    assert lines[3] == "disk utilization falls from 4.1 % to 2.0 % (before: capacity unknown: each server's peak used)"
    assert "cheapest host kind: epyc-1s, 6 hosts" in r.stdout and "ml110-g5: 8 hosts, holds only 40 of 100" in r.stdout
    assert {row["mem_source"] for row in csv.DictReader(io.StringIO(table.read_text()))} == {"measured"}


# ---------------------------------------------------------------- which hosts to buy
def test_host_kinds_are_compared_and_the_cheapest_marked(planetlab: tuple[Any, dict[str, Any], Path, Path],
                                                         bitbrains: tuple[Any, dict[str, Any], Path, Path]) -> None:
    for (_, data, html_path, _), holds_all in ((planetlab, set(load_catalog())), (bitbrains, {"dl360-g10", "epyc-1s"})):
        k = data["kinds"]
        options = {o["kind"]: o for o in k["options"]}
        assert set(options) == set(load_catalog()) and k["planned"] == "ml110-g5"
        assert {o["kind"] for o in k["options"] if o["unplaceable"] == 0} == holds_all
        cheapest = [o for o in k["options"] if o["cheapest"]]
        assert len(cheapest) == 1
        assert cheapest[0]["cost_per_year"] == min(options[name]["cost_per_year"] for name in holds_all)
        assert all(o["hosts"] >= o["lower_bound"] for o in k["options"])
        assert options["ml110-g5"]["hosts"] == data["baselines"]["first_fit_hosts"]  # the same quick packing
        html = html_path.read_text()
        table = html[html.index("<table id='host-kinds'>"):]
        table = table[: table.index("</table>")]
        assert table.count("<tr class=") == len(options)
        assert re.search(rf"<tr class='cheapest' data-kind='{cheapest[0]['kind']}'>.*?★ cheapest", table)
        assert table.count("★ cheapest") == 1
        assert "(planned: " in table
    assert planetlab[1]["kinds"]["options"][-1]["kind"] == "epyc-1s"
    assert {o["kind"]: o["binding"] for o in planetlab[1]["kinds"]["options"]}["dl360-g10"] == ["mem"]


def test_compare_kinds_is_a_pure_function_over_plain_data() -> None:
    """Three servers on hosts of one CPU each: a kind too small for one server cannot be the cheapest,
    however cheap; a kind without disk holds no server that uses disk; the same inputs, the same answer."""
    kinds = load_catalog()
    small = kinds["ml110-g4"]
    T = 12
    cpu = np.array([[0.5 * small.cpu_mhz] * T, [0.3 * small.cpu_mhz] * T, [1.2 * small.cpu_mhz] * T])
    ts = make_traceset(["a", "b", "c"], {"cpu": cpu, "mem": np.full((3, T), 1e9), "disk": np.full((3, T), 1e6)})
    from dataclasses import replace

    no_disk = replace(kinds["dl360-g10"], name="no-disk", disk_bps=0.0)
    cheap = replace(small, name="cheap", price=1.0, upkeep_per_year=0.0)
    c = compare_kinds(ts, [cheap, kinds["legacy-1u"], no_disk, kinds["legacy-1u"]], 0.85)
    assert [o.kind for o in c.options] == ["cheap", "legacy-1u", "no-disk"]  # a name twice: compared once
    by = {o.kind: o for o in c.options}
    assert by["cheap"].unplaceable == 1 and by["cheap"].placed == 2 and not by["cheap"].cheapest
    assert by["no-disk"].unplaceable == 3 and by["no-disk"].hosts == 0
    assert by["legacy-1u"].cheapest and by["legacy-1u"].unplaceable == 0 and c.cheapest is by["legacy-1u"]
    assert by["legacy-1u"].hosts == 1 and by["legacy-1u"].binding == ()  # one host: nothing binds
    assert compare_kinds(ts, [cheap, kinds["legacy-1u"], no_disk], 0.85).options == c.options
    assert plan_consolidation(ts, kinds["legacy-1u"], 0.85, catalog={}).kinds is None


def test_binding_resources() -> None:
    by = bounds_by_resource({"cpu_total": 47, "cpu_big": 2, "cpu_l2": 47, "mem_total": 375, "mem_l2": 375},
                            ["cpu", "mem"])
    assert by == {"cpu": 47, "mem": 375} and binding_resources(by) == ("mem",)
    assert binding_resources({"cpu": 4, "mem": 4}) == ("cpu", "mem")
    assert binding_resources({"cpu": 4, "mem": 4}, {"cpu": 3.1, "mem": 3.6}) == ("mem",)
    assert binding_resources({"cpu": 1, "mem": 1}) == ()
    assert bounds_by_resource({"mem_percentile": 9}, ["cpu", "mem"]) == {"mem": 9}


# ---------------------------------------------------------------- the server -> host table
def test_csv_round_trips_the_assignment(planetlab: tuple[Any, dict[str, Any], Path, Path],
                                        bitbrains: tuple[Any, dict[str, Any], Path, Path]) -> None:
    for (_, data, html_path, table), traces in ((planetlab, PLANETLAB / "20110303.tar.gz"), (bitbrains, BITBRAINS)):
        text = table.read_text()
        assert text == assignment_csv(data)
        rows = list(csv.DictReader(io.StringIO(text)))
        assert list(rows[0])[:3] == ["server", "host", "kind"] and list(rows[0])[-1] == "note"
        hosts: dict[int, list[str]] = {}
        for row in rows:
            if row["host"]:
                hosts.setdefault(int(row["host"]), []).append(row["server"])
        assert [hosts[h] for h in sorted(hosts)] == [h["servers"] for h in data["hosts"]]
        assert sorted(hosts) == list(range(1, len(data["hosts"]) + 1))
        assert {row["kind"] for row in rows if row["host"]} == {data["host_kind"]["name"]}
        unplaced = [(row["server"], row["note"]) for row in rows if not row["host"]]
        assert unplaced == [(u["server"], u["reason"]) for u in data["unplaceable"]]
        assert all(not row["kind"] for row in rows if not row["host"])
        ts = load_traces([traces])
        index = {n: i for i, n in enumerate(ts.names)}
        for row in rows[:: max(1, len(rows) // 20)]:
            i = index[row["server"]]
            assert float(row["cpu_peak_mhz"]) == pytest.approx(ts.demand["cpu"][i].max(), rel=1e-6, abs=1e-3)
            assert float(row["mem_mean_bytes"]) == pytest.approx(ts.demand["mem"][i].mean(), rel=1e-6, abs=1e-3)
        html = html_path.read_text()
        assert html.count("<tr><td>", html.index("id='assignment-table'")) == len(rows)
    assert bitbrains[1]["unplaceable"]


Made = tuple[Any, dict[str, Any], Path, Path]  # the CLI's result, plan.json, the report, the CSV


def test_report_command_writes_the_csv_of_a_kept_plan(app: typer.Typer, planetlab: Made, tmp_path: Path) -> None:
    _, data, _, table = planetlab
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(data))
    out = tmp_path / "again.csv"
    r = CliRunner().invoke(app, ["report", str(plan_file), "--csv", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text() == table.read_text() and f"server -> host table written to {out}" in r.stdout


# ---------------------------------------------------------------- charts that inform
def test_host_charts_stack_what_moves_and_the_heat_maps_have_a_scale(
    planetlab: tuple[Any, dict[str, Any], Path, Path],
) -> None:
    _, data, html_path, _ = planetlab
    chart = data["chart"]
    # memory is a flat band on every host (constant assumed sizes): the charts stack CPU, memory is a line
    assert {ch["resource"] for ch in chart["hosts"]} == {"cpu"}
    for ch in chart["hosts"]:
        assert [line["resource"] for line in ch["lines"]] == ["mem"]
        assert len(set(ch["total"])) > 20  # demand over time, not a flat band
        mem = ch["lines"][0]["values"]
        assert max(mem) - min(mem) < 1e-9
    heat = {h["resource"]: h for h in chart["heatmaps"]}
    assert heat["mem"]["flat"] is True and heat["mem"]["high"] <= 0.85 + 1e-9 and not heat["mem"]["rows"]
    assert heat["cpu"]["flat"] is False and len(heat["cpu"]["rows"]) == min(300, len(data["hosts"]))
    html = html_path.read_text()
    assert "aria-label=\"colour scale of the CPU heat map\"" in html
    assert "every host is flat over time" in html and "stacked by server" in html
    assert html.count("memory flat at 85 %</text>") == len(chart["hosts"])  # each chart's legend


# ---------------------------------------------------------------- older plans
def test_a_plan_written_before_still_renders(planetlab: tuple[Any, dict[str, Any], Path, Path]) -> None:
    """A plan.json from before these sections (the library keeps them): no binding, no assumptions, no
    host kinds, no per-server figures, one heat map of the worst resource. It renders, and its
    headline still names what binds (from the bounds it has)."""
    _, data, _, _ = planetlab
    old = copy.deepcopy(data)
    for key in ("binding", "assumed", "assumed_capacity", "kinds", "servers"):
        del old[key]
    del old["utilization"]["resources"]
    first = old["chart"]["heatmaps"][0]
    old["chart"] = {**old["chart"], "heatmap": {"hosts": first["hosts"], "rows": first["rows"]}}
    del old["chart"]["heatmaps"]
    for ch in old["chart"]["hosts"]:
        del ch["lines"]
    check_plan_json(old)
    lines = summary_lines(old)
    assert lines[0].startswith(f"1052 servers -> {len(old['hosts'])} x ml110-g5 hosts, memory binds")
    assert lines[1].startswith("CPU utilization falls from 12.3 %")
    html = render_html(old)
    assert "No comparison of host kinds in this plan" in html and "id='assignment-table'" in html
    assert "aria-label=\"colour scale of the busiest resource heat map\"" in html


def test_summary_and_report_of_a_plan_object_match_its_json() -> None:
    rng = np.random.default_rng(2)
    kind = load_catalog()["legacy-1u"]
    ts = make_traceset([f"s{i}" for i in range(12)], {"cpu": rng.uniform(0.1, 0.5, (12, 48)) * kind.cpu_mhz})
    plan = plan_consolidation(ts, kind, 0.8, time_budget_s=0.2)
    d = json.loads(json.dumps(plan_to_json(plan)))
    assert summary_lines(plan) == summary_lines(d)
    assert render_html(plan) == render_html(d)
