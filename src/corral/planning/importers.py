"""Trace importers (the imperative edge): files in, ServerTrace lists out. Formats: docs/planning.md."""

from __future__ import annotations

import math
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corral.planning.errors import EmptyInputError, PlanningError, TraceFormatError
from corral.planning.formats import COLLECT_COLUMNS
from corral.planning.model import ServerTrace, TraceSet, align
from corral.planning.names import FORMATS

Progress = Callable[[int, int], None]
BITBRAINS_HEADER_START = "Timestamp [ms]"
CSV_COLUMNS = ("server", "timestamp")
MB = 1024 * 1024


@dataclass(frozen=True)
class PlanetLabSizes:
    """CloudSim's VM types for PlanetLab traces: VM i of n (sorted by file name) gets type
    ``i // ceil(n / len(mips))``."""

    mips: tuple[float, ...] = (2500.0, 2000.0, 1000.0, 500.0)
    ram_mb: tuple[float, ...] = (870.0, 1740.0, 1740.0, 613.0)
    step_s: float = 300.0


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _number(text: str, path: Path, line: int, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise TraceFormatError(str(path), line, f"{what}: not a number: {text.strip()[:40]!r}") from None
    if not math.isfinite(v):
        raise TraceFormatError(str(path), line, f"{what}: not a finite number: {text.strip()!r}")
    if v < 0:
        raise TraceFormatError(str(path), line, f"{what}: negative value {v}")
    return v


# ---------------------------------------------------------------- PlanetLab
def read_planetlab_file(path: Path) -> np.ndarray:
    """CPU percentages of one PlanetLab file (one number 0..100 per line, blank lines ignored)."""
    values: list[float] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for no, raw in enumerate(fh, 1):
            s = raw.strip()
            if not s:
                continue
            v = _number(s, path, no, "CPU percent")
            if v > 100:
                raise TraceFormatError(str(path), no, f"CPU percent {v} above 100")
            values.append(v)
    if not values:
        raise TraceFormatError(str(path), None, "empty file")
    return np.array(values, dtype=np.float64)


def _expand(source: Path | Sequence[Path]) -> tuple[list[Path], str]:
    if isinstance(source, Path):
        return _files(source), str(source)
    return sorted(source, key=lambda p: p.name), "the given paths"


def load_planetlab(
    source: Path | Sequence[Path], sizes: PlanetLabSizes | None = None, progress: Progress | None = None
) -> list[ServerTrace]:
    """CloudSim PlanetLab traces (a folder, or files): one file per VM, one CPU percent per line
    every 5 minutes. VMs are sized by their rank in file-name order (PlanetLabSizes)."""
    sizes = sizes or PlanetLabSizes()
    files, where = _expand(source)
    if not files:
        raise EmptyInputError(f"{where}: no trace files")
    if len({f.name for f in files}) != len(files):
        raise PlanningError(f"{where}: two trace files share a name (the name is the VM's)")
    series = []
    for k, f in enumerate(files):
        series.append(read_planetlab_file(f))
        if progress:
            progress(k + 1, len(files))
    lengths = np.array([s.size for s in series])
    common = int(np.bincount(lengths).argmax())
    for f, s in zip(files, series, strict=True):
        if s.size != common:
            raise TraceFormatError(str(f), None, f"{s.size} samples while the other files have {common}")
    n = len(files)
    block = math.ceil(n / len(sizes.mips))
    t = np.arange(common, dtype=np.float64) * sizes.step_s
    out = []
    for i, (f, s) in enumerate(zip(files, series, strict=True)):
        kind = min(i // block, len(sizes.mips) - 1)
        mips = sizes.mips[kind]
        ram = sizes.ram_mb[kind] * MB
        out.append(
            ServerTrace(
                name=f.name,
                timestamps=t,
                demand={"cpu": mips * s / 100.0, "mem": np.full(common, ram)},
                capacity={"cpu": mips, "mem": ram},
                source=str(f),
            )
        )
    return out


# ---------------------------------------------------------------- Bitbrains
def read_bitbrains_file(path: Path) -> tuple[ServerTrace, dict[str, int]]:
    """One GWA-T-12 file. Returns the trace and quirk counts: ``seconds`` (1 when timestamps are in
    seconds despite the header), ``over100`` (CPU samples above the provisioned capacity)."""
    rows: list[list[float]] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
        if not header.startswith(BITBRAINS_HEADER_START):
            raise TraceFormatError(str(path), 1, f"not a Bitbrains header (expected {BITBRAINS_HEADER_START!r})")
        for no, raw in enumerate(fh, 2):
            if not raw.strip():
                continue
            parts = raw.split(";")
            if len(parts) != 11:
                raise TraceFormatError(str(path), no, f"{len(parts)} fields, expected 11")
            rows.append([_number(p, path, no, f"column {j + 1}") for j, p in enumerate(parts)])
    if not rows:
        raise TraceFormatError(str(path), None, "no data rows")
    a = np.array(rows)
    ts = a[:, 0]
    quirks = {"seconds": 0, "over100": 0, "unsorted": 0}
    if ts.max() < 1e11:  # real values are seconds despite "[ms]"
        quirks["seconds"] = 1
    else:
        ts = ts / 1000.0
    if np.any(np.diff(ts) <= 0):
        quirks["unsorted"] = 1
        order = np.argsort(ts, kind="stable")
        a, ts = a[order], ts[order]
    cap_mhz = float(np.median(a[:, 2]))
    quirks["over100"] = int((a[:, 4] > 100.0).sum())
    trace = ServerTrace(
        name=path.stem,
        timestamps=ts,
        demand={
            "cpu": a[:, 3],
            "mem": a[:, 6] * 1024.0,
            "disk": (a[:, 7] + a[:, 8]) * 1024.0,
            "net": (a[:, 9] + a[:, 10]) * 1024.0,
        },
        capacity={"cpu": cap_mhz, "mem": float(np.median(a[:, 5])) * 1024.0},
        source=str(path),
    )
    return trace, quirks


def load_bitbrains(
    source: Path | Sequence[Path], progress: Progress | None = None
) -> tuple[list[ServerTrace], list[str]]:
    """GWA-T-12 traces (a folder of N.csv, or files); returns the traces and notes on quirks."""
    files, where = _expand(source)
    files = [f for f in files if f.suffix == ".csv"]
    if not files:
        raise EmptyInputError(f"{where}: no .csv files")
    out, seconds, over, unsorted = [], 0, 0, 0
    for k, f in enumerate(files):
        t, q = read_bitbrains_file(f)
        out.append(t)
        seconds += q["seconds"]
        over += q["over100"]
        unsorted += q["unsorted"]
        if progress:
            progress(k + 1, len(files))
    notes = []
    if seconds:
        notes.append(f"Bitbrains: {seconds} file(s) have timestamps in seconds despite the '[ms]' header")
    if over:
        total = sum(t.timestamps.size for t in out)
        notes.append(
            f"Bitbrains: {over} CPU samples ({100 * over / total:.1f} %) above 100 % of the provisioned capacity "
            "(kept as measured demand)"
        )
    if unsorted:
        notes.append(f"Bitbrains: {unsorted} file(s) had unsorted timestamps (sorted)")
    return out, notes


# ---------------------------------------------------------------- collect / plain CSV
def _read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    fh = path.open(encoding="utf-8", errors="replace")
    lines = ((no, raw) for no, raw in enumerate(fh, 1) if raw.strip() and not raw.lstrip().startswith("#"))
    try:
        _, header = next(lines)
    except StopIteration:
        fh.close()
        raise TraceFormatError(str(path), None, "empty file") from None
    cols = [c.strip() for c in header.strip().split(",")]

    def rows() -> Iterator[tuple[int, list[str]]]:
        with fh:
            for no, raw in lines:
                parts = [p.strip() for p in raw.rstrip("\r\n").split(",")]
                if len(parts) != len(cols):
                    raise TraceFormatError(str(path), no, f"{len(parts)} fields, expected {len(cols)}")
                yield no, parts

    return cols, rows()


def load_collect(paths: Sequence[Path], progress: Progress | None = None) -> list[ServerTrace]:
    """``corral collect`` CSV files (see corral.planning.formats); hosts may span several files."""
    per: dict[str, list[list[float]]] = {}
    for k, path in enumerate(paths):
        cols, rows = _read_csv(path)
        missing = [c for c in COLLECT_COLUMNS if c not in cols]
        if missing:
            raise TraceFormatError(str(path), 1, f"missing column(s): {', '.join(missing)}")
        ix = [cols.index(c) for c in COLLECT_COLUMNS]
        for no, parts in rows:
            vals = [parts[i] for i in ix]
            host = vals[1]
            if not host:
                raise TraceFormatError(str(path), no, "empty host name")
            nums = [_number(v, path, no, c) for c, v in zip(COLLECT_COLUMNS, vals, strict=True) if c != "host"]
            if nums[3] > 100.0 + 1e-9:
                raise TraceFormatError(str(path), no, f"cpu_pct {nums[3]} above 100")
            if nums[5] > nums[4] * 1.0000001:
                raise TraceFormatError(str(path), no, "mem_used_bytes above mem_total_bytes")
            per.setdefault(host, []).append(nums)
        if progress:
            progress(k + 1, len(paths))
    if not per:
        raise EmptyInputError("no rows in the collect CSV file(s)")
    out = []
    for host, rows_ in sorted(per.items()):
        a = np.array(rows_)
        a = a[np.argsort(a[:, 0], kind="stable")]
        cap_cpu = a[:, 1] * a[:, 2]
        out.append(
            ServerTrace(
                name=host,
                timestamps=a[:, 0],
                demand={
                    "cpu": cap_cpu * a[:, 3] / 100.0,
                    "mem": a[:, 5],
                    "disk": a[:, 6] + a[:, 7],
                    "net": a[:, 8] + a[:, 9],
                },
                capacity={"cpu": float(cap_cpu.max()), "mem": float(a[:, 4].max())},
                source=",".join(str(p) for p in paths),
            )
        )
    return out


def load_plain_csv(paths: Sequence[Path], progress: Progress | None = None) -> list[ServerTrace]:
    """The plain CSV: header ``server,timestamp`` plus any of ``cpu,mem,disk,net`` (units of
    corral.planning.model) and optional ``cpu_capacity,mem_capacity,disk_capacity,net_capacity``."""
    per: dict[str, list[list[float]]] = {}
    res_cols: list[str] = []
    for k, path in enumerate(paths):
        cols, rows = _read_csv(path)
        if cols[:2] != list(CSV_COLUMNS):
            raise TraceFormatError(str(path), 1, "the header must start with 'server,timestamp'")
        known = {"cpu", "mem", "disk", "net"} | {f"{r}_capacity" for r in ("cpu", "mem", "disk", "net")}
        unknown = [c for c in cols[2:] if c not in known]
        if unknown:
            raise TraceFormatError(str(path), 1, f"unknown column(s): {', '.join(unknown)}")
        if res_cols and cols[2:] != res_cols:
            raise TraceFormatError(str(path), 1, "columns differ from the first file's")
        res_cols = cols[2:]
        if not any(c in ("cpu", "mem", "disk", "net") for c in res_cols):
            raise TraceFormatError(str(path), 1, "no resource column (cpu, mem, disk or net)")
        for no, parts in rows:
            if not parts[0]:
                raise TraceFormatError(str(path), no, "empty server name")
            try:
                ts = float(parts[1])
            except ValueError:
                raise TraceFormatError(str(path), no, f"timestamp: not a number: {parts[1]!r}") from None
            per.setdefault(parts[0], []).append(
                [ts] + [_number(v, path, no, c) for c, v in zip(res_cols, parts[2:], strict=True)]
            )
        if progress:
            progress(k + 1, len(paths))
    if not per:
        raise EmptyInputError("no rows in the CSV file(s)")
    out = []
    for name, rows_ in sorted(per.items()):
        a = np.array(rows_)
        a = a[np.argsort(a[:, 0], kind="stable")]
        demand = {c: a[:, j + 1] for j, c in enumerate(res_cols) if not c.endswith("_capacity")}
        capacity = {
            c.removesuffix("_capacity"): float(a[:, j + 1].max())
            for j, c in enumerate(res_cols)
            if c.endswith("_capacity")
        }
        out.append(ServerTrace(name=name, timestamps=a[:, 0], demand=demand, capacity=capacity, source=str(paths[0])))
    return out


# ---------------------------------------------------------------- detection and entry point
def detect_format(path: Path) -> str:
    """Guess the format of a file (or of a folder's first file) from its first non-blank line."""
    first = path
    if path.is_dir():
        files = _files(path)
        if not files:
            raise EmptyInputError(f"{path}: empty folder")
        first = files[0]
    with first.open(encoding="utf-8", errors="replace") as fh:
        line = ""
        for raw in fh:
            if raw.strip() and not raw.lstrip().startswith("#"):
                line = raw.strip()
                break
    if not line:
        raise TraceFormatError(str(first), None, "empty file: cannot detect its format")
    if line.startswith(BITBRAINS_HEADER_START):
        return "bitbrains"
    cols = [c.strip() for c in line.split(",")]
    if all(c in cols for c in COLLECT_COLUMNS):
        return "collect"
    if cols[:2] == list(CSV_COLUMNS):
        return "csv"
    try:
        float(line)
    except ValueError:
        raise TraceFormatError(str(first), 1, f"unrecognized trace format (first line {line[:60]!r})") from None
    return "planetlab"


def _safe_extract(tf: tarfile.TarFile, dest: Path) -> None:
    """Extract regular files and folders only, refusing paths that leave ``dest``."""
    root = dest.resolve()
    for m in tf.getmembers():
        target = (dest / m.name).resolve()
        if not target.is_relative_to(root):
            raise PlanningError(f"archive member {m.name!r} leaves the unpack folder")
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif m.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is not None:
                with src, target.open("wb") as out:
                    out.write(src.read())


@contextmanager
def unpacked(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield ``paths`` with every .tar.gz/.tgz replaced by the folder it unpacks to (temporary)."""
    with tempfile.TemporaryDirectory(prefix="corral-traces-") as tmp:
        out: list[Path] = []
        for k, p in enumerate(paths):
            if not p.exists():
                raise PlanningError(f"{p}: no such file or folder")
            if p.is_file() and (p.name.endswith(".tar.gz") or p.name.endswith(".tgz")):
                dest = Path(tmp) / str(k)
                dest.mkdir()
                try:
                    with tarfile.open(p, "r:gz") as tf:
                        _safe_extract(tf, dest)
                except (tarfile.TarError, OSError) as exc:
                    raise PlanningError(f"{p}: cannot unpack: {exc}") from None
                subdirs = [d for d in dest.iterdir() if d.is_dir()]
                files = [f for f in dest.iterdir() if f.is_file()]
                out.append(subdirs[0] if len(subdirs) == 1 and not files else dest)
            else:
                out.append(p)
        yield out


def load_traces(
    paths: Sequence[str | Path],
    fmt: str = "auto",
    *,
    planetlab_sizes: PlanetLabSizes | None = None,
    progress: Progress | None = None,
) -> TraceSet:
    """Read traces (folders, files or .tar.gz archives) in one format and align them."""
    if fmt not in FORMATS:
        raise PlanningError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not paths:
        raise EmptyInputError("no trace paths given")
    with unpacked([Path(p) for p in paths]) as ps:
        if fmt == "auto":
            kinds = {detect_format(p) for p in ps}
            if len(kinds) > 1:
                raise PlanningError(f"the inputs mix formats: {', '.join(sorted(kinds))}")
            fmt = kinds.pop()
        notes: list[str] = []
        files: list[Path] = []
        for p in ps:
            files += _files(p) if p.is_dir() else [p]
        if not files:
            raise EmptyInputError("no trace files")
        if fmt == "planetlab":
            traces = load_planetlab(files, planetlab_sizes, progress)
        elif fmt == "bitbrains":
            traces, more = load_bitbrains(files, progress)
            notes += more
        else:
            traces = load_collect(files, progress) if fmt == "collect" else load_plain_csv(files, progress)
        ts = align(traces)
    return TraceSet(
        names=ts.names,
        start_s=ts.start_s,
        step_s=ts.step_s,
        demand=ts.demand,
        capacity=ts.capacity,
        filled=ts.filled,
        notes=tuple(notes) + ts.notes,
    )
