"""A cloud-init NoCloud seed as cloud-init finds it: an ISO 9660 volume labelled `cidata` holding
`meta-data` and `user-data`, made with pycdlib (Joliet and Rock Ridge names, as genisoimage
-volid cidata -joliet -rock makes them)."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib

from corral.core.errors import BackendError


def seed_iso(files: dict[str, bytes]) -> bytes:
    """The seed's bytes."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for number, (name, data) in enumerate(sorted(files.items())):
            iso.add_fp(io.BytesIO(data), len(data), f"/FILE{number}.;1", rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def read_seed(path: Path) -> dict[str, bytes]:
    """A seed's files by their Rock Ridge names (for checks and tests)."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (pycdlib.pycdlibexception.PyCdlibException, OSError) as exc:
        raise BackendError(f"{path} is not a readable seed: {exc}") from None
    try:
        return _files(iso)
    except (pycdlib.pycdlibexception.PyCdlibException, OSError, UnicodeDecodeError) as exc:
        raise BackendError(f"{path} is not a readable seed: {exc}") from None
    finally:
        iso.close()


def _files(iso: pycdlib.PyCdlib) -> dict[str, bytes]:
    found = {}
    for child in iso.list_children(rr_path="/"):
        if child.is_file():
            raw = child.rock_ridge.name() if child.rock_ridge is not None else b""
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            found[name] = out.getvalue()
    return found
