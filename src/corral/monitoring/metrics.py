"""The sample shape shared by the sampler (producer) and the metric store (consumer). Pure: no I/O.

Metric names and units (docs/monitoring.md):

==================  =======  ==========================================================
name                unit     meaning
==================  =======  ==========================================================
cpu_pct             %        busy share of the domain's own vCPUs (Domain-0: of all host cores)
cpu_host_pct        %        busy share of all host cores
mem_used_bytes      bytes    memory in use (guests: from the balloon driver)
mem_total_bytes     bytes    memory the domain has (guests: current balloon size)
disk_read_bps       bytes/s  bytes read from disks
disk_write_bps      bytes/s  bytes written to disks
disk_read_iops      ops/s    read requests completed
disk_write_iops     ops/s    write requests completed
net_rx_bps          bytes/s  bytes received on network interfaces
net_tx_bps          bytes/s  bytes sent on network interfaces
==================  =======  ==========================================================

A value of None means "not measurable for this interval" (a NIC without host-side counters, the first
interval after a guest restart, a counter that went backwards) -- never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

METRICS: tuple[str, ...] = (
    "cpu_pct",
    "cpu_host_pct",
    "mem_used_bytes",
    "mem_total_bytes",
    "disk_read_bps",
    "disk_write_bps",
    "disk_read_iops",
    "disk_write_iops",
    "net_rx_bps",
    "net_tx_bps",
)

UNITS: Mapping[str, str] = {
    "cpu_pct": "%",
    "cpu_host_pct": "%",
    "mem_used_bytes": "bytes",
    "mem_total_bytes": "bytes",
    "disk_read_bps": "bytes/s",
    "disk_write_bps": "bytes/s",
    "disk_read_iops": "ops/s",
    "disk_write_iops": "ops/s",
    "net_rx_bps": "bytes/s",
    "net_tx_bps": "bytes/s",
}

HOST_DOMAIN = "Domain-0"
LOCAL_HOST = "local"  # the host a sample belongs to when none is named (a one-host installation)


@dataclass(frozen=True)
class Sample:
    """One domain's metrics over one sampling interval."""

    time: float  # unix seconds, end of the interval
    domain: str  # HOST_DOMAIN ("Domain-0") for the host, else the guest's name
    values: Mapping[str, float | None]  # METRICS -> value; None = not measurable this interval
    host: str = LOCAL_HOST  # the host it ran on (every host has its own Domain-0)
