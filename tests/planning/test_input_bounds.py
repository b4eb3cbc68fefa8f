"""The importers under hostile input (issue 9, items 5 and 13): every value checked and named, every
size bounded while reading (line, file, all files, archive contents and entries, rows, servers, the
time grid), and arbitrary bytes or numbers give valid traces or one PlanningError, nothing else."""

from __future__ import annotations

import gzip
import io
import math
import tarfile
import tempfile
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from corral.planning import (
    COLLECT_COLUMNS,
    PlanningError,
    ServerTrace,
    TraceFormatError,
    TraceSet,
    align,
    load_catalog,
    load_traces,
    plan_consolidation,
    render_html,
    summary_lines,
)
from corral.planning.limits import InputLimits
from corral.planning.names import FORMATS

COLLECT_HEADER = ",".join(COLLECT_COLUMNS)
BB_HEADER = (
    "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\t"
    "Memory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\t"
    "Disk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]"
)


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def _plain(rows: list[str], header: str = "server,timestamp,cpu") -> str:
    return "\n".join([header, *rows]) + "\n"


def _collect_row(t: float = 0, host: str = "web", cores: str = "4", mhz: str = "2400", mem_total: str = "8e9") -> str:
    return f"{t},{host},{cores},{mhz},10,{mem_total},1e9,1,1,1,1"


def _bb_row(t: str = "1372629804", cpu_mhz: str = "87.7") -> str:
    return f"{t};\t2;\t5851.9;\t{cpu_mhz};\t1.5;\t8218624.0;\t1034592.8;\t160.8;\t21.7;\t0.26;\t1.46"


def _check_traceset(ts: TraceSet) -> None:
    assert ts.n_servers >= 1 and ts.n_steps >= 1 and ts.step_s > 0 and math.isfinite(ts.start_s)
    for r in ts.resources:
        assert ts.demand[r].shape == (ts.n_servers, ts.n_steps)
        assert np.all(np.isfinite(ts.demand[r])) and np.all(ts.demand[r] >= 0)
        assert np.all(np.isfinite(ts.capacity[r])) and np.all(ts.capacity[r] > 0)
    for name in ts.names:
        assert name and name.isprintable()


# ---------------------------------------------------------------- values: each refused, naming the field
@pytest.mark.parametrize(
    ("timestamp", "problem"),
    [("nan", "not a finite number"), ("inf", "not a finite number"), ("-inf", "not a finite number"),
     ("1e308", r"1e\+308 is above 1e\+11 \(unix seconds"), ("-1e308", "negative"), ("-5", "negative"),
     ("abc", "not a number")],
)  # fmt: skip
def test_plain_csv_timestamps_are_finite_and_bounded(tmp_path: Path, timestamp: str, problem: str) -> None:
    f = _write(tmp_path / "t.csv", _plain(["a,0,1", f"a,{timestamp},2", "b,0,3"]))
    with pytest.raises(TraceFormatError, match=rf"t.csv:3: timestamp: {problem}"):
        load_traces([f])


def test_timestamps_far_apart_are_refused_before_the_grid_is_allocated(tmp_path: Path) -> None:
    # 0 .. 2e6 s at 1-second steps: 2 million grid steps, above the limit of 1 million
    f = _write(tmp_path / "t.csv", _plain(["a,0,1", "a,1,1", "b,0,1", "b,2000000,1", "b,2000001,1"]))
    with pytest.raises(PlanningError, match="limit of the time grid"):
        load_traces([f])
    with pytest.raises(PlanningError, match="grid points"):  # servers x steps
        load_traces([f], limits=InputLimits(grid_steps=10**7, grid_cells=1000))


@pytest.mark.parametrize(
    ("value", "problem"),
    [("1e308", "cpu: 1e\\+308 is above 1e\\+15"), ("1e16", "cpu: 1e\\+16 is above"), ("nan", "cpu: not a finite"),
     ("-0.5", "cpu: negative")],
)  # fmt: skip
def test_demand_values_are_bounded(tmp_path: Path, value: str, problem: str) -> None:
    f = _write(tmp_path / "t.csv", _plain(["a,0,75", f"a,300,{value}"]))
    with pytest.raises(TraceFormatError, match=rf"t.csv:3: {problem}"):
        load_traces([f])


