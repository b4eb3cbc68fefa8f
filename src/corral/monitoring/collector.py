"""The stand-alone collector for physical servers that are candidates for consolidation.

Reads the host with psutil every interval and appends one row of the ``corral collect`` CSV
(corral.planning.formats) per interval. Needs only Python and psutil: nothing in its import chain
imports libvirt, numpy or the planner (``python -m corral.monitoring.collector --out FILE.csv``).

Guarantees: every row is written with one ``write()`` and fsync'ed, so a crash or a SIGKILL leaves
whole lines; SIGINT/SIGTERM stop it between rows; a restart appends to the same file (the header
is written only when the file is new or empty, a different header is refused); an interval whose
counters went backwards (a reset) is skipped rather than written with a negative or made-up rate.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from corral.core.errors import CorralError, InvalidInput

if TYPE_CHECKING:
    from corral.planning.formats import CollectSample

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
VIRTUAL_NIC_PREFIXES = (
    "lo", "tap", "tun", "vnet", "veth", "virbr", "docker", "br-", "cni", "flannel", "cali", "lxc",
    "vxlan", "genev", "kube", "ifb", "dummy", "wg", "zt", "tailscale", "podman", "macvtap",
)  # fmt: skip
VIRTUAL_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd")


# ---------------------------------------------------------------- the CSV format, loaded lightly
def _formats() -> ModuleType:
    """corral.planning.formats without corral.planning's __init__ (which pulls numpy and the solver):
    the module is pure, so it is loaded from its file when the package is not imported already."""
    name = "corral.planning.formats"
    if name in sys.modules:
        return sys.modules[name]
    if "corral.planning" in sys.modules:
        import corral.planning.formats as mod

        return mod
    path = Path(__file__).resolve().parent.parent / "planning" / "formats.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken installation
        raise CorralError(f"cannot load the collect format from {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- pure part
@dataclass(frozen=True)
class Snapshot:
    """One reading of the host's counters."""

    wall: float  # unix seconds when read
    mono: float  # monotonic seconds when read (intervals are measured on this clock)
    cpu_total_s: float  # CPU seconds of all cores, every state (guest time excluded: it is in user)
    cpu_idle_s: float  # idle + iowait seconds of all cores
    cpu_cores: int  # logical cores
    cpu_mhz: float  # per core
    mem_total_bytes: int
    mem_used_bytes: int  # total - available
    disk: Mapping[str, tuple[int, int]]  # physical disk -> (read bytes, written bytes)
    net: Mapping[str, tuple[int, int]]  # physical NIC -> (received bytes, sent bytes)
    disk_ops: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # disk -> (reads, writes) done


@dataclass(frozen=True)
class Skip:
    """No row for this interval, and why."""

    reason: str


def _device_rate(
    prev: Mapping[str, tuple[int, int]], cur: Mapping[str, tuple[int, int]], elapsed: float, what: str
) -> tuple[float, float] | Skip:
    """Summed rates of the devices present in both readings (one that appears or disappears in
    between has no known delta and is left out of this interval)."""
    a = b = 0
    for name in cur.keys() & prev.keys():
        da = cur[name][0] - prev[name][0]
        db = cur[name][1] - prev[name][1]
        if da < 0 or db < 0:
            return Skip(f"{what} counters of {name} went backwards (reset)")
        a += da
        b += db
    return a / elapsed, b / elapsed


