"""The `corral` command: Typer + Rich over the service layer. No logic lives here."""

from __future__ import annotations

import json
import os
import re
import select
import sys
import termios
import tty
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corral.core.errors import BackendError, CorralError, InvalidInput
from corral.core.spec import spec_from_mapping, spec_from_toml
from corral.monitoring.metrics import HOST_DOMAIN
from corral.services.context import Corral, open_corral

app = typer.Typer(
    name="corral",
    help="End server sprawl: run guests on one host, measure them, plan the consolidation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
    from corral.core.nics import NicInfo

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# The life-cycle states `list --state` takes (libvirt's, as `corral list` shows them).
STATES = ("running", "blocked", "paused", "shutting-down", "shut-off", "crashed", "suspended", "no-state",
          "unreachable")


def _complete_guest(incomplete: str) -> list[str]:
    """Shell completion of a guest's name: the domains of every host that answers (none when libvirt does not)."""
    try:
        names = {row.name for host in corral().hosts for row in host.libvirt.rows()}
    except Exception:  # completion must never print a traceback into the user's command line
        return []
    return sorted(n for n in names if n.startswith(incomplete))


NameArg = Annotated[str, typer.Argument(help="Domain name.", autocompletion=_complete_guest)]
NamesArg = Annotated[list[str], typer.Argument(help="Guest names (one or more).", autocompletion=_complete_guest,
                                               show_default=False)]
TaggedNamesArg = Annotated[list[str] | None, typer.Argument(help="Guest names (one or more), or none with --tag.",
                                                            autocompletion=_complete_guest, show_default=False)]
TagOpt = Annotated[str | None, typer.Option("--tag", help="Every guest with this tag (instead of names).",
                                            show_default=False)]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("corral")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown"
        sys.stdout.write(f"corral {number}\n")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print Corral's version and exit.")] = False) -> None:
    pass


def corral() -> Corral:
    global _corral
    if _corral is None:
        _corral = open_corral()
    return _corral


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def say(message: str) -> None:
    err.print(f"[dim]…[/dim] {message}")


def error(message: str) -> None:
    """The one form of every error: `corral: error: …` on one line of stderr."""
    err.print(f"[red]corral: error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def exit_code(exc: CorralError) -> int:
    return 2 if isinstance(exc, InvalidInput) else 1


def each(names: Iterable[str], action: Callable[[str], str]) -> None:
    """Run `action` on every name (each once, in order), printing its result line; a failure is an error line
    and the others are still done. Exits non-zero when any failed (2 when all failures were bad input)."""
    failures: list[CorralError] = []
    for name in dict.fromkeys(names):
        try:
            line = action(name)
        except CorralError as exc:
            failures.append(exc)
            named = re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", exc.message)
            error(exc.message if named else f"{name}: {exc.message}")
            continue
        out.print(line, highlight=False)
    if failures:
        raise typer.Exit(2 if all(isinstance(exc, InvalidInput) for exc in failures) else 1)


def each_of(names: list[str] | None, tag: str | None, action: Callable[[str], str]) -> None:
    """`each` over the names given or, with --tag, over every guest with that tag, then a summary line."""
    from corral.cli.edit import each_tagged, targets

    chosen = targets(names, tag)
    if tag is None:
        each(chosen, action)
    else:
        each_tagged(corral(), tag, action, each, out)


# --- listing ---------------------------------------------------------------------------------
@app.command("list")
def list_domains(as_json: JsonOpt = False,
                 long: Annotated[bool, typer.Option("--long", "-l", help="Each guest's addresses and NICs too "
                                                                        "(MAC, network).")] = False,
                 host: Annotated[str | None, typer.Option("--host", help="Only this host's domains.")] = None,
                 states: Annotated[list[str] | None, typer.Option(
                     "--state", help=f"Only domains in this state (repeat for several): {', '.join(STATES)}.",
                     show_default=False, autocompletion=lambda incomplete: [s for s in STATES
                                                                            if s.startswith(incomplete)])] = None,
                 tag: Annotated[str | None, typer.Option("--tag", help="Only guests with this tag.",
                                                         show_default=False)] = None,
                 ) -> None:
    """Domain-0 (each host) and every guest, running or not, like `xl list`."""
    for wanted in states or ():
        if wanted not in STATES:
            raise InvalidInput(f"--state {wanted!r}: must be one of {', '.join(STATES)}")
    if tag is not None:
        from corral.core.tags import check_tag

        check_tag(tag)
    c = corral()
    rows = c.guests.listing(host=host, nics=long)
    if states:
        rows = [r for r in rows if r.state in states]
    if tag is not None:
        rows = [r for r in rows if tag in r.tags]
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    several = len(c.hosts) > 1
    table = Table(box=None, header_style="bold")
    columns = ("Host", "Name", "ID", "State", "VCPUs", "Mem (MiB)", "CPU %", "Time (s)")
    for column in columns[0 if several else 1:]:
        table.add_column(column, justify="left" if column in ("Host", "Name", "State") else "right")
    if long:
        table.add_column("Addresses")
        table.add_column("NICs")
    labels = any(r.autostart or r.tags for r in rows)  # columns shown once a guest has autostart or tags
    if labels:
        table.add_column("Autostart")
        table.add_column("Tags")
    for r in rows:
        unreachable = r.state == "unreachable"
        style = "red" if r.reason or unreachable else {"running": "green", "paused": "yellow",
                                                       "shut-off": "dim"}.get(r.state, "")
        state = r.state if unreachable else r.shown_state
        cells = [r.name, "-" if r.id is None else str(r.id), f"[{style}]{state}[/{style}]" if style else state,
                 "-" if unreachable else str(r.vcpus), "-" if unreachable else str(r.memory_mib),
                 "-" if r.cpu_pct is None else f"{r.cpu_pct:.1f}", "-" if unreachable else f"{r.cpu_time_s:.1f}"]
        if long:
            cells += _nic_cells(r.nics)
        if labels:
            cells += ["-" if r.autostart is None else "yes" if r.autostart else "no", ", ".join(r.tags) or "-"]
        table.add_row(*([r.host] if several else []), *cells)
    out.print(table)


@app.command()
def info(name: NameArg, as_json: JsonOpt = False,
         host: Annotated[str | None, typer.Option("--host", help="With Domain-0: which host (default: the local "
                                                                 "one).", show_default=False)] = None) -> None:
    """Everything about one guest; Domain-0: the host, as `corral host show` describes it."""
    if name == HOST_DOMAIN:
        from corral.cli.hosts import show_host_report

        show_host_report(corral().host.report(host), as_json, out)
        return
    if host is not None:
        raise InvalidInput("--host goes with Domain-0 (a guest's host is found by its name)")
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
        elif key == "nics":
            value = "\n".join(nic.describe() for nic in details.nics) or "-"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    out.print(table)


def _nic_cells(nics: list[NicInfo] | None) -> list[str]:
    """`list --long`'s Addresses and NICs cells: a guest's IP addresses, and each NIC's MAC and network."""
    if nics is None:  # Domain-0, or a host that cannot be reached
        return ["-", "-"]
    addresses = [a.cidr for nic in nics for a in nic.addresses]
    where = [f"{nic.mac} {nic.network or nic.bridge or nic.type}" for nic in nics]
    return ["\n".join(addresses) or "-", "\n".join(where) or "-"]


# --- images -------------------------------------------------------------------------------
@image_app.command("build")
def image_build(name: Annotated[str, typer.Argument(help="tiny (Debian kernel + busybox, offline) or debian "
                                                         "(a Debian 12 server from Debian's package registry).")
                               ] = "tiny",
                force: Annotated[bool, typer.Option("--force", help="Rebuild even when cached.")] = False
                ) -> None:
    """Build one of Corral's own images, with progress: tiny, or debian (systemd, openssh-server,
    qemu-guest-agent, cloud-init; about a minute and 600 MiB)."""
    if name not in ("tiny", "debian"):
        raise InvalidInput(f"can build the images 'tiny' and 'debian', not {name!r}; use image import")
    with _progress() as progress:
        task = progress.add_task(f"building {name}", total=1.0)

        def update(step: str, fraction: float) -> None:
            progress.update(task, description=step[:60], completed=fraction)

        images = corral().images
        record = images.build_tiny(update, force=force) if name == "tiny" else images.build_debian(update, force=force)
    size = Path(record.path).stat().st_size if record.path else record.size_bytes
    out.print(f"image [bold]{record.name}[/bold]: kernel {record.kernel_version}, {size / 2**20:.1f} MiB")


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
    wait_timeout: Annotated[float | None, typer.Option("--wait-timeout", help="With --wait: seconds (default: "
                                                                              "boot_timeout_s of the config).")
                            ] = None,
    host: Annotated[str | None, typer.Option("--host", help="The host to make it on, or 'auto' to let "
                                                            "placement choose (default: the local host).")] = None,
    weigher: Annotated[str, typer.Option(help="With --host auto: pack (fill the busiest host that fits) or "
                                              "spread.")] = "pack",
    explain: Annotated[bool, typer.Option("--explain", help="With --host auto: say which filter removed which "
                                                            "host, and each host's weight.")] = False,
    ssh_key: Annotated[list[Path] | None, typer.Option("--ssh-key", help="Disk images: a public key file "
                                                                         "(e.g. ~/.ssh/id_ed25519.pub) for the "
                                                                         "user; repeat for several.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Disk images: the user cloud-init makes (default: "
                                                            "the image's own, e.g. debian).")] = None,
    password_prompt: Annotated[bool, typer.Option("--password-prompt", help="Disk images: ask for the "
                                                                            "user's password (hashed here).")
                               ] = False,
) -> None:
    """Define a guest (and start it with --start). Refused when it would overload the host. A disk image
    gets a cloud-init seed: the guest's name as hostname, --user with --ssh-key keys, DHCP."""
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
        if user is not None:
            fields["user"] = user
        if ssh_key:
            from corral.adapters.files import read_text
            from corral.core.cloudinit import parse_key_file

            fields["ssh_keys"] = [key for path in ssh_key for key in parse_key_file(
                read_text(path.expanduser().absolute(), "SSH key file"), str(path))]
        # The same builder as spec files and the REST API; a relative --iso is relative to here.
        guest = spec_from_mapping(fields, base_dir=Path.cwd(), read_trace=read_load_trace)
    if password_prompt:
        from dataclasses import replace as with_field

        from corral.adapters.passwords import hash_password

        password = typer.prompt(f"password for {guest.user or 'the user'}", hide_input=True,
                                confirmation_prompt=True)
        guest = with_field(guest, password_hash=hash_password(password))
    if (explain or weigher != "pack") and host != "auto":
        raise InvalidInput("--explain and --weigher go with --host auto")
    if host == "auto":
        placement = corral().guests.placement(guest, weigher=weigher)
        if explain:
            for line in placement.explain():
                err.print(line, highlight=False)
        host = placement.chosen or "auto"  # none fits: create says why
    details = corral().guests.create(guest, start=start, wait=wait, progress=say, host=host,
                                     wait_timeout_s=wait_timeout)
    where = f" on {details.host}" if len(corral().hosts) > 1 else ""
    out.print(f"{details.name}: {details.state}{where}")


def _say_for(names: list[str]) -> Callable[[str], Callable[[str], None]]:
    """Progress lines of one guest's action: named when the command was given several."""
    return lambda name: (lambda message: say(f"{name}: {message}")) if len(set(names)) > 1 else say


@app.command()
def start(names: TaggedNamesArg = None, tag: TagOpt = None,
          wait: Annotated[bool, typer.Option("--wait", help="Return when the guest signals it is up (its "
                                                            "readiness line, the guest agent, or running).")
                          ] = False,
          wait_timeout: Annotated[float | None, typer.Option("--wait-timeout", help="With --wait: seconds "
                                                             "(default: boot_timeout_s of the config).")] = None,
          ) -> None:
    """Start guests, one after the other (each refused when it would overload the host)."""
    # With --tag, several guests: each progress line names its guest.
    progress = _say_for(names or []) if tag is None else _say_for(["", "--tag"])

    def one(name: str) -> str:
        details = corral().guests.start(name, wait=wait, progress=progress(name), wait_timeout_s=wait_timeout)
        return f"{details.name}: {details.state}" + (" and up" if wait else "")

    each_of(names, tag, one)


@app.command()
def shutdown(names: TaggedNamesArg = None, tag: TagOpt = None,
             timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean shutdown (of each guest).")
                                ] = 60,
             force: Annotated[bool, typer.Option("--force", help="Power off after the timeout.")] = False
             ) -> None:
    """Ask guests to shut down (ACPI power button) and wait, one after the other."""
    each_of(names, tag,
            lambda name: f"{name}: {corral().guests.shutdown(name, timeout_s=timeout, force=force).state}")


