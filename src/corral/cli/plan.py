"""CLI commands of the planner: ``corral plan``, ``corral report``, ``corral host-kinds``.

``register(app)`` adds them to the main Typer app. Errors: one line on stderr, exit 1; a plan
that leaves servers unplaceable is written, reported on stderr, and exits 3.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from corral.config import load_settings
from corral.core.capacity import DEFAULT_CAP
from corral.core.errors import CorralError, InvalidInput
from corral.planning.errors import one_line  # escapes control characters: every message stays one line
from corral.planning.names import DEFAULT_BEFORE_KIND, DEFAULT_HOST_KIND, FORMATS, RESOURCES

EXIT_UNPLACEABLE = 3


def _fail(msg: str) -> typer.Exit:
    print(f"corral: error: {one_line(msg)}", file=sys.stderr)
    return typer.Exit(1)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except CorralError as exc:  # planning errors included
        raise _fail(exc.message) from None


def _emit(lines: list[str]) -> None:
    """Print to stdout; a closed pipe or a full disk is one error line, not a traceback at exit."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except (OSError, UnicodeEncodeError) as exc:
        try:  # what is left in the buffer would fail again when Python exits
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _fail(f"cannot write to standard output: {why}") from None


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[..., None]]:
    if quiet:
        yield lambda *args: None
        return
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        tasks: dict[str, Any] = {}

        def update(desc: str, done: int, total: int, detail: str = "") -> None:
            if desc not in tasks:
                tasks[desc] = prog.add_task(desc, total=total)
            label = f"{desc} ({detail})" if detail else desc
            prog.update(tasks[desc], completed=done, total=total, description=label)

        yield update


def _resources(text: str | None) -> list[str] | None:
    if text is None:
        return None
    res = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in res if r not in RESOURCES]
    if bad or not res:
        shown = ", ".join(repr(r) for r in bad)[:200] or "(none)"
        raise InvalidInput(f"--resources: unknown resource(s) {shown}; use {','.join(RESOURCES)}")
    return res


def _data_json(d: dict[str, Any]) -> dict[str, Any]:
    """plan.json without its bulky sections, the charts and the per-server figures (for --json output:
    ``hosts`` still says which server is where)."""
    return {k: v for k, v in d.items() if k not in ("chart", "servers")}


