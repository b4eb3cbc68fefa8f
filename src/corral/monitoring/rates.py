"""Counters in, rates out: pure functions that turn two readings of a domain into one sample.

Rates are only computed between two readings of the same running instance: a guest that
restarted (its libvirt ID changed) or a counter that went backwards gives None for that
interval, never a negative or huge rate. Gauges (memory) are reported as read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NS = 1e9


@dataclass(frozen=True)
class Counters:
    """One reading of a domain's cumulative counters (the host's, for Domain-0)."""

    time: float  # monotonic seconds when read
    domain: str
    instance: str  # changes when the domain restarts (libvirt ID; the host's boot ID)
    cpus: int  # the domain's vCPUs (Domain-0: host logical cores)
    cpu_time_s: float  # busy CPU seconds, summed over its CPUs
    mem_total_bytes: float | None
    mem_used_bytes: float | None
    disk_read_bytes: float | None  # None: not measurable (a remote host's own disks)
    disk_write_bytes: float | None
    disk_read_ops: float | None
    disk_write_ops: float | None
    net_rx_bytes: float | None  # None: no NIC with host-side counters
    net_tx_bytes: float | None


RATE_FIELDS = {
    "disk_read_bps": "disk_read_bytes",
    "disk_write_bps": "disk_write_bytes",
    "disk_read_iops": "disk_read_ops",
    "disk_write_iops": "disk_write_ops",
    "net_rx_bps": "net_rx_bytes",
    "net_tx_bps": "net_tx_bytes",
}


def sample_values(prev: Counters | None, cur: Counters, host_cores: int) -> dict[str, float | None]:
    """The metrics of one interval (names as in corral.monitoring.metrics.METRICS)."""
    values: dict[str, float | None] = {
        "mem_total_bytes": cur.mem_total_bytes,
        "mem_used_bytes": cur.mem_used_bytes,
        "cpu_pct": None,
        "cpu_host_pct": None,
        **dict.fromkeys(RATE_FIELDS),
    }
    if prev is None or prev.instance != cur.instance or prev.domain != cur.domain:
        return values  # first reading of this instance: no interval yet
    elapsed = cur.time - prev.time
    if elapsed <= 0:
        return values
    busy = cur.cpu_time_s - prev.cpu_time_s
    if busy >= 0:
        values["cpu_pct"] = min(100.0, 100.0 * busy / elapsed / max(1, cur.cpus))
        values["cpu_host_pct"] = min(100.0, 100.0 * busy / elapsed / max(1, host_cores))
    for rate, counter in RATE_FIELDS.items():
        values[rate] = _rate(getattr(prev, counter), getattr(cur, counter), elapsed)
    return values


def _rate(before: float | None, after: float | None, elapsed: float) -> float | None:
    if before is None or after is None or after < before:  # no counter, or it was reset
        return None
    return (after - before) / elapsed


def guest_counters(name: str, instance: str, stats: Mapping[str, object], now: float) -> Counters:
    """Counters from one domain's entry of libvirt's bulk stats (virConnectGetAllDomainStats)."""

    def num(key: str) -> float:
        value = stats.get(key, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    disks = int(num("block.count"))
    nets = int(num("net.count"))
    net_rx: float | None = None
    net_tx: float | None = None
    # Only NICs with a host-side device have counters (a tap has; a user-mode NIC has none).
    for i in range(nets):
        if f"net.{i}.rx.bytes" in stats:
            net_rx = (net_rx or 0.0) + num(f"net.{i}.rx.bytes")
            net_tx = (net_tx or 0.0) + num(f"net.{i}.tx.bytes")
    mem_total = mem_used = None
    if "balloon.available" in stats and "balloon.usable" in stats:  # the guest's own view
        mem_total = num("balloon.available") * 1024
        mem_used = (num("balloon.available") - num("balloon.usable")) * 1024
    elif "balloon.current" in stats:
        mem_total = num("balloon.current") * 1024
    return Counters(
        time=now, domain=name, instance=instance,
        cpus=int(num("vcpu.current")) or 1,
        cpu_time_s=num("cpu.time") / NS,
        mem_total_bytes=mem_total, mem_used_bytes=mem_used,
        disk_read_bytes=sum(num(f"block.{i}.rd.bytes") for i in range(disks)),
        disk_write_bytes=sum(num(f"block.{i}.wr.bytes") for i in range(disks)),
        disk_read_ops=sum(num(f"block.{i}.rd.reqs") for i in range(disks)),
        disk_write_ops=sum(num(f"block.{i}.wr.reqs") for i in range(disks)),
        net_rx_bytes=net_rx, net_tx_bytes=net_tx,
    )
