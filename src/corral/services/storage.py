"""Where a guest's files live on its host, and how they get there.

A host that shares Corral's data folder (storage `shared`: NFS, Ceph, or this very machine) finds
images and guests' disks there as files. A host that does not (storage `copy`) gets them through
libvirt's storage API: a directory pool `corral` on that host, images uploaded into it once
(`virStorageVolCreateXML` + `virStorageVolUpload`), guests' disks made there as overlay volumes.
Copying a guest to another host's storage (a copy-storage migration) pre-creates its disks there and
sends its kernel, initrd and ISO along.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.adapters import qemu_img
from corral.adapters.libvirt_host import LibvirtHost
from corral.config import Settings
from corral.core.domxml import DiskPlan, build_pool_xml, build_volume_xml
from corral.core.errors import BackendError, Conflict, CorralError, InvalidInput
from corral.services.images import ImageRecord
from corral.services.registry import Host

POOL = "corral"
POOL_PATH = Path("/var/lib/libvirt/images/corral")  # on the host (the same path on every copy host)
POOL_LOGS = Path("/var/log/libvirt/qemu")  # a pool guest's console log, on its host
GIB = 1024**3
DEFAULT_TINY_DISK_GIB = 1.0
DEFAULT_ISO_DISK_GIB = 10.0
log = logging.getLogger("corral.storage")


@dataclass
class GuestFiles:
    """What a new guest was given on its host: its disks, kernel and initrd, console log; and the volumes
    made for it (so a failed create removes exactly those)."""

    storage: str  # files | pool
    disks: list[DiskPlan]
    console_log: Path
    kernel: Path | None = None
    initrd: Path | None = None
    made_volumes: list[str] = field(default_factory=list)


def storage_of(host: Host) -> str:
    return "files" if host.spec.storage == "shared" else "pool"


def pool_volume(path: Path) -> str | None:
    """The volume name of a path in the corral pool, or None for a path elsewhere."""
    return path.name if path.parent == POOL_PATH else None


def guest_volume(guest: str, file: str) -> str:
    return f"guest-{guest}-{file}"


def image_volume(image: ImageRecord, file: Path) -> str:
    """An image file's volume name: the image and a digest of its record, so a rebuilt or re-imported
    image is uploaded again and never mixed with the old one."""
    digest = hashlib.sha256(f"{image.name}|{image.created}|{image.size_bytes}|{file.name}".encode()).hexdigest()[:10]
    return f"image-{image.name}-{digest}-{file.name}"


class GuestStorage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- a new guest ------------------------------------------------------------------------------
    def make(self, host: Host, name: str, image: ImageRecord, iso: Path | None, disk_gib: float | None,
             guest_dir: Path, progress: Callable[[str], None] | None = None) -> GuestFiles:
        """Make a new guest's disks on its host and give it its image's files there."""
        kind = image.kind
        base = Path(image.path) if image.path else None
        default = DEFAULT_TINY_DISK_GIB if kind == "kernel" else DEFAULT_ISO_DISK_GIB
        if storage_of(host) == "files":
            return self._make_files(host.libvirt, name, image, iso, disk_gib, default, guest_dir)
        lv = host.libvirt
        self.ensure_pool(lv)
        files = GuestFiles("pool", [], POOL_LOGS / f"corral-{name}-console.log")
        try:
            if kind == "kernel":
                files.kernel = Path(self.give_image_file(lv, image, Path(image.kernel or ""), progress))
                files.initrd = Path(self.give_image_file(lv, image, Path(image.initrd or ""), progress))
            disk0 = guest_volume(name, "disk0.qcow2")
            if kind == "disk" and base is not None:
                base_path = self.give_image_file(lv, image, base, progress)
                size = max(int((disk_gib or 0) * GIB), int(image.size_bytes))
                path = lv.create_volume(POOL, build_volume_xml(disk0, size, "qcow2",
                                                               backing=(base_path, image.format or "raw"),
                                                               owner=lv.qemu_identity()))
                files.made_volumes.append(disk0)
                files.disks.append(DiskPlan(Path(path), "qcow2", backing=Path(base_path),
                                            backing_format=image.format or "raw"))
            else:
                path = lv.create_volume(POOL, build_volume_xml(disk0, int((disk_gib or default) * GIB), "qcow2",
                                                               owner=lv.qemu_identity()))
                files.made_volumes.append(disk0)
                files.disks.append(DiskPlan(Path(path), "qcow2"))
            if kind == "iso" and base is not None:
                files.disks.append(DiskPlan(Path(self.give_image_file(lv, image, base, progress)), "raw", "cdrom",
                                            owned=False))
            if iso is not None:
                raise InvalidInput(f"--iso on host {host.name}, which does not share storage: import the ISO as an "
                                   "image (corral image import) and create the guest from it")
        except BaseException:
            self.remove_volumes(lv, files.made_volumes)
            raise
        return files

    def _make_files(self, lv: LibvirtHost, name: str, image: ImageRecord, iso: Path | None, disk_gib: float | None,
                    default: float, guest_dir: Path) -> GuestFiles:
        disk0 = guest_dir / "disk0.qcow2"
        base = Path(image.path) if image.path else None
        files = GuestFiles("files", [], guest_dir / "console.log",
                           Path(image.kernel) if image.kernel else None, Path(image.initrd) if image.initrd else None)
        if image.kind == "disk" and base is not None:
            base_size = qemu_img.info(base).get("virtual-size", 0)
            wanted = int(disk_gib * GIB) if disk_gib else None
            size = max(wanted, int(base_size)) if wanted else None
            qemu_img.create_overlay(base, image.format or "raw", disk0, size)
            files.disks.append(DiskPlan(disk0, "qcow2", backing=base, backing_format=image.format or "raw"))
        else:
            qemu_img.create_blank(disk0, int((disk_gib or default) * GIB))
            files.disks.append(DiskPlan(disk0, "qcow2"))
        give_to_qemu(lv, disk0)
        if image.kind == "iso" and base is not None:
            files.disks.append(DiskPlan(base, "raw", "cdrom", owned=False))
        if iso is not None:
            files.disks.append(DiskPlan(iso, "raw", "cdrom", owned=False))
        return files

    def ensure_pool(self, lv: LibvirtHost) -> None:
        path = lv.ensure_pool(POOL, build_pool_xml(POOL, str(POOL_PATH)))
        if Path(path) != POOL_PATH:
            raise Conflict(f"host {lv.name} has a storage pool named {POOL} at {path}, not at {POOL_PATH}; "
                           "Corral needs it there (the same path on every host, for copy-storage migration)")

    def give_image_file(self, lv: LibvirtHost, image: ImageRecord, file: Path,
                        progress: Callable[[str], None] | None = None) -> str:
        """The path on a pool host of one of an image's files, uploaded into its pool the first time."""
        volume = image_volume(image, file)
        existing = lv.volume_path(POOL, volume)
        if existing is not None:
            return existing
        if progress is not None:
            progress(f"uploading {file.name} of image {image.name} to host {lv.name}")
        fmt = "qcow2" if image.kind == "disk" and image.format == "qcow2" and file == Path(image.path or "") else "raw"
        size = file.stat().st_size
        return lv.upload_volume(POOL, build_volume_xml(volume, size, fmt, mode="0644"), file)

    @staticmethod
    def remove_volumes(lv: LibvirtHost, volumes: list[str]) -> None:
        for volume in volumes:
            with contextlib.suppress(CorralError):
                lv.delete_volume(POOL, volume)

    # --- deleting ---------------------------------------------------------------------------------
    def delete_pool_files(self, lv: LibvirtHost, name: str, owned: tuple[Path, ...]) -> list[str]:
        """Delete a pool guest's own volumes: only volumes of the corral pool named for this guest
        (metadata anyone can write never deletes anything else); return the paths left alone."""
        left = []
        for path in owned:
            volume = pool_volume(path)
            if volume is None or not volume.startswith(guest_volume(name, "")):
                left.append(str(path))
                continue
            try:
                lv.delete_volume(POOL, volume)
            except CorralError as exc:
                log.warning("could not delete %s of %s on %s: %s", path, name, lv.name, exc.message)
                left.append(str(path))
        return left


