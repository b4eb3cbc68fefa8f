"""The host's own cumulative counters through psutil (Domain-0 for the sampler; the whole
machine for the collector). Only physical disks and real NICs count, so that guests' I/O is
not counted twice (their taps and bridges are excluded)."""

from __future__ import annotations

import re
from pathlib import Path

import psutil

from corral.monitoring.metrics import HOST_DOMAIN
from corral.monitoring.rates import Counters



def physical_nics() -> set[str]:
    """NICs backed by a device: not loopback, bridges, guests' taps, veths or tunnels."""
    return {entry.name for entry in Path("/sys/class/net").glob("*") if (entry / "device").exists()}

_PARTITION = re.compile(r"^(sd[a-z]+\d+|vd[a-z]+\d+|xvd[a-z]+\d+|nvme\d+n\d+p\d+|mmcblk\d+p\d+)$")


def physical_disks() -> set[str]:
    """Whole physical disks: not partitions, not device-mapper, loop or RAM disks."""
    names = set()
    for entry in Path("/sys/block").glob("*"):
        name = entry.name
        if name.startswith(("loop", "ram", "dm-", "md", "zram", "sr")):
            continue
        names.add(name)
    return names


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


_BOOT_ID = boot_id()


def host_counters(now: float) -> Counters:
    cpu = psutil.cpu_times()
    idle = cpu.idle + getattr(cpu, "iowait", 0.0)
    total = sum(cpu)  # guest time is already inside user on Linux; psutil reports it apart too
    total -= getattr(cpu, "guest", 0.0) + getattr(cpu, "guest_nice", 0.0)
    memory = psutil.virtual_memory()
    disks = psutil.disk_io_counters(perdisk=True) or {}
    keep = physical_disks()
    chosen = [c for name, c in disks.items() if name in keep and not _PARTITION.match(name)]
    nics = psutil.net_io_counters(pernic=True) or {}
    keep_nics = physical_nics()
    real = [c for name, c in nics.items() if name in keep_nics]
    return Counters(
        time=now, domain=HOST_DOMAIN, instance=_BOOT_ID, cpus=psutil.cpu_count() or 1,
        cpu_time_s=total - idle,
        mem_total_bytes=float(memory.total), mem_used_bytes=float(memory.total - memory.available),
        disk_read_bytes=float(sum(c.read_bytes for c in chosen)),
        disk_write_bytes=float(sum(c.write_bytes for c in chosen)),
        disk_read_ops=float(sum(c.read_count for c in chosen)),
        disk_write_ops=float(sum(c.write_count for c in chosen)),
        net_rx_bytes=float(sum(c.bytes_recv for c in real)),
        net_tx_bytes=float(sum(c.bytes_sent for c in real)),
    )
