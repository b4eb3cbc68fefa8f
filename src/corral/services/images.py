"""Guest images: the built-in tiny image and images the user registers (disk images and ISOs).

Each image has a folder `<data_dir>/images/<name>/` with an `image.json` record. Registered
images are referenced where they are, never written to: guests get copy-on-write overlays.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.adapters import qemu_img
from corral.adapters.files import require_allowed_file, write_atomic
from corral.config import Settings
from corral.core.errors import BackendError, Conflict, InvalidInput, NotFound
from corral.core.validate import check_name, check_path

TINY = "tiny"
DEBIAN = "debian"
BUILT = (TINY, DEBIAN)  # images Corral builds itself: `corral image build NAME`
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class ImageRecord:
    name: str
    kind: str  # "kernel": direct kernel boot (the built-in tiny image) | "disk" | "iso"
    created: str
    size_bytes: int
    path: str | None = None  # disk image or ISO
    format: str | None = None  # qcow2 | raw for disks
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    kernel_version: str | None = None
    cloud_init: bool = False  # runs cloud-init: its guests always get a seed (their hostname at least)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_iso(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(0x8001)
            return handle.read(5) == b"CD001"
    except OSError:
        return False


class ImageService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _record_path(self, name: str) -> Path:
        return self.settings.images_dir / name / "image.json"

    def records(self) -> list[ImageRecord]:
        records = []
        if self.settings.images_dir.is_dir():
            for record in sorted(self.settings.images_dir.glob("*/image.json")):
                try:
                    records.append(self._read(record))
                except BackendError:
                    continue  # a record being written, or damaged: not an image
        return records

    def _read(self, path: Path) -> ImageRecord:
        try:
            data = json.loads(path.read_bytes()[:65536])
            known = {f.name for f in fields(ImageRecord)}
            # a key a newer Corral added is left out: its older self still reads the record
            record = ImageRecord(**{k: v for k, v in data.items() if k in known})
            if record.kind not in ("kernel", "disk", "iso") or not isinstance(record.name, str):
                raise ValueError(f"unknown kind {record.kind!r}")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise BackendError(f"the image record {path} is damaged ({type(exc).__name__}); "
                               "remove its folder and import or build the image again") from None
        folder = path.parent
        if record.kind == "kernel":  # built files live beside the record: stored by name, found here
            record = replace(record, kernel=str(folder / Path(record.kernel or "").name),
                             initrd=str(folder / Path(record.initrd or "").name))
        elif record.kind == "disk" and record.path and not Path(record.path).is_absolute():
            # built by Corral (the Debian image): its files in a folder of the record's, per build
            def inside(part: str | None) -> str | None:
                if not part:
                    return None
                found = (folder / part).resolve()
                if not found.is_relative_to(folder.resolve()):
                    raise BackendError(f"the image record {path} names a file outside its folder; build it again")
                return str(found)
            record = replace(record, path=inside(record.path), kernel=inside(record.kernel),
                             initrd=inside(record.initrd))
        return record

    def get(self, name: str) -> ImageRecord:
        check_name(name, "image name")
        path = self._record_path(name)
        if not path.is_file():
            hint = f" (build it with: corral image build {name})" if name in BUILT else ""
            raise NotFound(f"no image named {name!r}{hint}")
        return self._read(path)

    def exists(self, name: str) -> bool:
        return self._record_path(name).is_file()

    def _save(self, record: ImageRecord) -> None:
        write_atomic(self._record_path(record.name), json.dumps(record.as_dict(), indent=2) + "\n")

    def build_tiny(self, progress: Progress | None = None, *, force: bool = False) -> ImageRecord:
        from corral.adapters.tiny_image import build_tiny_image

        dest = self.settings.images_dir / TINY
        tiny = build_tiny_image(dest, progress, force=force)
        record = ImageRecord(
            name=TINY,
            kind="kernel",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            size_bytes=tiny.kernel.stat().st_size + tiny.initrd.stat().st_size,
            kernel=tiny.kernel.name,  # relative to the image folder, which may move with the data folder
            initrd=tiny.initrd.name,
            cmdline=tiny.base_cmdline,
            kernel_version=tiny.kernel_version,
        )
        self._save(record)
        return self.get(TINY)

    def build_debian(self, progress: Progress | None = None, *, force: bool = False) -> ImageRecord:
        """The Debian 12 server image (adapters/debian_image.py), built once per recipe: each recipe in
        a folder of its own, so guests made from an earlier build keep their base image."""
        from corral.adapters.debian_image import build_debian_image, recipe_fingerprint

        folder = self.settings.images_dir / DEBIAN
        build = recipe_fingerprint()[:12]
        if force:  # a folder of its own, beside the build guests may still read through
            build += datetime.now(UTC).strftime("-%Y%m%d%H%M%S")
        elif self.exists(DEBIAN):  # the latest build of this recipe, forced or not
            current = self.get(DEBIAN).path or ""
            if Path(current).parent.name.startswith(build):
                build = Path(current).parent.name
        built = build_debian_image(folder / build, progress, force=force)
        record = ImageRecord(
            name=DEBIAN,
            kind="disk",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            size_bytes=built.virtual_size,
            path=f"{build}/{built.disk.name}",  # relative to the record's folder, which may move with the data
            format="qcow2",
            kernel=f"{build}/{built.kernel.name}",
            initrd=f"{build}/{built.initrd.name}",
            cmdline=built.cmdline,
            kernel_version=built.kernel_version,
            cloud_init=True,
        )
        self._save(record)
        return self.get(DEBIAN)

    def import_image(self, name: str, path: str | Path) -> ImageRecord:
        check_name(name, "image name")
        if self.exists(name):
            raise Conflict(f"an image named {name!r} already exists")
        source = require_allowed_file(check_path(path, "image file"), "image file",
                                      self.settings.allowed_image_dirs)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        if _is_iso(source):
            record = ImageRecord(name, "iso", created, source.stat().st_size, str(source), "raw")
        else:
            details = qemu_img.info(source)
            fmt = details.get("format")
            data_file = details.get("format-specific", {}).get("data", {}).get("data-file")
            if details.get("backing-filename") or data_file:
                # A guest could read whatever file a backing chain or data file names: take only
                # self-contained images.
                raise InvalidInput(f"{source} refers to another file ({details.get('backing-filename') or data_file}); "
                                   "make it self-contained first: qemu-img convert -O qcow2 IN OUT")
            if fmt not in ("qcow2", "raw"):
                raise InvalidInput(f"{source} is a {fmt} image; Corral takes qcow2, raw or ISO images")
            record = ImageRecord(name, "disk", created, int(details.get("virtual-size", 0)), str(source), fmt)
        self._save(record)
        return record

    def verified_source(self, record: ImageRecord) -> None:
        """Check again, before a guest is made from it or started, that an image's files are still what
        was imported: regular files in an allowed folder, and self-contained (a qcow2 rewritten since
        with `-b /some/root/file` would hand that file to the guest)."""
        allowed = self.settings.allowed_image_dirs
        if record.kind == "kernel":
            for part, what in ((record.kernel, "kernel"), (record.initrd, "initrd")):
                if part:
                    require_allowed_file(Path(part), f"the {what} of image {record.name}", allowed)
            return
        if not record.path:
            raise BackendError(f"the image record of {record.name} names no file; import it again")
        require_self_contained(require_allowed_file(Path(record.path), f"image {record.name}'s file", allowed),
                               record.format or "raw")
        for part, what in ((record.kernel, "kernel"), (record.initrd, "initrd")):
            if part:  # a disk booted with its own kernel (the Debian image)
                require_allowed_file(Path(part), f"the {what} of image {record.name}", allowed)

    def remove(self, name: str, used_by: list[str]) -> None:
        record = self.get(name)
        if used_by:
            raise Conflict(f"image {name!r} is used by {', '.join(used_by)}; delete those guests first")
        folder = self.settings.images_dir / record.name
        if record.name in BUILT and (record.kind == "kernel" or _inside_folder(record.path, folder)):
            shutil.rmtree(folder)  # built by Corral: its files go too
        else:
            self._record_path(name).unlink()  # the user's file stays where it is
            if not any(folder.iterdir()):
                folder.rmdir()


def _inside_folder(path: str | None, folder: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(folder.resolve())


def require_self_contained(path: Path, fmt: str) -> Path:
    """Refuse a qcow2 that names a backing file or an external data file (raw files name nothing)."""
    if fmt != "qcow2":
        return path
    backing, data_file = qemu_img.qcow2_references(path)
    if backing or data_file:
        raise InvalidInput(f"{path} now refers to another file ({backing or 'an external data file'}); "
                           "a guest could read it through this image, so it is refused. Make the image "
                           "self-contained (qemu-img convert -O qcow2 IN OUT) and import it again")
    return path
