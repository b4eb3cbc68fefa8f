"""`corral host …` (the hosts Corral manages: show, list, add, remove, maintenance) and `corral lab …`
(private libvirt hosts on this machine, for tests and the demo)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.adapters.lab import Lab
from corral.core.errors import InvalidInput
from corral.core.hosts import ACCELERATORS, POWER_DRIVERS, STORAGE_MODES, HostSpec, PowerSpec
from corral.services.context import Corral

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
HostArg = Annotated[str, typer.Argument(help="Host name (see: corral host list).")]


def _emit(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_power(driver: str, options: list[str]) -> PowerSpec:
    """`--power command --power-opt standby='…' --power-opt wake='…'` into a PowerSpec."""
    settings = []
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--power-opt {option!r}: expected KEY=VALUE")
        settings.append((key.strip(), value))
    return PowerSpec(driver, tuple(sorted(settings)))


def register(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    host_app = typer.Typer(help="The hosts Corral manages (bare `corral host`: the default host's report).",
                           invoke_without_command=True)
    lab_app = typer.Typer(help="Private libvirt hosts on this machine, standing in for physical hosts.",
                          no_args_is_help=True)
    app.add_typer(host_app, name="host")
    app.add_typer(lab_app, name="lab")

    @host_app.callback()
    def host_default(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        if ctx.invoked_subcommand is None:
            show(None, as_json)

    @host_app.command("show")
    def show(name: Annotated[str | None, typer.Argument(help="Host name (default: the local host).")] = None,
             as_json: JsonOpt = False) -> None:
        """A host: CPU, memory, the engine in use and why, the capacity model and what is free."""
        report = corral().host.report(name)
        snap, cap = report.snapshot, report.capacity
        budgets = {b.resource: b for b in cap.budgets}
        if as_json:
            _emit(report.as_dict())
            return
        table = Table(show_header=False, box=None, padding=(0, 2))
        kernel = f" (Linux {snap.kernel})" if snap.kernel else ""
        table.add_row("host", f"{report.host}: {snap.hostname}{kernel}")
        table.add_row("CPU", f"{snap.cpu_model}, {snap.cores} logical cores, {snap.cpu_pct:.0f} % busy")
        table.add_row("memory", f"{snap.memory_total_mib} MiB, {snap.memory_used_mib} MiB used")
        table.add_row("engine", f"[bold]{report.accelerator.engine.upper()}[/bold] — {report.accelerator.reason}")
        table.add_row("libvirt", f"{report.libvirt_uri}: {report.running_guests} running of "
                                 f"{report.defined_guests} defined")
        table.add_row("network", report.network_reason)
        limits = cap.limits
        table.add_row("limits", f"cap {limits.cap:.0%} of CPU, {limits.vcpu_overcommit:g} vCPUs per core, "
                                f"{limits.memory_reserve_mib} MiB reserved, memory overcommit "
                                f"{limits.memory_overcommit:g}, assumed guest load "
                                f"{limits.assumed_guest_utilization:.0%}")
        out.print(table)
        caps = Table(title="Capacity (running guests)", title_justify="left")
        for column in ("resource", "limit", "allocated", "free"):
            caps.add_column(column, justify="right" if column != "resource" else "left")
        labels = {"vcpus": "vCPUs", "memory": "memory (MiB)", "cpu": "expected CPU (cores)"}
        for key in ("vcpus", "memory", "cpu"):
            b = budgets[key]
            caps.add_row(labels[key], f"{b.limit:g}", f"{b.used:g}", f"{b.free:g}")
        out.print(caps)

    @host_app.command("list")
    def host_list(as_json: JsonOpt = False) -> None:
        """Every host: state (up, unreachable, maintenance, standby), size, what its guests take, CPU %."""
        rows = corral().host.summaries()
        if as_json:
            _emit([r.as_dict() for r in rows])
            return
        table = Table(box=None, header_style="bold")
        for column in ("Host", "State", "Cores", "Mem (MiB)", "vCPUs alloc", "Mem alloc (MiB)", "CPU %", "Guests",
                       "Storage", "URI"):
            table.add_column(column, justify="left" if column in ("Host", "State", "Storage", "URI") else "right")
        style = {"up": "green", "maintenance": "yellow", "standby": "dim", "unreachable": "red"}
        for r in rows:
            table.add_row(r.name, f"[{style[r.state]}]{r.state}[/{style[r.state]}]",
                          "-" if r.cores is None else str(r.cores),
                          "-" if r.memory_mib is None else str(r.memory_mib),
                          str(r.vcpus_allocated), str(r.memory_allocated_mib),
                          "-" if r.cpu_pct is None else f"{r.cpu_pct:.0f}",
                          f"{r.guests_running}/{r.guests_defined}", r.storage, r.uri)
        out.print(table)
        for r in rows:
            if r.error:
                err.print(f"[dim]{r.name}: {r.error}[/dim]", highlight=False)

    @host_app.command("add")
    def host_add(
        name: HostArg,
        uri: Annotated[str, typer.Argument(help="libvirt URI: qemu+ssh://root@h2/system, qemu+tcp://10.0.0.2/system, "
                                                "qemu+tls://…, qemu+unix:///system?socket=PATH")],
        storage: Annotated[str, typer.Option(help=f"{' | '.join(STORAGE_MODES)}: whether it sees Corral's data "
                                                  "folder (shared) or disks must be copied to it")] = "copy",
        accelerator: Annotated[str, typer.Option(help=" | ".join(ACCELERATORS))] = "auto",
        network: Annotated[str | None, typer.Option(help="libvirt network for guests' NICs there "
                                                         "(\"\": QEMU user-mode NICs)")] = None,
        power: Annotated[str, typer.Option(help=f"standby/wake driver: {' | '.join(POWER_DRIVERS)}")] = "none",
        power_opt: Annotated[list[str] | None, typer.Option("--power-opt", help="KEY=VALUE for the power driver "
                                                                                "(repeat)")] = None,
    ) -> None:
        """Register a host (its libvirt must answer, and not be a host already registered)."""
        spec = HostSpec(name, uri, storage, accelerator, parse_power(power, power_opt or []), network)
        summary = corral().host.add(spec)
        out.print(f"added host {summary.name} ({summary.uri}): {summary.cores} cores, {summary.memory_mib} MiB")

    @host_app.command("remove")
    def host_remove(name: HostArg) -> None:
        """Forget a host (refused while guests live there)."""
        corral().host.remove(name)
        out.print(f"removed host {name}")

    @host_app.command("maintenance")
    def host_maintenance(name: HostArg,
                         state: Annotated[str, typer.Argument(help="on | off")]) -> None:
        """Take a host out of placement (on) or give it back (off)."""
        if state not in ("on", "off"):
            raise InvalidInput(f"maintenance {state!r}: use on or off")
        corral().hosts.set_state(name, maintenance=state == "on")
        out.print(f"{name}: maintenance {state}")

    # --- the lab --------------------------------------------------------------------------------
    def lab() -> Lab:
        return Lab(corral().settings.data_dir / "lab")

    @lab_app.command("up")
    def lab_up(names: Annotated[list[str] | None, typer.Argument(help="Host names (default: lab1 … labN).")] = None,
               hosts: Annotated[int, typer.Option("--hosts", help="How many, when no names are given.")] = 3,
               register_hosts: Annotated[bool, typer.Option("--register/--no-register",
                                                            help="Also add them to Corral's hosts.")] = True) -> None:
        """Start private libvirt hosts on this machine (127.0.0.2, .3, …) and register them."""
        wanted = names or [f"lab{i}" for i in range(1, hosts + 1)]
        c = corral()
        for lab_host in lab().create(wanted):
            known = {h.name for h in c.hosts}
            if register_hosts and lab_host.name not in known:
                c.host.add(HostSpec(lab_host.name, lab_host.uri, storage="shared", network="",
                                    power=PowerSpec("command", (("standby", f"corral lab stop {lab_host.name}"),
                                                                ("wake", f"corral lab start {lab_host.name}")))))
            out.print(f"{lab_host.name}: {lab_host.uri} (socket {lab_host.socket})")

    @lab_app.command("down")
    def lab_down() -> None:
        """Stop every lab host (their guests die with them), forget them, remove the lab's folders."""
        c = corral()
        names = lab().destroy()
        for name in names:
            if any(h.name == name for h in c.hosts):
                c.hosts.drop(name)
        out.print(f"stopped {', '.join(names) or 'nothing'}")

    @lab_app.command("start")
    def lab_start(name: HostArg) -> None:
        """Start one lab host's libvirt (what a power-on does)."""
        out.print(f"{lab().start(name).name}: started")

    @lab_app.command("stop")
    def lab_stop(name: HostArg) -> None:
        """Stop one lab host's libvirt and its guests (what a power-off does)."""
        lab().stop(name)
        out.print(f"{name}: stopped")

