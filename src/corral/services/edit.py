"""Changing a defined guest: autostart, its vCPUs and memory (for the next boot, and live where the guest
allows), its tags; and actions on every guest with a tag.

Every change is checked first (the values, then the admission guard through `GuestService.check_admission`
and the capacity model's `place()`), and applied after; a live change that fails puts the definition back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from corral.adapters.libvirt_host import ACTIVE_STATES, LibvirtHost
from corral.core.capacity import Footprint, admission_violations, footprint
from corral.core.domxml import CORRAL_NS, meta_with_tags, parse_domain_xml
from corral.core.errors import AdmissionRefused, Conflict, CorralError, InvalidInput, NotFound
from corral.core.resources import Change, Resources, live_now, next_boot, read_resources
from corral.core.tags import check_tag, check_tags
from corral.core.validate import check_domain_name, check_name
from corral.services.guests import ADMISSION_WAIT_S, GuestInfo, GuestService
from corral.services.registry import Host, HostRegistry

log = logging.getLogger("corral.edit")

#: What `POST /api/domains/bulk/{action}` and `corral … --tag` do to each guest.
BULK_ACTIONS = ("start", "shutdown", "poweroff", "snapshot")


@dataclass(frozen=True)
class BulkOutcome:
    """One guest's result in a bulk action."""

    name: str
    ok: bool
    state: str | None = None  # its state after the action (when it succeeded)
    error: str | None = None  # the one-line error (when it failed)
    status: int | None = None  # the error's HTTP status, as the single action would answer

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BulkResult:
    action: str
    tag: str | None
    results: list[BulkOutcome] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failed(self) -> int:
        return len(self.results) - self.succeeded

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "tag": self.tag, "succeeded": self.succeeded, "failed": self.failed,
                "results": [r.as_dict() for r in self.results]}


@dataclass(frozen=True)
class GuestResources:
    """A guest's vCPUs and memory in its definition (from the next boot) and, while it runs, in the guest."""

    name: str
    state: str
    next_boot: Resources
    live: Resources | None  # None while it is not running

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "next_boot": self.next_boot.__dict__,
                "live": None if self.live is None else self.live.__dict__}


