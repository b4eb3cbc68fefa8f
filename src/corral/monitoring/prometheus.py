"""The current values in Prometheus' text exposition format (version 0.0.4). Pure."""

from __future__ import annotations

from collections.abc import Sequence

from corral.monitoring.metrics import Sample
from corral.monitoring.rates import Counters

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric, type, help, counter attribute)
COUNTER_METRICS = (
    ("corral_domain_cpu_seconds_total", "counter",
     "CPU time used by the domain, summed over its CPUs (Domain-0: the host's busy time).", "cpu_time_s"),
    ("corral_domain_disk_read_bytes_total", "counter", "Bytes read from the domain's disks.", "disk_read_bytes"),
    ("corral_domain_disk_written_bytes_total", "counter", "Bytes written to the domain's disks.",
     "disk_write_bytes"),
    ("corral_domain_disk_reads_total", "counter", "Read requests completed.", "disk_read_ops"),
    ("corral_domain_disk_writes_total", "counter", "Write requests completed.", "disk_write_ops"),
    ("corral_domain_network_receive_bytes_total", "counter",
     "Bytes received by the domain's NICs that have host-side counters.", "net_rx_bytes"),
    ("corral_domain_network_transmit_bytes_total", "counter",
     "Bytes sent by the domain's NICs that have host-side counters.", "net_tx_bytes"),
    ("corral_domain_memory_bytes", "gauge", "Memory the domain has (guests: as the balloon driver reports).",
     "mem_total_bytes"),
    ("corral_domain_memory_used_bytes", "gauge", "Memory in use in the domain.", "mem_used_bytes"),
    ("corral_domain_vcpus", "gauge", "CPUs of the domain (Domain-0: the host's logical cores).", "cpus"),
)
RATE_METRICS = (
    ("corral_domain_cpu_utilization_ratio", "gauge",
     "Busy share of the domain's own CPUs over the last sampling interval (0-1).", "cpu_pct"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(counters: Sequence[Counters], samples: Sequence[Sample]) -> str:
    lines: list[str] = []
    for metric, kind, help_text, attribute in COUNTER_METRICS:
        rows = [(c.domain, getattr(c, attribute)) for c in counters if getattr(c, attribute) is not None]
        if not rows:
            continue
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{domain="{_label(domain)}"}} {float(value)!r}' for domain, value in rows]
    for metric, kind, help_text, key in RATE_METRICS:
        rows = [(s.domain, s.values.get(key)) for s in samples if s.values.get(key) is not None]
        if not rows:
            continue
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{domain="{_label(d)}"}} {float(v or 0) / 100:.6g}' for d, v in rows]
    return "\n".join(lines) + "\n"
