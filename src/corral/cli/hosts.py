"""`corral host …` (the hosts Corral manages: show, list, add, remove, maintenance) and `corral lab …`
(private libvirt hosts on this machine, for tests and the demo)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.adapters.lab import Lab
from corral.core.errors import InvalidInput
from corral.core.hosts import ACCELERATORS, POWER_DRIVERS, STORAGE_MODES, HostSpec, PowerSpec
from corral.services.context import Corral
from corral.services.host import HostReport

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


def show_host_report(report: HostReport, as_json: bool, out: Console) -> None:
    """`corral host show` (and `corral info Domain-0`): the host's facts, engine, limits and capacity."""
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
        show_host_report(corral().host.report(name), as_json, out)

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
                         state: Annotated[str, typer.Argument(help="on | off")],
                         parallel: Annotated[int, typer.Option(help="Migrations at a time.")] = 2) -> None:
        """Take a host out of placement and move its guests away (on), or give it back (off)."""
        if state not in ("on", "off"):
            raise InvalidInput(f"maintenance {state!r}: use on or off")
        c = corral()
        if state == "on":  # refused before anything changes when the other hosts cannot hold its guests
            result = c.migration.enter_maintenance(name, parallel=parallel,
                                                   progress=lambda line: err.print(line, highlight=False))
            out.print(f"{name}: maintenance on; {len(result.moved)} guest(s) moved away")
            return
        c.hosts.set_state(name, maintenance=False)
        out.print(f"{name}: maintenance off")

    @host_app.command("evacuate")
    def host_evacuate(name: HostArg,
                      parallel: Annotated[int, typer.Option(help="Migrations at a time.")] = 2,
                      as_json: JsonOpt = False) -> None:
        """Move every guest off a host, spread over the others by placement (refused before anything moves
        when they cannot hold them all). Run it again after an interruption."""
        result = corral().migration.evacuate(name, parallel=parallel,
                                             progress=None if as_json else lambda line: err.print(line))
        if as_json:
            _emit(result.as_dict())
            return
        out.print(f"{name}: {len(result.moved)} guest(s) moved away")

    @host_app.command("standby")
    def host_standby(name: HostArg) -> None:
        """Power a host down through its power driver (refused while guests run there)."""
        corral().host.standby(name)
        out.print(f"{name}: standby")

    @host_app.command("wake")
    def host_wake(name: HostArg,
                  timeout: Annotated[float, typer.Option(help="Seconds to wait for its libvirt.")] = 300) -> None:
        """Power a host up through its power driver; returns once its libvirt answers."""
        seconds = corral().host.wake(name, timeout)
        out.print(f"{name}: up (libvirt answered after {seconds:.1f} s)")

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



