"""The balancer: keeps the cluster consolidated by running the consolidation policy on the live hosts.

Every round it reads each host (libvirt) and each running guest's CPU history (the monitoring store),
asks the same policy core the simulator runs (`consolidation.live.plan_round` over
`consolidation.policies.decide`), and in `automatic` mode carries out what survived the safety rules:
wake a host (it counts only once its libvirt answers), migrate guests (a failed migration is tried on
another host, or the guest stays where it is), put emptied hosts in standby. In `recommend` mode the
round's moves are recorded and shown, to be applied by `corral balance --apply` or a click. Every
round and decision goes to the audit log. One balancer per cluster: a lock in the data folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.adapters.auditlog import AuditLog, Entry
from corral.adapters.files import write_atomic
from corral.adapters.libvirt_host import ACTIVE_STATES
from corral.config import BALANCER_MODES, Settings
from corral.consolidation.live import BalancerRules, LiveGuest, LiveHost, Move, Round, empty_hosts, plan_round
from corral.core.domxml import parse_domain_xml
from corral.core.errors import Conflict, CorralError, InvalidInput
from corral.core.hosts import HostSize
from corral.core.spec import GuestSpec
from corral.monitoring.prometheus import BalancerFigures, balancer_families, flat
from corral.services.guests import GuestService
from corral.services.host import HostService
from corral.services.migration import MigrationService
from corral.services.monitoring import MonitoringService
from corral.services.registry import HostRegistry

log = logging.getLogger("corral.balancer")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RoundReport:
    round: int
    mode: str
    applied: bool
    plan: Round
    outcomes: tuple[tuple[str, str], ...]  # (what, outcome)
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round, "mode": self.mode, "applied": self.applied, "summary": self.plan.summary,
            "wakes": [w.__dict__ for w in self.plan.wakes], "moves": [m.__dict__ for m in self.plan.moves],
            "standbys": [s.__dict__ for s in self.plan.standbys], "refused": [r.__dict__ for r in self.plan.refused],
            "forecast_pct": dict(self.plan.forecast_pct),
            "outcomes": [{"what": w, "outcome": o} for w, o in self.outcomes], "duration_s": self.duration_s,
        }


class BalancerService:
    def __init__(self, settings: Settings, hosts: HostRegistry, guests: GuestService, host: HostService,
                 migration: MigrationService, monitoring: MonitoringService) -> None:
        self.settings = settings
        self.hosts = hosts
        self.guests = guests
        self.host = host
        self.migration = migration
        self.monitoring = monitoring
        self.audit = AuditLog(settings.data_dir / "balancer.sqlite")
        self._mode_file = settings.data_dir / "balancer-mode"
        self._lock_path = settings.data_dir / "balancer.lock"
        self._lock_fd: int | None = None
        self._one_round = threading.Lock()  # the server's loop and a click on Apply never plan side by side
        self._last_refusals: set[tuple[str, str]] = set()

    # --- mode ---------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """The configured mode, or the one set at run time (`corral balance --mode`, the API)."""
        with contextlib.suppress(OSError):
            mode = self._mode_file.read_text().strip()
            if mode in BALANCER_MODES:
                return mode
        return self.settings.balancer.mode

    def set_mode(self, mode: str) -> str:
        if mode not in BALANCER_MODES:
            raise InvalidInput(f"balancer mode {mode!r}: use one of {', '.join(BALANCER_MODES)}")
        write_atomic(self._mode_file, mode + "\n")
        return mode

    @property
    def rules(self) -> BalancerRules:
        b = self.settings.balancer
        return BalancerRules(b.policy, int(b.max_migrations), b.cooldown_s, b.min_gain_w, b.standby)

    # --- one balancer per cluster -------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self) -> Any:
        """Hold the cluster's balancer lock (another process holding it: Conflict, saying which)."""
        if self._lock_fd is not None:  # this process's loop holds it already
            yield
            return
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise Conflict(f"a balancer already runs for this cluster ({holder}); one at a time, or two would "
                           "undo each other's moves") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        try:
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    # --- what the cluster looks like ----------------------------------------------------------------
    def observe(self) -> tuple[list[LiveHost], list[LiveGuest], dict[str, int]]:
        """Every host not in maintenance (maintenance hosts are left alone, with their guests), its running
        guests with their CPU history, and how many guests each holds."""
        from corral.planning.catalog import load_catalog

        power = tuple(load_catalog()[self.settings.balancer.power_kind].power_w)
        step = self.settings.balancer.interval_s
        moved = self.audit.last_moves()
        now = time.time()
        hosts: list[LiveHost] = []
        guests: list[LiveGuest] = []
        defined: dict[str, int] = {}
        for target in self.hosts:
            if target.maintenance or not target.spec.reachable_by_peers:
                continue  # left alone: in maintenance, or no other host could migrate a guest into it
            can_power = target.spec.power.driver != "none" and target.name != self.hosts.default.name
            if target.standby:
                # Off: counted at its size as last seen up (a host never seen up cannot be planned for).
                if target.size is not None:
                    hosts.append(LiveHost(target.name, target.size.cores, target.size.mhz, target.size.memory_mib,
                                          False, True, can_power, power))
                continue
            try:
                node = target.libvirt.node_info()
                rows = target.libvirt.rows()
            except CorralError:
                continue  # unreachable: left out of this round
            size = HostSize(node.cores, float(node.mhz or 1000), node.memory_mib)
            with contextlib.suppress(CorralError):
                self.hosts.remember_size(target.name, size)
            hosts.append(LiveHost(target.name, size.cores, size.mhz, size.memory_mib, True, False, can_power, power))
            defined[target.name] = len(rows)
            for row in rows:
                if row.state not in ACTIVE_STATES:
                    continue
                meta = parse_domain_xml(target.libvirt.xml(row.name)).meta
                declared = meta.load.declared_cpu_pct if meta else None
                guests.append(LiveGuest(row.name, target.name, row.vcpus, row.memory_mib,
                                        self._history(row.name, now, step), declared, moved.get(row.name, -math.inf)))
        return hosts, guests, defined

    def _history(self, guest: str, now: float, step: float) -> tuple[float, ...]:
        """A guest's CPU utilization (0..1 of its vCPUs) per balancer interval, oldest first, from the
        monitoring store's samples (wherever it ran)."""
        from corral.consolidation.live import HISTORY_INTERVALS

        try:
            rows = self.monitoring.history(guest, HISTORY_INTERVALS * step, "cpu")
        except CorralError:
            return ()
        buckets: dict[int, list[float]] = {}
        for row in rows:
            value = row.get("cpu_pct")
            if value is None:
                continue
            index = int((now - float(row["time"])) // step)
            buckets.setdefault(index, []).append(float(value) / 100)
        return tuple(sum(v) / len(v) for _i, v in sorted(buckets.items(), reverse=True))

    def plan(self) -> Round:
        """This round's decisions on the cluster as it is now (nothing is done)."""
        hosts, guests, defined = self.observe()
        now = time.time()
        result = plan_round(hosts, guests, self.settings.limits, self.rules, now, self.settings.balancer.interval_s,
                            defined)
        extra, declined = empty_hosts(hosts, guests, defined, self.rules)
        planned = {s.host for s in result.standbys}
        standbys = (*result.standbys, *(s for s in extra if s.host not in planned))
        refused = (*result.refused, *declined)
        summary = result.summary
        if result.empty and (standbys or declined):
            summary = "; ".join([*(f"standby {s.host}" for s in standbys),
                                 *(f"{r.what}: {r.why}" for r in declined)]) or summary
        return Round(result.wakes, result.moves, tuple(standbys), tuple(refused), summary, result.forecast_pct)

    # --- a round ------------------------------------------------------------------------------------
    def round(self, *, apply: bool | None = None, progress: Progress | None = None) -> RoundReport:
        """One round: plan, record, and carry out (`apply`, default: the mode is automatic)."""
        say = progress or (lambda _line: None)
        mode = self.mode
        doing = (mode == "automatic") if apply is None else apply
        began = time.monotonic()
        with self._one_round, self.exclusive() if doing else contextlib.nullcontext():
            plan = self.plan()
            round_id = self.audit.start_round(mode if not doing or apply is None else f"{mode}, applied by hand")
            outcomes: list[tuple[str, str]] = []
            # A refusal is recorded when it first appears, not again each round while it holds: the
            # timeline stays readable (each round's summary still says why it did nothing).
            refusals = {(r.what, r.why) for r in plan.refused}
            for refused in plan.refused:
                if (refused.what, refused.why) not in self._last_refusals:
                    self.audit.record(round_id, "refused", refused.why, "refused", guest=refused.what)
            self._last_refusals = refusals
            if not doing:
                for wake in plan.wakes:
                    self.audit.record(round_id, "wake", wake.reason, "recommended", dest=wake.host)
                for move in plan.moves:
                    self.audit.record(round_id, "move", move.reason, "recommended", guest=move.guest,
                                      source=move.source, dest=move.dest, expected=move.expected)
                for standby in plan.standbys:
                    self.audit.record(round_id, "standby", standby.reason, "recommended", source=standby.host)
            else:
                outcomes = self._carry_out(round_id, plan, say)
            summary = plan.summary + ("" if doing or plan.empty else " (recommended: corral balance --apply)")
            duration = time.monotonic() - began
            self.audit.finish_round(round_id, summary, duration)
        return RoundReport(round_id, mode, doing, plan, tuple(outcomes), duration)

    def _carry_out(self, round_id: int, plan: Round, say: Progress) -> list[tuple[str, str]]:
        outcomes: list[tuple[str, str]] = []

        def record(what: str, kind: str, reason: str, action: Callable[[], str], *, guest: str | None = None,
                   source: str | None = None, dest: str | None = None, expected: str = "") -> bool:
            entry = self.audit.record(round_id, kind, reason, "running", guest=guest, source=source, dest=dest,
                                      expected=expected)
            began = time.monotonic()
            try:
                outcome = action()
            except CorralError as exc:
                outcome = f"failed: {exc.message}"
            self.audit.settle(entry, outcome, time.monotonic() - began)
            outcomes.append((what, outcome))
            say(f"{what}: {outcome}")
            return outcome.startswith("done")

        woken_ok: set[str] = set()
        for wake in plan.wakes:
            if record(f"wake {wake.host}", "wake", wake.reason, functools.partial(self._wake, wake.host),
                      dest=wake.host):
                woken_ok.add(wake.host)
        failed_hosts = {w.host for w in plan.wakes} - woken_ok
        for move in plan.moves:
            if move.dest in failed_hosts:
                outcomes.append((f"{move.guest}: {move.source} -> {move.dest}", f"not tried: {move.dest} did not wake"))
                self.audit.record(round_id, "move", move.reason, f"not tried: {move.dest} did not wake",
                                  guest=move.guest, source=move.source, dest=move.dest, expected=move.expected)
                continue
            record(f"{move.guest}: {move.source} -> {move.dest}", "move", move.reason,
                   functools.partial(self._move, move), guest=move.guest, source=move.source, dest=move.dest,
                   expected=move.expected)
        for standby in plan.standbys:
            record(f"standby {standby.host}", "standby", standby.reason,
                   functools.partial(self._standby, standby.host), source=standby.host)
        return outcomes

    def _wake(self, host: str) -> str:
        return f"done ({self.host.wake(host):.1f} s until its libvirt answered)"

    def _move(self, move: Move) -> str:
        """Migrate; on failure try another host that placement finds for it, else leave it where it is."""
        source, dest = self.hosts.get(move.source), self.hosts.get(move.dest)
        copy = not (source.spec.storage == "shared" and dest.spec.storage == "shared")
        try:
            result = self.migration.migrate(move.guest, move.dest, copy_storage=copy)
            return f"done in {result.total_s:.1f} s, downtime {result.downtime_ms} ms"
        except CorralError as first:
            owner = self.hosts.owner(move.guest)
            if owner is None or owner.name != move.source:
                raise
            info = self.guests.info(move.guest)
            spec = GuestSpec(move.guest, info.image or "tiny", vcpus=info.vcpus, memory_mib=info.memory_mib)
            placement = self.guests.placement(spec)
            others = [h for h, w in sorted(placement.weights.items(), key=lambda kv: -kv[1])
                      if h not in (move.source, move.dest)]
            for other in others:
                target = self.hosts.get(other)
                copy = not (source.spec.storage == "shared" and target.spec.storage == "shared")
                with contextlib.suppress(CorralError):
                    result = self.migration.migrate(move.guest, other, copy_storage=copy)
                    return (f"done on {other} instead ({move.dest}: {first.message}), in {result.total_s:.1f} s, "
                            f"downtime {result.downtime_ms} ms")
            raise CorralError(f"{first.message}; no other host took it: {move.guest} runs on {move.source}") from None

    def _standby(self, host: str) -> str:
        target = self.hosts.get(host)
        if target.libvirt.rows():
            return "not done: guests are defined there again"
        self.host.standby(host)
        return "done"

    # --- the loop (corral balance --daemon, corral serve) -------------------------------------------
    def run(self, stop: threading.Event, *, interval_s: float | None = None, progress: Progress | None = None) -> None:
        """A round every interval while the mode is not off, holding the cluster's balancer lock."""
        every = interval_s or self.settings.balancer.interval_s
        with self.exclusive():
            while not stop.is_set():
                if self.mode != "off":
                    try:
                        report = self.round(progress=progress)
                        log.info("balancer round %s (%s): %s", report.round, report.mode, report.plan.summary)
                    except CorralError as exc:
                        log.warning("balancer round failed: %s", exc.message)
                stop.wait(every)

    # --- what it did ----------------------------------------------------------------------------------
    def timeline(self, limit: int = 200) -> list[Entry]:
        return self.audit.timeline(limit)

    def figures(self) -> BalancerFigures:
        """For Prometheus: decisions by kind and outcome (migrations among them), hosts up and in standby, the
        mode."""
        states = [h.state() for h in self.hosts]
        return BalancerFigures(self.audit.counts(), sum(1 for s in states if s == "up"),
                               sum(1 for s in states if s == "standby"), self.mode)

    def metrics(self) -> dict[str, float]:
        """The balancer's samples as /metrics has them (`corral_balancer_…{labels}` -> value)."""
        return flat(balancer_families(self.figures()))
