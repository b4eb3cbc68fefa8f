"""The sampler of one host: every interval, one reading of the host itself (Domain-0: CPU and memory
from libvirt's node calls, so a host reached by URI is described by itself; disks and NICs through
psutil where the host is the machine Corral runs on) and of every running guest (one bulk libvirt
call for all of them), turned into rates by corral.monitoring.rates."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from corral.adapters.libvirt_host import LibvirtHost
from corral.core.errors import CorralError
from corral.monitoring.hostcounters import HostCounterReader, boot_id
from corral.monitoring.metrics import HOST_DOMAIN, LOCAL_HOST, Sample
from corral.monitoring.rates import Counters, guest_counters, sample_values


class Sampler:
    """Keeps the previous reading of each domain of one host; `sample()` returns one Sample per domain."""

    def __init__(self, libvirt_host: LibvirtHost, host: str = LOCAL_HOST, *, on_this_machine: bool = True) -> None:
        self.libvirt = libvirt_host
        self.host = host
        self._devices = HostCounterReader() if on_this_machine else None
        self._instance = boot_id() if on_this_machine else f"node:{host}"
        self._previous: dict[str, Counters] = {}
        self.latest_counters: list[Counters] = []

    @property
    def host_cores(self) -> int:
        return self.libvirt.node_info().cores

    def _host_reading(self, now: float) -> Counters:
        node = self.libvirt.node_counters()
        devices = self._devices.read(now) if self._devices is not None else None
        return Counters(
            time=now, domain=HOST_DOMAIN, instance=self._instance, cpus=self.host_cores,
            cpu_time_s=node.cpu_busy_ns / 1e9,
            mem_total_bytes=node.memory_total_kib * 1024.0,
            mem_used_bytes=(node.memory_total_kib - node.memory_available_kib) * 1024.0,
            disk_read_bytes=devices.disk_read_bytes if devices else None,
            disk_write_bytes=devices.disk_write_bytes if devices else None,
            disk_read_ops=devices.disk_read_ops if devices else None,
            disk_write_ops=devices.disk_write_ops if devices else None,
            net_rx_bytes=devices.net_rx_bytes if devices else None,
            net_tx_bytes=devices.net_tx_bytes if devices else None,
        )

    def read(self) -> list[Counters]:
        now = time.monotonic()
        readings = [self._host_reading(now)]
        for name, dom_id, values in self.libvirt.all_stats():
            # The libvirt ID changes at every start: rates never span two runs of a guest.
            readings.append(guest_counters(name, f"id{dom_id}", values, now))
        return readings

    def sample(self, wall_time: float | None = None) -> list[Sample]:
        readings = self.read()
        stamp = time.time() if wall_time is None else wall_time
        samples = [
            Sample(stamp, c.domain, sample_values(self._previous.get(c.domain), c, self.host_cores), self.host)
            for c in readings
        ]
        self._previous = {c.domain: c for c in readings}  # vanished guests are forgotten
        self.latest_counters = readings
        return samples


class ClusterSampler:
    """The samplers of every host, read one after the other each interval (one bulk call per host). A host
    that cannot be read gives no samples that interval, said once in the log; the others go on."""

    def __init__(self, samplers: Sequence[Sampler] | Callable[[], Sequence[Sampler]]) -> None:
        self._source = samplers if callable(samplers) else (lambda fixed=list(samplers): fixed)
        self._failing: set[str] = set()
        self.errors: dict[str, str] = {}

    @property
    def samplers(self) -> list[Sampler]:
        """The hosts to sample now (given by a callable: they follow the registry as hosts come and go)."""
        return list(self._source())

    def sample(self, wall_time: float | None = None) -> list[Sample]:
        log = logging.getLogger("corral.sampler")
        stamp = time.time() if wall_time is None else wall_time
        samples: list[Sample] = []
        samplers = self.samplers
        for gone in self._failing - {s.host for s in samplers}:  # removed, or put in standby: not failing
            self._failing.discard(gone)
            self.errors.pop(gone, None)
        for sampler in samplers:
            try:
                samples.extend(sampler.sample(stamp))
            except CorralError as exc:
                if sampler.host not in self._failing:
                    log.warning("sampling host %s failed, will retry every interval: %s", sampler.host, exc.message)
                self._failing.add(sampler.host)
                self.errors[sampler.host] = exc.message
                continue
            if sampler.host in self._failing:
                log.warning("sampling host %s works again", sampler.host)
                self._failing.discard(sampler.host)
                self.errors.pop(sampler.host, None)
        if samplers and len(self._failing) == len(samplers):
            raise CorralError("no host could be sampled: " + "; ".join(self.errors.values()))
        return samples


class _Samples(Protocol):
    def sample(self, wall_time: float | None = None) -> list[Sample]: ...


def run_sampler(sampler: _Samples, interval_s: float, on_samples: Callable[[Sequence[Sample]], None],
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


__all__ = ["HOST_DOMAIN", "ClusterSampler", "Sampler", "run_sampler"]