@app.command()
def poweroff(names: TaggedNamesArg = None, tag: TagOpt = None) -> None:
    """Power guests off at once, like pulling the plug."""
    each_of(names, tag, lambda name: f"{name}: {corral().guests.poweroff(name).state}")


@app.command()
def reboot(names: NamesArg) -> None:
    """Reboot guests (ACPI)."""
    each(names, lambda name: f"{name}: {corral().guests.reboot(name).state} (rebooting)")


@app.command()
def pause(names: NamesArg) -> None:
    """Pause running guests (their vCPUs stop; memory stays)."""
    each(names, lambda name: f"{name}: {corral().guests.pause(name).state}")


@app.command()
def resume(names: NamesArg) -> None:
    """Resume paused guests."""
    each(names, lambda name: f"{name}: {corral().guests.resume(name).state}")


@app.command()
def delete(names: NamesArg,
           keep_disks: Annotated[bool, typer.Option("--keep-disks", help="Keep the guests' disks.")] = False
           ) -> None:
    """Delete guests: the domain, its overlay disks, its console log. Powers each off first."""

    def one(name: str) -> str:
        kept = corral().guests.delete(name, keep_disks=keep_disks)
        return f"deleted {name}" + (f"; kept {', '.join(kept)}" if kept else "")

    each(names, one)


