"""`corral exec NAME -- CMD …`: a command run in a guest through its QEMU guest agent."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from corral.core.errors import InvalidInput
from corral.services.context import Corral


def register(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_command(name: Annotated[str, typer.Argument(help="Guest name.")],
                     command: Annotated[list[str] | None, typer.Argument(help="The program and its arguments "
                                                                              "(after --).")] = None,
                     timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for it.")] = 60.0,
                     ) -> None:
        """Run a command in the guest through its guest agent (no network or SSH needed), print its output
        and exit with its exit code, like `virsh qemu-agent-command … guest-exec`. A pipeline needs a
        shell: corral exec web -- /bin/sh -c 'ps aux | grep nginx'."""
        if command and command[0] == "--":  # the separator, when Click passes it on
            command = command[1:]
        if not command:
            raise InvalidInput("give the command to run: corral exec NAME -- COMMAND [ARGS…]")
        result = corral().guests.exec(name, command, timeout_s=timeout)
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
        raise typer.Exit(result.exit_code)
