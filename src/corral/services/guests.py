"""Guest life cycle: the one place that creates, starts, stops, clones, snapshots and deletes.

The CLI and the REST API both call this service. Every action validates first, asks the
admission guard before anything is made, and undoes what it made when a later step fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid as uuid_module
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.adapters import qemu_img
from corral.adapters.files import require_allowed_file
from corral.adapters.libvirt_host import ACTIVE_STATES, DomainRow, LibvirtHost
from corral.adapters.locks import Claim, HostLock
from corral.adapters.seed import read_seed, seed_iso
from corral.config import Settings
from corral.core.capacity import MIB, admission_state, admission_violations, footprint
from corral.core.cloudinit import FirstBoot, reseeded
from corral.core.domxml import (
    CorralMeta,
    DomainPlan,
    boot_from_disk_first,
    build_domain_xml,
    clone_domain_xml,
    domain_disks,
    eject_media_xml,
    harden_domain_xml,
    parse_domain_xml,
    snapshot_xml,
    tiny_cmdline,
)
from corral.core.errors import (
    AdmissionRefused,
    BackendError,
    Conflict,
    CorralError,
    GuestTimeout,
    InvalidInput,
    NotFound,
)
from corral.core.nics import NicInfo
from corral.core.placement import DEFAULT_WEIGHER, Candidate, Placement, choose
from corral.core.spec import GuestSpec
from corral.core.validate import check_domain_name, check_name
from corral.monitoring.metrics import HOST_DOMAIN
from corral.services.host import HostService
from corral.services.images import ImageRecord, ImageService, require_self_contained
from corral.services.registry import Host, HostRegistry
from corral.services.storage import (
    MAKING,
    GuestFiles,
    GuestStorage,
    give_to_qemu,
    guest_volume,
    is_guest_disk,
    is_seed,
    note_making,
    pool_volume,
    write_private,
)

if TYPE_CHECKING:
    from corral.adapters.console import SerialConsole
    from corral.monitoring.rates import Counters

READY_MARKER = b"CORRAL-READY"
CREATE_MARKER = ".creating"  # in a guest's folder while a create runs, and after one that could not be undone
ADMISSION_WAIT_S = 20.0  # a start waits this long for the admission lock, then fails (503) instead of hanging
RESUME_SETTLE_S = 0.5
AUTO = "auto"  # --host auto: placement chooses
Progress = Callable[[str], None]
log = logging.getLogger("corral.guests")


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
    reason: str | None = None  # why it is paused, when something other than a user paused it
    host: str = "local"
    nics: list[NicInfo] | None = None  # a guest's NICs and addresses, when the listing was asked for them
    autostart: bool | None = None  # started with its host's libvirt (None: Domain-0)
    tags: tuple[str, ...] = ()  # its tags (corral tag)

    @property
    def shown_state(self) -> str:
        return f"{self.state} ({self.reason})" if self.reason else self.state

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "host": self.host, "id": self.id, "state": self.state, "reason": self.reason,
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "cpu_pct": None if self.cpu_pct is None else round(self.cpu_pct, 1),
            "cpu_time_s": round(self.cpu_time_s, 1),
            "nics": None if self.nics is None else [n.as_dict() for n in self.nics],
            "autostart": self.autostart, "tags": list(self.tags),
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
    reason: str | None
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
    host: str = "local"
    nics: list[NicInfo] = field(default_factory=list)  # MAC, network, addresses (DHCP leases, guest agent)
    os_name: str | None = None  # from the guest agent, when the guest has one and it answers
    agent: bool = False  # the guest agent answers
    tags: list[str] = field(default_factory=list)  # its tags (corral tag), from Corral's metadata

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "nics": [n.as_dict() for n in self.nics]}


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class GuestService:
    def __init__(self, settings: Settings, hosts: HostRegistry, images: ImageService, host: HostService) -> None:
        self.settings = settings
        self.hosts = hosts
        self.images = images
        self.host = host
        self.storage = GuestStorage(settings)
        # Per host, the admission check and the start happen under one lock, so two starts cannot both
        # pass the check.
        self._admission: dict[str, HostLock] = {}
        self.admission_refusals: dict[str, int] = {}  # by host: creates and starts refused here (Prometheus)

    def _at(self, name: str) -> LibvirtHost:
        """The libvirt of the host that has the guest `name` (NotFound when none has it)."""
        return self.hosts.locate(name).libvirt

    def admission_lock(self, host: str) -> HostLock:
        if host not in self._admission:
            path = self.settings.data_dir / "locks" / f"admission-{host}.lock"
            self._admission[host] = HostLock(path, f"admission lock of host {host}")
        return self._admission[host]

    # --- admission ---------------------------------------------------------------------
    def check_admission(self, name: str, vcpus: int, memory_mib: int, load_cpu_pct: float | None,
                        *, beside_running: bool, host: str | None = None, count: bool = False) -> None:
        """Refuse (AdmissionRefused) what would break the capacity model.

        beside_running: check against the guests running now (start); otherwise against an empty
        host (define only: could this guest ever run here?). count: a refusal is counted in
        `admission_refusals` (a create or a start; not a check that only asks).
        """
        target = self.hosts.get(host)
        running = self.host.running_footprints(target.name) if beside_running else []
        candidate = footprint(name, vcpus, memory_mib, load_cpu_pct, self.settings.limits)
        violations = admission_violations(self.host.facts(target.name), self.settings.limits, running, candidate)
        if violations:
            if count:
                self.admission_refusals[target.name] = self.admission_refusals.get(target.name, 0) + 1
            where = f"beside the running guests of {target.name}" if beside_running else f"on host {target.name}"
            if len(self.hosts) == 1:
                where = "beside the running guests" if beside_running else "on this host"
            raise AdmissionRefused(
                f"{name} does not fit {where}: " + "; ".join(v.describe() for v in violations)
            )

    def check(self, spec: GuestSpec, *, start: bool, host: str | None = None) -> ImageRecord:
        """Everything `create` checks before it makes anything, in the same order and with the same
        errors: the image and its files, the ISO, the load, the name (unique across hosts), the host
        (`auto`: placement) and its admission guard."""
        image = self._check_spec(spec)
        target = self._target(spec, image, host)
        self.check_admission(spec.name, spec.vcpus, spec.memory_mib, spec.load.declared_cpu_pct,
                             beside_running=start, host=target.name)
        return image

    def _check_spec(self, spec: GuestSpec) -> ImageRecord:
        image = self.images.get(spec.image)
        self.images.verified_source(image)
        if spec.iso is not None:
            require_allowed_file(spec.iso, "iso", self.settings.allowed_image_dirs)
        if not spec.load.is_idle and image.kind != "kernel":
            raise InvalidInput(f"--load needs the built-in image (tiny); {spec.image!r} runs its own software")
        if (spec.user or spec.ssh_keys or spec.password_hash) and image.kind != "disk":
            raise InvalidInput(f"--user, --ssh-key and --password-prompt configure a disk image's first boot "
                               f"(cloud-init); {spec.image!r} is a {image.kind} image")
        owner = self.hosts.owner(spec.name)
        if owner is not None:
            where = f" on host {owner.name}" if len(self.hosts) > 1 else ""
            raise Conflict(f"a domain named {spec.name!r} already exists{where}")
        return image

    def _target(self, spec: GuestSpec, image: ImageRecord, host: str | None) -> Host:
        """The host a new guest goes to: the one named (which must be able to take guests), the default
        one, or with `auto` the one placement chooses."""
        if host == AUTO:
            placement = self.placement(spec, image=image)
            if placement.chosen is None:
                raise AdmissionRefused(placement.refusal(spec.name))
            return self.hosts.get(placement.chosen)
        target = self.hosts.get(host)
        if target.standby:
            raise Conflict(f"host {target.name} is in standby: wake it first (corral host wake {target.name})")
        if target.maintenance:
            raise Conflict(f"host {target.name} is in maintenance: it takes no new guests")
        available, why = self._image_on(target, image)
        if not available:
            raise Conflict(f"{spec.image} cannot be used on host {target.name}: {why}")
        return target

    def placement(self, spec: GuestSpec, *, weigher: str = DEFAULT_WEIGHER,
                  image: ImageRecord | None = None) -> Placement:
        """Which host would take this guest, through the placement filters and weighers, with the reasons
        (what `create --host auto --explain` prints)."""
        image = image or self.images.get(spec.image)
        guest = footprint(spec.name, spec.vcpus, spec.memory_mib, spec.load.declared_cpu_pct, self.settings.limits)
        return choose([self.candidate(h, image) for h in self.hosts], guest.demand, weigher)

    def candidate(self, target: Host, image: ImageRecord | None = None) -> Candidate:
        """A host as placement sees it: reachable, states, its admission capacity beside its running
        guests, and whether the image (or, with none, a guest's files) can be had there."""
        if target.standby:  # off: not asked
            return Candidate(target.name, reachable=True, maintenance=target.maintenance, standby=True)
        try:
            capacity = admission_state(target.name, self.host.facts(target.name), self.settings.limits,
                                       self.host.running_footprints(target.name))
        except CorralError:
            return Candidate(target.name, reachable=False, maintenance=target.maintenance)
        available, why = self._image_on(target, image)
        return Candidate(target.name, True, target.maintenance, False, capacity, available, why,
                         target.spec.reachable_by_peers)

    @staticmethod
    def _image_on(target: Host, image: ImageRecord | None) -> tuple[bool, str]:
        """Can a guest of this image be had on that host? A host that shares Corral's data folder finds
        it there; one that does not gets it uploaded into its storage pool."""
        if image is not None and image.kind not in ("kernel", "disk", "iso"):
            return False, f"image {image.name} is of an unknown kind"
        return True, ""

    # --- create ------------------------------------------------------------------------
    def create(self, spec: GuestSpec, *, start: bool = False, wait: bool = False,
               progress: Progress | None = None, still_wanted: Callable[[], bool] | None = None,
               host: str | None = None, wait_timeout_s: float | None = None) -> GuestInfo:
        """Define a guest (and start it). A create that fails is undone; one that cannot be undone (libvirt
        gone) leaves a marker so that `corral delete NAME` finishes the job. A guest that was made and
        started is never removed because it was slow to signal readiness."""
        say = progress or (lambda _msg: None)
        image = self._check_spec(spec)
        target = self._target(spec, image, host)
        lv = target.libvirt
        self.check_admission(spec.name, spec.vcpus, spec.memory_mib, spec.load.declared_cpu_pct,
                             beside_running=start, host=target.name, count=True)
        iso = require_allowed_file(spec.iso, "iso", self.settings.allowed_image_dirs) if spec.iso else None
        guest_dir = self.settings.guests_dir / spec.name
        accel = self.host.accelerator(target.name)
        claim = self._claim_folder(spec.name, guest_dir)
        uuid = str(uuid_module.uuid4())
        files: GuestFiles | None = None
        try:
            say("making disks")
            # A cloud-init seed (hostname, user, keys) for an image known to run cloud-init (the Debian
            # image), or for any disk image when a user, keys or a password are asked for (a cloud image).
            asked = bool(spec.user or spec.ssh_keys or spec.password_hash)
            first_boot = FirstBoot(spec.name, uuid, spec.user, spec.ssh_keys, spec.password_hash) \
                if image.kind == "disk" and (image.cloud_init or asked) else None
            files = self.storage.make(target, spec.name, image, iso, spec.disk_gib, guest_dir, say, first_boot)
            plan = DomainPlan(
                name=spec.name,
                uuid=uuid,
                domain_type=accel.domain_type,
                emulator=lv.node_info().emulator,
                vcpus=spec.vcpus,
                memory_mib=spec.memory_mib,
                image=spec.image,
                load=spec.load,
                disks=tuple(files.disks),
                console_log=files.console_log,
                kernel=files.kernel,
                initrd=files.initrd,
                cmdline=(tiny_cmdline(image.cmdline or "", spec.name, spec.load) if image.kind == "kernel"
                         else image.cmdline if image.kernel else None),
                readiness=_readiness(image.kind, iso is not None),
                network=self.host.network(target.name)[0],
                storage=files.storage,
            )
            say("defining the domain")
            lv.define(build_domain_xml(plan))
            if start:
                self._start(target, spec.name, progress, still_wanted)
        except BaseException as exc:
            self._undo_create(target, spec.name, uuid, guest_dir, claim, exc, files.made_volumes if files else [])
            raise
        claim.release(remove=True)  # whole: defined, and running if asked
        (guest_dir / MAKING).unlink(missing_ok=True)
        if start and wait:
            say("waiting for the guest to come up")
            self._wait_after_create(spec.name, wait_timeout_s)
        return self.info(spec.name)

    def _claim_folder(self, name: str, guest_dir: Path) -> Claim:
        """Make the guest's folder (exclusively) and hold its create marker while the create runs."""
        try:
            guest_dir.parent.mkdir(parents=True, exist_ok=True)
            guest_dir.mkdir()
        except FileExistsError:
            marker = guest_dir / CREATE_MARKER
            holder = Claim.holder(marker)
            if holder is not None:
                raise Conflict(f"another create of {name} is in progress (process {holder.get('pid', '?')})") from None
            if marker.exists():
                raise Conflict(f"an earlier create of {name} did not finish and left {guest_dir}; clear it with: "
                               f"corral delete {name}") from None
            raise Conflict(f"{guest_dir} holds files of an earlier guest named {name} (deleted with "
                           "--keep-disks?); move them away first") from None
        except OSError as exc:
            raise BackendError(f"cannot create {guest_dir}: {exc.strerror}") from None
        try:
            return Claim.take(guest_dir / CREATE_MARKER, {"name": name})
        except OSError as exc:
            shutil.rmtree(guest_dir, ignore_errors=True)
            raise BackendError(f"cannot write the create marker in {guest_dir}: {exc.strerror}") from None

    def _undo_create(self, target: Host, name: str, uuid: str, guest_dir: Path, claim: Claim,
                     cause: BaseException, volumes: list[str] | None = None) -> None:
        """Undo a failed create, domain first: disks are removed only once libvirt says no domain of this
        create exists, so a defined domain never loses its disks. If libvirt cannot say, everything stays
        (with the marker) and the error says how to clear it."""
        lv = target.libvirt
        try:
            if lv.uuid_of(name) == uuid:  # ours (the reply to define may have been lost)
                with contextlib.suppress(Conflict):  # not running
                    lv.destroy(name)
                lv.undefine(name)
            gone = lv.uuid_of(name) != uuid
        except CorralError as exc:
            log.warning("could not undo the create of %s: %s", name, exc.message)
            gone = False
        kept_log = _keep_console_log(guest_dir / "console.log", self.settings.data_dir / "logs", name)
        if not gone:
            claim.release(remove=False)
            detail = f"libvirt did not answer while undoing it: {guest_dir} and possibly a domain named {name} " \
                     f"were left; clear them with: corral delete {name}"
            _add_note(cause, detail)
            return
        self.storage.remove_volumes(target, volumes or [])
        shutil.rmtree(guest_dir, ignore_errors=True)
        claim.release(remove=False)  # its file went with the folder
        if kept_log is not None:
            _add_note(cause, f"its console log is kept at {kept_log}")

    # --- life cycle ----------------------------------------------------------------------
    def start(self, name: str, *, wait: bool = False, progress: Progress | None = None,
              still_wanted: Callable[[], bool] | None = None, wait_timeout_s: float | None = None) -> GuestInfo:
        """Start a guest (the admission guard first). With `wait`, return once it signals readiness.
        `still_wanted` is asked once the admission lock is held: a request its client gave up on while
        waiting for the lock starts nothing."""
        check_domain_name(name)
        say = progress or (lambda _msg: None)
        log_offset = self._start(self.hosts.locate(name), name, progress, still_wanted)
        if wait:
            say("waiting for the guest to come up")
            signal = self.wait_ready(name, _wait_timeout(wait_timeout_s, self.settings.boot_timeout_s),
                                     log_offset=log_offset)
            say(f"up ({signal.describe()}, {signal.seconds:.1f} s)")
        return self.info(name)

    def _start(self, target: Host, name: str, progress: Progress | None,
               still_wanted: Callable[[], bool] | None) -> int:
        say = progress or (lambda _msg: None)
        lv = target.libvirt
        with self.admission_lock(target.name).held(ADMISSION_WAIT_S):
            if still_wanted is not None and not still_wanted():
                raise Conflict(f"the request to start {name} was abandoned by its client; nothing was started")
            state = lv.state(name)
            if state in ACTIVE_STATES:
                raise Conflict(f"{name} is already {state}")
            self._check_files(lv, name)
            self._admit_defined(target, name)
            say("starting")
            log_offset = self.console_log_size(name)
            lv.start(name)
        return log_offset

    def _check_files(self, lv: LibvirtHost, name: str) -> None:
        """Before a Corral guest starts: the files it was given are still allowed, regular and
        self-contained, its own disks still back onto exactly their recorded base, and its definition
        tells libvirt to relabel nothing (definitions from older Corrals are brought up to date)."""
        xml = lv.xml(name, inactive=True)
        facts = parse_domain_xml(xml)
        if facts.meta is None:
            return  # not Corral's: started as its maker defined it
        if facts.meta.storage == "pool":  # on its host's storage, which Corral made: only volumes of its pool
            stray = [str(d.path) for d in facts.disks if pool_volume(d.path) is None]
            stray += [str(p) for p in (facts.kernel, facts.initrd) if p is not None and pool_volume(p) is None]
            if stray:
                raise InvalidInput(f"{name} refers to files outside its host's corral pool ({', '.join(stray)}); "
                                   "refused")
            updated = harden_domain_xml(xml, {})
            if updated is not None:
                lv.define(updated)
            return
        allowed = self.settings.allowed_image_dirs
        owned = set(self._own_files(name, facts.meta))
        backing: dict[Path, tuple[Path, str]] = {}
        for disk in facts.disks:
            if disk.path in owned:
                header_backing, data_file = qemu_img.qcow2_references(disk.path)
                if data_file or (header_backing and Path(header_backing) != disk.backing
                                 and disk.backing is not None):
                    raise InvalidInput(f"{disk.path} of {name} now refers to another file "
                                       f"({header_backing or 'an external data file'}); refused")
                base = disk.backing or (Path(header_backing) if header_backing else None)
                if base is not None:
                    fmt = disk.backing_format or "raw"
                    require_self_contained(require_allowed_file(base, f"the base image of {name}", allowed), fmt)
                    backing[disk.path] = (base, fmt)
            else:
                source = require_allowed_file(disk.path, f"{disk.device} {disk.path} of {name}", allowed)
                require_self_contained(source, disk.format)
        for part in (facts.kernel, facts.initrd):
            if part is not None:
                require_allowed_file(part, f"the kernel or initrd of {name}", allowed)
        updated = harden_domain_xml(xml, backing)
        if updated is not None:
            lv.define(updated)

    def _admit_defined(self, target: Host, name: str) -> None:
        """The admission check for a defined guest about to run (call with the admission lock held)."""
        facts = parse_domain_xml(target.libvirt.xml(name, inactive=True))
        load = facts.meta.load.declared_cpu_pct if facts.meta else None
        self.check_admission(name, facts.vcpus, facts.memory_mib, load, beside_running=True, host=target.name,
                             count=True)

    def _console_log(self, name: str, meta: CorralMeta | None) -> Path | None:
        """The guest's console log when it is in the guest's own folder (metadata anyone in the libvirt
        group can write never makes Corral read or delete a file elsewhere)."""
        if meta is None or meta.console_log is None:
            return None
        return meta.console_log if _inside(meta.console_log, self.settings.guests_dir / name) else None

    def _own_files(self, name: str, meta: CorralMeta) -> list[Path]:
        """The files of a guest on a host that shares the data folder that are Corral's to change and delete:
        its disks in the pool's folder (named exactly for it) and, from older Corrals, files in its folder."""
        return [path for path in meta.owned_files if _inside(path, self.settings.guests_dir / name)
                or (path.parent == self.settings.disks_dir and is_guest_disk(name, path.name))]

    def console_log_size(self, name: str) -> int:
        """Where the next boot's output will begin in the guest's console log."""
        check_domain_name(name)
        lv = self._at(name)
        log_path = self._console_log(name, parse_domain_xml(lv.xml(name, inactive=True)).meta)
        if log_path is None:
            return 0
        try:
            return log_path.stat().st_size
        except OSError:
            return 0

    def wait_ready(self, name: str, timeout_s: float, *, log_offset: int = 0) -> ReadySignal:
        """Block until the guest gives the readiness signal it can give, and say which it was.

        The tiny image prints a line on its console (looked for past `log_offset`, where this boot
        began); images with the QEMU guest agent answer it; a guest booting an installer ISO, or one
        Corral did not make, can only be seen running. GuestTimeout (the guest is left running) when
        the signal does not come in time.
        """
        check_domain_name(name)
        began = time.monotonic()
        lv = self._at(name)
        facts = parse_domain_xml(lv.xml(name))
        readiness = facts.meta.readiness if facts.meta is not None else "running"
        console_log = self._console_log(name, facts.meta)
        seeded = facts.meta is not None and any(is_seed(name, p.name) for p in facts.meta.owned_files)
        if readiness == "serial" and facts.meta is not None and facts.meta.storage == "pool":
            # Its console log is on its host, out of Corral's reach: watch the console itself.
            seen = self._ready_on_console(lv, name, began + timeout_s)
            if seen:
                return ReadySignal("serial", time.monotonic() - began)
            if seen is not None:
                raise GuestTimeout(f"{name} is running but gave no readiness signal ({SIGNALS['serial']}) within "
                                   f"{timeout_s:g} s; it was left running")
            readiness = "running"
        elif readiness == "serial" and console_log is None:
            readiness = "running"
        deadline = began + timeout_s
        while True:
            state = lv.state(name)
            if state not in ACTIVE_STATES:
                where = f"; see {console_log}" if console_log else ""
                raise BackendError(f"{name} stopped while booting (it is {state}){where}")
            if readiness == "running":
                seen = state == "running"
            elif readiness == "serial":
                seen = console_log is not None and _log_has(console_log, READY_MARKER, log_offset)
            else:
                # A first boot configured by cloud-init is up once cloud-init is done too: the user and
                # their keys are there (asked through the agent; cloud-init status --wait would block it).
                seen = lv.agent_ping(name) and (not seeded or _cloud_init_done(lv, name))
            if seen:
                return ReadySignal(readiness, time.monotonic() - began)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        where = f"; its console log is {console_log}" if console_log else ""
        raise GuestTimeout(f"{name} is running but gave no readiness signal ({SIGNALS[readiness]}) within "
                           f"{timeout_s:g} s; it was left running{where}")

    @staticmethod
    def _ready_on_console(lv: LibvirtHost, name: str, deadline: float) -> bool | None:
        """Watch the guest's serial console for its readiness line until `deadline`: True when it came,
        None when the console is another session's (then the running state is all Corral can see)."""
        try:
            console = lv.open_console(name)
        except Conflict:
            return None
        with console:
            seen = b""
            while time.monotonic() < deadline:
                seen = (seen + console.read(0.2))[-4096:]
                if READY_MARKER in seen:
                    return True
                if console.closed.is_set() and console.output.empty():
                    state = lv.state(name)
                    raise BackendError(f"{name} stopped while booting (it is {state})")
        return False

    def _wait_after_create(self, name: str, timeout_s: float | None = None) -> None:
        try:
            self.wait_ready(name, _wait_timeout(timeout_s, self.settings.boot_timeout_s))
        except GuestTimeout as exc:
            raise GuestTimeout(f"{exc.message}. The guest was made and is kept: "
                               f"corral delete {name} removes it") from None

    def shutdown(self, name: str, *, timeout_s: float = 60, force: bool = False) -> GuestInfo:
        """The guest agent asked to power off where the guest has one that answers, the ACPI power button
        otherwise; then wait; with force, power off whatever is still running."""
        check_domain_name(name)
        lv = self._at(name)
        self._require_active(lv, name, "shut down")
        if lv.state(name) == "paused":  # a paused guest cannot see the power button
            if not force:
                raise Conflict(f"cannot shut down {name} while it is paused: resume it first, or use --force")
            lv.destroy(name)
            return self.info(name)
        lv.shutdown(name, agent=parse_domain_xml(lv.xml(name)).has_agent_channel and lv.agent_ping(name))
        if not lv.wait_state(name, {"shut-off", "crashed"}, timeout_s):
            if not force:
                raise GuestTimeout(
                    f"{name} did not shut down within {timeout_s:g} s; use --force or poweroff")
            lv.destroy(name)
        return self.info(name)

    def poweroff(self, name: str) -> GuestInfo:
        check_domain_name(name)
        lv = self._at(name)
        self._require_active(lv, name, "power off")
        lv.destroy(name)
        return self.info(name)

    def reboot(self, name: str) -> GuestInfo:
        check_domain_name(name)
        lv = self._at(name)
        self._require_active(lv, name, "reboot")
        lv.reboot(name)
        return self.info(name)

    def pause(self, name: str) -> GuestInfo:
        check_domain_name(name)
        lv = self._at(name)
        if lv.state(name) == "paused":
            raise Conflict(f"{name} is already paused")
        self._require_active(lv, name, "pause")
        lv.suspend(name)
        return self.info(name)

    def resume(self, name: str) -> GuestInfo:
        check_domain_name(name)
        lv = self._at(name)
        state = lv.state(name)
        if state != "paused":
            raise Conflict(f"{name} is not paused (it is {state})")
        reason = lv.pause_reason(name)
        lv.resume(name)
        if reason is not None:  # paused by QEMU itself: does it stay resumed?
            time.sleep(RESUME_SETTLE_S)
            again = lv.pause_reason(name)
            if again is not None:
                raise BackendError(f"{name} was paused by an {again} and paused again at once when resumed: "
                                   "fix the cause first (e.g. free space where its disks are)")
        return self.info(name)

    @staticmethod
    def _require_active(lv: LibvirtHost, name: str, action: str) -> None:
        state = lv.state(name)
        if state not in ACTIVE_STATES:
            raise Conflict(f"cannot {action} {name}: it is {state}")

    # --- delete and clone --------------------------------------------------------------------
    def delete(self, name: str, *, keep_disks: bool = False) -> list[str]:
        """Remove the domain and the files Corral made for it in its own folder; return what was left on
        disk. With no domain of that name, clear what an unfinished create left."""
        check_domain_name(name)
        guest_dir = self.settings.guests_dir / name
        holder = Claim.holder(guest_dir / CREATE_MARKER)
        if holder is not None:
            raise Conflict(f"a create of {name} is in progress (process {holder.get('pid', '?')}); wait for it")
        owner = self.hosts.owner(name)
        if owner is None:
            return self._clear_unfinished_create(name, guest_dir)
        lv = owner.libvirt
        facts = parse_domain_xml(lv.xml(name, inactive=True))
        if lv.state(name) in ACTIVE_STATES:
            lv.destroy(name)
        lv.undefine(name)
        meta = facts.meta
        if meta is None:
            return [str(d.path) for d in facts.disks if d.device == "disk"]  # not ours to remove
        if meta.storage == "pool":  # its files are volumes of its host's pool
            kept = [str(p) for p in meta.owned_files] if keep_disks else \
                self.storage.delete_guest_disks(owner, name, meta.owned_files)
            if guest_dir.is_dir() and not guest_dir.is_symlink():
                shutil.rmtree(guest_dir, ignore_errors=True)
            return kept
        own = self._own_files(name, meta)
        kept = [str(p) for p in meta.owned_files if p not in own]  # named elsewhere: never Corral's to delete
        if kept:
            log.warning("%s's metadata names files outside %s and the pool's folder; they were left alone: %s",
                        name, guest_dir, ", ".join(kept))
        volumes = tuple(p for p in own if p.parent == self.settings.disks_dir)
        in_folder = [p for p in own if p not in volumes]  # an older Corral's disks, in the guest's folder
        if keep_disks:
            kept.extend(str(p) for p in own)
            console_log = self._console_log(name, meta)
            if console_log is not None:
                console_log.unlink(missing_ok=True)
            (guest_dir / CREATE_MARKER).unlink(missing_ok=True)
            if not in_folder and guest_dir.is_dir() and not guest_dir.is_symlink():
                shutil.rmtree(guest_dir, ignore_errors=True)
        else:
            kept.extend(self.storage.delete_guest_disks(owner, name, volumes))
            for path in in_folder:
                path.unlink(missing_ok=True)
            if guest_dir.is_dir() and not guest_dir.is_symlink():
                shutil.rmtree(guest_dir, ignore_errors=True)
        return kept

    def _clear_unfinished_create(self, name: str, guest_dir: Path) -> list[str]:
        if (guest_dir / CREATE_MARKER).exists() and not guest_dir.is_symlink():
            self.storage.clear_unfinished(self.hosts.get, name, guest_dir)
            shutil.rmtree(guest_dir, ignore_errors=True)
            log.warning("removed %s, left by a create of %s that did not finish", guest_dir, name)
            return []
        raise NotFound(f"no domain named {name!r}")

    def clone(self, source: str, new_name: str) -> GuestInfo:
        check_domain_name(source)
        check_domain_name(new_name)
        if self.hosts.owner(new_name) is not None:
            raise Conflict(f"a domain named {new_name!r} already exists")
        host = self.hosts.locate(source)
        lv = host.libvirt
        state = lv.state(source)
        if state not in ("shut-off", "crashed"):
            raise Conflict(f"cannot clone {source} while it is {state}: shut it down first")
        xml = lv.xml(source, inactive=True)
        facts = parse_domain_xml(xml)
        if facts.meta is None:
            raise Conflict(f"{source} was not made by Corral; clone it with virt-clone")
        if facts.meta.storage == "pool":
            raise Conflict(f"{source} lives in its host's storage pool; clones are made on hosts that share "
                           "Corral's data folder: migrate it to one first (corral migrate --copy-storage)")
        own = self._own_files(source, facts.meta)
        if len(own) != len(facts.meta.owned_files):
            raise InvalidInput(f"{source}'s metadata names files outside its folder; refusing to copy them")
        guest_dir = self.settings.guests_dir / new_name
        claim = self._claim_folder(new_name, guest_dir)
        uuid = str(uuid_module.uuid4())
        path_map: dict[Path, Path] = {}
        volumes = [guest_volume(new_name, "seed.iso" if is_seed(source, owned.name) else f"disk{index}.qcow2")
                   for index, owned in enumerate(own)]
        made: list[str] = []  # only these are removed if the clone fails (a disk already there is not ours)
        try:
            folder = Path(self.storage.ensure_pool(host))
            for volume in volumes:
                self.storage._refuse_existing(host, volume)
            note_making(guest_dir, host.name, volumes)
            for owned, volume in zip(own, volumes, strict=True):
                target = folder / volume
                made.append(volume)
                if is_seed(source, owned.name):  # the clone's own first boot: its hostname, a new instance
                    write_private(target, seed_iso(reseeded(read_seed(owned), new_name, uuid)))
                else:
                    qemu_img.copy_keeping_backing(owned, target)
                give_to_qemu(lv, target)
                path_map[owned] = target
            lv.refresh_pool(self.storage.pool)
            lv.define(clone_domain_xml(xml, new_name, path_map, guest_dir / "console.log", uuid))
        except BaseException as exc:
            self._undo_create(host, new_name, uuid, guest_dir, claim, exc, made)
            raise
        claim.release(remove=True)
        (guest_dir / MAKING).unlink(missing_ok=True)
        return self.info(new_name)

    # --- removable media ---------------------------------------------------------------------
    def media_eject(self, name: str, device: str | None = None) -> GuestInfo:
        """Take the ISO out of the guest's CD drive (or drive `device`), in the running guest and in its
        definition, as after an install; the drive stays, empty. The guest boots from its disk first
        from then on (an older Corral's ISO guests booted the CD first)."""
        check_domain_name(name)
        if device is not None and not re.fullmatch(r"[hsv]d[a-z]{1,2}", device):
            raise InvalidInput(f"invalid CD drive {device!r}: a target such as sda")
        lv = self._at(name)
        running = lv.state(name) in ACTIVE_STATES
        for _target, drive in eject_media_xml(lv.xml(name, inactive=True), device):
            lv.update_device(name, drive, live=running)
        reordered = boot_from_disk_first(lv.xml(name, inactive=True, secure=True))  # keeps a VNC password
        if reordered is not None:
            lv.define(reordered)
        return self.info(name)

    # --- snapshots ---------------------------------------------------------------------------
    def snapshot_create(self, name: str, snapshot: str) -> SnapshotInfo:
        check_domain_name(name)
        check_name(snapshot, "snapshot name")
        if snapshot in [s.name for s in self.snapshot_list(name)]:
            raise Conflict(f"{name} already has a snapshot named {snapshot!r}")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self._at(name).snapshot_create(name, snapshot_xml(snapshot, f"made by Corral at {stamp}"))
        return next(s for s in self.snapshot_list(name) if s.name == snapshot)

    def snapshot_list(self, name: str) -> list[SnapshotInfo]:
        check_domain_name(name)
        result = []
        for snap_name, xml, current in self._at(name).snapshots(name):
            created, state = _snapshot_facts(xml)
            result.append(SnapshotInfo(snap_name, created, state, current))
        return sorted(result, key=lambda s: s.created)

    def snapshot_revert(self, name: str, snapshot: str) -> GuestInfo:
        """Return to a snapshot. One taken while the guest ran starts it: the guard is asked first."""
        check_domain_name(name)
        check_name(snapshot, "snapshot name")
        target = self.hosts.locate(name)
        lv = target.libvirt
        with self.admission_lock(target.name).held(ADMISSION_WAIT_S):
            taken_running = any(s.name == snapshot and s.state in ("running", "paused")
                                for s in self.snapshot_list(name))
            if taken_running and lv.state(name) not in ACTIVE_STATES:
                self._check_files(lv, name)
                self._admit_defined(target, name)
            lv.snapshot_revert(name, snapshot)
        return self.info(name)

    def snapshot_delete(self, name: str, snapshot: str) -> None:
        check_domain_name(name)
        check_name(snapshot, "snapshot name")
        self._at(name).snapshot_delete(name, snapshot)

    # --- reading -----------------------------------------------------------------------------
    def info(self, name: str) -> GuestInfo:
        check_domain_name(name)
        owner = self.hosts.locate(name)
        lv = owner.libvirt
        row = self._row(lv, name)
        xml = lv.xml(name)
        facts = parse_domain_xml(xml)
        meta = facts.meta
        snapshots = [s.name for s in self.snapshot_list(name)]
        autostart = lv.autostart(name)
        console_log = self._console_log(name, meta)
        targets = {d.path: d.target for d in domain_disks(xml) if d.path is not None}  # vda, sda …
        return GuestInfo(
            name=row.name, uuid=row.uuid, id=row.id, state=row.state, reason=row.reason, vcpus=row.vcpus,
            memory_mib=row.memory_mib, cpu_time_s=row.cpu_time_ns / 1e9,
            managed_by_corral=meta is not None,
            image=meta.image if meta else None,
            load=meta.load.as_text() if meta else None,
            disks=[{"path": str(d.path), "format": d.format, "device": d.device,
                    "target": targets.get(d.path, "")} for d in facts.disks],
            console_log=str(console_log) if console_log else None,
            vnc=f"127.0.0.1:{facts.vnc_port}" if facts.vnc_port else None,
            snapshots=snapshots,
            autostart=autostart,
            tags=list(meta.tags) if meta else [],
            host=owner.name,
            nics=lv.interfaces(name),
            **self._agent_facts(lv, name, row.state, facts.has_agent_channel),
        )

    @staticmethod
    def _agent_facts(lv: LibvirtHost, name: str, state: str, has_channel: bool) -> dict[str, Any]:
        """What the guest agent says about the guest: whether it answers, and the OS it runs."""
        if state != "running" or not has_channel:
            return {}
        try:
            found = lv.agent_command(name, "guest-get-osinfo", timeout_s=1)
        except CorralError:
            return {"agent": lv.agent_ping(name)}
        os_name = None
        if isinstance(found, dict):
            os_name = found.get("pretty-name") or found.get("name")
        return {"agent": True, "os_name": str(os_name) if os_name else None}

    # --- the guest agent -----------------------------------------------------------------------
    def exec(self, name: str, argv: list[str], *, timeout_s: float = 60.0, stdin: bytes = b"") -> ExecResult:
        """Run a program in the guest through its QEMU guest agent (no network needed): its exit code and
        output. The program is looked up on the guest's PATH only through a shell, so argv[0] is run as
        given (e.g. /bin/sh -c '…' for a pipeline)."""
        check_domain_name(name)
        if not argv or not argv[0] or any("\x00" in a for a in argv) or len(argv) > 256:
            raise InvalidInput("give the command to run: corral exec NAME -- COMMAND [ARGS…]")
        if not 0 < timeout_s <= 3600:
            raise InvalidInput("the timeout must be between 0 and 3600 s")
        lv = self._at(name)
        state = lv.state(name)
        if state != "running":
            raise Conflict(f"cannot run a command in {name}: it is {state}")
        if not parse_domain_xml(lv.xml(name)).has_agent_channel:
            raise Conflict(f"{name} has no guest agent channel (it was not made from a disk image)")
        code, out, err = lv.agent_exec(name, argv, timeout_s, stdin)
        return ExecResult(code, out, err)

    @staticmethod
    def _row(lv: LibvirtHost, name: str) -> DomainRow:
        for row in lv.rows():
            if row.name == name:
                return row
        raise NotFound(f"no domain named {name!r}")

    def listing(self, sample_s: float = 0.05, *, fresh: bool = False,
                since: Mapping[str, Sequence[Counters]] | Sequence[Counters] | None = None,
                host: str | None = None, nics: bool = False) -> list[ListedDomain]:
        """Per host (every host, or the one named), its Domain-0 and then its guests, with CPU % from
        the monitoring core's rate code (and, with `nics`, each guest's NICs and addresses). A host that
        cannot be reached is one row saying so.

        The CPU window runs from an earlier reading when that is between 0.1 s and 60 s old and
        covers every running guest: `since` (the background sampler's last one per host, in `corral
        serve`) or else the previous listing's (like `top` between refreshes; `fresh` ignores it);
        otherwise it runs over `sample_s` now.
        """
        earlier = {self.hosts.default.name: since} if isinstance(since, Sequence) else since
        targets = [self.hosts.get(host)] if host is not None else list(self.hosts)
        listed: list[ListedDomain] = []
        failures: list[CorralError] = []
        for target in targets:
            try:
                listed.extend(self._host_listing(target, sample_s, fresh,
                                                 None if earlier is None else earlier.get(target.name, []), nics))
            except CorralError as exc:
                failures.append(exc)
                listed.append(ListedDomain(HOST_DOMAIN, None, "unreachable", 0, 0, None, 0.0, exc.message,
                                           target.name))
        if len(failures) == len(targets):  # nothing to show but errors: say the first one
            raise failures[0]
        return listed

    def _host_listing(self, target: Host, sample_s: float, fresh: bool,
                      since: Sequence[Counters] | None, nics: bool = False) -> list[ListedDomain]:
        from corral.monitoring import reading_cache
        from corral.monitoring.rates import sample_values
        from corral.monitoring.sampler import Sampler

        lv = target.libvirt
        sampler = Sampler(lv, target.name, on_this_machine=target.spec.on_this_machine)
        cache = self.settings.cache_dir / f"list-reading-{target.name}.json"
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
        cores = sampler.host_cores
        cpu = {c.domain: sample_values(previous.get(c.domain), c, cores)["cpu_pct"] for c in now}
        dom0 = now[0]  # Domain-0's reading already has its cores and memory
        listed = [ListedDomain(HOST_DOMAIN, 0, "running", dom0.cpus, int(dom0.mem_total_bytes or 0) // MIB,
                               cpu.get(HOST_DOMAIN), dom0.cpu_time_s, None, target.name)]
        for row in lv.rows():
            autostart, tags = _labels_of(lv, row.name)
            listed.append(ListedDomain(row.name, row.id, row.state, row.vcpus, row.memory_mib,
                                       cpu.get(row.name) if row.state in ACTIVE_STATES else None,
                                       row.cpu_time_ns / 1e9, row.reason, target.name,
                                       _nics_of(lv, row.name) if nics else None, autostart, tags))
        return listed

    def remove_image(self, image: str) -> None:
        """Forget an image, refused while any guest (running or not, on any host) is made from it."""
        check_name(image, "image name")
        users = []
        for target in self.hosts:
            lv = target.libvirt
            for row in lv.rows():
                meta = parse_domain_xml(lv.xml(row.name, inactive=True)).meta
                if meta is not None and meta.image == image:
                    users.append(row.name)
        self.images.remove(image, users)

    def open_console(self, name: str, *, force: bool = False) -> SerialConsole:
        """The guest's serial console. Refused (Conflict) while another session has it, unless `force`,
        which takes it over (the other session ends, told why), as `virsh console --force` does."""
        check_domain_name(name)
        lv = self._at(name)
        self._require_active(lv, name, "open the console of")
        return lv.open_console(name, force=force)


@dataclass(frozen=True)
class ReadySignal:
    """Which readiness signal a guest gave, and how long after the wait began."""

    kind: str  # serial | agent | running
    seconds: float

    def describe(self) -> str:
        return SIGNALS[self.kind]


# cloud-init writes result.json when its last stage is over (done or failed); a guest without cloud-init,
# or with it disabled, has nothing to wait for. A shell test, not `cloud-init status`: Python starting
# in the guest takes seconds under TCG.
CLOUD_INIT_OVER = ("test -e /run/cloud-init/result.json || test -e /run/cloud-init/disabled "
                   "|| ! test -e /usr/bin/cloud-init")


def _cloud_init_done(lv: LibvirtHost, name: str) -> bool:
    """cloud-init has finished in the guest (or it has none, or the agent may run nothing: then the
    agent's answer is all there is)."""
    try:
        code, _out, _err = lv.agent_exec(name, ["/bin/sh", "-c", CLOUD_INIT_OVER], 10)
    except (BackendError, Conflict, GuestTimeout):
        return True
    return code == 0


SIGNALS = {"serial": "its readiness line on the console", "agent": "the QEMU guest agent answered",
           "running": "running; no other signal to wait for"}


def _nics_of(lv: LibvirtHost, name: str) -> list[NicInfo]:
    """A listed guest's NICs; none when it vanished since it was listed."""
    try:
        return lv.interfaces(name)
    except NotFound:
        return []


def _labels_of(lv: LibvirtHost, name: str) -> tuple[bool | None, tuple[str, ...]]:
    """A listed guest's autostart and tags (from Corral's metadata); (None, ()) when it vanished since."""
    try:
        meta = parse_domain_xml(lv.xml(name, inactive=True)).meta
        return lv.autostart(name), meta.tags if meta is not None else ()
    except NotFound:
        return None, ()


def _wait_timeout(asked: float | None, configured: float) -> float:
    """How long `--wait` waits: as asked (1 s to an hour), else the configured boot_timeout_s."""
    if asked is None:
        return configured
    if not 1 <= asked <= 3600:
        raise InvalidInput(f"the wait timeout must be between 1 and 3600 s, not {asked:g}")
    return asked


def _readiness(image_kind: str, has_iso: bool) -> str:
    if image_kind == "kernel":
        return "serial"
    if image_kind == "iso" or has_iso:
        return "running"  # an installer prints nothing Corral can read and has no agent
    return "agent"


def _inside(path: Path, folder: Path) -> bool:
    """`path` (symlinks resolved) lies in `folder`."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except (OSError, ValueError):
        return False


def _keep_console_log(path: Path, logs_dir: Path, name: str) -> Path | None:
    """Move a failed create's console log out of the folder about to be removed; its new path."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        logs_dir.mkdir(parents=True, exist_ok=True)
        target = logs_dir / f"{name}.failed-create.{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
        shutil.move(path, target)
        return target
    except OSError:
        return None


def _add_note(exc: BaseException, note: str) -> None:
    """Add what was left (or kept) to the one-line message of a Corral error."""
    if isinstance(exc, CorralError):
        exc.message = f"{exc.message}; {note}"
        exc.args = (exc.message,)
    else:
        exc.add_note(note)


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