def register_migrate(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    @app.command()
    def migrate(
        name: Annotated[str, typer.Argument(help="The guest.")],
        dest: Annotated[str, typer.Argument(help="The host to move it to.")],
        offline: Annotated[bool, typer.Option("--offline", help="Move a shut-off guest (its definition).")] = False,
        copy_storage: Annotated[bool, typer.Option("--copy-storage", help="Copy its disks to a host that does not "
                                                                          "share storage.")] = False,
        bandwidth: Annotated[int | None, typer.Option("--bandwidth", help="MiB/s at most.")] = None,
        max_downtime: Annotated[int | None, typer.Option("--max-downtime", help="ms the guest may pause at the "
                                                                               "end.")] = None,
        postcopy: Annotated[bool, typer.Option("--postcopy", help="Switch to post-copy after the first pass. Risk: a "
                                                                  "failure of either host then loses the guest.")
                            ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Move a guest to another host: live for a running guest (Ctrl-C aborts; it stays where it was),
        its definition for a shut-off one. Checked before anything moves."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from corral.adapters.libvirt_host import JobProgress

        service = corral().migration
        plan = service.check(name, dest, offline=offline, copy_storage=copy_storage, bandwidth_mib_s=bandwidth,
                             max_downtime_ms=max_downtime, postcopy=postcopy)
        if not as_json:
            err.print(plan.describe(), highlight=False)
        with Progress(TextColumn("{task.description:<40}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=err, transient=True, disable=as_json) as bar:
            task = bar.add_task("starting", total=1.0)

            def show(job: JobProgress) -> None:
                total = job.memory_total + job.disk_total
                left = job.memory_remaining + job.disk_remaining
                done = 1.0 - left / total if total else 0.0
                what = (f"pass {job.iteration}, {left / 2**20:.0f} MiB left, {job.memory_bps / 2**20:.0f} MiB/s"
                        if total else "preparing")
                bar.update(task, description=what, completed=max(0.0, min(1.0, done)))

            result = service.migrate(name, dest, offline=offline, copy_storage=copy_storage,
                                     bandwidth_mib_s=bandwidth, max_downtime_ms=max_downtime, postcopy=postcopy,
                                     progress=show)
        if as_json:
            _emit(result.as_dict())
            return
        out.print(result.describe(), highlight=False, soft_wrap=True)


def register_balance(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    @app.command()
    def balance(
        apply: Annotated[bool, typer.Option("--apply", help="Carry out this round's moves now.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what the policy would do now "
                                                                "(the default).")] = False,
        daemon: Annotated[bool, typer.Option("--daemon", help="A round every interval (with the monitoring "
                                                              "sampler, unless one runs already).")] = False,
        mode: Annotated[str | None, typer.Option(help="Set the mode: off | recommend | automatic.")] = None,
        interval: Annotated[float | None, typer.Option(help="Seconds between rounds (default: config).")] = None,
        show_log: Annotated[bool, typer.Option("--log", help="Print the decision timeline.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Keep the cluster consolidated: pack guests on few hosts under the cap, relieve a host before it is
        forecast over it, put emptied hosts in standby. Same policy as `corral simulate`."""
        if sum((apply, dry_run, daemon, show_log)) > 1:
            raise InvalidInput("give one of --apply, --dry-run, --daemon, --log")
        service = corral().balancer
        if mode is not None:
            service.set_mode(mode)
            err.print(f"balancer mode: {mode}")
            if not (apply or dry_run or daemon or show_log):
                return
        if show_log:
            entries = service.timeline()
            if as_json:
                _emit([e.as_dict() for e in entries])
                return
            for e in reversed(entries):
                when = time.strftime("%H:%M:%S", time.localtime(e.time))
                if e.kind == "round":
                    out.print(f"[bold]{when} round {e.round}[/bold] ({e.expected}): {e.reason}", highlight=False)
                    continue
                what = " -> ".join(x for x in (e.source, e.dest) if x)
                took = f" in {e.duration_s:.1f} s" if e.duration_s else ""
                out.print(f"{when}   {e.kind} {e.guest or ''} {what}: {e.outcome}{took} — {e.reason}",
                          highlight=False, soft_wrap=True)
            return
        if daemon:
            import signal
            import threading

            stop = threading.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            c = corral()
            sampler = threading.Thread(target=c.monitoring.run, kwargs={"stop": stop}, daemon=True)
            sampler.start()
            err.print(f"balancing every {interval or c.settings.balancer.interval_s:g} s in mode {service.mode} "
                      "(Ctrl-C or SIGTERM stops)")
            service.run(stop, interval_s=interval, progress=lambda line: err.print(line, highlight=False))
            return
        if apply:
            report = service.round(apply=True, progress=None if as_json else lambda line: err.print(line))
        else:
            plan = service.plan()
            if as_json:
                _emit({"mode": service.mode, "summary": plan.summary, "wakes": [w.__dict__ for w in plan.wakes],
                       "moves": [m.__dict__ for m in plan.moves], "standbys": [s.__dict__ for s in plan.standbys],
                       "refused": [r.__dict__ for r in plan.refused], "forecast_pct": dict(plan.forecast_pct)})
                return
            out.print(f"[bold]mode {service.mode}[/bold]: {plan.summary}", highlight=False, soft_wrap=True)
            for wake in plan.wakes:
                out.print(f"  wake {wake.host}: {wake.reason}", highlight=False, soft_wrap=True)
            for move in plan.moves:
                out.print(f"  move {move.guest} {move.source} -> {move.dest} ({move.kind}): {move.reason}; "
                          f"expected: {move.expected}", highlight=False, soft_wrap=True)
            for standby in plan.standbys:
                out.print(f"  standby {standby.host}: {standby.reason}", highlight=False, soft_wrap=True)
            for refused in plan.refused:
                out.print(f"  [dim]not done: {refused.what}: {refused.why}[/dim]", highlight=False, soft_wrap=True)
            return
        if as_json:
            _emit(report.as_dict())
            return
        out.print(f"round {report.round}: {report.plan.summary}", highlight=False, soft_wrap=True)
