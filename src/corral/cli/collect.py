"""``corral collect``: record a physical server's load into the collect CSV the planner reads.

Module-level imports stay light (typer only): psutil and the collector load when the command runs,
and nothing here imports libvirt. Also runnable as ``python -m corral.cli.collect --out FILE.csv``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

MAX_CPU_MHZ = 1_000_000.0


def register(app: typer.Typer) -> None:
    """Add the ``collect`` command to ``app``."""

    @app.command("collect")
    def collect_cmd(
        out: Path = typer.Option(..., "--out", help="CSV file to append to (created with a header when new)."),
        interval: str = typer.Option("60", "--interval", help="Seconds between rows (60, 30s, 5m)."),
        duration: str | None = typer.Option(
            None, "--duration", help="How long to run (30s, 15m, 2h, 7d); default: until SIGINT/SIGTERM."
        ),
        host: str | None = typer.Option(None, "--host", help="Host name in the rows (default: this host's)."),
        cpu_mhz: float | None = typer.Option(
            None, "--cpu-mhz", help="Per-core MHz, when the kernel does not report the CPU frequency."
        ),
    ) -> None:
        """Record this server's CPU, memory, disk and network use into a CSV for `corral plan`
        (needs only psutil; appends; stops cleanly on Ctrl-C or SIGTERM)."""
        from corral.core.errors import InvalidInput
        from corral.monitoring.collector import collect, parse_duration

        if cpu_mhz is not None and not (math.isfinite(cpu_mhz) and 0 < cpu_mhz <= MAX_CPU_MHZ):
            # the planner refuses rows beyond this (corral.planning.importers.MAX_CORE_MHZ)
            raise InvalidInput(f"--cpu-mhz {cpu_mhz}: must be more than 0 and at most {MAX_CPU_MHZ:g}")
        collect(
            out,
            parse_duration(interval, "interval"),
            parse_duration(duration) if duration is not None else None,
            host,
            cpu_mhz=cpu_mhz,
        )


def main() -> None:
    """``python -m corral.cli.collect``: the command alone, errors printed as one line."""
    from corral.core.errors import CorralError, InvalidInput

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    try:
        app()
    except CorralError as exc:
        print(f"corral: error: {exc.message}", file=sys.stderr)
        raise SystemExit(2 if isinstance(exc, InvalidInput) else 1) from None


if __name__ == "__main__":
    main()
