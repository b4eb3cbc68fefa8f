"""The stand-alone collector: pure rates, device selection, the CSV file's guarantees, real runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from corral.cli.collect import register
from corral.core.errors import InvalidInput
from corral.monitoring.collector import HostReader, Skip, Snapshot, collect, compute_sample, parse_duration
from corral.planning.formats import COLLECT_COLUMNS, CollectSample, collect_header
from corral.planning.importers import load_traces

HEADER = collect_header()
GIB = 1024**3


def snap(mono: float, **kw: object) -> Snapshot:
    base: dict[str, object] = {
        "wall": 1_800_000_000.0 + mono,
        "mono": mono,
        "cpu_total_s": 0.0,
        "cpu_idle_s": 0.0,
        "cpu_cores": 4,
        "cpu_mhz": 2400.0,
        "mem_total_bytes": 8 * GIB,
        "mem_used_bytes": 2 * GIB,
        "disk": {"sda": (0, 0)},
        "net": {"eth0": (0, 0)},
    }
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- pure part
def test_compute_sample_rates() -> None:
    a = snap(10.0, cpu_total_s=100.0, cpu_idle_s=80.0, disk={"sda": (1000, 2000), "nvme0n1": (0, 0)},
             net={"eth0": (500, 600)})  # fmt: skip
    b = snap(12.0, cpu_total_s=108.0, cpu_idle_s=82.0, mem_used_bytes=3 * GIB,
             disk={"sda": (5000, 2000), "nvme0n1": (1000, 4000), "sdb": (10**9, 10**9)},  # sdb: new, left out
             net={"eth0": (2500, 1600)})  # fmt: skip
    s = compute_sample(a, b, "srv1")
    assert s == CollectSample(
        timestamp=1_800_000_012.0, host="srv1", cpu_cores=4, cpu_mhz=2400.0, cpu_pct=75.0,
        mem_total_bytes=8 * GIB, mem_used_bytes=3 * GIB,
        disk_read_bps=(4000 + 1000) / 2, disk_write_bps=4000 / 2, net_rx_bps=1000.0, net_tx_bps=500.0,
    )  # fmt: skip


def test_compute_sample_counter_resets_are_skipped() -> None:
    a = snap(0.0, cpu_total_s=100.0, cpu_idle_s=50.0, disk={"sda": (1000, 1000)}, net={"eth0": (1000, 1000)})
    b = snap(1.0, cpu_total_s=104.0, cpu_idle_s=52.0, disk={"sda": (2000, 2000)}, net={"eth0": (3000, 3000)})
    assert isinstance(compute_sample(a, b, "h"), CollectSample)
    for bad, what in (
        (replace(b, disk={"sda": (10, 2000)}), "disk"),
        (replace(b, net={"eth0": (3000, 5)}), "network"),
        (replace(b, cpu_total_s=3.0), "CPU"),
        (replace(b, mono=0.0), "no time"),
    ):
        r = compute_sample(a, bad, "h")
        assert isinstance(r, Skip) and what in r.reason
    # after a reset the next interval is measured from the new counters again
    reset = replace(b, disk={"sda": (10, 20)})
    after = replace(b, mono=2.0, cpu_total_s=108.0, cpu_idle_s=54.0, disk={"sda": (110, 220)})
    r = compute_sample(reset, after, "h")
    assert isinstance(r, CollectSample) and (r.disk_read_bps, r.disk_write_bps) == (100.0, 200.0)


def test_compute_sample_clamps() -> None:
    a = snap(0.0, cpu_total_s=10.0, cpu_idle_s=5.0)
    b = snap(1.0, cpu_total_s=12.0, cpu_idle_s=8.0, mem_used_bytes=9 * GIB)  # idle outran total (kernel jitter)
    r = compute_sample(a, b, "h")
    assert isinstance(r, CollectSample) and r.cpu_pct == 0.0 and r.mem_used_bytes == 8 * GIB


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("90", 90), ("1.5h", 5400),
     ("0.5", 0.5), (" 2H ", 7200)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "7 days", "1e3", "h", "2h30m", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration(text)


def test_device_selection(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    for d in ("block/sda/device", "block/nvme0n1/device", "block/loop0", "block/dm-0", "block/md0",
              "class/net/eth0/device", "class/net/enp3s0/device", "class/net/br0", "class/net/bond0",
              "class/net/vnet0", "class/net/lo"):  # fmt: skip
        (sysfs / d).mkdir(parents=True)
    r = HostReader(cpu_mhz=1000.0, sys_root=str(sysfs))
    disks = ["sda", "sda1", "sda2", "nvme0n1", "nvme0n1p1", "loop0", "dm-0", "md0"]
    assert [d for d in disks if r._physical_disk(d)] == ["sda", "nvme0n1"]
    assert r.select_nics(["lo", "eth0", "br0", "bond0", "vnet0", "enp3s0"]) == ["eth0", "enp3s0"]
    # no NIC backed by a device (a container): every NIC but loopback and the virtual kinds
    assert r.select_nics(["lo", "eth0@if5", "veth1", "tap0", "docker0", "virbr0", "ens5"]) == ["eth0@if5", "ens5"]


def test_host_reader_reads_this_host() -> None:
    r = HostReader()
    a = r.read()
    time.sleep(0.05)
    b = r.read()
    assert a.cpu_cores >= 1 and a.cpu_mhz > 0 and 0 < a.mem_used_bytes <= a.mem_total_bytes
    assert not any(n == "lo" for n in a.net) and not any(n.startswith("loop") for n in a.disk)
    assert isinstance(compute_sample(a, b, "h"), CollectSample | Skip)


# ---------------------------------------------------------------- the loop, with a scripted reader
class Scripted:
    """Snapshots one interval apart; a disk counter reset at step 3."""

    def __init__(self) -> None:
        self.k = 0

    def read(self) -> Snapshot:
        k = self.k
        self.k += 1
        disk = 10_000 * k if k < 3 else 100 * (k - 3)
        return snap(time.monotonic(), cpu_total_s=4.0 * k, cpu_idle_s=2.0 * k, disk={"sda": (disk, disk)})


def test_collect_skips_a_reset_interval(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    logs: list[str] = []
    rows = collect(out, 0.05, 0.3, "h1", reader=Scripted(), log=logs.append)
    lines = out.read_text().splitlines()
    assert lines[0] + "\n" == HEADER and len(lines) == 1 + rows and rows == 5
    assert any("went backwards" in m for m in logs)
    assert all(not any(f.startswith("-") for f in line.split(",")) for line in lines[1:])


def test_collect_stops_when_told(tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    rows = collect(tmp_path / "c.csv", 0.1, None, "h1", reader=Scripted(), stop=stop, log=lambda m: None)
    assert time.monotonic() - t0 < 1.0 and 1 <= rows <= 4


def test_sigterm_wakes_the_sleeping_loop(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    rows = collect(out, 30.0, None, "h1", reader=Scripted(), log=lambda m: None)
    assert time.monotonic() - t0 < 2.0  # not at the next deadline, 30 s away
    assert rows == 0 and out.read_text() == HEADER
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_refuses_other_header_and_bad_host(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("server,timestamp,cpu\nx,1,2\n")
    with pytest.raises(InvalidInput, match="refusing to append"):
        collect(other, 1.0, 1.0, "h1", reader=Scripted())
    assert other.read_text() == "server,timestamp,cpu\nx,1,2\n"
    with pytest.raises(InvalidInput, match="host name"):
        collect(tmp_path / "c.csv", 1.0, 1.0, "a,b", reader=Scripted())
    with pytest.raises(InvalidInput, match="shorter than one interval"):
        collect(tmp_path / "c.csv", 60.0, 30.0, "h1", reader=Scripted())


def test_cuts_a_torn_last_line_and_locks_out_a_second_collector(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    collect(out, 0.05, 0.1, "h1", reader=Scripted(), log=lambda m: None)
    whole = out.read_text()
    out.write_text(whole + "1800000000.5,h1,4,24")  # a power loss in the middle of a row
    logs: list[str] = []
    collect(out, 0.05, 0.1, "h1", reader=Scripted(), log=logs.append)
    text = out.read_text()
    assert text.startswith(whole) and text.endswith("\n") and "24\n" not in text.splitlines(keepends=True)
    assert text.count(HEADER) == 1 and any("partial last line" in m for m in logs)
    stop = threading.Event()
    first = threading.Thread(target=collect, args=(out, 0.05, None, "h1"),
                             kwargs={"reader": Scripted(), "stop": stop, "log": lambda m: None})  # fmt: skip
    first.start()
    time.sleep(0.2)
    try:
        with pytest.raises(InvalidInput, match="another collector"):
            collect(out, 0.05, 0.1, "h1", reader=Scripted())
    finally:
        stop.set()
        first.join()


# ---------------------------------------------------------------- real runs
def test_cli_run_then_the_planner_reads_it_and_a_restart_appends(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep `collect` a subcommand, as under `corral`
        pass

    out = tmp_path / "srv.csv"
    runner = CliRunner()
    t0 = time.monotonic()
    res = runner.invoke(app, ["collect", "--out", str(out), "--interval", "0.5", "--duration", "3s", "--host", "srv1"])
    assert res.exit_code == 0, res.output
    assert 2.8 < time.monotonic() - t0 < 5.0
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(COLLECT_COLUMNS) and len(lines) == 1 + 6
    ts = load_traces([out], fmt="collect")
    assert ts.names == ("srv1",)
    assert ts.demand["cpu"].shape == (1, 6)
    res = runner.invoke(app, ["collect", "--out", str(out), "--interval", "0.5", "--duration", "1s", "--host", "srv1"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.count("timestamp,host") == 1 and len(text.splitlines()) == 1 + 8
    assert load_traces([out]).demand["cpu"].shape[1] >= 8  # auto-detected as the collect format
    res = runner.invoke(app, ["collect", "--out", str(out), "--duration", "soon"])
    assert isinstance(res.exception, InvalidInput)


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_sigterm_leaves_a_whole_file(tmp_path: Path) -> None:
    out = tmp_path / "srv.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.collect", "--out", str(out), "--interval", "0.2", "--host", "srv2"],
        stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 3.0
    assert "stopped:" in err
    text = out.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) >= 4 and all(len(line.split(",")) == len(COLLECT_COLUMNS) for line in lines)
    assert load_traces([out]).names == ("srv2",)  # every line parses


def test_one_line_error_and_no_heavy_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n")
    r = subprocess.run(
        [sys.executable, "-m", "corral.monitoring.collector", "--out", str(bad), "--interval", "1", "--duration", "2s"],
        capture_output=True, text=True, env=_env(), timeout=30,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "refusing to append" in r.stderr
    probe = (
        "import sys, corral.cli.collect, corral.monitoring.collector as c; c._formats(); c.HostReader().read();"
        "print(sorted(m for m in ('libvirt', 'numpy', 'ortools', 'corral.planning') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    # the format module loaded on its own is the one the planner uses afterwards in the same process
    probe = (
        "import corral.monitoring.collector as c; f = c._formats();"
        "from corral.planning import CollectSample; import corral.planning.formats as g;"
        "from corral.planning.importers import load_traces;"
        "print(f is g and CollectSample is f.CollectSample)"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.stdout.strip() == "True", r.stderr
