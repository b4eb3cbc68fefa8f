"""`corral autostart`, `corral set`, `corral tag` and `corral untag`: changing a defined guest; and
`each_tagged`, which runs a life-cycle command on every guest with a tag (`corral start --tag prod`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

import typer
from rich.console import Console

from corral.core.errors import InvalidInput
from corral.core.resources import Change, Resources
from corral.services.context import Corral
from corral.services.guests import GuestInfo

NameArg = Annotated[str, typer.Argument(help="Guest name.")]
TagsArg = Annotated[list[str], typer.Argument(help="Tags: 1-32 lowercase letters, digits, '.', '_' or '-'.",
                                              show_default=False)]


def each_tagged(c: Corral, tag: str, action: Callable[[str], str],
                each: Callable[[Iterable[str], Callable[[str], str]], None], out: Console) -> None:
    """`each(names, action)` over every guest with `tag`, then a summary line (also when some failed: `each`
    exits non-zero then, and that exit is kept)."""
    names = c.edit.tagged(tag)
    done: list[str] = []

    def counted(name: str) -> str:
        line = action(name)
        done.append(name)
        return line

    try:
        each(names, counted)
    finally:
        failed = len(names) - len(done)
        out.print(f"tag {tag}: {len(done)} of {len(names)} guest(s) done" + (f", {failed} failed" if failed else ""),
                  highlight=False)


def targets(names: list[str] | None, tag: str | None) -> list[str]:
    """The names a command was given, checked against --tag: one or the other."""
    if tag is not None and names:
        raise InvalidInput("give guest names or --tag, not both")
    if tag is None and not names:
        raise InvalidInput("give one or more guest names, or --tag TAG")
    return list(names or [])


def _figures(r: Resources) -> str:
    return f"{r.vcpus} vCPUs (max {r.max_vcpus}), {r.memory_mib} MiB (max {r.max_memory_mib})"


def _shown(info: GuestInfo) -> str:
    return ", ".join(info.tags) or "no tags"


def register(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    @app.command()
    def autostart(name: NameArg,
                  switch: Annotated[str, typer.Argument(metavar="on|off", help="on: start it with its host's "
                                                                               "libvirt; off: do not.")]) -> None:
        """Start a guest when its host starts (libvirt's autostart). Refused when the host's autostart guests
        would not fit its admission guard started together."""
        if switch not in ("on", "off"):
            raise InvalidInput(f"autostart {switch!r}: say on or off")
        info = corral().edit.set_autostart(name, switch == "on")
        out.print(f"{info.name}: autostart {'on' if info.autostart else 'off'}", highlight=False)

    @app.command("set")
    def set_resources(
        name: NameArg,
        vcpus: Annotated[int | None, typer.Option("--vcpus", help="Virtual CPUs.")] = None,
        memory: Annotated[int | None, typer.Option("--memory", help="Memory in MiB.")] = None,
        max_vcpus: Annotated[int | None, typer.Option("--max-vcpus", help="The definition's maximum vCPUs: how "
                                                                           "far a later live raise can go.")] = None,
        max_memory: Annotated[int | None, typer.Option("--max-memory", help="The definition's maximum memory in "
                                                                            "MiB (the balloon's ceiling).")] = None,
        live: Annotated[bool, typer.Option("--live", help="Also change the running guest now (the balloon, vCPU "
                                                          "hot-plug), within its maximum.")] = False,
    ) -> None:
        """Change a guest's vCPUs and memory for its next boot (and with --live in the running guest too).
        A raise is checked by the admission guard; a refused change changes nothing."""
        result = corral().edit.set_resources(name, Change(vcpus, memory, max_vcpus, max_memory), live=live)
        out.print(f"{result.name}: from the next boot {_figures(result.next_boot)}", highlight=False)
        if result.live is not None:
            out.print(f"{result.name}: {'now' if live else 'running until then with'} {_figures(result.live)}",
                      highlight=False)

    @app.command()
    def tag(name: NameArg, tags: TagsArg) -> None:
        """Add tags to a guest (kept in Corral's metadata in its domain XML)."""
        out.print(f"{name}: {_shown(corral().edit.tag(name, tags))}", highlight=False)

    @app.command()
    def untag(name: NameArg, tags: TagsArg) -> None:
        """Remove tags from a guest."""
        out.print(f"{name}: {_shown(corral().edit.untag(name, tags))}", highlight=False)
