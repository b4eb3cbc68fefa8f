"""Disk images through `qemu-img`: copy-on-write overlays, blank disks, format probing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from corral.core.errors import BackendError, InvalidInput

GIB = 1024**3


def _run(args: list[str]) -> str:
    try:
        result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BackendError("qemu-img is not installed (Debian package qemu-utils)") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise BackendError(f"qemu-img {args[0]}: {detail}")
    return result.stdout


def info(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(_run(["info", "--output=json", "-U", str(path)]))
    except BackendError as exc:
        raise InvalidInput(f"{path} is not a disk image qemu-img can read ({exc.message})") from None
    return data


def create_overlay(base: Path, base_format: str, dest: Path, size_bytes: int | None = None) -> None:
    """A qcow2 whose reads fall through to `base` and whose writes stay in `dest`."""
    args = ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base), str(dest)]
    if size_bytes is not None:
        args.append(str(size_bytes))
    _run(args)


def create_blank(dest: Path, size_bytes: int) -> None:
    _run(["create", "-q", "-f", "qcow2", str(dest), str(size_bytes)])


def copy_keeping_backing(source: Path, dest: Path) -> None:
    """Copy a guest's overlay (only its own data) onto the same backing file, for clones."""
    backing = info(source).get("backing-filename")
    if backing:
        backing_format = info(Path(backing)).get("format", "raw")
        _run(["convert", "-q", "-O", "qcow2", "-B", str(backing), "-F", backing_format, str(source), str(dest)])
    else:
        _run(["convert", "-q", "-O", "qcow2", str(source), str(dest)])


QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit


def qcow2_references(path: Path) -> tuple[str | None, bool]:
    """(backing file name, has an external data file) from a qcow2 header; (None, False) for any
    other file. Read straight from the header: cheap enough to check at every start."""
    try:
        with path.open("rb") as handle:
            head = handle.read(104)
            if head[:4] != QCOW2_MAGIC or len(head) < 20:
                return None, False
            version = int.from_bytes(head[4:8], "big")
            offset, size = int.from_bytes(head[8:16], "big"), int.from_bytes(head[16:20], "big")
            backing = None
            if offset and size:
                handle.seek(offset)
                backing = handle.read(min(size, 4096)).decode(errors="replace") or "?"
            data_file = version >= 3 and len(head) >= 80 \
                and bool(int.from_bytes(head[72:80], "big") & QCOW2_EXTERNAL_DATA_FILE)
            return backing, data_file
    except OSError as exc:
        raise InvalidInput(f"{path} cannot be read: {exc.strerror}") from None
