"""Trace importers (the imperative edge): files in, ServerTrace lists out. Formats: docs/planning.md.

Every file is read line by line under the bounds of ``InputLimits`` (corral.planning.limits): no
line, file, archive or whole input is read into memory before it is known to be within them, and
every value is checked (finite, non-negative, below ``MAX_VALUE``; timestamps below
``MAX_TIMESTAMP_S``). Anything else is a ``PlanningError`` naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import stat
import tarfile
import tempfile
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corral.planning.errors import EmptyInputError, PlanningError, TraceFormatError
from corral.planning.formats import COLLECT_COLUMNS
from corral.planning.limits import (
    MAX_NAME_CHARS,
    MAX_TIMESTAMP_S,
    MAX_VALUE,
    BoundedReader,
    Budget,
    InputLimits,
    MiB,
    list_folder,
    open_regular,
    read_lines,
    shown,
    size_text,
)
from corral.planning.model import FloatArray, ServerTrace, TraceSet, align
from corral.planning.names import FORMATS

Progress = Callable[[int, int], None]
BITBRAINS_HEADER_START = "Timestamp [ms]"
CSV_COLUMNS = ("server", "timestamp")
CSV_RESOURCES = ("cpu", "mem", "disk", "net")
MB = 1024 * 1024
#: Bitbrains timestamps are milliseconds (or seconds, a quirk): raw values up to 1000 x MAX_TIMESTAMP_S.
MAX_BITBRAINS_TIMESTAMP = 1000 * MAX_TIMESTAMP_S
MAX_CORES = 1_000_000
MAX_CORE_MHZ = 1_000_000.0
_COPY_CHUNK = 256 * 1024


@dataclass(frozen=True)
class PlanetLabSizes:
    """CloudSim's VM types for PlanetLab traces: VM i of n (sorted by file name) gets type
    ``i // ceil(n / len(mips))``."""

    mips: tuple[float, ...] = (2500.0, 2000.0, 1000.0, 500.0)
    ram_mb: tuple[float, ...] = (870.0, 1740.0, 1740.0, 613.0)
    step_s: float = 300.0

    def assumed(self) -> dict[str, str]:
        """What of the traces these sizes make up (TraceSet.assumed): the files hold CPU percentages
        only, so CPU in MHz rests on the sizes' MIPS and memory is the sizes' RAM, never measured."""
        whose = "CloudSim VM" if self == PlanetLabSizes() else "given VM"
        return {"cpu": f"measured %, sizes assumed: {whose} MIPS", "mem": f"assumed: {whose} sizes"}


def _files(folder: Path, limits: InputLimits | None = None) -> list[Path]:
    return list_folder(folder, limits or InputLimits())


def _number(
    text: str, path: Path, line: int, what: str, *, high: float = MAX_VALUE, positive: bool = False
) -> float:
    """A finite number in [0, high] (in (0, high] when ``positive``), else TraceFormatError naming ``what``."""
    try:
        v = float(text)
    except ValueError:
        raise TraceFormatError(str(path), line, f"{what}: not a number: {shown(text.strip()[:40])!r}") from None
    if not math.isfinite(v):
        raise TraceFormatError(str(path), line, f"{what}: not a finite number: {shown(text.strip()[:40])!r}")
    if v < 0:
        raise TraceFormatError(str(path), line, f"{what}: negative value {v}")
    if positive and v == 0:
        raise TraceFormatError(str(path), line, f"{what}: must be more than 0, got {v:g}")
    if v > high:
        why = "unix seconds beyond the year 5138" if high == MAX_TIMESTAMP_S else "no real measurement reaches it"
        raise TraceFormatError(str(path), line, f"{what}: {v:g} is above {high:g} ({why})")
    return v


def _name(value: str, path: Path, line: int | None, what: str) -> str:
    """A server name: 1-255 printable characters (it reaches the report and the terminal)."""
    if not value:
        raise TraceFormatError(str(path), line, f"empty {what}")
    if len(value) > MAX_NAME_CHARS:
        raise TraceFormatError(str(path), line, f"{what} longer than {MAX_NAME_CHARS} characters")
    if not value.isprintable():
        raise TraceFormatError(str(path), line, f"{what} {shown(repr(value))} contains unprintable characters")
    return value


