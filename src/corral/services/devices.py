"""A guest's disks and NICs after it was made: `corral disk add|remove|resize`, `corral nic add|remove`.

Hot-plugged into a running guest where libvirt can (attach and detach with LIVE|CONFIG), in the definition
only when it is shut off. A new disk is a volume of its host's pool, `guest-<name>-disk<N>.qcow2` with the
next free N, owned by the guest (its Corral metadata lists it, so `corral delete` removes it); a disk made
but not attached is removed again. Disks grow, never shrink. Every check comes before anything changes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.adapters import qemu_img
from corral.adapters.libvirt_host import ACTIVE_STATES, LibvirtHost
from corral.adapters.locks import HostLock
from corral.config import Settings
from corral.core.domxml import (
    CORRAL_NS,
    DomainDisk,
    build_volume_xml,
    disk_device_xml,
    domain_disks,
    domain_nic_xml,
    meta_with_owned_files,
    next_disk_target,
    nic_device_xml,
    parse_domain_xml,
)
from corral.core.errors import Conflict, CorralError, GuestTimeout, InvalidInput, NotFound
from corral.core.nics import parse_interfaces
from corral.core.spec import MAX_DISK_GIB, MIN_DISK_GIB
from corral.core.validate import check_domain_name, check_name
from corral.services.host import HostService
from corral.services.registry import Host, HostRegistry
from corral.services.storage import GIB, GuestStorage, give_to_qemu, guest_volume, storage_of

BOOT_DISK = "vda"
DEVICE_RE = re.compile(r"[hsv]d[a-z]{1,2}")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
RELEASE_WAIT_S = 30.0  # how long a hot-unplug may take the guest (TCG guests are slow to answer ACPI)
LOCK_WAIT_S = 20.0
log = logging.getLogger("corral.devices")


@dataclass(frozen=True)
class DiskChange:
    """What `corral disk add|remove|resize` did."""

    domain: str
    host: str
    device: str  # its target in the guest's definition: vdb
    action: str  # added | removed | resized | unchanged
    path: str | None  # its file (a volume of the host's pool)
    size_bytes: int | None  # its virtual size (after a resize); None for a removed disk
    live: bool  # the running guest saw the change (hot-plugged, released or grown live)
    kept: bool = False  # removed: its file stays (asked, or not Corral's to delete)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        size = f" ({self.size_bytes / GIB:g} GiB)" if self.size_bytes is not None else ""
        where = "in the running guest and its definition" if self.live else "in its definition"
        kept = f"; its file is kept: {self.path}" if self.kept else ""
        return f"{self.domain}: disk {self.device} {self.action}{size} {where}{kept}"


@dataclass(frozen=True)
class NicChange:
    """What `corral nic add|remove` did."""

    domain: str
    host: str
    mac: str
    action: str  # added | removed
    network: str | None  # the libvirt network it joins; None: a user-mode NIC
    live: bool  # the running guest saw the change (hot-plugged or released)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        where = "in the running guest and its definition" if self.live else "in its definition"
        on = f" (network {self.network})" if self.network else " (user-mode)" if self.action == "added" else ""
        return f"{self.domain}: NIC {self.mac}{on} {self.action} {where}"


def size_bytes(size_gib: float, what: str = "disk size") -> int:
    """A size in GiB as bytes (rounded up to whole 512-byte sectors); InvalidInput outside the range a
    guest's disk may have."""
    if isinstance(size_gib, bool) or not isinstance(size_gib, int | float) or not math.isfinite(size_gib):
        raise InvalidInput(f"{what} must be a number of GiB, not {size_gib!r}")
    if not MIN_DISK_GIB <= size_gib <= MAX_DISK_GIB:
        raise InvalidInput(f"{what} {size_gib:g} GiB is out of range: {MIN_DISK_GIB:g} to {MAX_DISK_GIB:g} GiB")
    return -(-math.ceil(size_gib * GIB) // 512) * 512


def check_device(device: str) -> str:
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise InvalidInput(f"invalid disk {device!r}: a target such as vdb (see corral info NAME)")
    return device


def check_mac(mac: str) -> str:
    """A MAC address as libvirt writes it (lower case, colons)."""
    text = mac.strip().lower() if isinstance(mac, str) else ""
    if not MAC_RE.fullmatch(text):
        raise InvalidInput(f"invalid MAC address {mac!r}: six hex pairs such as 52:54:00:12:34:56")
    return text


def new_mac(used: set[str]) -> str:
    """A random MAC in QEMU's 52:54:00 prefix that the guest does not use yet."""
    while True:
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in used:
            return mac


def _disk_index(guest: str, volume: str) -> int | None:
    found = re.fullmatch(f"guest-{re.escape(guest)}-disk([0-9]+)\\.qcow2", volume)
    return int(found.group(1)) if found else None


class DeviceService:
    def __init__(self, settings: Settings, hosts: HostRegistry, storage: GuestStorage, host: HostService) -> None:
        self.settings = settings
        self.hosts = hosts
        self.storage = storage
        self.host = host
        self._locks: dict[str, HostLock] = {}

    @contextlib.contextmanager
    def _changing(self, name: str) -> Iterator[None]:
        """One device change of a guest at a time (two adds would pick the same target and file name)."""
        if name not in self._locks:
            self._locks[name] = HostLock(self.settings.data_dir / "locks" / f"devices-{name}.lock",
                                         f"device lock of {name}")
        with self._locks[name].held(LOCK_WAIT_S):
            yield

    # --- disks ------------------------------------------------------------------------------------
    def add_disk(self, name: str, size_gib: float) -> DiskChange:
        """A new blank disk for the guest, made in its host's pool and attached as the next free vdX."""
        check_domain_name(name)
        size = size_bytes(size_gib)
        host = self.hosts.locate(name)
        lv = host.libvirt
        with self._changing(name):
            config = lv.xml(name, inactive=True)
            meta = parse_domain_xml(config).meta
            if meta is None:
                raise Conflict(f"{name} was not made by Corral: add disks to it with virsh attach-disk")
            running = lv.state(name) in ACTIVE_STATES
            target = next_disk_target(config, lv.xml(name) if running else config)
            volume = self._next_volume(host, name, meta.owned_files)
            path = self._make_volume(host, volume, size)
            device_xml = disk_device_xml(path, target)
            try:
                lv.attach_device(name, device_xml, live=running)
                try:
                    self._set_owned(lv, name, lambda owned: (*owned, path), running)
                except BaseException:
                    with contextlib.suppress(CorralError):
                        lv.detach_device(name, device_xml, live=running)
                    raise
            except BaseException:
                self.storage.remove_volumes(host, [volume])
                raise
        return DiskChange(name, host.name, target, "added", str(path), size, running)

    def remove_disk(self, name: str, device: str, *, keep: bool = False) -> DiskChange:
        """Detach a disk (the running guest releases it first) and delete its volume, unless `keep` or it is
        not the guest's own (a disk Corral did not make for it is only detached)."""
        check_domain_name(name)
        check_device(device)
        if device == BOOT_DISK:
            raise InvalidInput(f"{BOOT_DISK} is the boot disk of {name}: it cannot be removed (corral delete "
                               f"{name} removes the guest with its disks)")
        host = self.hosts.locate(name)
        lv = host.libvirt
        with self._changing(name):
            config = lv.xml(name, inactive=True)
            running = lv.state(name) in ACTIVE_STATES
            in_config = _disk(config, device)
            in_live = _disk(lv.xml(name), device) if running else None
            disk = in_config or in_live
            if disk is None:
                raise NotFound(f"{name} has no disk {device} ({_disks_of(config)})")
            if disk.device != "disk":
                raise InvalidInput(f"{device} of {name} is a CD drive, not a disk: corral media eject empties it")
            meta = parse_domain_xml(config).meta
            _require_not_paused(lv, name, f"disk {device}", in_live is not None)
            lv.detach_device(name, disk.xml, live=in_live is not None, config=in_config is not None)
            if in_live is not None:
                self._wait_released(lv, name, lambda xml: _disk(xml, device) is not None, f"disk {device}",
                                    f"its file {disk.path} is kept and still the guest's")
            owned = meta is not None and disk.path is not None and disk.path in meta.owned_files
            if owned:
                self._set_owned(lv, name, lambda files: tuple(p for p in files if p != disk.path), running)
            kept = keep or not owned or disk.path is None or not self.storage.owns(host, name, disk.path)
            if not kept and disk.path is not None:
                self._delete_volume(host, disk.path)
        return DiskChange(name, host.name, device, "removed", str(disk.path) if disk.path else None, None,
                          in_live is not None, kept)

    def resize_disk(self, name: str, device: str, size_gib: float) -> DiskChange:
        """Grow a disk to `size_gib`: live in a running guest (it sees the new size at once), its volume when
        it is shut off. A smaller size is refused: a disk never shrinks."""
        check_domain_name(name)
        check_device(device)
        size = size_bytes(size_gib)
        host = self.hosts.locate(name)
        lv = host.libvirt
        with self._changing(name):
            running = lv.state(name) in ACTIVE_STATES
            xml = lv.xml(name, inactive=not running)
            disk = _disk(xml, device)
            if disk is None:
                raise NotFound(f"{name} has no disk {device} ({_disks_of(xml)})")
            if disk.device != "disk":
                raise InvalidInput(f"{device} of {name} is a CD drive, not a disk: it cannot be resized")
            current = lv.block_capacity(name, device)
            if size < current:
                raise InvalidInput(f"disk {device} of {name} is {current / GIB:g} GiB: it cannot shrink to "
                                   f"{size_gib:g} GiB (Corral only grows disks; a smaller disk would cut off "
                                   "its data)")
            if size == current:
                return DiskChange(name, host.name, device, "unchanged", str(disk.path), size, running)
            if running:
                lv.block_resize(name, device, size)
            else:
                self._resize_volume(host, name, disk, size)
        return DiskChange(name, host.name, device, "resized", str(disk.path), size, running)

    # --- NICs -------------------------------------------------------------------------------------
    def add_nic(self, name: str, network: str | None = None) -> NicChange:
        """A new virtio NIC on `network` (default: the network new guests of its host join), hot-plugged
        into the running guest. A network the host does not have is refused before anything changes."""
        check_domain_name(name)
        if network is not None:
            check_name(network, "network name")
        host = self.hosts.locate(name)
        lv = host.libvirt
        if network is None:
            network = self.host.network(host.name)[0]
        else:
            known = dict(lv.networks())
            if network not in known:
                there = ", ".join(known) or "none"
                raise InvalidInput(f"host {host.name} has no network named {network!r} (its networks: {there})")
            if not known[network]:
                raise Conflict(f"network {network} on host {host.name} is not running (virsh net-start {network})")
        with self._changing(name):
            running = lv.state(name) in ACTIVE_STATES
            xmls = [lv.xml(name, inactive=True), *([lv.xml(name)] if running else [])]
            mac = new_mac({nic.mac for xml in xmls for nic in parse_interfaces(xml)})
            lv.attach_device(name, nic_device_xml(mac, network), live=running)
        return NicChange(name, host.name, mac, "added", network, running)

    def remove_nic(self, name: str, mac: str) -> NicChange:
        """Detach the NIC with this MAC (the running guest releases it first)."""
        check_domain_name(name)
        mac = check_mac(mac)
        host = self.hosts.locate(name)
        lv = host.libvirt
        with self._changing(name):
            config = lv.xml(name, inactive=True)
            running = lv.state(name) in ACTIVE_STATES
            in_config = domain_nic_xml(config, mac)
            in_live = domain_nic_xml(lv.xml(name), mac) if running else None
            nic_xml = in_config or in_live
            if nic_xml is None:
                macs = ", ".join(n.mac for n in parse_interfaces(config)) or "none"
                raise NotFound(f"{name} has no NIC with MAC {mac} (its NICs: {macs})")
            network = next((n.network for n in parse_interfaces(config) if n.mac == mac), None)
            _require_not_paused(lv, name, f"NIC {mac}", in_live is not None)
            lv.detach_device(name, nic_xml, live=in_live is not None, config=in_config is not None)
            if in_live is not None:
                self._wait_released(lv, name, lambda xml: domain_nic_xml(xml, mac) is not None, f"NIC {mac}", "")
        return NicChange(name, host.name, mac, "removed", network, in_live is not None)

    # --- helpers ----------------------------------------------------------------------------------
    def _next_volume(self, host: Host, name: str, owned: tuple[Path, ...]) -> str:
        """`guest-<name>-disk<N>.qcow2` with the lowest N neither the guest nor the pool has (a disk kept
        by `--keep` is never taken over)."""
        taken = {p.name for p in owned}
        self.storage.ensure_pool(host)
        taken.update(host.libvirt.volumes(self.storage.pool))
        used = {i for v in taken if (i := _disk_index(name, v)) is not None}
        return guest_volume(name, f"disk{min(set(range(len(used) + 1)) - used)}.qcow2")

    def _make_volume(self, host: Host, volume: str, size: int) -> Path:
        """A blank qcow2 volume in the host's pool, QEMU's to use; its path."""
        lv = host.libvirt
        folder = Path(self.storage.ensure_pool(host))
        self.storage._refuse_existing(host, volume)
        if storage_of(host) == "pool":
            return Path(lv.create_volume(self.storage.pool, build_volume_xml(volume, size, "qcow2",
                                                                             owner=lv.qemu_identity())))
        path = folder / volume
        try:  # as a new guest's disk is made on a host that shares the data folder
            qemu_img.create_blank(path, size)
            give_to_qemu(lv, path)
            lv.refresh_pool(self.storage.pool)
        except BaseException:
            self.storage.remove_volumes(host, [volume])
            raise
        return path

    def _delete_volume(self, host: Host, path: Path) -> None:
        lv = host.libvirt
        with contextlib.suppress(CorralError):
            lv.refresh_pool(self.storage.pool)
        if not lv.delete_volume(self.storage.pool, path.name) and storage_of(host) == "files":
            path.unlink(missing_ok=True)

    def _resize_volume(self, host: Host, name: str, disk: DomainDisk, size: int) -> None:
        """Grow a shut-off guest's disk: a volume of its host's pool."""
        lv = host.libvirt
        if disk.path is None or disk.path.parent != self.storage.pool_dir(host):
            raise Conflict(f"disk {disk.target} of {name} ({disk.path}) is not a volume of host {host.name}'s "
                           f"storage pool {self.storage.pool}: resize it while {name} runs")
        lv.refresh_pool(self.storage.pool)
        if lv.volume_path(self.storage.pool, disk.path.name) is None:
            raise NotFound(f"disk {disk.target} of {name}: no volume {disk.path.name} in storage pool "
                           f"{self.storage.pool} on host {host.name}")
        lv.resize_volume(self.storage.pool, disk.path.name, size)

    def _set_owned(self, lv: LibvirtHost, name: str, change: Callable[[tuple[Path, ...]], tuple[Path, ...]],
                   running: bool) -> None:
        """Change the files the guest owns in its Corral metadata, in its definition (and the running
        guest's, so both say the same)."""
        config = lv.xml(name, inactive=True)
        meta = parse_domain_xml(config).meta
        if meta is None:
            raise Conflict(f"{name} lost its Corral metadata meanwhile")
        element = meta_with_owned_files(config, change(meta.owned_files))
        lv.set_metadata(name, element, "corral", CORRAL_NS, live=running and lv.state(name) in ACTIVE_STATES)

    @staticmethod
    def _wait_released(lv: LibvirtHost, name: str, present: Callable[[str], bool], what: str, kept: str) -> None:
        """Wait until the running guest has released a device it was asked to unplug (it answers the ACPI
        request); GuestTimeout if it does not in time (the device is out of its definition already)."""
        deadline = time.monotonic() + RELEASE_WAIT_S
        while True:
            try:
                if lv.state(name) not in ACTIVE_STATES or not present(lv.xml(name)):
                    return
            except NotFound:
                return
            if time.monotonic() >= deadline:
                note = f"; {kept}" if kept else ""
                raise GuestTimeout(f"{name} has not released {what} within {RELEASE_WAIT_S:g} s of being asked: it "
                                   f"is out of its definition but still in the running guest{note}; run the "
                                   "command again once the guest let go of it (or after it restarts)")
            time.sleep(0.2)


def _require_not_paused(lv: LibvirtHost, name: str, what: str, live: bool) -> None:
    """A paused guest cannot answer the request to release a device: refused before anything changes."""
    if live and lv.state(name) == "paused":
        raise Conflict(f"{name} is paused: it cannot release {what}; resume it first (corral resume {name})")


def _disk(xml: str, device: str) -> DomainDisk | None:
    return next((d for d in domain_disks(xml) if d.target == device), None)


def _disks_of(xml: str) -> str:
    disks = [d.target for d in domain_disks(xml) if d.device == "disk"]
    return f"its disks: {', '.join(disks)}" if disks else "it has no disks"
