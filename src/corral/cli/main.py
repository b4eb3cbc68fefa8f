"""The `corral` command: Typer + Rich over the service layer. No logic lives here."""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import tty
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from corral.core.errors import BackendError, CorralError, InvalidInput
from corral.core.spec import spec_from_mapping, spec_from_toml
from corral.services.context import Corral, open_corral

app = typer.Typer(
    name="corral",
    help="End server sprawl: run guests on one host, measure them, plan the consolidation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
image_app = typer.Typer(help="Guest images: build the built-in one, import yours, list them.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Snapshots of a guest (internal qcow2 snapshots).", no_args_is_help=True)
app.add_typer(image_app, name="image")
app.add_typer(snapshot_app, name="snapshot")

out = Console()
err = Console(stderr=True)
_corral: Corral | None = None

if TYPE_CHECKING:
    from rich.progress import Progress

    from corral.adapters.console import SerialConsole

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArg = Annotated[str, typer.Argument(help="Domain name.")]


def corral() -> Corral:
    global _corral
    if _corral is None:
        _corral = open_corral()
    return _corral


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def say(message: str) -> None:
    err.print(f"[dim]…[/dim] {message}")


# --- listing ---------------------------------------------------------------------------------
@app.command("list")
def list_domains(as_json: JsonOpt = False,
                 host: Annotated[str | None, typer.Option("--host", help="Only this host's domains.")] = None
                 ) -> None:
    """Domain-0 (each host) and every guest, running or not, like `xl list`."""
    c = corral()
    rows = c.guests.listing(host=host)
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    several = len(c.hosts) > 1
    table = Table(box=None, header_style="bold")
    columns = ("Host", "Name", "ID", "State", "VCPUs", "Mem (MiB)", "CPU %", "Time (s)")
    for column in columns[0 if several else 1:]:
        table.add_column(column, justify="left" if column in ("Host", "Name", "State") else "right")
    for r in rows:
        unreachable = r.state == "unreachable"
        style = "red" if r.reason or unreachable else {"running": "green", "paused": "yellow",
                                                       "shut-off": "dim"}.get(r.state, "")
        state = r.state if unreachable else r.shown_state
        cells = [r.name, "-" if r.id is None else str(r.id), f"[{style}]{state}[/{style}]" if style else state,
                 "-" if unreachable else str(r.vcpus), "-" if unreachable else str(r.memory_mib),
                 "-" if r.cpu_pct is None else f"{r.cpu_pct:.1f}", "-" if unreachable else f"{r.cpu_time_s:.1f}"]
        table.add_row(*([r.host] if several else []), *cells)
    out.print(table)


@app.command()
def info(name: NameArg, as_json: JsonOpt = False) -> None:
    """Everything about one guest."""
    details = corral().guests.info(name)
    if as_json:
        emit_json(details.as_dict())
        return
    table = Table(show_header=False, box=None, padding=(0, 2))
    for key, value in details.as_dict().items():
        if key == "reason":
            continue
        if key == "state" and details.reason:
            value = f"{value} ({details.reason})"
        if key == "disks":
            value = "\n".join(f"{d['device']} {d['format']} {d['path']}" for d in value) or "-"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    out.print(table)


# --- images -------------------------------------------------------------------------------
@image_app.command("build")
def image_build(name: Annotated[str, typer.Argument(help="Only 'tiny', the built-in image.")] = "tiny",
                force: Annotated[bool, typer.Option("--force", help="Rebuild even when cached.")] = False
                ) -> None:
    """Build the built-in tiny Linux guest (Debian kernel + busybox), offline, with progress."""
    if name != "tiny":
        raise InvalidInput(f"can only build the built-in image 'tiny', not {name!r}; use image import")
    with _progress() as progress:
        task = progress.add_task("building tiny", total=1.0)

        def update(step: str, fraction: float) -> None:
            progress.update(task, description=step, completed=fraction)

        record = corral().images.build_tiny(update, force=force)
    out.print(f"image [bold]{record.name}[/bold]: kernel {record.kernel_version}, "
              f"{record.size_bytes / 2**20:.1f} MiB")


@image_app.command("list")
def image_list(as_json: JsonOpt = False) -> None:
    """Registered images."""
    records = corral().images.records()
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    table = Table(box=None, header_style="bold")
    for column in ("Name", "Kind", "Format", "Size (MiB)", "Source"):
        table.add_column(column)
    for r in records:
        table.add_row(r.name, r.kind, r.format or "-", f"{r.size_bytes / 2**20:.1f}",
                      r.path or r.kernel or "-")
    out.print(table)


@image_app.command("import")
def image_import(name: Annotated[str, typer.Argument(help="Name to register it under.")],
                 path: Annotated[str, typer.Argument(help="A qcow2 or raw disk image, or an ISO.")]) -> None:
    """Register your disk image or ISO (it is never written to: guests get overlays)."""
    record = corral().images.import_image(name, Path(path).expanduser().absolute())
    out.print(f"image [bold]{record.name}[/bold]: {record.kind} {record.format}, {record.path}")


@image_app.command("remove")
def image_remove(name: Annotated[str, typer.Argument()]) -> None:
    """Forget an image (a built image's files are deleted; an imported file stays)."""
    corral().guests.remove_image(name)
    out.print(f"removed image {name}")


# --- life cycle ---------------------------------------------------------------------------
@app.command()
def create(
    name: Annotated[str | None, typer.Argument(help="Guest name (or give --spec).")] = None,
    image: Annotated[str | None, typer.Option(help="Image name (see: corral image list).")] = None,
    vcpus: Annotated[int, typer.Option(help="Virtual CPUs.")] = 1,
    memory: Annotated[int, typer.Option(help="Memory in MiB.")] = 256,
    disk: Annotated[float | None, typer.Option(help="Disk size in GiB.")] = None,
    iso: Annotated[str | None, typer.Option(help="Attach an ISO as a CD-ROM.")] = None,
    load: Annotated[str | None, typer.Option(help="Workload of the tiny image: cpu=PCT,disk=KBPS,net=KBPS")
                    ] = None,
    load_trace: Annotated[str | None, typer.Option(help="Tiny image: replay a CPU trace instead of cpu= (one "
                                                        "percent per line, a step every 5 minutes: PlanetLab)")
                          ] = None,
    speed: Annotated[float | None, typer.Option(help="With --load-trace: replay it N times faster (1-3600; "
                                                     "60: a step every 5 s).")] = None,
    spec: Annotated[Path | None, typer.Option(help="A TOML file with the same fields.")] = None,
    start: Annotated[bool, typer.Option("--start", help="Start it after defining it.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="With --start: return when it is up.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="The host to make it on, or 'auto' to let "
                                                            "placement choose (default: the local host).")] = None,
    weigher: Annotated[str, typer.Option(help="With --host auto: pack (fill the busiest host that fits) or "
                                              "spread.")] = "pack",
    explain: Annotated[bool, typer.Option("--explain", help="With --host auto: say which filter removed which "
                                                            "host, and each host's weight.")] = False,
) -> None:
    """Define a guest (and start it with --start). Refused when it would overload the host."""
    from corral.adapters.traces import read_load_trace

    if spec is not None:
        if any(v is not None for v in (name, image, disk, iso, load, load_trace, speed)):
            raise InvalidInput("give either --spec or a name and options, not both")
        from corral.adapters.files import read_text

        spec_file = spec.expanduser().absolute()
        guest = spec_from_toml(read_text(spec_file, "spec file"), str(spec), spec_file.parent, read_load_trace)
    else:
        if name is None or image is None:
            raise InvalidInput("a guest needs a NAME and --image (or --spec FILE)")
        fields: dict[str, Any] = {"name": name, "image": image, "vcpus": vcpus, "memory": memory}
        if load_trace is not None:
            load_trace = os.path.abspath(os.path.expanduser(load_trace))  # a file of the user's, '..' or not
        for key, value in (("disk", disk), ("iso", iso), ("load", load), ("load_trace", load_trace),
                           ("speed", speed)):
            if value is not None:
                fields[key] = value
        # The same builder as spec files and the REST API; a relative --iso is relative to here.
        guest = spec_from_mapping(fields, base_dir=Path.cwd(), read_trace=read_load_trace)
    if (explain or weigher != "pack") and host != "auto":
        raise InvalidInput("--explain and --weigher go with --host auto")
    if host == "auto":
        placement = corral().guests.placement(guest, weigher=weigher)
        if explain:
            for line in placement.explain():
                err.print(line, highlight=False)
        host = placement.chosen or "auto"  # none fits: create says why
    details = corral().guests.create(guest, start=start, wait=wait, progress=say, host=host)
    where = f" on {details.host}" if len(corral().hosts) > 1 else ""
    out.print(f"{details.name}: {details.state}{where}")


@app.command()
def start(name: NameArg,
          wait: Annotated[bool, typer.Option("--wait", help="Return when the guest signals it is up (its "
                                                            "readiness line, the guest agent, or running).")
                          ] = False) -> None:
    """Start a guest (refused when it would overload the host)."""
    details = corral().guests.start(name, wait=wait, progress=say)
    out.print(f"{details.name}: {details.state}" + (" and up" if wait else ""))


@app.command()
def shutdown(name: NameArg,
             timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean shutdown.")] = 60,
             force: Annotated[bool, typer.Option("--force", help="Power off after the timeout.")] = False
             ) -> None:
    """Ask the guest to shut down (ACPI power button) and wait."""
    out.print(f"{name}: {corral().guests.shutdown(name, timeout_s=timeout, force=force).state}")


@app.command()
def poweroff(name: NameArg) -> None:
    """Power a guest off at once, like pulling the plug."""
    out.print(f"{name}: {corral().guests.poweroff(name).state}")


@app.command()
def reboot(name: NameArg) -> None:
    """Reboot a guest (ACPI)."""
    out.print(f"{name}: {corral().guests.reboot(name).state} (rebooting)")


@app.command()
def pause(name: NameArg) -> None:
    """Pause a running guest (its vCPUs stop; memory stays)."""
    out.print(f"{name}: {corral().guests.pause(name).state}")


@app.command()
def resume(name: NameArg) -> None:
    """Resume a paused guest."""
    out.print(f"{name}: {corral().guests.resume(name).state}")


@app.command()
def delete(name: NameArg,
           keep_disks: Annotated[bool, typer.Option("--keep-disks", help="Keep the guest's disks.")] = False
           ) -> None:
    """Delete a guest: the domain, its overlay disks, its console log. Powers it off first."""
    kept = corral().guests.delete(name, keep_disks=keep_disks)
    out.print(f"deleted {name}" + (f"; kept {', '.join(kept)}" if kept else ""))


@app.command()
def clone(source: Annotated[str, typer.Argument(help="A shut-off guest.")],
          new: Annotated[str, typer.Argument(help="Name of the copy.")]) -> None:
    """Copy a shut-off guest: its own disk data is copied, the base image shared."""
    out.print(f"{corral().guests.clone(source, new).name}: cloned from {source}")


@snapshot_app.command("create")
def snapshot_create(name: NameArg, snapshot: Annotated[str, typer.Argument(help="Snapshot name.")]) -> None:
    """Snapshot a guest (memory too when it runs)."""
    snap = corral().guests.snapshot_create(name, snapshot)
    out.print(f"{name}: snapshot {snap.name} ({snap.state})")


@snapshot_app.command("list")
def snapshot_list(name: NameArg, as_json: JsonOpt = False) -> None:
    """A guest's snapshots, oldest first."""
    snaps = corral().guests.snapshot_list(name)
    if as_json:
        emit_json([s.__dict__ for s in snaps])
        return
    table = Table(box=None, header_style="bold")
    for column in ("Name", "Created", "State", "Current"):
        table.add_column(column)
    for s in snaps:
        table.add_row(s.name, s.created, s.state, "*" if s.current else "")
    out.print(table)


@snapshot_app.command("revert")
def snapshot_revert(name: NameArg, snapshot: Annotated[str, typer.Argument()]) -> None:
    """Return a guest to a snapshot."""
    out.print(f"{name}: reverted to {snapshot}, {corral().guests.snapshot_revert(name, snapshot).state}")


@snapshot_app.command("delete")
def snapshot_delete(name: NameArg, snapshot: Annotated[str, typer.Argument()]) -> None:
    """Delete a snapshot."""
    corral().guests.snapshot_delete(name, snapshot)
    out.print(f"{name}: deleted snapshot {snapshot}")


@app.command()
def console(name: NameArg,
            force: Annotated[bool, typer.Option("--force", help="Take the console over from another session "
                                                                "(which then ends).")] = False) -> None:
    """Interactive serial console. Leave with Ctrl-]."""
    session = corral().guests.open_console(name, force=force)
    escape = b"\x1d"
    err.print(f"[dim]Connected to {name}'s serial console. Escape character is ^][/dim]")
    fd = sys.stdin.fileno()
    interactive = os.isatty(fd)
    saved = termios.tcgetattr(fd) if interactive else None
    try:
        if interactive:
            tty.setraw(fd)
        while not session.closed.is_set():
            readable, _, _ = select.select([fd], [], [], 0.05)
            if readable:
                data = os.read(fd, 1024)
                if not data:  # piped input ended: show what the guest answers, then leave
                    _drain(session, quiet_s=1.5)
                    break
                if escape in data:
                    session.send(data.split(escape, 1)[0])
                    break
                session.send(data)
            while (chunk := session.read(0)):
                os.write(sys.stdout.fileno(), chunk)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        session.close()
    if session.ended_by_peer:
        state = corral().guests.info(name).state
        if state in ("running", "paused", "blocked"):
            raise BackendError(f"the console of {name} was closed from the other end: another session took it "
                               "over (corral console --force), or libvirt closed it")
        err.print(f"\n[dim]{name} is {state}; its console closed.[/dim]")
        return
    err.print(f"\n[dim]Disconnected from {name}.[/dim]")


@app.command()
def demo(clean: Annotated[bool, typer.Option("--clean", help="Delete what the demo made (hosts included).")
                          ] = False,
         hosts: Annotated[int | None, typer.Option("--hosts", help="Start each server alone on its own host (5 "
                                                                   "private libvirt hosts on this machine) and "
                                                                   "let the balancer consolidate them live.")
                          ] = None) -> None:
    """The classic server-sprawl example: five departmental servers as guests on this host, and the plan;
    with --hosts 5, on five hosts consolidated live onto one."""
    from corral.services.demo import DEMO_SERVERS

    if clean:
        for name in corral().demo.clean():
            out.print(f"deleted {name}")
        return
    if hosts is not None:
        _cluster_demo(hosts)
        return
    before = Table(title="Before: five servers, one machine each", title_justify="left", box=None,
                   header_style="bold")
    for column in ("server", "role", "CPU %", "disk KiB/s", "net KiB/s", "busiest at"):
        before.add_column(column)
    for s in DEMO_SERVERS:
        before.add_row(s.name, s.role, f"{s.load.cpu_pct:g}", str(s.load.disk_kbps), str(s.load.net_kbps),
                       f"{s.peak_hour:02.0f}:00")
    out.print(before)
    with _progress() as progress:
        task = progress.add_task("consolidating", total=len(DEMO_SERVERS))

        def step(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        result = corral().demo.run(step)
    after = Table(title="After: one host runs them all", title_justify="left", box=None, header_style="bold")
    for column in ("Name", "ID", "State", "VCPUs", "Mem (MiB)", "CPU %"):
        after.add_column(column, justify="left" if column in ("Name", "State") else "right")
    for row in result.listing:
        after.add_row(row.name, "-" if row.id is None else str(row.id), row.state, str(row.vcpus),
                      str(row.memory_mib), "-" if row.cpu_pct is None else f"{row.cpu_pct:.1f}")
    out.print(after)
    out.print("[bold]The consolidation plan, from a day of the five servers' traces:[/bold]")
    for line in result.summary:
        out.print(line, highlight=False)
    out.print(f"plan: {result.plan_path}\nreport: {result.report_path} (open it in a browser)")
    out.print("Clean up with: corral demo --clean")


def _cluster_demo(n_hosts: int) -> None:
    c = corral()
    with _progress() as progress:
        task = progress.add_task("starting", total=1)

        def step(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        result = c.demo.run_cluster(c.host, lambda step_s: c.balancer_for(interval_s=step_s, cooldown_s=0.0,
                                                                          mode="automatic"), n_hosts, step)

    def table(title: str, loads: Any, energy: tuple[float, float, str]) -> None:
        t = Table(title=title, title_justify="left", box=None, header_style="bold")
        for column in ("host", "state", "guests", "CPU of the host"):
            t.add_column(column)
        for h in loads:
            t.add_row(h.host, h.state, ", ".join(h.guests) or "-", "-" if h.state != "on" else f"{h.utilization:.0%}")
        out.print(t)
        on = sum(1 for h in loads if h.state == "on")
        out.print(f"{on} host(s) on: {energy[0]:,.0f} kWh a year, {energy[1]:,.0f} {energy[2]} of energy "
                  "(cost model: power curve, PUE, price)", highlight=False)

    table("Before: each server alone on its own host", result.before, result.energy_before)
    out.print("[bold]The balancer's rounds:[/bold]")
    for index, summary in enumerate(result.rounds, 1):
        out.print(f"  {index}. {summary}", highlight=False, soft_wrap=True)
    table("After: consolidated live, the emptied hosts in standby", result.after, result.energy_after)
    saved = result.energy_before[0] - result.energy_after[0]
    out.print(f"[bold]{saved:,.0f} kWh a year saved[/bold]; the timeline: corral balance --log; clean up with: "
              "corral demo --clean")


def _drain(session: SerialConsole, quiet_s: float) -> None:
    """Copy console output to stdout until the guest has said nothing for `quiet_s` seconds."""
    while (chunk := session.read(quiet_s)):
        os.write(sys.stdout.fileno(), chunk)


def _progress() -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), console=err, transient=False)


def _register_extensions() -> None:
    from corral.cli import collect as collect_cli
    from corral.cli import hosts as hosts_cli
    from corral.cli import monitor as monitor_cli
    from corral.cli import plan as plan_cli
    from corral.cli import serve as serve_cli
    from corral.cli import simulate as simulate_cli

    hosts_cli.register(app, corral, out, err)
    hosts_cli.register_migrate(app, corral, out, err)
    hosts_cli.register_balance(app, corral, out, err)
    monitor_cli.register(app, corral, out, err)
    serve_cli.register(app, corral, out, err)
    collect_cli.register(app)
    plan_cli.register(app)
    simulate_cli.register(app)


_register_extensions()


def main() -> None:
    try:
        app()
    except CorralError as exc:
        err.print(f"[red]corral: error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        raise SystemExit(2 if isinstance(exc, InvalidInput) else 1) from None
    except KeyboardInterrupt:
        err.print("corral: interrupted")
        raise SystemExit(130) from None
