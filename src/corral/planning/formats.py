"""Pure helpers for the ``corral collect`` CSV format (shared with the collector, which appends rows).

Format (UTF-8, comma separated, one header row, then one row per host per sample; a file may
hold several hosts and may be appended to at any time — write the header only when the file is
new or empty)::

    timestamp,host,cpu_cores,cpu_mhz,cpu_pct,mem_total_bytes,mem_used_bytes,
    disk_read_bps,disk_write_bps,net_rx_bps,net_tx_bps

``timestamp`` unix seconds (float), ``cpu_mhz`` per core, ``cpu_pct`` 0..100 of all cores,
byte counts and bytes per second as non-negative numbers.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

COLLECT_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "host",
    "cpu_cores",
    "cpu_mhz",
    "cpu_pct",
    "mem_total_bytes",
    "mem_used_bytes",
    "disk_read_bps",
    "disk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
)


@dataclass(frozen=True)
class CollectSample:
    """One row of the collect CSV."""

    timestamp: float
    host: str
    cpu_cores: int
    cpu_mhz: float
    cpu_pct: float
    mem_total_bytes: int
    mem_used_bytes: int
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


def collect_header() -> str:
    """The header line (with its newline)."""
    return ",".join(COLLECT_COLUMNS) + "\n"


def _num(x: float | int) -> str:
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {x}")
    return repr(round(float(x), 3)).removesuffix(".0") if float(x) != int(x) else str(int(x))


def format_collect_row(sample: CollectSample) -> str:
    """One CSV line (with its newline). Raises ValueError on a host name with a comma or newline,
    or on a negative or non-finite number."""
    if not sample.host or any(c in sample.host for c in ',\n\r"'):
        raise ValueError(f"invalid host name for the collect CSV: {sample.host!r}")
    fields: list[str] = []
    for col, value in zip(COLLECT_COLUMNS, astuple(sample), strict=True):
        if col == "host":
            fields.append(str(value))
            continue
        if value < 0:
            raise ValueError(f"{col} is negative: {value}")
        fields.append(_num(value))
    return ",".join(fields) + "\n"
