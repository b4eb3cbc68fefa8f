"""Monitoring: live samples of Domain-0 and every guest, and their history."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from corral.config import Settings
from corral.core.errors import Conflict, InvalidInput
from corral.core.validate import check_name
from corral.monitoring.metrics import METRICS, Sample
from corral.monitoring.rates import Counters
from corral.monitoring.sampler import ClusterSampler, Sampler, run_sampler
from corral.monitoring.store import MetricStore, Resolution
from corral.services.registry import HostRegistry

RESOURCES: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu_pct", "cpu_host_pct"),
    "mem": ("mem_used_bytes", "mem_total_bytes"),
    "disk": ("disk_read_bps", "disk_write_bps", "disk_read_iops", "disk_write_iops"),
    "net": ("net_rx_bps", "net_tx_bps"),
}


log = logging.getLogger("corral.sampler")


def metrics_for(resource: str | None) -> tuple[str, ...]:
    if resource is None:
        return METRICS
    if resource not in RESOURCES:
        raise InvalidInput(f"resource {resource!r} must be one of {', '.join(RESOURCES)}")
    return RESOURCES[resource]


class MonitoringService:
    """Samples every host of the registry (one bulk libvirt call per host per interval) into one store
    whose domains are keyed by host and name."""

    def __init__(self, settings: Settings, hosts: HostRegistry) -> None:
        self.settings = settings
        self.hosts = hosts
        self.latest: list[Sample] = []
        self._by_host: dict[str, Sampler] = {}

    @functools.cached_property
    def cluster(self) -> ClusterSampler:
        """Every host's sampler; hosts added later are sampled from then on, hosts in standby are not."""
        return ClusterSampler(self._samplers)

    def _samplers(self) -> list[Sampler]:
        hosts = [h for h in self.hosts if not h.standby]
        for host in hosts:
            known = self._by_host.get(host.name)
            if known is None or known.libvirt is not host.libvirt:
                self._by_host[host.name] = Sampler(host.libvirt, host.name, on_this_machine=host.spec.on_this_machine)
        return [self._by_host[h.name] for h in hosts]

    @property
    def sampler(self) -> Sampler:
        """The default (local) host's sampler."""
        return self.sampler_for(None)

    def sampler_for(self, host: str | None) -> Sampler:
        name = self.hosts.get(host).name
        self._samplers()
        if name not in self._by_host:
            target = self.hosts.get(name)
            self._by_host[name] = Sampler(target.libvirt, name, on_this_machine=target.spec.on_this_machine)
        return self._by_host[name]

    def latest_counters(self) -> dict[str, list[Counters]]:
        """Each host's last counter reading (for a listing's CPU window)."""
        return {s.host: s.latest_counters for s in self.cluster.samplers}

    def open_store(self, readonly: bool = False) -> MetricStore:
        m = self.settings.monitor
        return MetricStore(self.settings.metrics_path, m.raw_retention_s, m.rollup_retention_s, m.bucket_s,
                           readonly=readonly)

    def one_sample(self, interval_s: float = 1.0) -> list[Sample]:
        """Two readings `interval_s` apart: one sample per running domain of every host."""
        self.cluster.sample()
        time.sleep(interval_s)
        self.latest = self.cluster.sample()
        return self.latest

    def run(self, stop: threading.Event, *, interval_s: float | None = None, store: bool = True,
            on_samples: Callable[[Sequence[Sample]], None] | None = None, exclusive: bool = False) -> None:
        """Sample until `stop` is set, writing every interval to the history store.

        One sampler writes a store: with `exclusive` (`corral monitor`) a second one is refused
        (Conflict); otherwise (`corral serve`) it defers, samples for its own live view only, and takes
        over the history when the other one stops. A failing store (a full disk) never stops sampling:
        writing is retried every interval and resumes, said in the log, when space returns."""
        history = _HistoryWriter(self, self.settings.metrics_path) if store else None
        if history is not None and not history.try_own():
            holder = history.holder()
            if exclusive:
                raise Conflict(f"another sampler ({holder}) already writes {self.settings.metrics_path}; "
                               "one sampler per store: stop that one first (or read it with corral stats)")
            log.warning("another sampler (%s) writes the history; this one samples for live figures only "
                        "and takes over when that one stops", holder)

        def handle(samples: Sequence[Sample]) -> None:
            self.latest = list(samples)
            if history is not None:
                history.write(samples)
            if on_samples is not None:
                on_samples(samples)

        try:
            run_sampler(self.cluster, interval_s or self.settings.monitor.interval_s, handle, stop)
        finally:
            if history is not None:
                history.close()

    def host_load(self, host: str, since_s: float) -> list[tuple[float, float]]:
        """What the guests on `host` took of it (% of its cores) at each reading of the last `since_s`
        seconds: the load the balancer keeps under the cap."""
        self.hosts.get(host)  # NotFound for an unknown host
        if not self.settings.metrics_path.exists():
            return []
        with self.open_store(readonly=True) as store:
            return store.host_guest_load(host, time.time() - since_s)

    def history(self, domain: str, since_s: float, resource: str | None = None,
                resolution: Resolution = "auto", host: str | None = None) -> list[dict[str, Any]]:
        """A domain's history: a guest's on every host it ran on (or on `host`); Domain-0 of `host`
        (default: the local host)."""
        check_name(domain, "domain name")
        if host is not None:
            self.hosts.get(host)  # NotFound for an unknown host
        if not self.settings.metrics_path.exists():
            return []
        with self.open_store(readonly=True) as store:
            return store.query(domain, time.time() - since_s, metrics=list(metrics_for(resource)),
                               resolution=resolution, host=host)


class _HistoryWriter:
    """The history store as the one sampler that owns it writes it: an exclusive lock beside the store
    says who owns it; a write that fails (disk full, store damaged) is logged once, and the store is
    reopened and written again at the next interval."""

    def __init__(self, service: MonitoringService, path: Path) -> None:
        self.service = service
        self.lock_path = path.with_name(path.name + ".sampler.lock")
        self._lock_fd: int | None = None
        self._store: MetricStore | None = None
        self._failing = False

    def try_own(self) -> bool:
        if self._lock_fd is not None:
            return True
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._fail(f"cannot open {self.lock_path}: {exc.strerror}")
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {_command()}\n".encode(), 0)
        self._lock_fd = fd
        return True

    def holder(self) -> str:
        try:
            text = self.lock_path.read_text(errors="replace").strip()[:200]
        except OSError:
            text = ""
        pid, _, command = text.partition(" ")
        return f"process {pid}, {command}" if pid else "another process"

    def write(self, samples: Sequence[Sample]) -> None:
        if not self.try_own():
            return  # another sampler writes the history; take over when it stops
        try:
            if self._store is None:
                self._store = self.service.open_store()
            self._store.write(samples)
        except (sqlite3.Error, OSError) as exc:
            self._close_store()
            self._fail(f"cannot write the history to {self.service.settings.metrics_path}: {exc}; "
                       "sampling goes on and writing is retried every interval")
            return
        if self._failing:
            log.warning("the history is written again")
            self._failing = False

    def _fail(self, message: str) -> None:
        if not self._failing:
            log.warning("%s", message)
        self._failing = True

    def _close_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(sqlite3.Error, OSError):
                self._store.close()
            self._store = None

    def close(self) -> None:
        self._close_store()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _command() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
        return " ".join(Path(w.decode(errors="replace")).name if i == 0 else w.decode(errors="replace")
                        for i, w in enumerate(words[1:3]) if w)
    except OSError:
        return "corral"
