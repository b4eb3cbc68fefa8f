"""Where a guest's files live on its host, and how they get there.

Guests' disks are volumes of a libvirt directory pool on every host (`corral` by default, see
Settings.pool_name), so virsh vol-list and virt-manager's storage view show them and deleting a guest
deletes its volumes. A host that shares Corral's data folder (storage `shared`: NFS, Ceph, or this very
machine) has the pool at <data_dir>/disks and reads images in place. A host that does not (storage
`copy`) has it at /var/lib/libvirt/images/corral and gets images uploaded into it once
(`virStorageVolCreateXML` + `virStorageVolUpload`). A guest's disks are named
`guest-<name>-disk<N>.qcow2`; a disk of that name that already exists is never taken over.
Copying a guest to another host's storage (a copy-storage migration) pre-creates its disks there and
sends its kernel, initrd and ISO along.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.adapters import qemu_img
from corral.adapters.libvirt_host import LibvirtHost
from corral.config import Settings
from corral.core.cloudinit import FirstBoot, seed_files
from corral.core.domxml import DiskPlan, build_pool_xml, build_volume_xml
from corral.core.errors import BackendError, Conflict, CorralError, InvalidInput
from corral.services.images import ImageRecord
from corral.services.registry import Host

POOL_PATH = Path("/var/lib/libvirt/images/corral")  # on a copy host (the same path on every copy host)
MAX_SEED_BYTES = 16 * 1024**2  # a seed is a few KiB; more is not a seed
MAKING = ".disks"  # in a guest's folder while its disks are being made: what a crashed create leaves
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
    """The volume name of a path in a copy host's pool, or None for a path elsewhere."""
    return path.name if path.parent == POOL_PATH else None


def is_seed(guest: str, volume: str) -> bool:
    return volume == guest_volume(guest, "seed.iso")


def guest_volume(guest: str, file: str) -> str:
    return f"guest-{guest}-{file}"


def is_guest_disk(guest: str, volume: str) -> bool:
    """Whether a volume name is one of this guest's own: exactly `guest-<name>-disk<N>.qcow2` or its
    cloud-init seed `guest-<name>-seed.iso` (a prefix test would take guest web-2's for web's)."""
    return re.fullmatch(f"guest-{re.escape(guest)}-(disk[0-9]+\\.qcow2|seed\\.iso)", volume) is not None


def image_volume(image: ImageRecord, file: Path) -> str:
    """An image file's volume name: the image and a digest of its record, so a rebuilt or re-imported
    image is uploaded again and never mixed with the old one."""
    digest = hashlib.sha256(f"{image.name}|{image.created}|{image.size_bytes}|{file.name}".encode()).hexdigest()[:10]
    return f"image-{image.name}-{digest}-{file.name}"