def compute_sample(prev: Snapshot, cur: Snapshot, host: str) -> CollectSample | Skip:
    """The collect row for the interval between two snapshots, or why there is none (no time
    elapsed, or a counter reset: rates are never negative nor guessed)."""
    elapsed = cur.mono - prev.mono
    if not elapsed > 0:
        return Skip("no time elapsed between the readings")
    total = cur.cpu_total_s - prev.cpu_total_s
    if not total > 0:
        return Skip("CPU time counters did not advance (reset)")
    busy = total - (cur.cpu_idle_s - prev.cpu_idle_s)
    cpu_pct = min(100.0, max(0.0, 100.0 * busy / total))
    disk = _device_rate(prev.disk, cur.disk, elapsed, "disk")
    if isinstance(disk, Skip):
        return disk
    net = _device_rate(prev.net, cur.net, elapsed, "network")
    if isinstance(net, Skip):
        return net
    used = min(max(0, cur.mem_used_bytes), cur.mem_total_bytes)
    sample: CollectSample = _formats().CollectSample(
        timestamp=round(cur.wall, 3),
        host=host,
        cpu_cores=cur.cpu_cores,
        cpu_mhz=cur.cpu_mhz,
        cpu_pct=cpu_pct,
        mem_total_bytes=cur.mem_total_bytes,
        mem_used_bytes=used,
        disk_read_bps=disk[0],
        disk_write_bps=disk[1],
        net_rx_bps=net[0],
        net_tx_bps=net[1],
    )
    return sample


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``30s``, ``15m``, ``2h``, ``7d``, ``1w`` or a plain number of seconds (``1.5h`` works)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise InvalidInput(f"{what} {text!r}: expected a number with an optional unit s, m, h, d or w (e.g. 30s, 7d)")
    seconds = float(m.group(1)) * DURATION_UNITS[m.group(2) or "s"]
    if not seconds > 0 or not math.isfinite(seconds):
        raise InvalidInput(f"{what} {text!r}: must be more than zero")
    return seconds


def is_virtual_nic(name: str) -> bool:
    return name.startswith(VIRTUAL_NIC_PREFIXES)


# ---------------------------------------------------------------- reading the host (psutil)
class HostReader:
    """Reads Snapshots with four psutil calls (cpu_times, virtual_memory, disk and NIC counters)."""

    def __init__(self, cpu_mhz: float | None = None, sys_root: str = "/sys") -> None:
        try:
            import psutil
        except ImportError:
            raise CorralError("the collector needs psutil: pip install psutil") from None

        self._psutil = psutil
        self._sys = Path(sys_root)
        self.cpu_cores = psutil.cpu_count(logical=True) or 1
        self.cpu_mhz = cpu_mhz if cpu_mhz is not None else self._mhz()
        self._disk_ok: dict[str, bool] = {}
        self._nic_physical: dict[str, bool] = {}

    def _mhz(self) -> float:
        """Per-core MHz: the maximum (nominal) frequency when the kernel reports one, else the current
        one, else /proc/cpuinfo's ``cpu MHz`` (read once: the capacity of a core should not wobble)."""
        freq = None
        with contextlib.suppress(Exception):
            freq = self._psutil.cpu_freq()
        if freq is not None and freq.max > 0:
            return float(freq.max)
        if freq is not None and freq.current > 0:
            return float(freq.current)
        with contextlib.suppress(OSError):
            mhz = [
                float(line.split(":", 1)[1])
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.lower().startswith("cpu mhz")
            ]
            if mhz:
                return sum(mhz) / len(mhz)
        raise CorralError("cannot find the CPU frequency (psutil.cpu_freq, /proc/cpuinfo); give it with --cpu-mhz")

    def _physical_disk(self, name: str) -> bool:
        ok = self._disk_ok.get(name)
        if ok is None:
            block = self._sys / "block"
            if block.is_dir():  # Linux: whole disks backed by a device (not partitions, dm, md, loop, zram)
                ok = (block / name.replace("/", "!") / "device").exists()
            else:
                ok = not name.startswith(VIRTUAL_DISK_PREFIXES)
            self._disk_ok[name] = ok
        return ok

    def _nic_has_device(self, name: str) -> bool:
        ok = self._nic_physical.get(name)
        if ok is None:
            ok = (self._sys / "class" / "net" / name / "device").exists() and not is_virtual_nic(name)
            self._nic_physical[name] = ok
        return ok

    def select_nics(self, names: list[str]) -> list[str]:
        """Physical NICs (backed by a device in /sys: no bridge, bond, VLAN, tap, veth or loopback);
        where there is none (a container), every NIC whose name is not a known virtual kind."""
        physical = [n for n in names if self._nic_has_device(n)]
        return physical if physical else [n for n in names if not is_virtual_nic(n)]

    def read(self) -> Snapshot:
        ps = self._psutil
        ct = ps.cpu_times()
        fields: dict[str, float] = ct._asdict()
        total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
        idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
        vm = ps.virtual_memory()
        disks = ps.disk_io_counters(perdisk=True) or {}
        nics = ps.net_io_counters(pernic=True) or {}
        chosen = self.select_nics(list(nics))
        return Snapshot(
            wall=time.time(),
            mono=time.monotonic(),
            cpu_total_s=total,
            cpu_idle_s=idle,
            cpu_cores=self.cpu_cores,
            cpu_mhz=self.cpu_mhz,
            mem_total_bytes=int(vm.total),
            mem_used_bytes=int(vm.total - vm.available),
            disk={n: (d.read_bytes, d.write_bytes) for n, d in disks.items() if self._physical_disk(n)},
            disk_ops={n: (d.read_count, d.write_count) for n, d in disks.items() if self._physical_disk(n)},
            net={n: (nics[n].bytes_recv, nics[n].bytes_sent) for n in chosen},
        )


