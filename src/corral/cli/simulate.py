"""CLI of the simulator: ``corral simulate``.

``register(app)`` adds it to the main Typer app. Errors: one line on stderr, exit 1; guests that
fit on no host at the start are reported (never dropped) and exit 3.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from corral.core.errors import CorralError

EXIT_UNPLACEABLE = 3
MODEL_CHOICES = ("cloudsim", "realistic", "both")


def _fail(msg: str, code: int = 1) -> typer.Exit:
    print(f"corral: error: {msg}", file=sys.stderr)
    return typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to ``app``."""

    @app.command("simulate")
    def simulate_cmd(
        traces: list[Path] = typer.Argument(..., help="Trace folders, files or .tar.gz archives."),
        policy: list[str] | None = typer.Option(
            None, "--policy", "-p", help="corral (default) or DETECTOR-SELECTION-PARAM, e.g. lr-mmt-1.2; repeatable."
        ),
        hosts: int = typer.Option(800, "--hosts", help="Number of hosts."),
        host_kinds: str = typer.Option(
            "ml110-g4,ml110-g5", "--host-kinds", help="Host kinds, host i gets kind i mod their number."
        ),
        model: str = typer.Option("cloudsim", "--model", help="cloudsim | realistic | both."),
        fmt: str = typer.Option("auto", "--format", help="Trace format: auto|planetlab|bitbrains|collect|csv."),
        vm_order: str = typer.Option(
            "input", "--vm-order", help="input (archive/listing order, as CloudSim) or name: sizes go by blocks."
        ),
        catalog: Path | None = typer.Option(None, "--catalog", help="TOML file of extra/overriding host kinds."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
        html: Path | None = typer.Option(None, "--html", help="Also write the self-contained HTML report."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
    ) -> None:
        """Replay traces through consolidation policies with CloudSim 4.0's accounting, side by side."""
        try:
            from corral.consolidation.policies import DEFAULT_POLICY, make_policy, parse_policy
            from corral.planning.catalog import load_catalog
            from corral.simulation.engine import Simulation
            from corral.simulation.errors import SimulationError, UnplaceableError
            from corral.simulation.fleet import build_fleet
            from corral.simulation.report import results_json, table_rows, write_html_report
            from corral.simulation.workload import load_workload

            specs = [parse_policy(p) for p in (policy or [DEFAULT_POLICY])]
            if model not in MODEL_CHOICES:
                raise SimulationError(f"unknown model {model!r} (choose from {', '.join(MODEL_CHOICES)})")
            models = ["cloudsim", "realistic"] if model == "both" else [model]
            kinds = [k.strip() for k in host_kinds.split(",") if k.strip()]
            fleet = build_fleet(hosts, kinds, load_catalog(catalog))
            workload = load_workload(traces, fmt, vm_order=vm_order)
            results = []
            for mdl in models:
                sim = Simulation(workload, fleet, mdl)
                for spec in specs:
                    if not quiet:
                        print(f"simulating {spec.name} ({mdl}) on {workload.n_vms} guests, {fleet.n_hosts} hosts...",
                              file=sys.stderr, flush=True)
                    results.append(sim.run(make_policy(spec, realistic=mdl == "realistic")))
        except UnplaceableError as exc:
            raise _fail(exc.message, EXIT_UNPLACEABLE) from None
        except CorralError as exc:
            raise _fail(exc.message.replace("\n", " ")) from None
        meta = {
            "traces": [str(t) for t in traces],
            "format": workload.fmt,
            "guests": workload.n_vms,
            "hosts": fleet.n_hosts,
            "host_kinds": kinds,
            "interval_s": workload.step_s,
            "simulated_h": round(workload.duration_s / 3600, 2),
            "notes": list(workload.notes),
        }
        if html is not None:
            write_html_report(results, meta, html)
        if as_json:
            print(json.dumps(results_json(results, meta), indent=1))
            return
        from rich.console import Console
        from rich.table import Table

        header, rows = table_rows(results)
        print(f"{workload.n_vms} guests on {fleet.n_hosts} hosts ({','.join(kinds)}), "
              f"{workload.duration_s / 3600:g} h simulated, {workload.step_s:g} s intervals")
        table = Table()
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        Console(width=max(100, 24 + 22 * len(results))).print(table)
        for note in workload.notes:
            print(f"note: {note}")
        if html is not None:
            print(f"report written to {html}")
