"""`corral monitor`, `corral top`, `corral stats`: live and historical figures of the host and guests."""

from __future__ import annotations

import csv
import json
import math
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from corral.core.errors import InvalidInput, NotFound
from corral.monitoring.metrics import HOST_DOMAIN, UNITS, Sample
from corral.services.context import Corral

SPARKS = "▁▂▃▄▅▆▇█"
SORT_KEYS = {"n": "name", "c": "cpu", "m": "memory", "d": "disk", "w": "network"}


def sparkline(values: Sequence[float | None], width: int = 40) -> str:
    """Unicode blocks scaled to the series' own range; gaps (None) stay blank."""
    if len(values) > width:  # keep the shape: average consecutive points into `width` cells
        step = len(values) / width
        cells: list[float | None] = []
        for i in range(width):
            chunk = [v for v in values[int(i * step):int((i + 1) * step)] if v is not None]
            cells.append(sum(chunk) / len(chunk) if chunk else None)
        values = cells
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return "".join(" " if v is None else SPARKS[min(7, int((v - low) / span * 7.999))] for v in values)


def _fmt(metric: str, value: Any) -> str:
    if value is None:
        return "-"
    unit = UNITS.get(metric, "")
    if unit == "%":
        return f"{value:.1f}"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "bytes/s":
        return f"{value / 1024:.1f} KiB/s"
    return f"{value:.1f}"


