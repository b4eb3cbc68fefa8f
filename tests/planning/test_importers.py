from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from corral.planning import (
    COLLECT_COLUMNS,
    CollectSample,
    EmptyInputError,
    PlanetLabSizes,
    PlanningError,
    TraceFormatError,
    collect_header,
    format_collect_row,
    load_traces,
)
from corral.planning.importers import detect_format

from .conftest import PLANETLAB


def _copy(src: Path, dst: Path, n: int) -> Path:
    dst.mkdir()
    for f in sorted(src.iterdir())[:n]:
        shutil.copy(f, dst / f.name)
    return dst


# ---------------------------------------------------------------- PlanetLab
def test_planetlab_real_day(planetlab_day: Path) -> None:
    ts = load_traces([planetlab_day])
    assert ts.n_servers == 1052 and ts.n_steps == 288 and ts.step_s == 300
    assert ts.resources == ("cpu", "mem")
    # CloudSim sizes: blocks of ceil(1052/4) = 263 files, sorted by name
    assert list(ts.names) == sorted(ts.names)
    assert ts.capacity["cpu"][0] == 2500 and ts.capacity["cpu"][262] == 2500 and ts.capacity["cpu"][263] == 2000
    assert ts.capacity["cpu"][-1] == 500
    assert ts.demand["mem"][0, 0] == 870 * 2**20 and ts.demand["mem"][-1, 0] == 613 * 2**20
    first = (planetlab_day / ts.names[0]).read_text().split()
    assert ts.demand["cpu"][0, 0] == pytest.approx(2500 * float(first[0]) / 100)
    assert ts.filled.sum() == 0


def test_planetlab_archive_and_custom_sizes() -> None:
    ts = load_traces(
        [PLANETLAB / "20110325.tar.gz"], "planetlab", planetlab_sizes=PlanetLabSizes(mips=(1000.0,), ram_mb=(512.0,))
    )
    assert ts.n_servers == 1078
    assert np.all(ts.capacity["cpu"] == 1000)


@pytest.mark.parametrize(
    ("line", "problem"),
    [("abc", "not a number"), ("-3", "negative"), ("nan", "not a finite number"), ("150", "above 100")],
)
def test_planetlab_bad_line_names_file_and_line(planetlab_day: Path, tmp_path: Path, line: str, problem: str) -> None:
    d = _copy(planetlab_day, tmp_path / "day", 5)
    victim = sorted(d.iterdir())[2]
    lines = victim.read_text().splitlines()
    lines[9] = line
    victim.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError) as exc:
        load_traces([d])
    assert f"{victim}:10" in str(exc.value) and problem in str(exc.value)


def test_planetlab_mismatched_length(planetlab_day: Path, tmp_path: Path) -> None:
    d = _copy(planetlab_day, tmp_path / "day", 5)
    victim = sorted(d.iterdir())[1]
    victim.write_text("\n".join(victim.read_text().splitlines()[:100]) + "\n")
    with pytest.raises(TraceFormatError, match="100 samples while the other files have 288"):
        load_traces([d], "planetlab")


def test_empty_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyInputError, match="empty folder"):
        load_traces([empty])
    with pytest.raises(EmptyInputError):
        load_traces([empty], "planetlab")
    (empty / "vm1").write_text("")
    with pytest.raises(TraceFormatError, match="empty file"):
        load_traces([empty])
    with pytest.raises(PlanningError, match="no such file"):
        load_traces([tmp_path / "missing"])
    with pytest.raises(PlanningError, match="unknown format"):
        load_traces([empty], "xml")


# ---------------------------------------------------------------- Bitbrains
def test_bitbrains_real_week(bitbrains_dir: Path) -> None:
    ts = load_traces([bitbrains_dir])
    assert ts.n_servers == 100 and ts.resources == ("cpu", "mem", "disk", "net")
    assert ts.step_s == pytest.approx(300, abs=1)
    assert 2000 <= ts.n_steps <= 2030  # 7 days of 5-minute steps
    notes = " ".join(ts.notes)
    assert "seconds despite" in notes and "above 100 %" in notes and "re-anchored" in notes and "filled" in notes
    assert ts.filled.sum() > 0
    for r in ts.resources:
        assert np.all(np.isfinite(ts.demand[r])) and np.all(ts.demand[r] >= 0)


def test_bitbrains_broken_rows(bitbrains_dir: Path, tmp_path: Path) -> None:
    d = _copy(bitbrains_dir, tmp_path / "bb", 3)
    victim = sorted(d.iterdir())[1]
    lines = victim.read_text().splitlines()
    lines[5] = lines[5].rsplit(";", 2)[0]
    victim.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError, match=rf"{victim.name}:6: 9 fields, expected 11"):
        load_traces([d])
    lines = victim.read_text().splitlines()
    lines[5] = lines[4].replace(";", "; x", 1)
    victim.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError, match=r":6: column 2: not a number"):
        load_traces([d], "bitbrains")
    victim.write_text("hello;world\n")
    with pytest.raises(TraceFormatError, match="not a Bitbrains header"):
        load_traces([d], "bitbrains")


# ---------------------------------------------------------------- collect CSV
def _sample(t: float, host: str, pct: float) -> CollectSample:
    return CollectSample(t, host, 4, 2400.0, pct, 8 * 2**30, 2 * 2**30, 1e6, 2e6, 3e5, 4e5)


