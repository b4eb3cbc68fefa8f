"""The host's own counters as Domain-0, read by the collector's HostReader so that the sampler
and `corral collect` count exactly the same devices (physical disks and NICs only: guests' taps
and bridges are not counted twice)."""

from __future__ import annotations

from pathlib import Path

from corral.monitoring.collector import HostReader, Snapshot
from corral.monitoring.metrics import HOST_DOMAIN
from corral.monitoring.rates import Counters


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def counters_from_snapshot(snap: Snapshot, now: float, instance: str) -> Counters:
    """Domain-0's counters from one collector snapshot. Pure."""
    return Counters(
        time=now, domain=HOST_DOMAIN, instance=instance, cpus=snap.cpu_cores,
        cpu_time_s=snap.cpu_total_s - snap.cpu_idle_s,
        mem_total_bytes=float(snap.mem_total_bytes), mem_used_bytes=float(snap.mem_used_bytes),
        disk_read_bytes=float(sum(r for r, _w in snap.disk.values())),
        disk_write_bytes=float(sum(w for _r, w in snap.disk.values())),
        disk_read_ops=float(sum(r for r, _w in snap.disk_ops.values())),
        disk_write_ops=float(sum(w for _r, w in snap.disk_ops.values())),
        net_rx_bytes=float(sum(rx for rx, _tx in snap.net.values())),
        net_tx_bytes=float(sum(tx for _rx, tx in snap.net.values())),
    )


class HostCounterReader:
    def __init__(self) -> None:
        self._reader = HostReader(cpu_mhz=0.0)  # Domain-0 needs no clock speed
        self._boot = boot_id()

    def read(self, now: float) -> Counters:
        return counters_from_snapshot(self._reader.read(), now, self._boot)
