"""Monitoring: live samples of Domain-0 and every guest, their history, the Prometheus view."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from corral.adapters.libvirt_host import LibvirtHost
from corral.config import Settings
from corral.core.errors import InvalidInput
from corral.monitoring.metrics import METRICS, Sample
from corral.monitoring.prometheus import render
from corral.monitoring.sampler import Sampler, run_sampler
from corral.monitoring.store import MetricStore, Resolution

RESOURCES: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu_pct", "cpu_host_pct"),
    "mem": ("mem_used_bytes", "mem_total_bytes"),
    "disk": ("disk_read_bps", "disk_write_bps", "disk_read_iops", "disk_write_iops"),
    "net": ("net_rx_bps", "net_tx_bps"),
}


def metrics_for(resource: str | None) -> tuple[str, ...]:
    if resource is None:
        return METRICS
    if resource not in RESOURCES:
        raise InvalidInput(f"resource {resource!r} must be one of {', '.join(RESOURCES)}")
    return RESOURCES[resource]


class MonitoringService:
    def __init__(self, settings: Settings, libvirt_host: LibvirtHost) -> None:
        self.settings = settings
        self.libvirt = libvirt_host
        self.latest: list[Sample] = []

    @functools.cached_property
    def sampler(self) -> Sampler:
        return Sampler(self.libvirt)

    def open_store(self, readonly: bool = False) -> MetricStore:
        m = self.settings.monitor
        return MetricStore(self.settings.metrics_path, m.raw_retention_s, m.rollup_retention_s, m.bucket_s,
                           readonly=readonly)

    def one_sample(self, interval_s: float = 1.0) -> list[Sample]:
        """Two readings `interval_s` apart: one sample per running domain."""
        self.sampler.sample()
        time.sleep(interval_s)
        self.latest = self.sampler.sample()
        return self.latest

    def prometheus_text(self) -> str:
        return render(self.sampler.latest_counters, self.latest)

    def run(self, stop: threading.Event, *, interval_s: float | None = None, store: bool = True,
            on_samples: Callable[[Sequence[Sample]], None] | None = None) -> None:
        """Sample until `stop` is set; write every interval to the history store."""
        history = self.open_store() if store else None

        def handle(samples: Sequence[Sample]) -> None:
            self.latest = list(samples)
            if history is not None:
                history.write(samples)
            if on_samples is not None:
                on_samples(samples)

        try:
            run_sampler(self.sampler, interval_s or self.settings.monitor.interval_s, handle, stop)
        finally:
            if history is not None:
                history.close()

    def history(self, domain: str, since_s: float, resource: str | None = None,
                resolution: Resolution = "auto") -> list[dict[str, Any]]:
        if not self.settings.metrics_path.exists():
            return []
        with self.open_store(readonly=True) as store:
            return store.query(domain, time.time() - since_s, metrics=list(metrics_for(resource)),
                               resolution=resolution)