def test_collect_writer_roundtrip_and_append(tmp_path: Path) -> None:
    f = tmp_path / "collect.csv"
    assert collect_header().strip().split(",") == list(COLLECT_COLUMNS)
    f.write_text(collect_header() + "".join(format_collect_row(_sample(i * 60.0, "web", 10.0)) for i in range(10)))
    with f.open("a") as fh:  # the collector appends
        fh.writelines(format_collect_row(_sample(i * 60.0 + 2, "db", 20.0)) for i in range(10))
    assert detect_format(f) == "collect"
    ts = load_traces([f])
    assert ts.names == ("db", "web") and ts.step_s == 60
    assert ts.demand["cpu"][1, 0] == pytest.approx(4 * 2400 * 0.10)
    assert ts.demand["disk"][0, 0] == pytest.approx(3e6) and ts.demand["net"][0, 0] == pytest.approx(7e5)
    assert ts.capacity["cpu"][0] == pytest.approx(9600) and ts.capacity["mem"][0] == 8 * 2**30


def test_collect_writer_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="host name"):
        format_collect_row(_sample(0, "a,b", 1))
    with pytest.raises(ValueError, match="negative"):
        format_collect_row(_sample(0, "a", -1))
    with pytest.raises(ValueError, match="finite"):
        format_collect_row(_sample(0, "a", float("nan")))


def test_collect_bad_rows(tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_text(collect_header() + format_collect_row(_sample(0, "web", 10)) + "1,web,4,2400,x,1,1,1,1,1,1\n")
    with pytest.raises(TraceFormatError, match=r"c.csv:3: cpu_pct: not a number"):
        load_traces([f])
    f.write_text(collect_header() + "1,web,4,2400,10,1,1,1,1\n")
    with pytest.raises(TraceFormatError, match=r":2: 9 fields, expected 11"):
        load_traces([f], "collect")


# ---------------------------------------------------------------- plain CSV
def test_plain_csv(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    rows = ["# comment", "server,timestamp,cpu,mem,cpu_capacity"]
    for t in range(0, 3000, 300):
        rows += [f"a,{t},100,{1e9},1000", f"b,{t + 5},200,{2e9},2000"]
    rows.append("c,0,50,1,500")  # a server with one sample: its peak fills the grid
    f.write_text("\n".join(rows) + "\n")
    ts = load_traces([f])
    assert ts.names == ("a", "b", "c") and ts.n_steps == 10 and ts.resources == ("cpu", "mem")
    assert np.all(ts.demand["cpu"][1] == 200)  # 5 s of drift snapped onto the grid
    assert ts.filled[2] == 9 and np.all(ts.demand["cpu"][2] == 50)
    assert ts.capacity["cpu"].tolist() == [1000, 2000, 500]


def test_plain_csv_errors(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("server,timestamp,cpu\na,0,-5\n")
    with pytest.raises(TraceFormatError, match=r"t.csv:2: cpu: negative"):
        load_traces([f])
    f.write_text("server,timestamp,cpu,gpu\na,0,1,1\n")
    with pytest.raises(TraceFormatError, match="unknown column"):
        load_traces([f], "csv")
    f.write_text("server,timestamp,cpu\na,0,inf\n")
    with pytest.raises(TraceFormatError, match="finite"):
        load_traces([f], "csv")
    f.write_text("server,timestamp,cpu\na,0,1\na,300,1\na,300\n")
    with pytest.raises(TraceFormatError, match=":4: 2 fields, expected 3"):
        load_traces([f], "csv")


def test_planetlab_individual_files(planetlab_day: Path) -> None:
    files = sorted(planetlab_day.iterdir())[:8]
    ts = load_traces(files, "planetlab")
    assert ts.names == tuple(f.name for f in files)
    assert ts.capacity["cpu"].tolist() == [2500, 2500, 2000, 2000, 1000, 1000, 500, 500]
    assert load_traces(files[:3]).n_servers == 3  # auto-detected


def test_csv_quoted_fields(tmp_path: Path) -> None:
    """The CSV importers read through the csv module: quoted names may hold commas and doubled quotes,
    the header may be quoted, blanks around fields (a quoted one too) are dropped."""
    f = tmp_path / "quoted.csv"
    f.write_text(
        '"server","timestamp","cpu"\n'
        '"web, front",0,10\n'
        '"web, front",300, "20"\n'
        '"db ""main""",0,30\n'
        'plain , 300 ,40\n'
    )
    assert detect_format(f) == "csv"
    ts = load_traces([f])
    assert ts.names == ('db "main"', "plain", "web, front")
    assert ts.demand["cpu"][2].tolist() == [10, 20]
    c = tmp_path / "collect.csv"
    row = format_collect_row(_sample(0, "web", 10.0)).replace("web", '"web, eu"')
    c.write_text(collect_header() + row)
    assert detect_format(c) == "collect"
    assert load_traces([c]).names == ("web, eu",)


def test_csv_unclosed_quote_names_its_line(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text('server,timestamp,cpu\na,0,1\n"b,300,1\nc,0,1\n')
    with pytest.raises(TraceFormatError, match=r"t.csv:3: a quoted field runs over the end of the line"):
        load_traces([f], "csv")
    f.write_text('server,timestamp,cpu\na,0,1\n"b,300,1\n')
    with pytest.raises(TraceFormatError, match=r"t.csv:3: a quoted field runs over"):
        load_traces([f], "csv")
