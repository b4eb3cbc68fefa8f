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
