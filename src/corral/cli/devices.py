"""`corral disk …` and `corral nic …`: a guest's disks and NICs, hot-plugged while it runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from corral.services.context import Corral

Name = Annotated[str, typer.Argument(help="Guest name.")]
Device = Annotated[str, typer.Argument(help="The disk's target in the guest's definition (vdb; see corral info).")]
SizeGiB = Annotated[float, typer.Option("--size", help="GiB (0.01 to 16384).", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a line.")]


def register(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    disk_app = typer.Typer(help="A guest's disks: add, grow and remove them, hot-plugged while it runs.",
                           no_args_is_help=True)
    nic_app = typer.Typer(help="A guest's NICs: add and remove them, hot-plugged while it runs.",
                          no_args_is_help=True)
    app.add_typer(disk_app, name="disk")
    app.add_typer(nic_app, name="nic")

    def show(change: Any, as_json: bool) -> None:
        if as_json:
            sys.stdout.write(json.dumps(change.as_dict(), indent=2) + "\n")
        else:
            out.print(change.describe(), soft_wrap=True, highlight=False, markup=False)

    @disk_app.command("add")
    def disk_add(name: Name, size: SizeGiB, as_json: Json = False) -> None:
        """Give the guest a new blank disk (the next free vdX): a volume of its host's storage pool that goes
        away with the guest (unless corral delete --keep-disks)."""
        show(corral().devices.add_disk(name, size), as_json)

    @disk_app.command("remove")
    def disk_remove(name: Name, device: Device,
                    keep: Annotated[bool, typer.Option("--keep", help="Keep the disk's volume in the pool.")] = False,
                    as_json: Json = False) -> None:
        """Detach a disk (a running guest releases it first) and delete its volume. The boot disk (vda) stays."""
        show(corral().devices.remove_disk(name, device, keep=keep), as_json)

    @disk_app.command("resize")
    def disk_resize(name: Name, device: Device, size: SizeGiB, as_json: Json = False) -> None:
        """Grow a disk to --size GiB; a running guest sees the new size at once. A disk never shrinks: a
        smaller size is refused."""
        show(corral().devices.resize_disk(name, device, size), as_json)

    @nic_app.command("add")
    def nic_add(name: Name,
                network: Annotated[str | None, typer.Option("--network", help="A libvirt network of the guest's "
                                                            "host (default: the one new guests join).")] = None,
                as_json: Json = False) -> None:
        """Give the guest a new virtio NIC with a new MAC."""
        show(corral().devices.add_nic(name, network), as_json)

    @nic_app.command("remove")
    def nic_remove(name: Name, mac: Annotated[str, typer.Argument(help="The NIC's MAC (see corral info).")],
                   as_json: Json = False) -> None:
        """Detach a NIC (a running guest releases it first)."""
        show(corral().devices.remove_nic(name, mac), as_json)