def register(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    @app.command()
    def monitor(
        once: Annotated[bool, typer.Option("--once", help="Print one sample (over 1 s) and exit.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="With --once: JSON.")] = False,
        interval: Annotated[float | None, typer.Option(help="Seconds between samples (default: config)")] = None,
        prometheus: Annotated[str | None, typer.Option(help="Serve /metrics at HOST:PORT, e.g. 127.0.0.1:9177")
                              ] = None,
    ) -> None:
        """Run the sampler in the foreground: every interval, Domain-0 and every guest into the history."""
        service = corral().monitoring
        if once:
            samples = service.one_sample(1.0)
            if as_json:
                sys.stdout.write(json.dumps([_sample_dict(s) for s in samples], indent=2) + "\n")
            else:
                out.print(_live_table(samples, {}, "cpu", False))
            return
        stop = threading.Event()
        server = None
        if prometheus:
            from corral.monitoring.exporter import serve_metrics

            server = serve_metrics(prometheus, corral().prometheus.registry)
            err.print(f"Prometheus metrics at http://{prometheus}/metrics")
        every = interval or service.settings.monitor.interval_s
        err.print(f"sampling every {every:g} s into {service.settings.metrics_path} (Ctrl-C or SIGTERM stops)")
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

        def report(samples: Sequence[Sample]) -> None:
            guests = len(samples) - 1
            host = next((s for s in samples if s.domain == HOST_DOMAIN), None)
            cpu = host.values.get("cpu_pct") if host else None
            err.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] Domain-0 CPU {_fmt('cpu_pct', cpu)} %, "
                      f"{guests} guest(s) sampled", highlight=False)

        try:
            service.run(stop, interval_s=every, on_samples=report, exclusive=True)
        finally:
            if server is not None:
                server.shutdown()

    @app.command()
    def top(
        interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
        sort: Annotated[str, typer.Option(help="name|cpu|memory|disk|network")] = "cpu",
        iterations: Annotated[int, typer.Option(help="Stop after N refreshes (0: until q, or Ctrl-C with --batch).")
                              ] = 0,
        batch: Annotated[bool, typer.Option("--batch", "-b", help="Print a plain table every interval instead of "
                                                                  "the full-screen view, like xentop -b (the "
                                                                  "choice too when the output is no terminal).")
                         ] = False,
    ) -> None:
        """Live view like xentop: Domain-0 and every guest. Keys: c m d w n sort, r reverse, q quit."""
        if sort not in SORT_KEYS.values():
            raise InvalidInput(f"--sort must be one of {', '.join(SORT_KEYS.values())}")
        if not (math.isfinite(interval) and interval > 0):
            raise InvalidInput(f"--interval {interval:g}: must be more than 0 seconds")
        if iterations < 0:
            raise InvalidInput(f"--iterations {iterations}: must be 0 (no end) or more")
        c = corral()
        if batch or not out.is_terminal:
            _top_batch(c, out, interval, sort, iterations)
            return
        sort_by, reverse = sort, True
        c.monitoring.cluster.sample()
        samples: list[Sample] = []
        states: dict[str, str] = {}
        deadline = time.monotonic()
        count = 0
        with _keys() as read_key, Live(console=out, screen=True, auto_refresh=False) as live:
            while True:
                if time.monotonic() >= deadline:
                    samples = c.monitoring.cluster.sample()
                    states = {row.name: row.state for host in c.hosts for row in host.libvirt.rows()}
                    deadline = time.monotonic() + interval
                    count += 1
                live.update(Group(
                    Text(f"corral top — every {interval:g} s — sorted by {sort_by}"
                         f"{' (reversed)' if not reverse else ''} — keys: c cpu  m memory  d disk  "
                         f"w network  n name  r reverse  q quit", style="bold"),
                    _live_table(samples, states, sort_by, reverse),
                ), refresh=True)
                if iterations and count >= iterations:
                    break
                key = read_key(max(0.0, deadline - time.monotonic()))
                if key in ("q", "Q", "\x03"):
                    break
                if key in SORT_KEYS:
                    sort_by = SORT_KEYS[key]
                elif key == "r":
                    reverse = not reverse

    @app.command()
    def stats(
        name: Annotated[str, typer.Argument(help="A guest's name, or Domain-0 for the host.")],
        since: Annotated[str, typer.Option(help="How far back: 30m, 1h, 7d ...")] = "1h",
        resource: Annotated[str | None, typer.Option(help="cpu|mem|disk|net (default: all)")] = None,
        as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    ) -> None:
        """History from the monitoring store: a table with sparklines, or CSV, or JSON."""
        from corral.monitoring.collector import parse_duration
        from corral.services.monitoring import metrics_for

        window = parse_duration(since, "--since")
        wanted = metrics_for(resource)
        rows = corral().monitoring.history(name, window, resource)
        if as_json:
            sys.stdout.write(json.dumps(rows, indent=1) + "\n")
            return
        if as_csv:
            columns = list(rows[0]) if rows else ["time", *wanted]
            writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            return
        if not rows:
            raise NotFound(f"no samples of {name} in the last {since} (is `corral monitor` or `corral serve` "
                           "running?)")
        table = Table(title=f"{name}, last {since}: {len(rows)} samples from "
                            f"{datetime.fromtimestamp(rows[0]['time']):%Y-%m-%d %H:%M} to "
                            f"{datetime.fromtimestamp(rows[-1]['time']):%H:%M}",
                      title_justify="left", header_style="bold", box=None)
        for column in ("metric", "min", "avg", "max", "last", "trend"):
            table.add_column(column, justify="left" if column in ("metric", "trend") else "right")
        for metric in wanted:
            series = [row.get(metric) for row in rows]
            known = [v for v in series if v is not None]
            lows = [row.get(f"{metric}_min", row.get(metric)) for row in rows]
            highs = [row.get(f"{metric}_max", row.get(metric)) for row in rows]
            low = min((v for v in lows if v is not None), default=None)
            high = max((v for v in highs if v is not None), default=None)
            table.add_row(metric, _fmt(metric, low),
                          _fmt(metric, sum(known) / len(known) if known else None), _fmt(metric, high),
                          _fmt(metric, series[-1]), sparkline(series))
        out.print(table)


def _top_batch(c: Corral, out: Console, interval: float, sort: str, iterations: int) -> None:
    """`top --batch`: every interval, a time line and the table as plain text, flushed (for a pipe or a log).
    Each table's rates are over the interval before it. A reader that goes away (`| head`) ends it quietly:
    Rich exits then, as for every command."""
    c.monitoring.cluster.sample()
    deadline = time.monotonic() + interval
    count = 0
    while not iterations or count < iterations:
        time.sleep(max(0.0, deadline - time.monotonic()))
        samples = c.monitoring.cluster.sample()
        deadline = time.monotonic() + interval
        states = {row.name: row.state for host in c.hosts for row in host.libvirt.rows()}
        count += 1
        out.print(f"corral top — {datetime.now():%Y-%m-%d %H:%M:%S} — every {interval:g} s — sorted by {sort}",
                  highlight=False, soft_wrap=True)
        out.print(_live_table(samples, states, sort, True))
        out.print()
        out.file.flush()


def _sample_dict(sample: Sample) -> dict[str, Any]:
    return {"time": sample.time, "domain": sample.domain, **dict(sample.values)}


def _live_table(samples: Sequence[Sample], states: dict[str, str], sort: str, reverse: bool) -> Table:
    hosts = [s for s in samples if s.domain == HOST_DOMAIN]
    several = len(hosts) > 1
    by_name = {(f"{HOST_DOMAIN} ({s.host})" if several and s.domain == HOST_DOMAIN else s.domain): s
               for s in samples}
    host_rows = [name for name in by_name if name.startswith(HOST_DOMAIN)] or [HOST_DOMAIN]
    names = [n for n in [*states, *by_name] if not n.startswith(HOST_DOMAIN)]
    names = list(dict.fromkeys(names))
    # Compact headers so that 80 columns hold every column; names are never cut.
    table = Table(header_style="bold reverse", box=None, expand=True, padding=(0, 1))
    table.add_column("NAME", no_wrap=True, min_width=max(len(n) for n in [*host_rows, *names]))
    table.add_column("STATE", no_wrap=True)
    for column in ("CPU%", "HOST%", "MEM MiB", "MEM%", "DISK R/W KiB/s", "IOPS R/W", "NET RX/TX KiB/s"):
        table.add_column(column, justify="right")

    def key(name: str) -> Any:
        v = by_name[name].values if name in by_name else {}
        return {
            "name": name,
            "cpu": v.get("cpu_host_pct") or 0.0,
            "memory": v.get("mem_used_bytes") or 0.0,
            "disk": (v.get("disk_read_bps") or 0.0) + (v.get("disk_write_bps") or 0.0),
            "network": (v.get("net_rx_bps") or 0.0) + (v.get("net_tx_bps") or 0.0),
        }[sort]

    ordered = sorted(names, key=key, reverse=reverse if sort != "name" else not reverse)
    for name in [*host_rows, *ordered]:
        v = by_name[name].values if name in by_name else {}

        def kib(metric: str, values: dict[str, Any] | Any = v) -> str:
            value = values.get(metric)
            return "-" if value is None else f"{value / 1024:.0f}"

        def num(metric: str, values: dict[str, Any] | Any = v) -> str:
            value = values.get(metric)
            return "-" if value is None else f"{value:.0f}"

        total, used = v.get("mem_total_bytes"), v.get("mem_used_bytes")
        table.add_row(
            name, "running" if name.startswith(HOST_DOMAIN) else states.get(name, "running"),
            _fmt("cpu_pct", v.get("cpu_pct")), _fmt("cpu_host_pct", v.get("cpu_host_pct")),
            "-" if used is None else f"{used / 2**20:.0f}",
            "-" if not total or used is None else f"{100 * used / total:.0f}",
            f"{kib('disk_read_bps')}/{kib('disk_write_bps')}", f"{num('disk_read_iops')}/{num('disk_write_iops')}",
            f"{kib('net_rx_bps')}/{kib('net_tx_bps')}",
        )
    return table


@contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """Single key presses from the terminal (cbreak mode), or nothing when stdin is not a terminal."""
    fd = sys.stdin.fileno()
    interactive = os.isatty(fd)
    saved = termios.tcgetattr(fd) if interactive else None

    def read(timeout: float) -> str | None:
        if not interactive:
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 8).decode(errors="ignore")[:1] if ready else None

    try:
        if interactive:
            tty.setcbreak(fd)
        yield read
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