@app.command()
def clone(source: Annotated[str, typer.Argument(help="A shut-off guest.")],
          new: Annotated[str, typer.Argument(help="Name of the copy.")]) -> None:
    """Copy a shut-off guest: its own disk data is copied, the base image shared."""
    out.print(f"{corral().guests.clone(source, new).name}: cloned from {source}")


@snapshot_app.command("create")
def snapshot_create(name: Annotated[str, typer.Argument(help="Domain name (with --tag: the snapshot name).",
                                                       autocompletion=_complete_guest)],
                    snapshot: Annotated[str | None, typer.Argument(help="Snapshot name.")] = None,
                    tag: TagOpt = None) -> None:
    """Snapshot a guest (memory too when it runs); with --tag SNAPSHOT, every guest with the tag."""
    if tag is not None:
        if snapshot is not None:
            raise InvalidInput("with --tag, give only the snapshot's name")
        each_of(None, tag, lambda guest: f"{guest}: snapshot {name} "
                                         f"({corral().guests.snapshot_create(guest, name).state})")
        return
    if snapshot is None:
        raise InvalidInput("give the guest's name and the snapshot's name (or --tag TAG and the snapshot's name)")
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
    from corral.cli import agent as agent_cli
    from corral.cli import collect as collect_cli
    from corral.cli import devices as devices_cli
    from corral.cli import edit as edit_cli
    from corral.cli import hosts as hosts_cli
    from corral.cli import media as media_cli
    from corral.cli import monitor as monitor_cli
    from corral.cli import plan as plan_cli
    from corral.cli import serve as serve_cli
    from corral.cli import simulate as simulate_cli

    hosts_cli.register(app, corral, out, err)
    hosts_cli.register_migrate(app, corral, out, err)
    hosts_cli.register_balance(app, corral, out, err)
    monitor_cli.register(app, corral, out, err)
    media_cli.register(app, corral, out, err)
    edit_cli.register(app, corral, out, err)
    devices_cli.register(app, corral, out, err)
    agent_cli.register(app, corral, out, err)
    serve_cli.register(app, corral, out, err)
    collect_cli.register(app)
    plan_cli.register(app)
    simulate_cli.register(app)