def _csv_records(
    lines: Iterator[tuple[int, str]], path: Path, *, delimiter: str = ",", comments: bool = True, strip: bool = True
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each record of a CSV file, parsed by the ``csv`` module: a field may be
    quoted, and a quoted field may hold the delimiter or a doubled quote. Blank lines (and, with
    ``comments``, lines starting with '#') are skipped; with ``strip``, fields lose surrounding blanks (numbers
    need not: float() ignores them). ``lines`` come from ``read_lines``, so every bound is enforced while
    reading; a quoted field may not run over lines."""
    consumed: list[int] = []  # the numbers of the lines the reader took for the record it is making

    def feed() -> Iterator[str]:
        for no, raw in lines:
            text = raw.lstrip()
            if not text or (comments and text[0] == "#"):
                continue
            consumed.append(no)
            yield raw + "\n"

    try:
        for fields in csv.reader(feed(), delimiter=delimiter, skipinitialspace=True):
            # A quote left open takes the next lines into its field (or, on the last line, the newline).
            if len(consumed) > 1 or (fields and fields[-1].endswith("\n")):
                raise TraceFormatError(
                    str(path), consumed[0], "a quoted field runs over the end of the line (a quote not closed?)"
                )
            yield consumed.pop(), [f.strip() for f in fields] if strip else fields
    except csv.Error as exc:
        raise TraceFormatError(str(path), consumed[0] if consumed else None, f"bad CSV: {exc}") from None


def _new_server(per: dict[str, array[float]], name: str, budget: Budget, path: Path, line: int) -> array[float]:
    if len(per) >= budget.limits.servers:
        raise TraceFormatError(str(path), line, f"more than {budget.limits.servers:,} servers (the input limit)")
    buf: array[float] = array("d")
    per[name] = buf
    return buf


def _rows(buf: array[float], width: int) -> FloatArray:
    """The rows kept in ``buf`` as a (rows, width) array, sorted by their first column (stable)."""
    a = np.frombuffer(buf, dtype=np.float64).reshape(-1, width)
    return np.asarray(a[np.argsort(a[:, 0], kind="stable")], dtype=np.float64)


# ---------------------------------------------------------------- PlanetLab
def read_planetlab_file(path: Path, budget: Budget | None = None) -> FloatArray:
    """CPU percentages of one PlanetLab file (one number 0..100 per line, blank lines ignored)."""
    budget = budget or Budget()
    values: array[float] = array("d")
    for no, raw in read_lines(path, budget):
        s = raw.strip()
        if not s:
            continue
        v = _number(s, path, no, "CPU percent")
        if v > 100:
            raise TraceFormatError(str(path), no, f"CPU percent {v} above 100")
        budget.add_row(path, no)
        values.append(v)
    if not values:
        raise TraceFormatError(str(path), None, "empty file")
    return np.array(values, dtype=np.float64)


def _expand(source: Path | Sequence[Path], limits: InputLimits) -> tuple[list[Path], str]:
    if isinstance(source, Path):
        return _files(source, limits), str(source)
    return sorted(source, key=lambda p: p.name), "the given paths"


def load_planetlab(
    source: Path | Sequence[Path],
    sizes: PlanetLabSizes | None = None,
    progress: Progress | None = None,
    budget: Budget | None = None,
) -> list[ServerTrace]:
    """CloudSim PlanetLab traces (a folder, or files): one file per VM, one CPU percent per line
    every 5 minutes. VMs are sized by their rank in file-name order (PlanetLabSizes)."""
    sizes = sizes or PlanetLabSizes()
    budget = budget or Budget()
    files, where = _expand(source, budget.limits)
    if not files:
        raise EmptyInputError(f"{where}: no trace files")
    if len({f.name for f in files}) != len(files):
        raise PlanningError(f"{where}: two trace files share a name (the name is the VM's)")
    if len(files) > budget.limits.servers:
        raise PlanningError(f"{where}: more than {budget.limits.servers:,} servers (the input limit)")
    for f in files:
        _name(f.name, f, None, "VM name (the file name)")
    series = []
    for k, f in enumerate(files):
        series.append(read_planetlab_file(f, budget))
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
def read_bitbrains_file(path: Path, budget: Budget | None = None) -> tuple[ServerTrace, dict[str, int]]:
    """One GWA-T-12 file. Returns the trace and quirk counts: ``seconds`` (1 when timestamps are in
    seconds despite the header), ``over100`` (CPU samples above the provisioned capacity)."""
    budget = budget or Budget()
    name = _name(path.stem, path, None, "VM name (the file name)")
    buf: array[float] = array("d")
    lines = read_lines(path, budget)
    header = next(lines, (1, ""))[1]
    if not header.startswith(BITBRAINS_HEADER_START):
        raise TraceFormatError(str(path), 1, f"not a Bitbrains header (expected {BITBRAINS_HEADER_START!r})")
    for no, parts in _csv_records(lines, path, delimiter=";", comments=False, strip=False):
        if len(parts) != 11:
            raise TraceFormatError(str(path), no, f"{len(parts)} fields, expected 11")
        budget.add_row(path, no)
        try:  # the common case at C speed; anything odd goes through _number, which names the problem
            row = list(map(float, parts))
        except ValueError:
            row = []
        if row and 0 <= row[0] <= MAX_BITBRAINS_TIMESTAMP and all(0 <= v <= MAX_VALUE for v in row[1:]):
            buf.extend(row)  # NaN and infinities fail the comparisons above
            continue
        buf.append(_number(parts[0], path, no, "column 1", high=MAX_BITBRAINS_TIMESTAMP))
        buf.extend(_number(p, path, no, f"column {j + 2}") for j, p in enumerate(parts[1:]))
    if not buf:
        raise TraceFormatError(str(path), None, "no data rows")
    a = np.frombuffer(buf, dtype=np.float64).reshape(-1, 11)
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
        name=name,
        timestamps=np.array(ts, dtype=np.float64),  # copies: the (rows, 11) block is not kept
        demand={
            "cpu": np.array(a[:, 3], dtype=np.float64),
            "mem": a[:, 6] * 1024.0,
            "disk": (a[:, 7] + a[:, 8]) * 1024.0,
            "net": (a[:, 9] + a[:, 10]) * 1024.0,
        },
        capacity={"cpu": cap_mhz, "mem": float(np.median(a[:, 5])) * 1024.0},
        source=str(path),
    )
    return trace, quirks


def load_bitbrains(
    source: Path | Sequence[Path], progress: Progress | None = None, budget: Budget | None = None
) -> tuple[list[ServerTrace], list[str]]:
    """GWA-T-12 traces (a folder of N.csv, or files); returns the traces and notes on quirks."""
    budget = budget or Budget()
    files, where = _expand(source, budget.limits)
    files = [f for f in files if f.suffix == ".csv"]
    if not files:
        raise EmptyInputError(f"{where}: no .csv files")
    if len(files) > budget.limits.servers:
        raise PlanningError(f"{where}: more than {budget.limits.servers:,} servers (the input limit)")
    out, seconds, over, unsorted = [], 0, 0, 0
    for k, f in enumerate(files):
        t, q = read_bitbrains_file(f, budget)
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
def _read_csv(path: Path, budget: Budget) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    records = _csv_records(read_lines(path, budget), path)
    try:
        header_no, cols = next(records)
    except StopIteration:
        raise TraceFormatError(str(path), None, "empty file") from None
    seen: set[str] = set()
    for c in cols:
        if c in seen:
            raise TraceFormatError(str(path), header_no, f"column {shown(c)!r} appears twice in the header")
        seen.add(c)

    def rows() -> Iterator[tuple[int, list[str]]]:
        for no, parts in records:
            if len(parts) != len(cols):
                raise TraceFormatError(str(path), no, f"{len(parts)} fields, expected {len(cols)}")
            budget.add_row(path, no)
            yield no, parts

    return cols, rows()


def _collect_row(parts: list[str], ix: list[int], path: Path, no: int) -> list[float]:
    """The numbers of one collect row, in COLLECT_COLUMNS order without ``host``."""
    vals = [parts[i] for i in ix]
    nums = [
        _number(v, path, no, c, high=MAX_TIMESTAMP_S if c == "timestamp" else MAX_VALUE)
        for c, v in zip(COLLECT_COLUMNS, vals, strict=True)
        if c != "host"
    ]
    # nums: timestamp, cpu_cores, cpu_mhz, cpu_pct, mem_total, mem_used, disk_r, disk_w, net_rx, net_tx
    if not (1 <= nums[1] <= MAX_CORES and float(nums[1]).is_integer()):
        raise TraceFormatError(
            str(path), no, f"cpu_cores: must be a whole number from 1 to {MAX_CORES:,}, got {nums[1]:g}"
        )
    if not 0 < nums[2] <= MAX_CORE_MHZ:
        raise TraceFormatError(
            str(path), no, f"cpu_mhz: must be more than 0 and at most {MAX_CORE_MHZ:g}, got {nums[2]:g}"
        )
    if nums[3] > 100.0 + 1e-9:
        raise TraceFormatError(str(path), no, f"cpu_pct {nums[3]} above 100")
    if nums[4] <= 0:
        raise TraceFormatError(str(path), no, "mem_total_bytes: must be more than 0")
    if nums[5] > nums[4] * 1.0000001:
        raise TraceFormatError(str(path), no, "mem_used_bytes above mem_total_bytes")
    return nums


def load_collect(
    paths: Sequence[Path], progress: Progress | None = None, budget: Budget | None = None
) -> list[ServerTrace]:
    """``corral collect`` CSV files (see corral.planning.formats); hosts may span several files."""
    budget = budget or Budget()
    per: dict[str, array[float]] = {}
    width = len(COLLECT_COLUMNS) - 1
    for k, path in enumerate(paths):
        cols, rows = _read_csv(path, budget)
        missing = [c for c in COLLECT_COLUMNS if c not in cols]
        if missing:
            raise TraceFormatError(str(path), 1, f"missing column(s): {', '.join(missing)}")
        ix = [cols.index(c) for c in COLLECT_COLUMNS]
        host_ix = cols.index("host")
        for no, parts in rows:
            host = parts[host_ix]
            if not host:
                raise TraceFormatError(str(path), no, "empty host name")
            nums = _collect_row(parts, ix, path, no)
            buf = per.get(host)
            if buf is None:
                buf = _new_server(per, _name(host, path, no, "host name"), budget, path, no)
            buf.extend(nums)
        if progress:
            progress(k + 1, len(paths))
    if not per:
        raise EmptyInputError("no rows in the collect CSV file(s)")
    out = []
    for host in sorted(per):
        a = _rows(per.pop(host), width)
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


def load_plain_csv(
    paths: Sequence[Path], progress: Progress | None = None, budget: Budget | None = None
) -> list[ServerTrace]:
    """The plain CSV: header ``server,timestamp`` plus any of ``cpu,mem,disk,net`` (units of
    corral.planning.model) and optional ``cpu_capacity,mem_capacity,disk_capacity,net_capacity``."""
    budget = budget or Budget()
    per: dict[str, array[float]] = {}
    res_cols: list[str] = []
    known = set(CSV_RESOURCES) | {f"{r}_capacity" for r in CSV_RESOURCES}
    for k, path in enumerate(paths):
        cols, rows = _read_csv(path, budget)
        if cols[:2] != list(CSV_COLUMNS):
            raise TraceFormatError(str(path), 1, "the header must start with 'server,timestamp'")
        unknown = [c for c in cols[2:] if c not in known]
        if unknown:
            raise TraceFormatError(str(path), 1, f"unknown column(s): {shown(', '.join(unknown))[:200]}")
        if res_cols and cols[2:] != res_cols:
            raise TraceFormatError(str(path), 1, "columns differ from the first file's")
        res_cols = cols[2:]
        if not any(c in CSV_RESOURCES for c in res_cols):
            raise TraceFormatError(str(path), 1, "no resource column (cpu, mem, disk or net)")
        positive = [c.endswith("_capacity") for c in res_cols]
        for no, parts in rows:
            name = parts[0]
            ts = _number(parts[1], path, no, "timestamp", high=MAX_TIMESTAMP_S)
            vals = [
                _number(v, path, no, c, positive=pos)
                for c, v, pos in zip(res_cols, parts[2:], positive, strict=True)
            ]
            buf = per.get(name)
            if buf is None:
                buf = _new_server(per, _name(name, path, no, "server name"), budget, path, no)
            buf.append(ts)
            buf.extend(vals)
        if progress:
            progress(k + 1, len(paths))
    if not per:
        raise EmptyInputError("no rows in the CSV file(s)")
    out = []
    width = 1 + len(res_cols)
    for name in sorted(per):
        a = _rows(per.pop(name), width)
        demand = {c: a[:, j + 1] for j, c in enumerate(res_cols) if not c.endswith("_capacity")}
        capacity = {
            c.removesuffix("_capacity"): float(a[:, j + 1].max())
            for j, c in enumerate(res_cols)
            if c.endswith("_capacity")
        }
        out.append(ServerTrace(name=name, timestamps=a[:, 0], demand=demand, capacity=capacity, source=str(paths[0])))
    return out


# ---------------------------------------------------------------- detection and entry point
def detect_format(path: Path, limits: InputLimits | None = None) -> str:
    """Guess the format of a file (or of a folder's first file) from its first non-blank line."""
    limits = limits or InputLimits()
    first = path
    if path.is_dir():
        files = _files(path, limits)
        if not files:
            raise EmptyInputError(f"{path}: empty folder")
        first = files[0]
    line = ""
    for _, raw in read_lines(first, Budget(limits)):
        if raw.strip() and not raw.lstrip().startswith("#"):
            line = raw.strip()
            break
    if not line:
        raise TraceFormatError(str(first), None, "empty file: cannot detect its format")
    if line.startswith(BITBRAINS_HEADER_START):
        return "bitbrains"
    try:
        cols = [c.strip() for c in next(csv.reader([line], skipinitialspace=True), [])]
    except csv.Error:
        cols = []
    if all(c in cols for c in COLLECT_COLUMNS):
        return "collect"
    if cols[:2] == list(CSV_COLUMNS):
        return "csv"
    try:
        float(line)
    except ValueError:
        raise TraceFormatError(
            str(first), 1, f"unrecognized trace format (first line {shown(line[:60])!r})"
        ) from None
    return "planetlab"


def _copy_member(src: tarfile.ExFileObject, target: Path, size: int, where: str, limits: InputLimits) -> None:
    """Copy one member to ``target`` in chunks, refusing a line longer than the limit as it goes
    (trace files are short lines of text: a bomb of one endless line stops after one line's worth)."""
    chunk_size = min(_COPY_CHUNK, limits.line_bytes)  # a line inside one chunk is never too long
    since_newline = 0
    with src, target.open("wb") as out:
        left = size
        while left > 0:
            chunk = src.read(min(chunk_size, left))
            if not chunk:
                raise PlanningError(f"{where}: cannot unpack: the archive ends inside a file")
            first = chunk.find(b"\n")
            if first < 0:
                since_newline += len(chunk)
            else:
                since_newline += first
                if since_newline >= limits.line_bytes:
                    break
                since_newline = len(chunk) - chunk.rfind(b"\n") - 1
            if since_newline >= limits.line_bytes:
                break
            out.write(chunk)
            left -= len(chunk)
    if left > 0:
        raise PlanningError(
            f"{where}: member {shown(target.name)!r} has a line longer than {size_text(limits.line_bytes)} "
            "(the limit per line): not a trace file"
        )


def _unpack(archive: Path, dest: Path, budget: Budget) -> None:
    """Unpack regular files and folders of a .tar.gz into ``dest``, refusing paths that leave it,
    members larger than a trace file may be, more members or more decompressed data than the limits."""
    limits = budget.limits
    root = dest.resolve()
    where = str(archive)
    max_stream = limits.unpacked_bytes + 1024 * limits.archive_members  # contents + tar headers
    with open_regular(archive) as fh, gzip.GzipFile(fileobj=fh, mode="rb") as gz:
        reader = BoundedReader(gz, max_pos=max_stream, max_read=MiB, where=where)
        with tarfile.open(fileobj=reader, mode="r:") as tf:  # type: ignore[call-overload]
            count = 0
            while (m := tf.next()) is not None:
                tf.members.clear()  # tarfile keeps every header it has read: not needed here
                count += 1
                if count > limits.archive_members:
                    raise PlanningError(
                        f"{where}: more than {limits.archive_members:,} entries (the limit per archive)"
                    )
                if not (m.isfile() or m.isdir()):
                    continue  # links, devices, FIFOs: never unpacked
                target = (dest / m.name).resolve()
                if not target.is_relative_to(root):
                    raise PlanningError(f"{where}: archive member {shown(m.name)!r} leaves the unpack folder")
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if m.size > limits.file_bytes:
                    raise PlanningError(
                        f"{where}: member {shown(m.name)!r} is {m.size:,} bytes, larger than "
                        f"{size_text(limits.file_bytes)} (the limit per trace file)"
                    )
                budget.unpacked += m.size
                if budget.unpacked > limits.unpacked_bytes:
                    raise PlanningError(
                        f"{where}: more than {size_text(limits.unpacked_bytes)} once unpacked "
                        "(the limit for archives)"
                    )
                src = tf.extractfile(m)
                if src is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(src, target, m.size, where, limits)


@contextmanager
def unpacked(paths: Sequence[Path], budget: Budget | None = None) -> Iterator[list[Path]]:
    """Yield ``paths`` with every .tar.gz/.tgz replaced by the folder it unpacks to (temporary)."""
    budget = budget or Budget()
    with tempfile.TemporaryDirectory(prefix="corral-traces-") as tmp:
        out: list[Path] = []
        for k, p in enumerate(paths):
            try:
                mode = p.stat().st_mode
            except FileNotFoundError:
                raise PlanningError(f"{p}: no such file or folder") from None
            except (OSError, ValueError) as exc:
                raise PlanningError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise PlanningError(f"{p}: not a regular file or folder")
            if stat.S_ISREG(mode) and (p.name.endswith(".tar.gz") or p.name.endswith(".tgz")):
                dest = Path(tmp) / str(k)
                dest.mkdir()
                try:
                    _unpack(p, dest, budget)
                except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, RecursionError) as exc:
                    why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    raise PlanningError(f"{p}: cannot unpack: {shown(why)[:200]}") from None
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
    limits: InputLimits | None = None,
) -> TraceSet:
    """Read traces (folders, files or .tar.gz archives) in one format and align them, within
    ``limits`` (default: InputLimits(), documented in docs/planning.md)."""
    if fmt not in FORMATS:
        raise PlanningError(f"unknown format {shown(fmt)!r} (choose from {', '.join(FORMATS)})")
    if not paths:
        raise EmptyInputError("no trace paths given")
    budget = Budget(limits or InputLimits())
    lim = budget.limits
    with unpacked([Path(p) for p in paths], budget) as ps:
        if fmt == "auto":
            kinds = {detect_format(p, lim) for p in ps}
            if len(kinds) > 1:
                raise PlanningError(f"the inputs mix formats: {', '.join(sorted(kinds))}")
            fmt = kinds.pop()
        notes: list[str] = []
        files: list[Path] = []
        for p in ps:
            files += _files(p, lim) if p.is_dir() else [p]
            if len(files) > lim.files:
                raise PlanningError(f"more than {lim.files:,} trace files (the input limit)")
        if not files:
            raise EmptyInputError("no trace files")
        total = 0
        for f in files:
            try:
                total += os.stat(f).st_size
            except OSError:
                continue  # reported when it is read
        if total > lim.total_bytes:
            raise PlanningError(
                f"the trace files hold {total:,} bytes together, "
                f"more than {size_text(lim.total_bytes)} (the input limit)"
            )
        if fmt == "planetlab":
            traces = load_planetlab(files, planetlab_sizes, progress, budget)
        elif fmt == "bitbrains":
            traces, more = load_bitbrains(files, progress, budget)
            notes += more
        elif fmt == "collect":
            traces = load_collect(files, progress, budget)
        else:
            traces = load_plain_csv(files, progress, budget)
        ts = align(traces, limits=lim)
    assumed = (planetlab_sizes or PlanetLabSizes()).assumed() if fmt == "planetlab" else {}
    return TraceSet(
        names=ts.names,
        start_s=ts.start_s,
        step_s=ts.step_s,
        demand=ts.demand,
        capacity=ts.capacity,
        filled=ts.filled,
        notes=tuple(notes) + ts.notes,
        assumed={r: v for r, v in assumed.items() if r in ts.demand},
        assumed_capacity=ts.assumed_capacity,
    )
