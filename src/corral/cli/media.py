"""`corral media …`: a guest's removable media (the ISO in its CD drive)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from corral.services.context import Corral


def register(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    media_app = typer.Typer(help="A guest's removable media: the ISO in its CD drive.", no_args_is_help=True)
    app.add_typer(media_app, name="media")

    @media_app.command("eject")
    def eject(name: Annotated[str, typer.Argument(help="Guest name.")],
              device: Annotated[str | None, typer.Option("--device", help="Only this CD drive (e.g. sda); "
                                                                          "default: every drive with media.")
                                ] = None) -> None:
        """Take the ISO out of the guest's CD drive, running or not (after an install from it). The drive
        stays, empty; the guest boots from its disk."""
        before = {d["path"] for d in corral().guests.info(name).disks if d.get("device") == "cdrom"}
        info = corral().guests.media_eject(name, device)
        after = {d["path"] for d in info.disks if d.get("device") == "cdrom"}
        for path in sorted(before - after):
            out.print(f"{name}: ejected {path}", soft_wrap=True, highlight=False)
