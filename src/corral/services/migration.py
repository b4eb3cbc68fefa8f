"""Moving guests between hosts: live (peer to peer, pre-copy) for a running guest, offline (its
definition) for a shut-off one. Everything is checked before anything moves; whatever fails, the
guest is never lost and never runs twice: it keeps running on the source and nothing of it is left on
the destination. Proxmox's QemuMigrate is the example for checking first (storage, local devices,
the destination's room) and libvirt does the moving.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from corral.adapters.libvirt_host import ACTIVE_STATES, JobProgress, LibvirtHost, MigrationRequest
from corral.config import Settings
from corral.core.capacity import footprint
from corral.core.domxml import parse_domain_xml
from corral.core.errors import AdmissionRefused, BackendError, Conflict, CorralError, InvalidInput
from corral.core.placement import MovePlan, plan_moves
from corral.core.validate import check_domain_name
from corral.services.guests import ADMISSION_WAIT_S, GuestService
from corral.services.registry import Host, HostRegistry
from corral.services.storage import Relocation

log = logging.getLogger("corral.migration")
POLL_S = 0.2
DEFAULT_PARALLEL = 2  # migrations at a time during an evacuation
MAX_PARALLEL = 16
EVACUATION_WEIGHER = "spread"  # an evacuation spreads guests, never piles them onto one host
MAX_BANDWIDTH_MIB_S = 100_000
MAX_DOWNTIME_MS = 60_000
Progress = Callable[[JobProgress], None]


@dataclass(frozen=True)
class MigrationPlan:
    """What a migration will do, decided before anything moves."""

    guest: str
    source: str
    dest: str
    live: bool
    request: MigrationRequest
    vcpus: int
    memory_mib: int

    def describe(self) -> str:
        how = "live" if self.live else "offline (its definition)"
        copy = ", disks copied" if self.request.copy_storage else ""
        return f"{self.guest}: {self.source} -> {self.dest}, {how}{copy}"


@dataclass(frozen=True)
class MigrationResult:
    guest: str
    source: str
    dest: str
    live: bool
    total_s: float
    downtime_ms: int | None
    memory_bytes: int
    disk_bytes: int
    iterations: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        downtime = f", downtime {self.downtime_ms} ms" if self.downtime_ms is not None else ""
        moved = f", {self.memory_bytes / 2**20:.0f} MiB of memory in {self.iterations} pass(es)" if self.live else ""
        return f"{self.guest} moved from {self.source} to {self.dest} in {self.total_s:.1f} s{downtime}{moved}"


@dataclass(frozen=True)
class EvacuationResult:
    host: str
    moved: tuple[MigrationResult, ...]
    left: tuple[str, ...]  # guests still there (none when it worked)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "moved": [m.as_dict() for m in self.moved], "left": list(self.left)}


class MigrationAborted(Conflict):
    """A migration stopped on request (Ctrl-C, the API): the guest runs on the source."""


class MigrationService:
    def __init__(self, settings: Settings, hosts: HostRegistry, guests: GuestService) -> None:
        self.settings = settings
        self.hosts = hosts
        self.guests = guests

    # --- checks, before anything moves ----------------------------------------------------------
    def check(self, name: str, dest: str, *, offline: bool = False, copy_storage: bool = False,
              bandwidth_mib_s: int | None = None, max_downtime_ms: int | None = None,
              postcopy: bool = False) -> MigrationPlan:
        """Everything that can be known before a migration starts, each refusal one clear line."""
        check_domain_name(name)
        source = self.hosts.locate(name)
        target = self.hosts.get(dest)
        if target.name == source.name:
            raise InvalidInput(f"{name} is already on host {source.name}")
        if target.standby:
            raise Conflict(f"host {target.name} is in standby: wake it first (corral host wake {target.name})")
        if target.maintenance:
            raise Conflict(f"host {target.name} is in maintenance: it takes no guests")
        if not target.reachable():
            raise BackendError(f"host {target.name} does not answer ({target.uri})")
        if not target.spec.reachable_by_peers:
            raise Conflict(f"host {target.name} is reached through {target.uri}, which {source.name} cannot use to "
                           "reach it: give it a URI with its host name (e.g. libvirt_uri = "
                           "\"qemu+tcp://ADDRESS/system\" in the config) to migrate guests into it")
        for value, what, top in ((bandwidth_mib_s, "--bandwidth", MAX_BANDWIDTH_MIB_S),
                                 (max_downtime_ms, "--max-downtime", MAX_DOWNTIME_MS)):
            if value is not None and not 1 <= value <= top:
                raise InvalidInput(f"{what} {value} must be between 1 and {top}")
        state = source.libvirt.state(name)
        live = state in ACTIVE_STATES
        if live and offline:
            raise Conflict(f"{name} is {state}: --offline moves a shut-off guest; shut it down first, or "
                           "migrate it live")
        if not live and (postcopy or bandwidth_mib_s or max_downtime_ms):
            raise InvalidInput(f"{name} is {state}: --postcopy, --bandwidth and --max-downtime are for a live "
                               "migration")
        facts = parse_domain_xml(source.libvirt.xml(name, inactive=True))
        shared = self._shares_storage(source, target)
        if not shared:
            files = [str(d.path) for d in facts.disks] + [str(p) for p in (facts.kernel, facts.initrd) if p]
            if not copy_storage:
                raise Conflict(f"{target.name} does not share {source.name}'s storage, and {name} uses "
                               f"{', '.join(files) or 'no files'}: migrate with --copy-storage")
            if facts.meta is None:
                raise Conflict(f"{name} was not made by Corral, which cannot tell which of its files are its own "
                               "to copy: use virsh migrate --copy-storage-all")
            if not live:
                raise Conflict(f"{name} is {state}: its disks are copied by a live migration; start it, "
                               "migrate it, then shut it down")
            foreign = [str(d.path) for d in facts.disks if d.device == "cdrom" and facts.meta.image
                       and not self._image_file(facts.meta.image, d.path)]
            if foreign:
                raise Conflict(f"{target.name} lacks {', '.join(foreign)}, an ISO that is not one of Corral's "
                               f"images: detach it from {name} or import it as an image first")
        elif copy_storage:
            raise InvalidInput(f"{source.name} and {target.name} share storage: --copy-storage has nothing to copy")
        if target.libvirt.exists(name):
            raise Conflict(f"host {target.name} already has a domain named {name!r}")
        self._admit(target, name, facts.vcpus, facts.memory_mib, facts, live)
        request = MigrationRequest(live=live, shared_storage=shared, copy_storage=copy_storage,
                                   bandwidth_mib_s=bandwidth_mib_s, max_downtime_ms=max_downtime_ms, postcopy=postcopy)
        return MigrationPlan(name, source.name, target.name, live, request, facts.vcpus, facts.memory_mib)

    @staticmethod
    def _shares_storage(source: Host, target: Host) -> bool:
        return source.spec.storage == "shared" and target.spec.storage == "shared"

    def _image_file(self, image: str, path: Path) -> bool:
        """Whether `path` is one of the files of Corral's image `image` (on shared storage, or its volume)."""
        try:
            record = self.guests.images.get(image)
        except CorralError:
            return False
        names = {Path(p).name for p in (record.kernel, record.initrd, record.path) if p}
        return path.name in names or any(path.name.endswith(f"-{n}") and path.name.startswith(f"image-{image}-")
                                         for n in names)

    def _admit(self, target: Host, name: str, vcpus: int, memory_mib: int, facts: Any, live: bool) -> None:
        load = facts.meta.load.declared_cpu_pct if facts.meta else None
        try:
            self.guests.check_admission(name, vcpus, memory_mib, load, beside_running=live, host=target.name)
        except AdmissionRefused as exc:
            raise AdmissionRefused(f"{exc.message} (on host {target.name})") from None

    # --- moving ----------------------------------------------------------------------------------
    def migrate(self, name: str, dest: str, *, offline: bool = False, copy_storage: bool = False,
                bandwidth_mib_s: int | None = None, max_downtime_ms: int | None = None, postcopy: bool = False,
                progress: Progress | None = None, cancel: threading.Event | None = None) -> MigrationResult:
        """Move a guest; `progress` sees the job as it runs, `cancel` aborts it (the guest stays)."""
        plan = self.check(name, dest, offline=offline, copy_storage=copy_storage, bandwidth_mib_s=bandwidth_mib_s,
                          max_downtime_ms=max_downtime_ms, postcopy=postcopy)
        source, target = self.hosts.get(plan.source), self.hosts.get(plan.dest)
        # The destination's admission lock is held throughout: no start there can take the room meanwhile.
        with self.guests.admission_lock(target.name).held(ADMISSION_WAIT_S):
            xml = source.libvirt.xml(name, inactive=True)
            facts = parse_domain_xml(xml)
            self._admit(target, name, facts.vcpus, facts.memory_mib, facts, plan.live)
            if not plan.request.copy_storage:
                result = self._run(plan, source, target, progress, cancel)
                with contextlib.suppress(CorralError):  # its pool there sees the shared disks it uses now
                    target.libvirt.refresh_pool(self.guests.storage.pool)
                return result
            # Its disks made on the destination beforehand (libvirt copies into them), its kernel, initrd
            # and ISO given there, its definition there naming them.
            relocation = Relocation(self.guests.storage, self.guests.images.get)
            copy = relocation.prepare(source, target, name, xml)
            moving = replace(plan, request=replace(plan.request, dest_xml=copy.dest_xml))
            try:
                result = self._run(moving, source, target, progress, cancel)
            except BaseException:
                if source.libvirt.exists(name):  # it stayed where it was: what was made for it there goes
                    relocation.undo(target, copy)
                raise
            relocation.finish(source, name, copy)
            return result

    def _run(self, plan: MigrationPlan, source: Host, target: Host, progress: Progress | None,
             cancel: threading.Event | None) -> MigrationResult:
        began = time.monotonic()
        failure: list[BaseException] = []

        # The migration runs on a connection of its own: libvirt serializes other calls behind a running
        # job on its connection, and the host's shared one must keep answering (listings, the sampler).
        mover = LibvirtHost(source.uri, name=source.name)

        def move() -> None:
            try:
                mover.migrate(plan.guest, target.uri, plan.request)
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)
            finally:
                mover.close()

        worker = threading.Thread(target=move, name=f"migrate-{plan.guest}", daemon=True)
        # jobStats on the connection running the migration would wait for it: poll on a second one.
        poller = LibvirtHost(source.uri, name=source.name)
        last: JobProgress | None = None
        aborted = False
        switched = False
        worker.start()
        try:
            while worker.is_alive():
                worker.join(POLL_S)
                if not worker.is_alive():
                    break
                with contextlib.suppress(CorralError):
                    job = poller.job(plan.guest)
                    if job is not None:
                        last = job
                        if progress is not None:
                            progress(job)
                        if plan.request.postcopy and not switched and job.iteration >= 2:
                            poller.start_postcopy(plan.guest)
                            switched = True
                if cancel is not None and cancel.is_set() and not aborted and not switched:
                    with contextlib.suppress(CorralError):
                        poller.abort_job(plan.guest)
                    aborted = True
        except KeyboardInterrupt:
            if not switched:
                with contextlib.suppress(CorralError):
                    poller.abort_job(plan.guest)
            aborted = True
            worker.join()
        finally:
            poller.close()
        if failure:
            self._after_failure(plan, source, target)
            if aborted:
                raise MigrationAborted(f"the migration of {plan.guest} was aborted; it runs on {plan.source}, as "
                                       "before") from None
            error = failure[0]
            message = error.message if isinstance(error, CorralError) else str(error)
            where = self._where(plan.guest)
            left = f", nothing of it is left on {plan.dest}" if where == plan.source else ""
            raise BackendError(f"{message}; {plan.guest} is on {where}{left}") from None
        completed = target.libvirt.completed_job(plan.guest) if plan.live else None
        stats = completed or last
        return MigrationResult(plan.guest, plan.source, plan.dest, plan.live, time.monotonic() - began,
                               completed.downtime_ms if completed else None, stats.memory_total if stats else 0,
                               stats.disk_total if stats else 0, stats.iteration if stats else 0)

    def _after_failure(self, plan: MigrationPlan, source: Host, target: Host) -> None:
        """After a failed migration: the guest must be on the source; a definition left on the destination
        (libvirt normally removes it) goes, but only while the source still has the guest."""
        with contextlib.suppress(CorralError):
            if source.libvirt.exists(plan.guest) and target.libvirt.exists(plan.guest) \
                    and target.libvirt.state(plan.guest) not in ACTIVE_STATES:
                target.libvirt.undefine(plan.guest)
                log.warning("removed a definition of %s that the failed migration left on %s", plan.guest, plan.dest)

    def _where(self, name: str) -> str:
        owner = self.hosts.owner(name)
        return owner.name if owner is not None else "no host that answers"

    # --- evacuation ------------------------------------------------------------------------------
    def plan_evacuation(self, host: str, *, weigher: str = EVACUATION_WEIGHER) -> MovePlan:
        """Where every guest of `host` would go: placed together on the other hosts (each host's room
        counted as the earlier guests fill it), spread rather than piled up; refused (AdmissionRefused,
        naming the guests that fit nowhere) before anything moves."""
        source = self.hosts.get(host)
        try:
            rows = source.libvirt.rows()
        except CorralError as exc:
            raise BackendError(f"cannot list the guests of {host}: {exc.message}") from None
        demands = []
        others = [h for h in self.hosts if h.name != source.name]
        sharing = {h.name for h in others if self._shares_storage(source, h)}
        eligible: dict[str, set[str]] = {}
        for row in rows:
            facts = parse_domain_xml(source.libvirt.xml(row.name, inactive=True))
            load = facts.meta.load.declared_cpu_pct if facts.meta else None
            demands.append(footprint(row.name, row.vcpus, row.memory_mib, load, self.settings.limits).demand)
            if row.state not in ACTIVE_STATES or facts.meta is None:  # it can move only where its files are
                eligible[row.name] = sharing
        candidates = [self.guests.candidate(h) for h in others]
        plan = plan_moves(candidates, demands, weigher, eligible)
        if plan.unplaced:
            reasons = "; ".join(f"{guest} ({why})" for guest, why in plan.unplaced.items())
            raise AdmissionRefused(f"the other hosts cannot hold every guest of {host}; nothing was moved. "
                                   f"Fits nowhere: {reasons}")
        return plan

    def evacuate(self, host: str, *, parallel: int = DEFAULT_PARALLEL, weigher: str = EVACUATION_WEIGHER,
                 progress: Callable[[str], None] | None = None) -> EvacuationResult:
        """Move every guest off `host` (running ones live, shut-off ones offline), at most `parallel` at a
        time. Run it again after an interruption: it plans only what is still there."""
        if not 1 <= parallel <= MAX_PARALLEL:
            raise InvalidInput(f"--parallel {parallel} must be between 1 and {MAX_PARALLEL}")
        say = progress or (lambda _line: None)
        plan = self.plan_evacuation(host, weigher=weigher)
        moved: list[MigrationResult] = []
        failed: dict[str, str] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = {pool.submit(self.migrate, guest, dest, copy_storage=not self._shares_storage(
                self.hosts.get(host), self.hosts.get(dest))): guest for guest, dest in plan.moves.items()}
            for future in concurrent.futures.as_completed(futures):
                guest = futures[future]
                try:
                    result = future.result()
                except CorralError as exc:
                    failed[guest] = exc.message
                    say(f"{guest}: not moved: {exc.message}")
                else:
                    moved.append(result)
                    say(result.describe())
        left = tuple(sorted(failed))
        if failed:
            raise BackendError(f"{len(moved)} guest(s) left {host}; {len(failed)} did not: "
                               + "; ".join(f"{g}: {why}" for g, why in failed.items())
                               + f". They run where they were; run corral host evacuate {host} again")
        return EvacuationResult(host, tuple(moved), left)

    def enter_maintenance(self, host: str, *, parallel: int = DEFAULT_PARALLEL,
                          progress: Callable[[str], None] | None = None) -> EvacuationResult:
        """Put a host in maintenance and move its guests away (`corral host maintenance NAME on`, the API's
        switch): refused before anything changes when the other hosts cannot hold its guests; then no new
        guest goes there, and every guest leaves it. After an interruption, run it (or evacuate) again."""
        if not 1 <= parallel <= MAX_PARALLEL:
            raise InvalidInput(f"--parallel {parallel} must be between 1 and {MAX_PARALLEL}")
        self.plan_evacuation(host)
        self.hosts.set_state(host, maintenance=True)
        return self.evacuate(host, parallel=parallel, progress=progress)
