"""Guest life cycle: the one place that creates, starts, stops, clones, snapshots and deletes.

The CLI and the REST API both call this service. Every action validates first, asks the
admission guard before anything is made, and undoes what it made when a later step fails.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt
import libvirt_qemu

from corral.adapters import qemu_img
from corral.adapters.accel import emulator_path
from corral.adapters.files import require_file
from corral.adapters.hostinfo import host_snapshot
from corral.adapters.libvirt_host import ACTIVE_STATES, DomainRow, LibvirtHost
from corral.adapters.locks import HostLock
from corral.config import Settings
from corral.core.capacity import MIB, admission_violations, footprint
from corral.core.domxml import (
    DiskPlan,
    DomainPlan,
    build_domain_xml,
    clone_domain_xml,
    parse_domain_xml,
    snapshot_xml,
    tiny_cmdline,
)
from corral.core.errors import AdmissionRefused, BackendError, Conflict, GuestTimeout, InvalidInput, NotFound
from corral.core.spec import GuestSpec
from corral.core.validate import check_domain_name, check_name
from corral.services.host import HostService
from corral.services.images import ImageService

if TYPE_CHECKING:
    from corral.adapters.console import SerialConsole
    from corral.monitoring.rates import Counters

GIB = 1024**3
READY_MARKER = b"CORRAL-READY"
DEFAULT_TINY_DISK_GIB = 1.0
DEFAULT_ISO_DISK_GIB = 10.0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ListedDomain:
    """One row of `corral list`: the host itself (Domain-0) or a guest."""

    name: str
    id: int | None
    state: str
    vcpus: int
    memory_mib: int
    cpu_pct: float | None  # of the domain's own vCPUs (Domain-0: of all host cores); None when off
    cpu_time_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "id": self.id, "state": self.state, "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "cpu_pct": None if self.cpu_pct is None else round(self.cpu_pct, 1),
            "cpu_time_s": round(self.cpu_time_s, 1),
        }


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created: str
    state: str
    current: bool


@dataclass(frozen=True)
class GuestInfo:
    name: str
    uuid: str
    id: int | None
    state: str
    vcpus: int
    memory_mib: int
    cpu_time_s: float
    managed_by_corral: bool
    image: str | None
    load: str | None
    disks: list[dict[str, str]]
    console_log: str | None
    vnc: str | None
    snapshots: list[str] = field(default_factory=list)
    autostart: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class GuestService:
    def __init__(self, settings: Settings, libvirt_host: LibvirtHost, images: ImageService,
                 host: HostService) -> None:
        self.settings = settings
        self.libvirt = libvirt_host
        self.images = images
        self.host = host
        # Admission check and start happen under one lock, so two starts cannot both pass the check.
        self._admission = HostLock(settings.data_dir / "admission.lock")

    # --- admission ---------------------------------------------------------------------
    def check_admission(self, name: str, vcpus: int, memory_mib: int, load_cpu_pct: float | None,
                        *, beside_running: bool) -> None:
        """Refuse (AdmissionRefused) what would break the capacity model.

        beside_running: check against the guests running now (start); otherwise against an empty
        host (define only: could this guest ever run here?).
        """
        snapshot = host_snapshot()
        running = self.host.running_footprints() if beside_running else []
        candidate = footprint(name, vcpus, memory_mib, load_cpu_pct, self.settings.limits)
        violations = admission_violations(snapshot.facts, self.settings.limits, running, candidate)
        if violations:
            where = "beside the running guests" if beside_running else "on this host"
            raise AdmissionRefused(
                f"{name} does not fit {where}: " + "; ".join(v.describe() for v in violations)
            )

    # --- create ------------------------------------------------------------------------
    def create(self, spec: GuestSpec, *, start: bool = False, wait: bool = False,
               progress: Progress | None = None) -> GuestInfo:
        say = progress or (lambda _msg: None)
        image = self.images.get(spec.image)
        if spec.iso is not None:
            require_file(spec.iso, "iso")
        if not spec.load.is_idle and image.kind != "kernel":
            raise InvalidInput(f"--load needs the built-in image (tiny); {spec.image!r} runs its own software")
        if self.libvirt.exists(spec.name):
            raise Conflict(f"a domain named {spec.name!r} already exists")
        self.check_admission(spec.name, spec.vcpus, spec.memory_mib, spec.load.declared_cpu_pct,
                             beside_running=start)
        guest_dir = self.settings.guests_dir / spec.name
        accel = self.host.accelerator()
        _make_own_folder(guest_dir)  # exclusive: a concurrent create of the same name gets a Conflict here
        defined = False
        try:
            say("making disks")
            disks = self._make_disks(spec, image.kind, image.path, image.format, guest_dir)
            plan = DomainPlan(
                name=spec.name,
                domain_type=accel.domain_type,
                emulator=emulator_path(),
                vcpus=spec.vcpus,
                memory_mib=spec.memory_mib,
                image=spec.image,
                load=spec.load,
                disks=tuple(disks),
                console_log=guest_dir / "console.log",
                kernel=Path(image.kernel) if image.kernel else None,
                initrd=Path(image.initrd) if image.initrd else None,
                cmdline=tiny_cmdline(image.cmdline or "", spec.name, spec.load) if image.kind == "kernel" else None,
                readiness="serial" if image.kind == "kernel" else "agent",
                network=self.host.network()[0],
            )
            say("defining the domain")
            self.libvirt.define(build_domain_xml(plan))
            defined = True
            if start:
                self.start(spec.name, wait=wait, progress=progress)
        except BaseException as exc:
            last_words = _log_tail(guest_dir / "console.log") if isinstance(exc, GuestTimeout) else ""
            if defined:
                with contextlib.suppress(Exception):
                    if self.libvirt.state(spec.name) in ACTIVE_STATES:
                        self.libvirt.act(spec.name, "destroy", lambda d: d.destroy())
                    self.libvirt.undefine(spec.name)
            shutil.rmtree(guest_dir, ignore_errors=True)
            if isinstance(exc, GuestTimeout):
                raise GuestTimeout(f"{spec.name} did not come up within {self.settings.boot_timeout_s:g} s "
                                   f"and was removed; its console ended with: {last_words or '(nothing)'}") from None
            if isinstance(exc, OSError):
                raise BackendError(f"create {spec.name}: {exc}") from None
            raise
        return self.info(spec.name)

    def _make_disks(self, spec: GuestSpec, kind: str, base: str | None, base_format: str | None,
                    guest_dir: Path) -> list[DiskPlan]:
        disks: list[DiskPlan] = []
        disk0 = guest_dir / "disk0.qcow2"
        if kind == "disk" and base:
            base_size = qemu_img.info(Path(base)).get("virtual-size", 0)
            wanted = int(spec.disk_gib * GIB) if spec.disk_gib else None
            size = max(wanted, int(base_size)) if wanted else None
            qemu_img.create_overlay(Path(base), base_format or "raw", disk0, size)
        else:
            default = DEFAULT_TINY_DISK_GIB if kind == "kernel" else DEFAULT_ISO_DISK_GIB
            qemu_img.create_blank(disk0, int((spec.disk_gib or default) * GIB))
        disks.append(DiskPlan(disk0, "qcow2"))
        if kind == "iso" and base:
            disks.append(DiskPlan(Path(base), "raw", "cdrom", owned=False))
        if spec.iso is not None:
            disks.append(DiskPlan(spec.iso, "raw", "cdrom", owned=False))
        return disks

    # --- life cycle ----------------------------------------------------------------------
    def start(self, name: str, *, wait: bool = False, progress: Progress | None = None) -> GuestInfo:
        say = progress or (lambda _msg: None)
        with self._admission.held():
            state = self.libvirt.state(name)
            if state in ACTIVE_STATES:
                raise Conflict(f"{name} is already {state}")
            self._admit_defined(name)
            say("starting")
            log_offset = self.console_log_size(name)
            self.libvirt.act(name, "start", lambda d: d.create())
        if wait:
            say("waiting for the guest to come up")
            self.wait_ready(name, self.settings.boot_timeout_s, log_offset=log_offset)
        return self.info(name)

    def _admit_defined(self, name: str) -> None:
        """The admission check for a defined guest about to run (call with the admission lock held)."""
        facts = parse_domain_xml(self.libvirt.xml(name, inactive=True))
        load = facts.meta.load.declared_cpu_pct if facts.meta else None
        self.check_admission(name, facts.vcpus, facts.memory_mib, load, beside_running=True)

    def console_log_size(self, name: str) -> int:
        """Where the next boot's output will begin in the guest's console log."""
        meta = parse_domain_xml(self.libvirt.xml(name, inactive=True)).meta
        if meta is None or meta.console_log is None:
            return 0
        try:
            return meta.console_log.stat().st_size
        except OSError:
            return 0

    def wait_ready(self, name: str, timeout_s: float, *, log_offset: int = 0) -> float:
        """Block until the guest is up; return the seconds it took from now.

        The tiny image says so on its console (looked for past `log_offset`, where this boot
        began); other images answer the QEMU guest agent.
        """
        began = time.monotonic()
        facts = parse_domain_xml(self.libvirt.xml(name))
        meta = facts.meta
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            if self.libvirt.state(name) not in ACTIVE_STATES:
                raise BackendError(f"{name} stopped while booting; see its console log")
            if meta is not None and meta.readiness == "serial" and meta.console_log is not None:
                if _log_has(meta.console_log, READY_MARKER, log_offset):
                    return time.monotonic() - began
            elif self._agent_answers(name):
                return time.monotonic() - began
            time.sleep(0.05)
        where = f"; see {meta.console_log}" if meta and meta.console_log else ""
        raise GuestTimeout(f"{name} did not come up within {timeout_s:g} s (it is still running{where})")

    def _agent_answers(self, name: str) -> bool:
        try:
            dom = self.libvirt.domain(name)
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 1, 0)
            return True
        except libvirt.libvirtError:
            return False

    def shutdown(self, name: str, *, timeout_s: float = 60, force: bool = False) -> GuestInfo:
        """ACPI power button, then wait; with force, power off whatever is still running."""
        self._require_active(name, "shut down")
        if self.libvirt.state(name) == "paused":  # a paused guest cannot see the power button
            if not force:
                raise Conflict(f"cannot shut down {name} while it is paused: resume it first, or use --force")
            self.libvirt.act(name, "power off", lambda d: d.destroy())
            return self.info(name)
        self.libvirt.act(name, "shut down", lambda d: d.shutdown())
        if not self.libvirt.wait_state(name, {"shut-off", "crashed"}, timeout_s):
            if not force:
                raise GuestTimeout(
                    f"{name} did not shut down within {timeout_s:g} s; use --force or poweroff")
            self.libvirt.act(name, "power off", lambda d: d.destroy())
        return self.info(name)

    def poweroff(self, name: str) -> GuestInfo:
        self._require_active(name, "power off")
        self.libvirt.act(name, "power off", lambda d: d.destroy())
        return self.info(name)

    def reboot(self, name: str) -> GuestInfo:
        self._require_active(name, "reboot")
        self.libvirt.act(name, "reboot", lambda d: d.reboot(0))
        return self.info(name)

    def pause(self, name: str) -> GuestInfo:
        if self.libvirt.state(name) == "paused":
            raise Conflict(f"{name} is already paused")
        self._require_active(name, "pause")
        self.libvirt.act(name, "pause", lambda d: d.suspend())
        return self.info(name)

    def resume(self, name: str) -> GuestInfo:
        if self.libvirt.state(name) != "paused":
            raise Conflict(f"{name} is not paused (it is {self.libvirt.state(name)})")
        self.libvirt.act(name, "resume", lambda d: d.resume())
        return self.info(name)

    def _require_active(self, name: str, action: str) -> None:
        state = self.libvirt.state(name)
        if state not in ACTIVE_STATES:
            raise Conflict(f"cannot {action} {name}: it is {state}")

    # --- delete and clone --------------------------------------------------------------------
    def delete(self, name: str, *, keep_disks: bool = False) -> list[str]:
        """Remove the domain and the files Corral made for it; return what was left on disk."""
        facts = parse_domain_xml(self.libvirt.xml(name, inactive=True))
        if self.libvirt.state(name) in ACTIVE_STATES:
            self.libvirt.act(name, "power off", lambda d: d.destroy())
        self.libvirt.undefine(name)
        kept: list[str] = []
        meta = facts.meta
        if meta is None:
            return [str(d.path) for d in facts.disks if d.device == "disk"]  # not ours to remove
        for path in meta.owned_files:
            if keep_disks:
                kept.append(str(path))
            else:
                path.unlink(missing_ok=True)
        if meta.console_log is not None:
            meta.console_log.unlink(missing_ok=True)
        guest_dir = self.settings.guests_dir / name
        if guest_dir.is_dir() and not keep_disks:
            shutil.rmtree(guest_dir, ignore_errors=True)
        return kept

    def clone(self, source: str, new_name: str) -> GuestInfo:
        check_domain_name(new_name)
        if self.libvirt.exists(new_name):
            raise Conflict(f"a domain named {new_name!r} already exists")
        state = self.libvirt.state(source)
        if state not in ("shut-off", "crashed"):
            raise Conflict(f"cannot clone {source} while it is {state}: shut it down first")
        xml = self.libvirt.xml(source, inactive=True)
        facts = parse_domain_xml(xml)
        if facts.meta is None:
            raise Conflict(f"{source} was not made by Corral; clone it with virt-clone")
        guest_dir = self.settings.guests_dir / new_name
        _make_own_folder(guest_dir)
        path_map: dict[Path, Path] = {}
        try:
            for index, owned in enumerate(facts.meta.owned_files):
                target = guest_dir / (owned.name if owned.name else f"disk{index}.qcow2")
                qemu_img.copy_keeping_backing(owned, target)
                path_map[owned] = target
            self.libvirt.define(clone_domain_xml(xml, new_name, path_map, guest_dir / "console.log"))
        except BaseException:
            shutil.rmtree(guest_dir, ignore_errors=True)
            raise
        return self.info(new_name)

    # --- snapshots ---------------------------------------------------------------------------
    def snapshot_create(self, name: str, snapshot: str) -> SnapshotInfo:
        check_name(snapshot, "snapshot name")
        if snapshot in [s.name for s in self.snapshot_list(name)]:
            raise Conflict(f"{name} already has a snapshot named {snapshot!r}")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.libvirt.act(name, "snapshot", lambda d: d.snapshotCreateXML(
            snapshot_xml(snapshot, f"made by Corral at {stamp}"), 0))
        return next(s for s in self.snapshot_list(name) if s.name == snapshot)

    def snapshot_list(self, name: str) -> list[SnapshotInfo]:
        def read(dom: libvirt.virDomain) -> list[SnapshotInfo]:
            result = []
            for snap in dom.listAllSnapshots(0):
                facts = _snapshot_facts(snap.getXMLDesc(0))
                result.append(SnapshotInfo(snap.getName(), facts[0], facts[1], bool(snap.isCurrent(0))))
            return sorted(result, key=lambda s: s.created)

        result: list[SnapshotInfo] = self.libvirt.act(name, "list snapshots of", read)
        return result

    def snapshot_revert(self, name: str, snapshot: str) -> GuestInfo:
        """Return to a snapshot. One taken while the guest ran starts it: the guard is asked first."""
        check_name(snapshot, "snapshot name")
        with self._admission.held():
            taken_running = any(s.name == snapshot and s.state in ("running", "paused")
                                for s in self.snapshot_list(name))
            if taken_running and self.libvirt.state(name) not in ACTIVE_STATES:
                self._admit_defined(name)
            self.libvirt.act(name, f"revert to snapshot {snapshot} of",
                             lambda d: d.revertToSnapshot(d.snapshotLookupByName(snapshot, 0), 0))
        return self.info(name)

    def snapshot_delete(self, name: str, snapshot: str) -> None:
        check_name(snapshot, "snapshot name")
        self.libvirt.act(name, f"delete snapshot {snapshot} of",
                         lambda d: d.snapshotLookupByName(snapshot, 0).delete(0))

    # --- reading -----------------------------------------------------------------------------
    def info(self, name: str) -> GuestInfo:
        row = self._row(name)
        facts = parse_domain_xml(self.libvirt.xml(name))
        meta = facts.meta
        snapshots = [s.name for s in self.snapshot_list(name)]
        autostart = bool(self.libvirt.act(name, "read autostart of", lambda d: d.autostart()))
        return GuestInfo(
            name=row.name, uuid=row.uuid, id=row.id, state=row.state, vcpus=row.vcpus,
            memory_mib=row.memory_mib, cpu_time_s=row.cpu_time_ns / 1e9,
            managed_by_corral=meta is not None,
            image=meta.image if meta else None,
            load=meta.load.as_text() if meta else None,
            disks=[{"path": str(d.path), "format": d.format, "device": d.device} for d in facts.disks],
            console_log=str(meta.console_log) if meta and meta.console_log else None,
            vnc=f"127.0.0.1:{facts.vnc_port}" if facts.vnc_port else None,
            snapshots=snapshots,
            autostart=autostart,
        )

    def _row(self, name: str) -> DomainRow:
        for row in self.libvirt.rows():
            if row.name == name:
                return row
        raise NotFound(f"no domain named {name!r}")

    def listing(self, sample_s: float = 0.05, *, fresh: bool = False,
                since: Sequence[Counters] | None = None) -> list[ListedDomain]:
        """Domain-0 first, then every guest, with CPU % from the monitoring core's rate code.

        The CPU window runs from an earlier reading when that is between 0.1 s and 60 s old and
        covers every running guest: `since` (the background sampler's last one, in `corral serve`)
        or else the previous listing's (like `top` between refreshes; `fresh` ignores it);
        otherwise it runs over `sample_s` now.
        """
        from corral.adapters import reading_cache
        from corral.monitoring.metrics import HOST_DOMAIN
        from corral.monitoring.rates import sample_values
        from corral.monitoring.sampler import Sampler

        sampler = Sampler(self.libvirt)
        cache = self.settings.cache_dir / "list-reading.json"
        now = sampler.read()
        earlier = [] if fresh else since if since is not None else reading_cache.load(cache)
        previous = {c.domain: c for c in earlier}
        window = now[0].time - previous[HOST_DOMAIN].time if HOST_DOMAIN in previous else -1.0
        covered = all(c.domain in previous and previous[c.domain].instance == c.instance for c in now)
        if not covered or not 0.1 <= window <= 60:  # a new or restarted guest, or no recent reading
            time.sleep(sample_s)
            previous = {c.domain: c for c in now}
            now = sampler.read()
        if since is None:
            reading_cache.save(cache, now)
        cpu = {c.domain: sample_values(previous.get(c.domain), c, sampler.host_cores)["cpu_pct"] for c in now}
        host = now[0]  # Domain-0's reading already has its cores and memory
        listed = [ListedDomain(HOST_DOMAIN, 0, "running", host.cpus, int(host.mem_total_bytes or 0) // MIB,
                               cpu.get(HOST_DOMAIN), host.cpu_time_s)]
        for row in self.libvirt.rows():
            listed.append(ListedDomain(row.name, row.id, row.state, row.vcpus, row.memory_mib,
                                       cpu.get(row.name) if row.state in ACTIVE_STATES else None,
                                       row.cpu_time_ns / 1e9))
        return listed

    def remove_image(self, image: str) -> None:
        """Forget an image, refused while any guest (running or not) is made from it."""
        users = []
        for row in self.libvirt.rows():
            meta = parse_domain_xml(self.libvirt.xml(row.name, inactive=True)).meta
            if meta is not None and meta.image == image:
                users.append(row.name)
        self.images.remove(image, users)

    def open_console(self, name: str) -> SerialConsole:
        from corral.adapters.console import SerialConsole  # its event loop only when a console opens

        self._require_active(name, "open the console of")
        return SerialConsole(self.libvirt.uri, name)


def _make_own_folder(folder: Path) -> None:
    """Create a guest's folder, failing if it exists: only its creator may ever remove it."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
    except FileExistsError:
        raise Conflict(f"{folder} already exists (another create of this name, or left from an earlier "
                       "guest); remove it first") from None
    except OSError as exc:
        raise BackendError(f"cannot create {folder}: {exc.strerror}") from None


def _log_tail(path: Path) -> str:
    """The last few hundred characters a guest printed, on one line (for an error message)."""
    try:
        text = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-300:]


def _log_has(path: Path, marker: bytes, offset: int) -> bool:
    try:
        with path.open("rb") as handle:
            if path.stat().st_size >= offset:  # smaller: virtlogd rotated it; read it all
                handle.seek(offset)
            return marker in handle.read()
    except OSError:
        return False


def _snapshot_facts(xml: str) -> tuple[str, str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    created = root.findtext("creationTime") or "0"
    when = datetime.fromtimestamp(int(created), UTC).isoformat(timespec="seconds")
    return when, root.findtext("state") or "unknown"