# ---------------------------------------------------------------- the CSV file
class CollectFile:
    """The output CSV, opened for appending: checks (or writes) the header, cuts a partial last line
    left by a crash, holds an exclusive lock against a second collector, fsyncs every row."""

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        fmt = _formats()
        self.path = path
        header: str = fmt.collect_header()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot open for appending: {exc.strerror}") from None
        self._fd = fd
        try:
            self._lock()
            size = os.fstat(fd).st_size
            if size == 0:
                self._write(header)
                with contextlib.suppress(OSError):  # make the new file's name durable too
                    dfd = os.open(path.resolve().parent, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            else:
                self._check_header(header)
                self._cut_partial_line(size, log)
        except BaseException:
            os.close(fd)
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InvalidInput(f"{self.path}: another collector is writing this file") from None

    def _check_header(self, header: str) -> None:
        with open(self._fd, encoding="utf-8", errors="replace", closefd=False) as fh:
            fh.seek(0)
            first = ""
            for line in fh:
                if line.strip() and not line.lstrip().startswith("#"):
                    first = line
                    break
        if first.strip() == "":
            return  # only blank lines: nothing to keep consistent with
        if first.strip() != header.strip():
            raise InvalidInput(
                f"{self.path}: its header is not the collect format's ({first.strip()[:80]!r}); "
                "refusing to append -- choose another --out"
            )

    def _cut_partial_line(self, size: int, log: Callable[[str], None]) -> None:
        """A crash during a write cannot happen between our lines (one write each), but a power loss
        can leave a torn tail: drop everything after the last newline."""
        tail_len = min(size, 65536)
        os.lseek(self._fd, size - tail_len, os.SEEK_SET)
        tail = os.read(self._fd, tail_len)
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = size - tail_len + cut + 1 if cut >= 0 else 0
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        log(f"{self.path}: dropped a partial last line ({size - keep} bytes) left by an earlier crash")

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        n = os.write(self._fd, data)  # O_APPEND: one write, one whole line
        if n != len(data):
            raise CorralError(f"{self.path}: short write ({n} of {len(data)} bytes): disk full?")
        os.fsync(self._fd)

    def append(self, sample: CollectSample) -> None:
        self._write(_formats().format_collect_row(sample))

    def close(self) -> None:
        os.close(self._fd)


# ---------------------------------------------------------------- the loop
def _stderr(msg: str) -> None:
    print(f"corral collect: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the loop ends between rows); handlers restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def default_host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def check_host(host: str) -> str:
    if not host or any(c in host for c in ',\n\r"') or host != host.strip():
        raise InvalidInput(f"host name {host!r}: must be non-empty, without commas, quotes or surrounding spaces")
    return host


def collect(
    out: Path,
    interval_s: float = 60.0,
    duration_s: float | None = None,
    host: str | None = None,
    *,
    reader: Any = None,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = _stderr,
    cpu_mhz: float | None = None,
) -> int:
    """Append one row per interval to ``out`` until ``duration_s`` has passed (None: until stopped)
    or ``stop`` is set (SIGINT/SIGTERM set it when running in the main thread). Returns the rows written.

    ``reader``: anything with ``read() -> Snapshot`` (default: a psutil HostReader).
    """
    if not interval_s > 0:
        raise InvalidInput(f"interval {interval_s}: must be more than zero")
    if duration_s is not None and not duration_s >= interval_s:
        raise InvalidInput(f"duration {duration_s:g} s is shorter than one interval ({interval_s:g} s)")
    if cpu_mhz is not None and not (math.isfinite(cpu_mhz) and 0 < cpu_mhz <= 1e6):
        raise InvalidInput(f"--cpu-mhz {cpu_mhz}: must be a number of MHz above 0 and at most 1000000")
    name = check_host(host if host is not None else default_host())
    stop = stop if stop is not None else threading.Event()
    src = reader if reader is not None else HostReader(cpu_mhz=cpu_mhz)
    sink = CollectFile(out, log)
    rows = 0
    try:
        with _stop_on_signals(stop):
            prev: Snapshot = src.read()
            start = prev.mono
            end = start + duration_s if duration_s is not None else math.inf
            until = "until stopped" if duration_s is None else f"for {duration_s:g} s"
            log(f"host {name}: a row every {interval_s:g} s into {out} {until}")
            deadline = start + interval_s
            while not stop.is_set():
                delay = deadline - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                cur: Snapshot = src.read()
                result = compute_sample(prev, cur, name)
                if isinstance(result, Skip):
                    log(f"interval skipped: {result.reason}")
                else:
                    sink.append(result)
                    rows += 1
                prev = cur
                if cur.mono >= end - 1e-6:
                    break
                deadline += interval_s
                if deadline <= cur.mono:  # late (suspended, overloaded): skip the missed deadlines
                    deadline = cur.mono + interval_s
                deadline = min(deadline, end)
    finally:
        sink.close()
    log(f"stopped: {rows} row(s) written to {out}")
    return rows


# ---------------------------------------------------------------- python -m corral.monitoring.collector
def main(argv: list[str] | None = None, stderr: TextIO | None = None) -> int:
    """Entry point needing only Python and psutil (same options as ``corral collect``)."""
    p = argparse.ArgumentParser(
        prog="python -m corral.monitoring.collector",
        description="Record this server's CPU, memory, disk and network use into a collect CSV for `corral plan`.",
    )
    p.add_argument("--out", required=True, type=Path, help="CSV file to append to")
    p.add_argument("--interval", default="60", help="seconds between rows (e.g. 60, 30s, 5m); default 60")
    p.add_argument("--duration", default=None, help="how long to run (30s, 15m, 2h, 7d); default until stopped")
    p.add_argument("--host", default=None, help="host name in the rows (default: this host's short name)")
    p.add_argument("--cpu-mhz", type=float, default=None, help="per-core MHz when the kernel does not report it")
    a = p.parse_args(argv)
    err = stderr if stderr is not None else sys.stderr
    try:
        collect(
            a.out,
            parse_duration(a.interval, "interval"),
            parse_duration(a.duration) if a.duration is not None else None,
            a.host,
            cpu_mhz=a.cpu_mhz,
        )
    except CorralError as exc:
        print(f"corral collect: error: {exc.message}", file=err)
        return 2 if isinstance(exc, InvalidInput) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
