"""`corral demo`: the classic server-sprawl case, run for real on this host.

Five departmental servers, each once alone on its own machine at about 15 % utilization,
become five guests of the built-in image, each running a workload that reproduces its
server's load (CPU, disk and network), side by side on one host.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from corral.adapters.libvirt_host import ACTIVE_STATES
from corral.core.spec import GuestSpec, LoadSpec
from corral.services.context import Corral
from corral.services.images import TINY


@dataclass(frozen=True)
class DemoServer:
    name: str
    role: str
    load: LoadSpec  # what the physical server was measured doing, on average
    memory_mib: int = 160


DEMO_SERVERS = (
    DemoServer("web", "intranet web server", LoadSpec(cpu_pct=15, disk_kbps=32, net_kbps=96)),
    DemoServer("mail", "mail server", LoadSpec(cpu_pct=12, disk_kbps=64, net_kbps=48)),
    DemoServer("files", "file server", LoadSpec(cpu_pct=10, disk_kbps=256, net_kbps=128)),
    DemoServer("db", "database server", LoadSpec(cpu_pct=18, disk_kbps=128, net_kbps=32)),
    DemoServer("directory", "directory (LDAP/DNS)", LoadSpec(cpu_pct=8, disk_kbps=8, net_kbps=16)),
)


def run_demo(corral: Corral, out: Console, *, clean: bool = False) -> None:
    err = Console(stderr=True)
    if clean:
        for server in DEMO_SERVERS:
            if corral.libvirt.exists(server.name):
                corral.guests.delete(server.name)
                out.print(f"deleted {server.name}")
        return
    if not corral.images.exists(TINY):
        with _progress(err) as progress:
            task = progress.add_task("building the tiny image", total=1.0)
            corral.images.build_tiny(lambda step, f: progress.update(task, description=step, completed=f))

    table = Table(title="Before: five servers, one machine each", title_justify="left", box=None,
                  header_style="bold")
    for column in ("server", "role", "CPU %", "disk KiB/s", "net KiB/s"):
        table.add_column(column)
    for s in DEMO_SERVERS:
        table.add_row(s.name, s.role, f"{s.load.cpu_pct:g}", str(s.load.disk_kbps), str(s.load.net_kbps))
    out.print(table)

    with _progress(err) as progress:
        task = progress.add_task("consolidating", total=len(DEMO_SERVERS))
        for server in DEMO_SERVERS:
            progress.update(task, description=f"{server.name}: creating")
            if not corral.libvirt.exists(server.name):
                spec = GuestSpec(server.name, TINY, vcpus=1, memory_mib=server.memory_mib, load=server.load)
                corral.guests.create(spec)
            if corral.libvirt.state(server.name) not in ACTIVE_STATES:
                progress.update(task, description=f"{server.name}: booting")
                corral.guests.start(server.name, wait=True)
            progress.advance(task)
        progress.update(task, description="all five up")

    listing = Table(title="After: one host runs them all", title_justify="left", box=None, header_style="bold")
    for column in ("Name", "ID", "State", "VCPUs", "Mem (MiB)", "CPU %"):
        listing.add_column(column)
    for row in corral.guests.listing(sample_s=1.0):
        listing.add_row(row.name, "-" if row.id is None else str(row.id), row.state, str(row.vcpus),
                        str(row.memory_mib), "-" if row.cpu_pct is None else f"{row.cpu_pct:.1f}")
    out.print(listing)
    out.print("Clean up with: corral demo --clean")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<30}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=console)