class GuestStorage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = settings.pool_name

    def pool_dir(self, host: Host) -> Path:
        return self.settings.disks_dir if storage_of(host) == "files" else POOL_PATH

    def owns(self, host: Host, guest: str, path: Path) -> bool:
        """Whether a path is one of the guest's disks in its host's pool."""
        return path.parent == self.pool_dir(host) and is_guest_disk(guest, path.name)

    # --- a new guest ------------------------------------------------------------------------------
    def make(self, host: Host, name: str, image: ImageRecord, iso: Path | None, disk_gib: float | None,
             guest_dir: Path, progress: Callable[[str], None] | None = None,
             first_boot: FirstBoot | None = None) -> GuestFiles:
        """Make a new guest's disks on its host and give it its image's files there (and, with
        `first_boot`, its cloud-init seed)."""
        files = self._make_disks(host, name, image, iso, disk_gib, guest_dir, progress)
        if first_boot is not None:
            try:
                files.disks.append(self._make_seed(host, name, first_boot, guest_dir, files))
            except BaseException:
                self.remove_volumes(host, files.made_volumes)
                raise
        return files

    def _make_seed(self, host: Host, name: str, first_boot: FirstBoot, guest_dir: Path,
                   files: GuestFiles) -> DiskPlan:
        """The guest's NoCloud seed, a read-only disk of its own in the pool (deleted with the guest): a
        virtio disk rather than a CD, since cloud kernels (Debian's among them) have no SATA driver."""
        from corral.adapters.seed import seed_iso

        lv = host.libvirt
        volume = guest_volume(name, "seed.iso")
        self._refuse_existing(host, volume)
        note_making(guest_dir, host.name, [volume])
        data = seed_iso(seed_files(first_boot))
        files.made_volumes.append(volume)
        if storage_of(host) == "files":
            path = self.pool_dir(host) / volume
            write_private(path, data)  # it holds the user's password hash: QEMU's and root's only
            give_to_qemu(lv, path)
            lv.refresh_pool(self.pool)
        else:
            staged = guest_dir / "seed.iso"
            staged.write_bytes(data)
            try:
                path = Path(lv.upload_volume(self.pool, build_volume_xml(volume, len(data), "raw",
                                                                         owner=lv.qemu_identity()), staged))
            finally:
                staged.unlink(missing_ok=True)
        return DiskPlan(path, "raw", "disk", owned=True, readonly=True)

    def _make_disks(self, host: Host, name: str, image: ImageRecord, iso: Path | None, disk_gib: float | None,
                    guest_dir: Path, progress: Callable[[str], None] | None) -> GuestFiles:
        kind = image.kind
        base = Path(image.path) if image.path else None
        default = DEFAULT_TINY_DISK_GIB if kind == "kernel" else DEFAULT_ISO_DISK_GIB
        if storage_of(host) == "files":
            return self._make_files(host, name, image, iso, disk_gib, default, guest_dir)
        lv = host.libvirt
        self.ensure_pool(host)
        files = GuestFiles("pool", [], POOL_LOGS / f"corral-{name}-console.log")
        try:
            if image.kernel:  # the tiny image, or a disk booted with its own kernel (the Debian image)
                files.kernel = Path(self.give_image_file(lv, image, Path(image.kernel), progress))
            if image.initrd:
                files.initrd = Path(self.give_image_file(lv, image, Path(image.initrd), progress))
            disk0 = guest_volume(name, "disk0.qcow2")
            self._refuse_existing(host, disk0)
            note_making(guest_dir, host.name, [disk0])
            if kind == "disk" and base is not None:
                base_path = self.give_image_file(lv, image, base, progress)
                size = max(int((disk_gib or 0) * GIB), int(image.size_bytes))
                path = lv.create_volume(self.pool, build_volume_xml(disk0, size, "qcow2",
                                                               backing=(base_path, image.format or "raw"),
                                                               owner=lv.qemu_identity()))
                files.made_volumes.append(disk0)
                files.disks.append(DiskPlan(Path(path), "qcow2", backing=Path(base_path),
                                            backing_format=image.format or "raw"))
            else:
                path = lv.create_volume(self.pool, build_volume_xml(disk0, int((disk_gib or default) * GIB), "qcow2",
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
            self.remove_volumes(host, files.made_volumes)
            raise
        return files

    def _make_files(self, host: Host, name: str, image: ImageRecord, iso: Path | None, disk_gib: float | None,
                    default: float, guest_dir: Path) -> GuestFiles:
        """On a host that shares the data folder: the disk made in the pool's folder (with qemu-img, whose
        overlay and size rules the checks at start rely on), the pool told; images read in place."""
        lv = host.libvirt
        folder = Path(self.ensure_pool(host))
        volume = guest_volume(name, "disk0.qcow2")
        self._refuse_existing(host, volume)
        disk0 = folder / volume
        base = Path(image.path) if image.path else None
        files = GuestFiles("files", [], guest_dir / "console.log",
                           Path(image.kernel) if image.kernel else None, Path(image.initrd) if image.initrd else None)
        note_making(guest_dir, host.name, [volume])  # before the disk exists: a crash leaves no stray disk
        try:
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
            lv.refresh_pool(self.pool)
        except BaseException:
            self.remove_volumes(host, [volume])
            raise
        files.made_volumes.append(volume)
        if image.kind == "iso" and base is not None:
            files.disks.append(DiskPlan(base, "raw", "cdrom", owned=False))
        if iso is not None:
            files.disks.append(DiskPlan(iso, "raw", "cdrom", owned=False))
        return files

    def _refuse_existing(self, host: Host, volume: str) -> None:
        if storage_of(host) == "files":
            there = (self.pool_dir(host) / volume).exists()
        else:
            there = host.libvirt.volume_path(self.pool, volume) is not None
        if there:
            raise Conflict(f"a disk named {volume} is already in storage pool {self.pool} on host {host.name} "
                           "(kept by corral delete --keep-disks?); move or delete it first (virsh vol-delete "
                           f"--pool {self.pool} {volume})")

    def ensure_pool(self, host: Host) -> str:
        """The host's pool of guests' disks, defined and started if it is not; its folder."""
        lv = host.libvirt
        wanted = self.pool_dir(host)
        if storage_of(host) == "files":
            try:
                wanted.mkdir(mode=0o711, parents=True, exist_ok=True)  # QEMU reaches its files; nobody lists them
            except OSError as exc:
                raise BackendError(f"cannot create {wanted}: {exc.strerror}") from None
        path = lv.ensure_pool(self.pool, build_pool_xml(self.pool, str(wanted)))
        if Path(path) != wanted:
            raise Conflict(f"host {lv.name} has a storage pool named {self.pool} at {path}, not at {wanted} where "
                           "this Corral keeps guests' disks; name another in the config (storage_pool = \"…\")")
        return path

    def give_image_file(self, lv: LibvirtHost, image: ImageRecord, file: Path,
                        progress: Callable[[str], None] | None = None) -> str:
        """The path on a pool host of one of an image's files, uploaded into its pool the first time."""
        volume = image_volume(image, file)
        existing = lv.volume_path(self.pool, volume)
        if existing is not None:
            return existing
        if progress is not None:
            progress(f"uploading {file.name} of image {image.name} to host {lv.name}")
        fmt = "qcow2" if image.kind == "disk" and image.format == "qcow2" and file == Path(image.path or "") else "raw"
        size = file.stat().st_size
        return lv.upload_volume(self.pool, build_volume_xml(volume, size, fmt, mode="0644"), file)

    def remove_volumes(self, host: Host, volumes: list[str]) -> None:
        """Remove volumes made for a guest (a failed create or copy); on a host that shares the data folder
        a file the pool does not know yet goes too."""
        lv = host.libvirt
        for volume in volumes:
            with contextlib.suppress(CorralError):
                if not lv.delete_volume(self.pool, volume) and storage_of(host) == "files":
                    (self.pool_dir(host) / volume).unlink(missing_ok=True)

    # --- deleting ---------------------------------------------------------------------------------
    def delete_guest_disks(self, host: Host, name: str, owned: tuple[Path, ...]) -> list[str]:
        """Delete a guest's own volumes: only volumes of its host's pool named for this guest (metadata
        anyone can write never deletes anything else); return the paths left alone."""
        left = []
        lv = host.libvirt
        with contextlib.suppress(CorralError):
            lv.refresh_pool(self.pool)
        for path in owned:
            if not self.owns(host, name, path):
                left.append(str(path))
                continue
            try:
                # by name only where the pool's volume of that name is this very file (a pool elsewhere
                # may hold a kept disk of the same name)
                if lv.volume_path(self.pool, path.name) == str(path):
                    lv.delete_volume(self.pool, path.name)
                elif storage_of(host) == "files":
                    path.unlink(missing_ok=True)
            except (CorralError, OSError) as exc:
                log.warning("could not delete %s of %s on %s: %s", path, name, lv.name, exc)
                left.append(str(path))
        return left

    def clear_unfinished(self, hosts: Callable[[str], Host], name: str, guest_dir: Path) -> None:
        """The disks a create that did not finish noted it was making (never another guest's)."""
        making = read_making(guest_dir)
        if making is None:
            return
        host_name, volumes = making
        try:
            host = hosts(host_name)
        except CorralError as exc:
            log.warning("could not remove %s of the unfinished create of %s: %s", ", ".join(volumes), name,
                        exc.message)
            return
        self.remove_volumes(host, [v for v in volumes if is_guest_disk(name, v)])


def write_private(path: Path, data: bytes) -> None:
    """A new file (never one that exists) readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise BackendError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def note_making(guest_dir: Path, host: str, volumes: list[str]) -> None:
    """Note, before they exist, the volumes a create or clone is making (for `corral delete NAME` after
    a crash)."""
    from corral.adapters.files import write_atomic

    known = read_making(guest_dir)
    record = {"host": host, "volumes": sorted(set(known[1] if known and known[0] == host else []) | set(volumes))}
    write_atomic(guest_dir / MAKING, json.dumps(record))


def read_making(guest_dir: Path) -> tuple[str, list[str]] | None:
    try:
        found = json.loads((guest_dir / MAKING).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not isinstance(found.get("host"), str) \
            or not isinstance(found.get("volumes"), list):
        return None
    return found["host"], [v for v in found["volumes"] if isinstance(v, str)]


def give_to_qemu(lv: LibvirtHost, path: Path) -> None:
    """A file Corral made for a guest belongs to the user QEMU runs as (libvirt relabels nothing), and to it
    alone: mode 0600, as libvirt makes a pool's volumes (a seed holds a password hash)."""
    uid, gid = lv.qemu_identity()
    try:
        os.chown(path, uid, gid)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise BackendError(f"cannot give {path} to QEMU's user {uid}:{gid}: {exc.strerror}") from None


@dataclass
class DestinationCopy:
    """A guest made ready to be copied to another host's storage: its definition there, what was made
    there for it (removed if the copy fails), and its own files here (removed once it succeeded)."""

    dest_xml: str
    made_volumes: list[str] = field(default_factory=list)  # in the destination's pool
    source_owned: tuple[Path, ...] = ()


def _capacity(lv: LibvirtHost, pool: str, path: Path, storage: str) -> int:
    if storage == "pool":
        volume = pool_volume(path)
        if volume is None:
            raise Conflict(f"{path} is not a volume of host {lv.name}'s storage pool {pool}")
        return lv.volume_capacity(pool, volume)
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
        guest_dir = self.storage.settings.guests_dir / name
        lv = target.libvirt
        pool = self.storage.pool
        copy = DestinationCopy("", source_owned=meta.owned_files)
        mapping: dict[Path, Path] = {}
        flattened: set[Path] = set()
        image = self.images(meta.image) if meta.image else None
        try:
            folder = Path(self.storage.ensure_pool(target))
            if dest_storage == "files":
                guest_dir.mkdir(parents=True, exist_ok=True)  # its console log
            for disk in facts.disks:
                if disk.path in meta.owned_files and is_seed(name, disk.path.name):
                    # Its seed: read-only, so libvirt copies nothing into it; its bytes are sent along.
                    mapping[disk.path] = self._copy_seed(source, target, name, disk.path, copy)
                elif disk.path in meta.owned_files:
                    size = _capacity(source.libvirt, pool, disk.path, src_storage)
                    # guest-<name>-disk0.qcow2 keeps its name; a disk of an older Corral (disk0.qcow2 in
                    # the guest's folder) gets it
                    volume = guest_volume(name, disk.path.name.removeprefix(guest_volume(name, "")))
                    self.storage._refuse_existing(target, volume)
                    if dest_storage == "pool":
                        dest = Path(lv.create_volume(pool, build_volume_xml(volume, size, disk.format,
                                                                            owner=lv.qemu_identity())))
                    else:
                        dest = folder / volume
                        qemu_img.create_blank(dest, size)
                        give_to_qemu(lv, dest)
                        lv.refresh_pool(pool)
                    copy.made_volumes.append(volume)
                    mapping[disk.path] = dest
                    flattened.add(disk.path)  # copied whole: it no longer reads through a base image
                elif disk.device == "cdrom":
                    mapping[disk.path] = self._image_file(target, image, disk.path, name)
            for part in (facts.kernel, facts.initrd):
                if part is not None:
                    mapping[part] = self._image_file(target, image, part, name)
            console_log = (POOL_LOGS / f"corral-{name}-console.log" if dest_storage == "pool"
                           else guest_dir / "console.log")
            moved = relocate_domain_xml(xml, mapping, drop_backing=flattened, console_log=console_log)
            copy.dest_xml = set_meta_storage(moved, dest_storage)
        except BaseException:
            self.undo(target, copy)
            raise
        return copy

    def _copy_seed(self, source: Host, target: Host, name: str, path: Path, copy: DestinationCopy) -> Path:
        volume = guest_volume(name, "seed.iso")
        if path.name != volume:
            raise Conflict(f"{name} has a read-only disk of its own ({path}) that Corral cannot copy")
        if storage_of(source) == "files":
            data = path.read_bytes()
        else:
            data = source.libvirt.download_volume(self.storage.pool, volume, MAX_SEED_BYTES)
        self.storage._refuse_existing(target, volume)
        lv = target.libvirt
        copy.made_volumes.append(volume)
        if storage_of(target) == "files":
            dest = self.storage.pool_dir(target) / volume
            write_private(dest, data)
            give_to_qemu(lv, dest)
            lv.refresh_pool(self.storage.pool)
            return dest
        staged = self.storage.settings.cache_dir / f"seed-{name}-{os.getpid()}.iso"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(data)
        try:
            return Path(lv.upload_volume(self.storage.pool, build_volume_xml(volume, len(data), "raw",
                                                                             owner=lv.qemu_identity()), staged))
        finally:
            staged.unlink(missing_ok=True)

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
        self.storage.remove_volumes(target, copy.made_volumes)

    def finish(self, source: Host, name: str, copy: DestinationCopy) -> None:
        """After a successful copy: the guest's own files on the source go (libvirt leaves them): its
        volumes, and the disks an older Corral kept in the guest's folder."""
        self.storage.delete_guest_disks(source, name, copy.source_owned)
        if storage_of(source) == "files":
            folder = self.storage.settings.guests_dir / name
            for path in copy.source_owned:
                if path.parent == folder:
                    with contextlib.suppress(OSError):
                        path.unlink()