def register(app: typer.Typer) -> None:
    """Add ``plan``, ``report`` and ``host-kinds`` to ``app``."""

    @app.command("plan")
    def plan_cmd(
        traces: list[Path] = typer.Argument(..., help="Trace folders, files or .tar.gz archives."),
        host_kind: str = typer.Option(DEFAULT_HOST_KIND, "--host-kind", help="Host kind (see `corral host-kinds`)."),
        cap: float = typer.Option(DEFAULT_CAP, "--cap", help="Highest allowed utilization of a host, 0-1."),
        percentile: float | None = typer.Option(
            None, "--percentile", help="Allow the worst (100-P) % of steps above the cap (never above 100 %)."
        ),
        resources: str | None = typer.Option(None, "--resources", help="cpu,mem,disk,net (default: all in traces)."),
        out: Path = typer.Option(Path("plan.json"), "--out", help="Where to write plan.json."),
        fmt: str = typer.Option("auto", "--format", help=f"Trace format: {'|'.join(FORMATS)}."),
        time_budget: float = typer.Option(5.0, "--time-budget", help="Seconds for the search."),
        validate_on: list[Path] | None = typer.Option(
            None, "--validate-on", help="Replay the plan on other traces of the same servers."
        ),
        catalog: Path | None = typer.Option(None, "--catalog", help="TOML file of extra/overriding host kinds."),
        costs: Path | None = typer.Option(None, "--costs", help="TOML file with a [costs] table."),
        before_kind: str = typer.Option(DEFAULT_BEFORE_KIND, "--before-kind",
                                        help="Kind of each server's own machine."),
        html: Path | None = typer.Option(None, "--html", help="Also write the HTML report."),
        csv_out: Path | None = typer.Option(None, "--csv", help="Also write the server -> host table as CSV."),
        as_json: bool = typer.Option(False, "--json", help="Print the plan summary as JSON on stdout."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
        save: str | None = typer.Option(None, "--save", help="Also keep it in Corral's plan library as NAME."),
    ) -> None:
        """Plan the consolidation of the traced servers onto as few hosts as possible."""
        from corral.planning.report import summary_lines, write_html_report
        from corral.planning.serialize import write_assignment_csv, write_plan_json
        from corral.services.plans import PlanRequest, PlanService

        with _errors():
            request = PlanRequest(
                traces=traces, host_kind=host_kind, cap=cap, percentile=percentile,
                resources=_resources(resources), fmt=fmt, time_budget_s=time_budget,
                validate_on=validate_on or (), catalog=catalog, costs=costs, before_kind=before_kind,
            )
            service = PlanService(load_settings())
            if save is not None:
                service.library_path(save)  # a bad name is refused before the work, not after
            with _progress(quiet) as update:
                outcome = service.make(request, update)
            data = outcome.data
            write_plan_json(data, out)
            if save is not None:
                service.save(save, data)
            if html is not None:
                write_html_report(data, html)
            if csv_out is not None:
                write_assignment_csv(data, csv_out)
        if as_json:
            _emit([json.dumps(_data_json(data), indent=1)])
        else:
            _emit([*summary_lines(data),
                   f"plan written to {one_line(out)}" + (f", report to {one_line(html)}" if html else "")
                   + (f", server -> host table to {one_line(csv_out)}" if csv_out else "")
                   + (f", kept as {save!r} (corral serve shows it)" if save else "")])
        if data["unplaceable"]:
            first = data["unplaceable"][0]
            print(
                one_line(f"corral: {len(data['unplaceable'])} server(s) unplaceable on {host_kind}, e.g. "
                       f"{first['server']}: {first['reason']}; {outcome.unplaceable_hint} (see {out})"),
                file=sys.stderr,
            )
            raise typer.Exit(EXIT_UNPLACEABLE)

    @app.command("report")
    def report_cmd(
        plan_file: Path = typer.Argument(..., help="A plan.json written by `corral plan`."),
        html: Path | None = typer.Option(None, "--html", help="Write the self-contained HTML report here."),
        csv_out: Path | None = typer.Option(None, "--csv", help="Write the server -> host table here, as CSV."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Summarize a plan in the terminal, write its HTML report and its server -> host table."""
        from corral.planning.report import summary_lines, write_html_report
        from corral.planning.serialize import write_assignment_csv
        from corral.services.plans import read_file

        with _errors():
            data = read_file(plan_file)
            if html is not None:
                write_html_report(data, html)
            if csv_out is not None:
                write_assignment_csv(data, csv_out)
            lines = summary_lines(data)
        if as_json:
            _emit([json.dumps(_data_json(data), indent=1)])
        else:
            _emit(lines + ([f"report written to {one_line(html)}"] if html is not None else [])
                  + ([f"server -> host table written to {one_line(csv_out)}"] if csv_out is not None else []))

    @app.command("host-kinds")
    def host_kinds_cmd(
        catalog: Path | None = typer.Option(None, "--catalog", help="TOML file of extra/overriding host kinds."),
        as_json: bool = typer.Option(False, "--json", help="Print the catalog as JSON."),
        as_toml: bool = typer.Option(False, "--toml", help="Print the catalog as a TOML file for --catalog."),
    ) -> None:
        """List the host kinds the planner knows."""
        from corral.planning.catalog import catalog_to_toml, load_catalog

        with _errors():
            kinds = load_catalog(catalog)
        if as_toml:
            _emit([catalog_to_toml(kinds).removesuffix("\n")])
            return
        if as_json:
            _emit([json.dumps([k.to_json() for k in kinds.values()], indent=1)])
            return
        table = Table(title="host kinds")
        table.add_column("name", no_wrap=True)
        for col in ("cores", "MHz/core", "speed", "mem GB", "disk MB/s", "net MB/s", "W idle-full", "price"):
            table.add_column(col)
        for k in kinds.values():
            j = k.to_json()
            table.add_row(
                k.name,
                str(k.cores),
                f"{k.core_mhz:g}",
                f"{k.speed:g}",
                f"{j['mem_gb']:g}",
                f"{j['disk_mb_s']:g}",
                f"{j['net_mb_s']:g}",
                f"{k.power_w[0]:g}-{k.power_w[-1]:g}",
                f"{k.price:g}",
            )
        try:
            Console().print(table)
        except OSError as exc:
            raise _fail(f"cannot write to standard output: {exc.strerror or exc}") from None

    app.command("hosts-kinds", hidden=True)(host_kinds_cmd)  # alias
