"""Bounds on what the planner reads, so that no input can make it use unbounded memory or time.

Every limit is set well above the largest real trace sets (docs/planning.md, "Limits"): the
whole GWA-T-12 Bitbrains set (1,250 + 500 VMs, ~3 GB, ~24 million rows), PlanetLab days
(~1,500 files of 288 lines), ``corral collect`` files of a host sampled every 5 s for months.
Input beyond a limit is refused with a ``PlanningError`` naming the file and the limit; nothing
is read whole into memory before its size is known.

Also here: small text files (costs, catalog, plan.json) read with a size bound and strict UTF-8,
and text files written with one clear error (a folder, a missing folder, a full disk).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from corral.planning.errors import PlanningError, TraceFormatError, one_line

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Every measured number (demand, capacity, counter rate) must be at most this in its unit: no
#: machine reaches 10^15 MHz, 1 PB of memory or 1 PB/s, and sums over many servers stay exact enough.
MAX_VALUE = 1e15
#: Timestamps are seconds in [0, 10^11) (unix time up to the year 5138; Bitbrains milliseconds are
#: divided by 1000 first, so their raw values may reach 10^14).
MAX_TIMESTAMP_S = 1e11
#: Server and kind names and the other strings that reach the report and the terminal.
MAX_NAME_CHARS = 255
#: Small files: the costs TOML, the host catalog TOML, and plan.json for ``corral report``.
MAX_SETTINGS_BYTES = 1 * MiB
MAX_PLAN_BYTES = 64 * MiB


@dataclass(frozen=True)
class InputLimits:
    """What one ``load_traces`` call accepts. The defaults are documented in docs/planning.md."""

    line_bytes: int = 64 * KiB  # one line of a trace file (real lines: < 300 bytes)
    file_bytes: int = 1 * GiB  # one trace file (a Bitbrains VM-month: ~1 MB; a collect host-year at 60 s: ~60 MB)
    total_bytes: int = 4 * GiB  # all trace files of one load together (unpacked ones included)
    unpacked_bytes: int = 2 * GiB  # the files of all .tar.gz of one load together, once unpacked
    files: int = 100_000  # trace files in one load (PlanetLab day: ~1,500; GWA-T-12: 1,750)
    archive_members: int = 100_000  # entries in one .tar.gz
    servers: int = 100_000  # distinct servers (the planner's benchmark: 10,000)
    rows: int = 50_000_000  # data rows over all files (all of GWA-T-12: ~24 million)
    grid_steps: int = 1_000_000  # time steps of the common grid (a year at 30 s)
    grid_cells: int = 25_000_000  # servers x steps (Bitbrains fastStorage month: 1,250 x 8,640 = 10.8 million)

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"InputLimits.{name} must be at least 1")


DEFAULT_LIMITS = InputLimits()


@dataclass
class Budget:
    """Bytes and rows read so far in one load, checked against its InputLimits."""

    limits: InputLimits = field(default_factory=InputLimits)
    bytes_read: int = 0
    rows: int = 0
    unpacked: int = 0

    def add_bytes(self, n: int, path: Path, line: int | None = None) -> None:
        self.bytes_read += n
        if self.bytes_read > self.limits.total_bytes:
            raise TraceFormatError(
                str(path), line, f"the trace files together exceed {_size(self.limits.total_bytes)} (the input limit)"
            )

    def add_row(self, path: Path, line: int) -> None:
        self.rows += 1
        if self.rows > self.limits.rows:
            raise TraceFormatError(
                str(path), line, f"more than {self.limits.rows:,} data rows in all (the input limit)"
            )


def _size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def size_text(n: int) -> str:
    """``n`` bytes for a message: ``64 KiB``, ``1 GiB``, ``1,000 bytes``."""
    return _size(n)


def shown(text: object) -> str:
    """``text`` safe for one line of a terminal: control and other unprintable characters escaped."""
    return one_line(text)


def check_label(value: object, what: str, where: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """A name or label that reaches the report and the terminal: a non-empty printable string."""
    if not isinstance(value, str):
        raise PlanningError(f"{where}: {what} must be a string, got {type(value).__name__}")
    if not value:
        raise PlanningError(f"{where}: {what} is empty")
    if len(value) > max_chars:
        raise PlanningError(f"{where}: {what} is longer than {max_chars} characters")
    if not value.isprintable():
        raise PlanningError(f"{where}: {what} {shown(repr(value))} contains control or unprintable characters")
    return value


# ---------------------------------------------------------------- trace files, line by line
def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading (a folder, a device, a FIFO or a socket is refused: reading
    /dev/zero would never end, a FIFO could block forever)."""
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        raise TraceFormatError(str(path), None, f"cannot read: {_why(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise TraceFormatError(str(path), None, f"cannot read: {kind}")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise TraceFormatError(str(path), None, f"cannot read: {_why(exc)}") from None
    try:
        st = os.fstat(fh.fileno())  # the file opened, not the path checked a moment ago
        if not stat.S_ISREG(st.st_mode):
            raise TraceFormatError(str(path), None, "cannot read: not a regular file")
    except BaseException:
        fh.close()
        raise
    return fh


_BLOCK = 1 * MiB


def read_lines(path: Path, budget: Budget) -> Iterator[tuple[int, str]]:
    """(line number, text without its newline) of a trace file, decoded as UTF-8 (undecodable
    bytes replaced). Read in blocks of 1 MiB: the line, file and total size limits are enforced
    while reading, so no more than one block and one line's worth is ever held."""
    limits = budget.limits
    with open_regular(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
        except OSError:
            size = 0
        if size > limits.file_bytes:
            raise TraceFormatError(
                str(path), None, f"{size:,} bytes: larger than {_size(limits.file_bytes)} (the limit per trace file)"
            )
        if budget.bytes_read + size > limits.total_bytes:
            raise TraceFormatError(
                str(path), None, f"the trace files together exceed {_size(limits.total_bytes)} (the input limit)"
            )
        read = 0
        no = 0
        rest = b""
        while True:
            try:
                block = fh.read(_BLOCK)
            except OSError as exc:
                raise TraceFormatError(str(path), no + 1, f"cannot read: {_why(exc)}") from None
            if not block:
                break
            read += len(block)
            if read > limits.file_bytes:
                raise TraceFormatError(
                    str(path), no + 1, f"larger than {_size(limits.file_bytes)} (the limit per trace file)"
                )
            budget.add_bytes(len(block), path, no + 1)
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
            else:
                rest = data[cut + 1 :]
                for raw in data[:cut].split(b"\n"):
                    no += 1
                    if len(raw) >= limits.line_bytes:  # with its newline, longer than the limit
                        raise _too_long(path, no, limits)
                    yield no, raw.decode("utf-8", "replace")
            if len(rest) >= limits.line_bytes:
                raise _too_long(path, no + 1, limits)
        if rest:
            yield no + 1, rest.decode("utf-8", "replace")


def _too_long(path: Path, line: int, limits: InputLimits) -> TraceFormatError:
    return TraceFormatError(str(path), line, f"line longer than {_size(limits.line_bytes)} (the limit per line)")


def list_folder(folder: Path, limits: InputLimits) -> list[Path]:
    """The regular files of ``folder`` (not hidden, not in subfolders), sorted; at most ``limits.files``."""
    out: list[Path] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    regular = entry.is_file()  # follows symlinks: a link to a device is not a file
                except OSError:
                    continue
                if regular:
                    out.append(folder / entry.name)
                    if len(out) > limits.files:
                        raise PlanningError(f"{folder}: more than {limits.files:,} trace files (the input limit)")
    except OSError as exc:
        raise PlanningError(f"{folder}: cannot list: {_why(exc)}") from None
    return sorted(out)


# ---------------------------------------------------------------- archives
class _Stream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def tell(self) -> int: ...


class BoundedReader:
    """A read-only, forward-seekable view of a decompressed stream that refuses to go past
    ``max_pos`` bytes or to read more than ``max_read`` bytes at once (tar headers that declare a
    huge long name or pax record would otherwise be read whole into memory)."""

    def __init__(self, raw: _Stream, max_pos: int, max_read: int, where: str) -> None:
        self.raw = raw
        self.max_pos = max_pos
        self.max_read = max_read
        self.where = where

    def _refuse(self, what: str) -> PlanningError:
        return PlanningError(f"{self.where}: {what}")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.max_read:
            raise self._refuse(f"an archive header or read larger than {_size(self.max_read)} (refused)")
        allowed = self.max_pos - self.raw.tell()
        if n <= allowed:
            return self.raw.read(n)
        data = self.raw.read(max(allowed, 0) + 1)
        if len(data) > allowed:
            raise self._refuse(f"more than {_size(self.max_pos)} once decompressed (the limit per archive)")
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.raw.tell() + offset if whence == os.SEEK_CUR else -1
        if target < 0:
            raise self._refuse("cannot seek to the end of a compressed archive")
        if target > self.max_pos:
            raise self._refuse(f"more than {_size(self.max_pos)} once decompressed (the limit per archive)")
        return self.raw.seek(target)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


# ---------------------------------------------------------------- small files: costs, catalog, plan.json
def read_small_text(path: Path, what: str, max_bytes: int, error: type[PlanningError] = PlanningError) -> str:
    """The whole text of a small UTF-8 file (``what`` names it in errors: "costs file", ...)."""
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        raise error(f"{what} {path}: cannot read: {_why(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path}: cannot read: {'a folder' if stat.S_ISDIR(st.st_mode) else 'not a regular file'}")
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {_why(exc)}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {path}: larger than {_size(max_bytes)} (the limit)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: not UTF-8 text (byte {exc.start + 1} cannot be decoded)") from None
    if "\x00" in text:
        raise error(f"{what} {path}: not a text file (it contains NUL bytes)")
    return text


def write_text(path: str | Path, text: str, what: str) -> Path:
    """Write ``text`` (UTF-8) to ``path``; any failure is one PlanningError naming the file.

    A regular file (or a new one) is replaced whole: the text goes to a temporary file beside it,
    renamed over it once complete, so a full disk never leaves half a file. Other existing targets
    (``/dev/null``, a FIFO, a terminal) are written to directly."""
    p = Path(path)
    data = text.encode("utf-8")
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:
        raise PlanningError(f"{what} {p}: cannot write: {_why(exc)}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise PlanningError(f"{what} {p}: cannot write: it is a folder (give a file name)")
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with p.open("wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise PlanningError(f"{what} {p}: cannot write: {_why(exc)}") from None
        return p
    parent = p.parent
    if not parent.is_dir():
        raise PlanningError(f"{what} {p}: cannot write: the folder {parent} does not exist")
    tmp = parent / f".{p.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if st is not None:
            with contextlib.suppress(OSError):
                os.chmod(tmp, stat.S_IMODE(st.st_mode))  # keep the replaced file's permissions
        os.replace(tmp, p)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PlanningError(f"{what} {p}: cannot write: {_why(exc)}") from None
    return p


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
