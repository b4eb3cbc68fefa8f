"""Guest images: the built-in tiny image and images the user registers (disk images and ISOs).

Each image has a folder `<data_dir>/images/<name>/` with an `image.json` record. Registered
images are referenced where they are, never written to: guests get copy-on-write overlays.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.adapters import qemu_img
from corral.adapters.files import require_file
from corral.config import Settings
from corral.core.errors import Conflict, InvalidInput, NotFound
from corral.core.validate import check_name, check_path

TINY = "tiny"
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
                except (ValueError, TypeError):
                    continue  # a record being written, or damaged: not an image
        return records

    def _read(self, path: Path) -> ImageRecord:
        record = ImageRecord(**json.loads(path.read_text()))
        if record.kind == "kernel":  # built files live beside the record: stored by name, found here
            folder = path.parent
            record = replace(record, kernel=str(folder / Path(record.kernel or "").name),
                             initrd=str(folder / Path(record.initrd or "").name))
        return record

    def get(self, name: str) -> ImageRecord:
        check_name(name, "image name")
        path = self._record_path(name)
        if not path.is_file():
            hint = " (build it with: corral image build tiny)" if name == TINY else ""
            raise NotFound(f"no image named {name!r}{hint}")
        return self._read(path)

    def exists(self, name: str) -> bool:
        return self._record_path(name).is_file()

    def _save(self, record: ImageRecord) -> None:
        path = self._record_path(record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.as_dict(), indent=2) + "\n")
        tmp.replace(path)

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

    def import_image(self, name: str, path: str | Path) -> ImageRecord:
        check_name(name, "image name")
        if self.exists(name):
            raise Conflict(f"an image named {name!r} already exists")
        source = require_file(check_path(path, "image file"), "image file").resolve()
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

    def remove(self, name: str, used_by: list[str]) -> None:
        record = self.get(name)
        if used_by:
            raise Conflict(f"image {name!r} is used by {', '.join(used_by)}; delete those guests first")
        folder = self.settings.images_dir / record.name
        if record.kind == "kernel":
            shutil.rmtree(folder)  # built by Corral: its files go too
        else:
            self._record_path(name).unlink()  # the user's file stays where it is
            if not any(folder.iterdir()):
                folder.rmdir()