class EditService:
    """Autostart, `corral set`, tags and bulk actions. Settings (the capacity limits) are read from the guest
    service at each call, so a change of them applies here too."""

    def __init__(self, hosts: HostRegistry, guests: GuestService) -> None:
        self.hosts = hosts
        self.guests = guests

    # --- autostart ------------------------------------------------------------------------------
    def set_autostart(self, name: str, on: bool) -> GuestInfo:
        """libvirt's autostart. Turning it on is refused (AdmissionRefused) when this guest and every other
        autostart guest of its host would not fit the host's admission guard started together."""
        check_domain_name(name)
        target = self.hosts.locate(name)
        lv = target.libvirt
        if on:
            with self.guests.admission_lock(target.name).held(ADMISSION_WAIT_S):
                self._check_autostart(target, name)
                lv.set_autostart(name, True)
        else:
            lv.set_autostart(name, False)
        return self.guests.info(name)

    def _check_autostart(self, target: Host, name: str) -> None:
        lv = target.libvirt
        others = [self._defined_footprint(lv, row.name) for row in lv.rows()
                  if row.name != name and _autostart(lv, row.name)]
        guest = self._defined_footprint(lv, name)
        settings = self.guests.settings
        violations = admission_violations(self.guests.host.facts(target.name), settings.limits, others, guest)
        if violations:
            beside = f" with the other autostart guests ({', '.join(f.name for f in others)})" if others else ""
            raise AdmissionRefused(f"{name} cannot start with its host {target.name}{beside}: "
                                   + "; ".join(v.describe() for v in violations))

    def _defined_footprint(self, lv: LibvirtHost, name: str) -> Footprint:
        """What a guest takes when its definition starts (as the admission guard counts a start)."""
        facts = parse_domain_xml(lv.xml(name, inactive=True))
        load = facts.meta.load.declared_cpu_pct if facts.meta else None
        return footprint(name, facts.vcpus, facts.memory_mib, load, self.guests.settings.limits)

    # --- vCPUs and memory -----------------------------------------------------------------------
    def resources(self, name: str) -> GuestResources:
        check_domain_name(name)
        lv = self.hosts.locate(name).libvirt
        state = lv.state(name)
        config = read_resources(lv.xml(name, inactive=True))
        return GuestResources(name, state, config,
                              read_resources(lv.xml(name)) if state in ACTIVE_STATES else None)

    def set_resources(self, name: str, change: Change, *, live: bool = False) -> GuestResources:
        """Change the guest's vCPUs and memory in its definition (from the next boot), and with `live` in the
        running guest too (the balloon within its maximum memory, vCPU hot-plug within its maximum vCPUs).
        A raise is checked by the admission guard: a running guest's beside the other running guests, a
        shut-off one's on its host as a start would be. Nothing changes when a check refuses; a live change
        that fails puts the definition back."""
        check_domain_name(name)
        change.check()
        target = self.hosts.locate(name)
        lv = target.libvirt
        with self.guests.admission_lock(target.name).held(ADMISSION_WAIT_S):
            state = lv.state(name)
            running = state in ACTIVE_STATES
            if live and not running:
                raise Conflict(f"{name} is {state}: --live changes a running guest (leave it out to change the "
                               "definition for the next boot)")
            old_xml = lv.xml(name, inactive=True, secure=True)  # defined again on failure: keep its VNC password
            facts = parse_domain_xml(old_xml)
            load = facts.meta.load.declared_cpu_pct if facts.meta else None
            before = read_resources(old_xml)
            after = next_boot(before, change)
            live_before = read_resources(lv.xml(name)) if live else None
            live_after = live_now(name, live_before, change) if live_before is not None else None
            # The admission guard, before anything changes (the guard counts a definition's maxima).
            if after.max_vcpus > before.max_vcpus or after.max_memory_mib > before.max_memory_mib:
                self.guests.check_admission(name, after.max_vcpus, after.max_memory_mib, load,
                                            beside_running=running, host=target.name)
            if live_before is not None and live_after is not None and live_after.vcpus > live_before.vcpus:
                self.guests.check_admission(name, live_after.vcpus, live_before.max_memory_mib, load,
                                            beside_running=True, host=target.name)
            self._apply_config(lv, name, before, after, old_xml)
            if live_before is not None and live_after is not None:
                try:
                    self._apply_live(lv, name, live_before, live_after)
                except CorralError:
                    _restore(lv, name, old_xml)
                    raise
        result = self.resources(name)
        # The running guest's XML shows the balloon as it is now, on its way to the target just set.
        return result if live_after is None or result.live is None else replace(result, live=live_after)

    def _apply_config(self, lv: LibvirtHost, name: str, before: Resources, after: Resources, old_xml: str) -> None:
        """The definition's figures; each maximum set before the current figure when it rises, after when it
        falls, so that the current figure is always within it."""
        steps: list[Callable[[], None]] = []
        if (after.vcpus, after.max_vcpus) != (before.vcpus, before.max_vcpus):
            pair = [partial(lv.set_vcpus, name, after.max_vcpus, config=True, maximum=True),
                    partial(lv.set_vcpus, name, after.vcpus, config=True)]
            steps += pair if after.max_vcpus >= before.max_vcpus else pair[::-1]
        if (after.memory_mib, after.max_memory_mib) != (before.memory_mib, before.max_memory_mib):
            pair = [partial(lv.set_memory, name, after.max_memory_mib, config=True, maximum=True),
                    partial(lv.set_memory, name, after.memory_mib, config=True)]
            steps += pair if after.max_memory_mib >= before.max_memory_mib else pair[::-1]
        try:
            for step in steps:
                step()
        except CorralError:
            _restore(lv, name, old_xml)
            raise

    @staticmethod
    def _apply_live(lv: LibvirtHost, name: str, before: Resources, after: Resources) -> None:
        """The running guest: its balloon first, then its vCPUs; a vCPU change that fails gives the balloon
        back its size."""
        if after.memory_mib != before.memory_mib:
            lv.set_memory(name, after.memory_mib, live=True)
        if after.vcpus != before.vcpus:
            try:
                lv.set_vcpus(name, after.vcpus, live=True)
            except CorralError:
                if after.memory_mib != before.memory_mib:
                    with contextlib.suppress(CorralError):
                        lv.set_memory(name, before.memory_mib, live=True)
                raise

    # --- tags -------------------------------------------------------------------------------------
    def tags(self, name: str) -> tuple[str, ...]:
        check_domain_name(name)
        meta = parse_domain_xml(self.hosts.locate(name).libvirt.xml(name, inactive=True)).meta
        return meta.tags if meta is not None else ()

    def set_tags(self, name: str, tags: Iterable[str]) -> GuestInfo:
        """Give the guest exactly these tags (kept in Corral's metadata in its domain XML, live and in its
        definition, so they survive a restart and travel with a migration). Refused for a domain Corral
        did not make: it has no Corral metadata to keep them in."""
        check_domain_name(name)
        wanted = check_tags(tags)
        lv = self.hosts.locate(name).libvirt
        element = meta_with_tags(lv.xml(name, inactive=True), wanted)
        if element is None:
            raise Conflict(f"{name} was not made by Corral: tags live in Corral's metadata, which only its "
                           "guests have")
        lv.set_metadata(name, element, "corral", CORRAL_NS, live=lv.state(name) in ACTIVE_STATES)
        return self.guests.info(name)

    def tag(self, name: str, tags: Iterable[str]) -> GuestInfo:
        """Add tags (those it has already stay once)."""
        added = check_tags(tags)
        if not added:
            raise InvalidInput("give one or more tags")
        return self.set_tags(name, (*self.tags(name), *added))

    def untag(self, name: str, tags: Iterable[str]) -> GuestInfo:
        """Remove tags (one it does not have is no error)."""
        removed = set(check_tags(tags))
        if not removed:
            raise InvalidInput("give one or more tags")
        return self.set_tags(name, [t for t in self.tags(name) if t not in removed])

    def tagged(self, tag: str) -> list[str]:
        """The guests with `tag`, on every host that answers, in name order. NotFound when none has it."""
        check_tag(tag)
        names: list[str] = []
        for target in self.hosts:
            if target.standby:
                continue
            lv = target.libvirt
            try:
                rows = lv.rows()
            except CorralError as exc:
                log.warning("host %s not asked for tag %s: %s", target.name, tag, exc.message)
                continue
            for row in rows:
                with contextlib.suppress(NotFound):  # gone since it was listed
                    meta = parse_domain_xml(lv.xml(row.name, inactive=True)).meta
                    if meta is not None and tag in meta.tags:
                        names.append(row.name)
        if not names:
            raise NotFound(f"no guest has the tag {tag!r}")
        return sorted(names)

    # --- bulk actions -----------------------------------------------------------------------------
    def bulk(self, action: str, *, names: Iterable[str] | None = None, tag: str | None = None,
             snapshot: str | None = None, timeout_s: float = 60, force: bool = False) -> BulkResult:
        """`action` (start, shutdown, poweroff, snapshot) on each guest named or with `tag`, one after the
        other; a failure on one is its result and the others are still done."""
        if action not in BULK_ACTIONS:
            raise InvalidInput(f"unknown bulk action {action!r}: one of {', '.join(BULK_ACTIONS)}")
        if (names is None) == (tag is None):
            raise InvalidInput("give guest names or a tag, not both")
        if action == "snapshot":
            if snapshot is None:
                raise InvalidInput("a snapshot needs its name")
            check_name(snapshot, "snapshot name")
        elif snapshot is not None:
            raise InvalidInput(f"a snapshot name goes with the snapshot action, not {action}")
        chosen = self.tagged(tag) if tag is not None else list(dict.fromkeys(names or ()))
        if not chosen:
            raise InvalidInput("give one or more guest names")
        do: dict[str, Callable[[str], str]] = {
            "start": lambda n: self.guests.start(n).state,
            "shutdown": lambda n: self.guests.shutdown(n, timeout_s=timeout_s, force=force).state,
            "poweroff": lambda n: self.guests.poweroff(n).state,
            "snapshot": lambda n: self.guests.snapshot_create(n, snapshot or "").state,
        }
        results = []
        for name in chosen:
            try:
                results.append(BulkOutcome(name, True, state=do[action](name)))
            except CorralError as exc:
                results.append(BulkOutcome(name, False, error=exc.message, status=exc.status))
        return BulkResult(action, tag, results)


def _autostart(lv: LibvirtHost, name: str) -> bool:
    try:
        return lv.autostart(name)
    except NotFound:  # gone since it was listed
        return False


def _restore(lv: LibvirtHost, name: str, old_xml: str) -> None:
    """Put a guest's definition back as it was before a change that failed half-way."""
    try:
        lv.define(old_xml)
    except CorralError as exc:
        log.error("could not put back the definition of %s: %s", name, exc.message)