def give_to_qemu(lv: LibvirtHost, path: Path) -> None:
    """A file Corral made for a guest belongs to the user QEMU runs as (libvirt relabels nothing)."""
    import os

    uid, gid = lv.qemu_identity()
    try:
        os.chown(path, uid, gid)
    except OSError as exc:
        raise BackendError(f"cannot give {path} to QEMU's user {uid}:{gid}: {exc.strerror}") from None


@dataclass
class DestinationCopy:
    """A guest made ready to be copied to another host's storage: its definition there, what was made
    there for it (removed if the copy fails), and its own files here (removed once it succeeded)."""

    dest_xml: str
    made_files: list[Path] = field(default_factory=list)  # on a host that shares the data folder
    made_volumes: list[str] = field(default_factory=list)  # in the destination's pool
    source_owned: tuple[Path, ...] = ()


def _capacity(lv: LibvirtHost, path: Path, storage: str) -> int:
    if storage == "pool":
        volume = pool_volume(path)
        if volume is None:
            raise Conflict(f"{path} is not a volume of host {lv.name}'s corral pool")
        return lv.volume_capacity(POOL, volume)
    return int(qemu_img.info(path).get("virtual-size", 0))


class Relocation:
    """Prepares and finishes a copy-storage migration for GuestStorage."""

    def __init__(self, storage: GuestStorage, images: Callable[[str], ImageRecord]) -> None:
        self.storage = storage
        self.images = images

    def prepare(self, source: Host, target: Host, name: str, xml: str) -> DestinationCopy:
        from corral.core.domxml import parse_domain_xml, relocate_domain_xml, set_meta_storage

        facts = parse_domain_xml(xml)
        meta = facts.meta
        if meta is None:
            raise Conflict(f"{name} was not made by Corral: copy its storage with virsh migrate --copy-storage-all")
        dest_storage = storage_of(target)
        src_storage = meta.storage
        guests_dir = self.storage.settings.guests_dir / name
        lv = target.libvirt
        copy = DestinationCopy("", source_owned=meta.owned_files)
        mapping: dict[Path, Path] = {}
        flattened: set[Path] = set()
        image = self.images(meta.image) if meta.image else None
        try:
            if dest_storage == "pool":
                self.storage.ensure_pool(lv)
            else:
                guests_dir.mkdir(parents=True, exist_ok=True)
            for disk in facts.disks:
                if disk.path in meta.owned_files:
                    size = _capacity(source.libvirt, disk.path, src_storage)
                    if dest_storage == "pool":
                        volume = guest_volume(name, disk.path.name.removeprefix(guest_volume(name, "")))
                        dest = Path(lv.create_volume(POOL, build_volume_xml(volume, size, disk.format,
                                                                            owner=lv.qemu_identity())))
                        copy.made_volumes.append(volume)
                    else:
                        dest = guests_dir / disk.path.name.removeprefix(guest_volume(name, ""))
                        qemu_img.create_blank(dest, size)
                        give_to_qemu(lv, dest)
                        copy.made_files.append(dest)
                    mapping[disk.path] = dest
                    flattened.add(disk.path)  # copied whole: it no longer reads through a base image
                elif disk.device == "cdrom":
                    mapping[disk.path] = self._image_file(target, image, disk.path, name)
            for part in (facts.kernel, facts.initrd):
                if part is not None:
                    mapping[part] = self._image_file(target, image, part, name)
            console_log = (POOL_LOGS / f"corral-{name}-console.log" if dest_storage == "pool"
                           else guests_dir / "console.log")
            moved = relocate_domain_xml(xml, mapping, drop_backing=flattened, console_log=console_log)
            copy.dest_xml = set_meta_storage(moved, dest_storage)
        except BaseException:
            self.undo(target, copy)
            raise
        return copy

    def _image_file(self, target: Host, image: ImageRecord | None, path: Path, name: str) -> Path:
        """Where one of the guest's image files (kernel, initrd, ISO) is on the destination."""
        if image is None:
            raise Conflict(f"{name} uses {path}, which is not a file of a Corral image: it cannot be copied")
        local = {Path(p).name: Path(p) for p in (image.kernel, image.initrd, image.path) if p}
        prefix = f"image-{image.name}-"
        in_pool = pool_volume(path) is not None and path.name.startswith(prefix)
        source_name = path.name[len(prefix) + 11:] if in_pool else path.name  # past the 10-digit digest and '-'
        original = local.get(source_name)
        if original is None:
            raise Conflict(f"{name} uses {path}, which is not a file of image {image.name}")
        if storage_of(target) == "files":
            return original
        return Path(self.storage.give_image_file(target.libvirt, image, original))

    def undo(self, target: Host, copy: DestinationCopy) -> None:
        """After a failed copy: what was made on the destination goes."""
        self.storage.remove_volumes(target.libvirt, copy.made_volumes)
        for path in copy.made_files:
            with contextlib.suppress(OSError):
                path.unlink()

    def finish(self, source: Host, name: str, copy: DestinationCopy, source_storage: str) -> None:
        """After a successful copy: the guest's own files on the source go (libvirt leaves them)."""
        if source_storage == "pool":
            self.storage.delete_pool_files(source.libvirt, name, copy.source_owned)
            return
        folder = self.storage.settings.guests_dir / name
        for path in copy.source_owned:
            if path.parent == folder and path not in copy.made_files:
                with contextlib.suppress(OSError):
                    path.unlink()