_register_extensions()


def command() -> click.Command:
    """The `corral` command as Click runs it. A parameter without a default shows none in its help, and one
    without an environment variable names none when it is missing (Typer 0.16 would print `[default: None]`
    and `(env var: 'None')`)."""
    root = typer.main.get_command(app)

    def tidy(cmd: click.Command) -> None:
        for param in cmd.params:
            if isinstance(param, click.Option | typer.core.TyperArgument) and (param.default is None or param.required):
                param.show_default = False
            if isinstance(param, click.Option) and param.envvar is None:
                param.show_envvar = False
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                tidy(sub)

    tidy(root)
    return root


def main() -> None:
    """Run `corral`; every error, Corral's or the command line's, is one `corral: error: …` line on stderr."""
    try:
        code = command().main(prog_name="corral", standalone_mode=False)
    except CorralError as exc:
        error(exc.message)
        raise SystemExit(exit_code(exc)) from None
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `corral` or `corral image`: the help (Typer has
        if exc.format_message():                         # printed it already, Click without Rich has not)
            click.echo(exc.format_message(), err=True)
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        hint = f" Try '{exc.ctx.command_path} --help'." if isinstance(exc, click.UsageError) and exc.ctx else ""
        error(exc.format_message() + hint)
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        error("aborted")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        err.print("corral: interrupted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
