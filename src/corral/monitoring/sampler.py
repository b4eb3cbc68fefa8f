"""The sampler: every interval, one reading of the host (psutil) and of every running guest
(one bulk libvirt call for all of them), turned into rates by corral.monitoring.rates."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import libvirt
import psutil

from corral.adapters.libvirt_host import LibvirtHost, translated
from corral.core.errors import CorralError
from corral.monitoring.hostcounters import HostCounterReader
from corral.monitoring.metrics import HOST_DOMAIN, Sample
from corral.monitoring.rates import Counters, guest_counters, sample_values

STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
         | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)


class Sampler:
    """Keeps the previous reading of each domain; `sample()` returns one Sample per domain."""

    def __init__(self, libvirt_host: LibvirtHost) -> None:
        self.libvirt = libvirt_host
        self.host_cores = psutil.cpu_count() or 1
        self._host = HostCounterReader()
        self._previous: dict[str, Counters] = {}
        self.latest_counters: list[Counters] = []

    def read(self) -> list[Counters]:
        now = time.monotonic()
        readings = [self._host.read(now)]
        with translated("read domain statistics"):
            stats = self.libvirt.conn.getAllDomainStats(STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        for dom, values in stats:
            # The libvirt ID changes at every start: rates never span two runs of a guest.
            readings.append(guest_counters(dom.name(), f"id{dom.ID()}", values, now))
        return readings

    def sample(self, wall_time: float | None = None) -> list[Sample]:
        readings = self.read()
        stamp = time.time() if wall_time is None else wall_time
        samples = [
            Sample(stamp, c.domain, sample_values(self._previous.get(c.domain), c, self.host_cores))
            for c in readings
        ]
        self._previous = {c.domain: c for c in readings}  # vanished guests are forgotten
        self.latest_counters = readings
        return samples


def run_sampler(sampler: Sampler, interval_s: float, on_samples: Callable[[Sequence[Sample]], None],
                stop: threading.Event) -> None:
    """Sample every `interval_s` on a fixed schedule (no drift) until `stop` is set."""
    log = logging.getLogger("corral.sampler")
    failing = False
    with contextlib.suppress(CorralError):
        sampler.sample()  # the first reading only primes the counters
    deadline = time.monotonic() + interval_s
    while not stop.wait(max(0.0, deadline - time.monotonic())):
        try:
            samples = sampler.sample()
        except CorralError as exc:  # libvirtd restarting: say so once, keep the schedule, try again
            if not failing:
                log.warning("sampling failed, will retry every interval: %s", exc.message)
            failing = True
        else:
            if failing:
                log.warning("sampling works again")
            failing = False
            on_samples(samples)
        deadline += interval_s
        if deadline < time.monotonic():  # fell behind (suspended host): skip, don't burst
            deadline = time.monotonic() + interval_s


__all__ = ["HOST_DOMAIN", "Sampler", "run_sampler"]