def test_plain_csv_capacity_zero_is_refused(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.csv", _plain(["a,0,1,0"], "server,timestamp,cpu,cpu_capacity"))
    with pytest.raises(TraceFormatError, match=r"t.csv:2: cpu_capacity: must be more than 0"):
        load_traces([f])
    f = _write(tmp_path / "t.csv", _plain(["a,0,1,1"], "server,timestamp,cpu,cpu"))
    with pytest.raises(TraceFormatError, match="'cpu' appears twice"):
        load_traces([f])


@pytest.mark.parametrize(
    ("row", "problem"),
    [(_collect_row(cores="0"), "cpu_cores: must be a whole number"),
     (_collect_row(cores="2.5"), "cpu_cores: must be a whole number"),
     (_collect_row(mhz="0"), "cpu_mhz: must be more than 0"),
     (_collect_row(mhz="1e300"), "cpu_mhz"),
     (_collect_row(mem_total="0"), "mem_total_bytes: must be more than 0"),
     (_collect_row(t=float("nan")), "timestamp: not a finite number"),
     (_collect_row(t=1e308), "timestamp: 1e\\+308 is above"),
     (_collect_row(host="we\x1bb"), "host name .* unprintable")],
)  # fmt: skip
def test_collect_rows_with_nonsense_are_refused(tmp_path: Path, row: str, problem: str) -> None:
    """Servers with 0 cores and 0 MHz were planned as a lower bound of 0 hosts."""
    f = _write(tmp_path / "c.csv", "\n".join([COLLECT_HEADER, _collect_row(), row]) + "\n")
    with pytest.raises(TraceFormatError, match=rf"c.csv:3: {problem}"):
        load_traces([f])


def test_bitbrains_timestamps_are_bounded(tmp_path: Path) -> None:
    f = _write(tmp_path / "bb" / "1.csv", "\n".join([BB_HEADER, _bb_row(), _bb_row("1e308")]) + "\n")
    with pytest.raises(TraceFormatError, match=r"1.csv:3: column 1: 1e\+308 is above"):
        load_traces([f.parent])
    f.write_text("\n".join([BB_HEADER, _bb_row(), _bb_row(cpu_mhz="inf")]) + "\n")
    with pytest.raises(TraceFormatError, match=r"1.csv:3: column 4: not a finite number"):
        load_traces([f.parent])


def test_server_names_must_be_printable(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.csv", _plain(["a,0,1", "\x1b[31mred,0,1"]))
    with pytest.raises(TraceFormatError, match=r"t.csv:3: server name .* unprintable"):
        load_traces([f])
    d = tmp_path / "pl"
    _write(d / "vm\nname", "1\n2\n")
    with pytest.raises(TraceFormatError, match="unprintable"):
        load_traces([d], "planetlab")


def test_align_refuses_nonsense_from_library_callers() -> None:
    def trace(ts: list[float], cpu: list[float]) -> ServerTrace:
        return ServerTrace("a", np.array(ts), {"cpu": np.array(cpu)}, {"cpu": 100.0})

    for ts, cpu, problem in [
        ([0.0, math.nan], [1.0, 1.0], "finite"),
        ([0.0, math.inf], [1.0, 1.0], "finite"),
        ([300.0, 0.0], [1.0, 1.0], "ascending"),
        ([0.0, 300.0], [1.0, -1.0], "non-negative"),
        ([0.0, 300.0], [1.0], "samples"),
        ([-1e308, 1e308], [1.0, 1.0], "finite seconds within"),
        ([0.0, 1.0, 2.0, 1e10], [1.0, 1.0, 1.0, 1.0], "time grid"),
    ]:
        with pytest.raises(PlanningError, match=problem):
            align([trace(ts, cpu)])


# ---------------------------------------------------------------- sizes: bounded while reading
def test_a_line_without_end_is_refused_after_its_limit(tmp_path: Path) -> None:
    """A 2 GB file without newlines took 18.9 GB; here 24 MB with the default limits (64 KiB per
    line): refused with the line's number, holding no more than a block and a line in memory."""
    f = tmp_path / "t.csv"
    with f.open("w") as fh:
        fh.write("server,timestamp,cpu\na,0,")
        for _ in range(24):
            fh.write("1" * 1_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(TraceFormatError, match=r"t.csv:2: line longer than 64 KiB"):
            load_traces([f], "csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, peak


@pytest.mark.parametrize(
    ("limits", "problem"),
    [(InputLimits(line_bytes=21), r"t.csv:14: line longer than 21 bytes"),
     (InputLimits(file_bytes=100), r"larger than 100 bytes \(the limit per trace file\)"),
     (InputLimits(total_bytes=190), r"190 bytes \(the input limit\)"),
     (InputLimits(rows=5), r"more than 5 data rows"),
     (InputLimits(servers=2), r"more than 2 servers"),
     (InputLimits(files=1), r"more than 1 trace files"),
     (InputLimits(grid_steps=3), r"more than 3 steps")],
)  # fmt: skip
def test_every_input_limit_is_enforced(tmp_path: Path, limits: InputLimits, problem: str) -> None:
    d = tmp_path / "in"
    rows = [f"s{i},{300 * t},1.5" for i in range(3) for t in range(4)]
    assert len(_write(d / "t.csv", _plain([*rows, "s0,0,1.00000000000000000"])).read_bytes()) == 172
    _write(d / "u.csv", _plain(["s3,0,1"]))
    assert load_traces([d]).n_servers == 4  # within the default limits
    with pytest.raises(PlanningError, match=problem):
        load_traces([d], limits=limits)


def test_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlanningError, match="/dev/zero: not a regular file or folder"):
        load_traces(["/dev/zero"])
    with pytest.raises(PlanningError, match="no such file"):
        load_traces([tmp_path / "missing.csv"])


# ---------------------------------------------------------------- archives
def _tar_gz(path: Path, members: list[tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_decompression_bomb_stops_after_one_line(tmp_path: Path) -> None:
    """A 255 KB .tar.gz took 2.4 GB; here ~50 KB unpacking to 48 MB of zeros without a newline."""
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", [("day/vm1", b"1\n2\n"), ("day/vm2", bytes(48_000_000))])
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(PlanningError, match=r"vm2.* line longer than 64 KiB"):
            load_traces([bomb])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, peak


@pytest.mark.parametrize(
    ("limits", "members", "problem"),
    [(InputLimits(archive_members=3), [(f"d/vm{i}", b"1\n") for i in range(5)], "more than 3 entries"),
     (InputLimits(file_bytes=100), [("d/vm1", b"1\n" * 100)], "200 bytes, larger than 100 bytes"),
     (InputLimits(unpacked_bytes=150), [(f"d/vm{i}", b"1\n" * 40) for i in range(3)], "more than 150 bytes once"),
     (InputLimits(), [("../evil", b"1\n")], "leaves the unpack folder"),
     (InputLimits(), [("/etc/evil", b"1\n")], "leaves the unpack folder")],
)  # fmt: skip
def test_archive_limits(tmp_path: Path, limits: InputLimits, members: list[tuple[str, bytes]], problem: str) -> None:
    archive = _tar_gz(tmp_path / "a.tar.gz", members)
    with pytest.raises(PlanningError, match=problem):
        load_traces([archive], limits=limits)


def test_huge_archive_headers_are_not_read_into_memory(tmp_path: Path) -> None:
    """A GNU long name (or pax record) declares its own size; tarfile reads it whole."""
    archive = _tar_gz(tmp_path / "a.tar.gz", [("d/" + "x" * 8_000_000, b"1\n")])
    tracemalloc.start()
    try:
        with pytest.raises(PlanningError, match="header or read larger than 1 MiB"):
            load_traces([archive])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6_000_000, peak


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[: len(b) // 2], lambda b: b[:10] + bytes(100) + b[110:], lambda b: b"not gzip at all", lambda b: b""],
)
def test_damaged_archives_are_one_clear_error(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    good = _tar_gz(tmp_path / "good.tar.gz", [(f"d/vm{i}", b"1\n2\n" * 500) for i in range(20)])
    bad = _write(tmp_path / "bad.tar.gz", damage(good.read_bytes()))
    with pytest.raises(PlanningError, match=r"bad\.tar\.gz: "):
        load_traces([bad])


# ---------------------------------------------------------------- property tests: bytes and numbers
KIND = load_catalog()["dl360-g10"]
_HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["nan", "-inf", "1e308", "-1e308", "1e-320", "-0", "1_000", " 7 ", "", "x", "0x10", "٣", "1e16"]),
)
_VALUE = st.one_of(
    st.integers(0, 100), st.floats(0, 100), st.floats(0, 1e15), st.sampled_from([0.0, 5e-324, 1e-300, 1e15])
)
_TIME = st.one_of(st.integers(0, 5000).map(lambda k: 300.0 * k), st.floats(0, 1e11))
_ROWS = st.lists(
    st.tuples(_TIME, st.lists(_VALUE, min_size=10, max_size=10), st.sampled_from(["a", "b", "c", "web 1", "é"])),
    min_size=1, max_size=15,
)  # fmt: skip


def _cells(kind: str, t: float, v: list[float], name: str) -> list[str]:
    """One row of ``kind`` from valid-looking numbers (each field within its own range)."""
    if kind == "csv":  # server,timestamp,cpu,mem,disk,net,cpu_capacity,mem_capacity
        return [name, repr(t), *map(repr, v[:4]), repr(v[4] + 1), repr(v[5] + 1)]
    if kind == "collect":
        cores, mhz, total = int(v[0]) % 64 + 1, v[1] % 1e6 + 1, v[3] + 1
        return [repr(t), name, str(cores), repr(mhz), repr(v[2] % 100), repr(total), repr(min(v[4], total)),
                *map(repr, v[5:9])]  # fmt: skip
    if kind == "bitbrains":
        return [repr(t * 1000 if v[9] > 50 else t), *map(repr, v)]
    return [repr(v[0] % 100)]


def _load_or_refuse(paths: list[Path], fmt: str) -> TraceSet | None:
    """The property: valid traces that plan and render, or a PlanningError; never anything else
    (nor a numerical warning: an overflow on the way would be nonsense in the plan)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return _load_plan_render(paths, fmt)


def _load_plan_render(paths: list[Path], fmt: str) -> TraceSet | None:
    try:
        ts = load_traces(paths, fmt, limits=InputLimits(total_bytes=4_000_000, grid_cells=200_000))
    except PlanningError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(f"{fmt}: refused")
        return None
    _check_traceset(ts)
    event(f"{fmt}: traces")
    try:
        plan = plan_consolidation(ts, KIND, 0.85, time_budget_s=0)
    except PlanningError:
        event(f"{fmt}: plan refused")
        return ts
    summary_lines(plan)
    render_html(plan)
    return ts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=3000), fmt=st.sampled_from(FORMATS), name=st.sampled_from(["t.csv", "a.tar.gz", "vm"]))
def test_arbitrary_bytes_give_traces_or_one_planning_error(data: bytes, fmt: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _load_or_refuse([_write(Path(tmp) / name, data)], fmt)
        _load_or_refuse([_write(Path(tmp) / "z.tar.gz", gzip.compress(data))], fmt)  # gzip fine, tar not


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    members=st.lists(
        st.tuples(st.text(min_size=1, max_size=40), st.one_of(st.binary(max_size=300), st.just(b"12\n7\n"))),
        min_size=1, max_size=6,
    ),
    fmt=st.sampled_from(FORMATS),
    tar_format=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
)  # fmt: skip
def test_arbitrary_archives_give_traces_or_one_planning_error(
    members: list[tuple[str, bytes]], fmt: str, tar_format: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            archive = _tar_gz(Path(tmp) / "a.tar.gz", members, tar_format)
        except (ValueError, UnicodeError):  # a name tarfile itself cannot write in this format
            return
        _load_or_refuse([archive], fmt)


@pytest.mark.parametrize("kind", ["csv", "collect", "bitbrains", "planetlab"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_ROWS, data=st.data())
def test_arbitrary_numbers_give_traces_or_one_planning_error(
    kind: str, rows: list[tuple[float, list[float], str]], data: st.DataObject
) -> None:
    table = [_cells(kind, t, v, name) for t, v, name in rows]
    if data.draw(st.booleans()):  # one hostile field somewhere
        r = data.draw(st.integers(0, len(table) - 1))
        table[r][data.draw(st.integers(0, len(table[r]) - 1))] = data.draw(_HOSTILE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if kind == "csv":
            header = "server,timestamp,cpu,mem,disk,net,cpu_capacity,mem_capacity"
            paths = [_write(root / "t.csv", "\n".join([header, *map(",".join, table)]) + "\n")]
        elif kind == "collect":
            paths = [_write(root / "c.csv", "\n".join([COLLECT_HEADER, *map(",".join, table)]) + "\n")]
        elif kind == "bitbrains":
            paths = [_write(root / "bb" / "1.csv", "\n".join([BB_HEADER, *map(";\t".join, table)]) + "\n").parent]
        else:  # two VMs of the same length
            for vm in ("vm1", "vm2"):
                _write(root / "pl" / vm, "\n".join(row[0] for row in table) + "\n")
            paths = [root / "pl"]
        _load_or_refuse(paths, kind)
