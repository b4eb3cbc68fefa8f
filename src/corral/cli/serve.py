"""`corral serve` (the REST API, the sampler, and later the web UI, in one process) and `corral user`."""

from __future__ import annotations

import getpass
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.core.errors import Conflict, CorralError, InvalidInput
from corral.core.validate import is_loopback
from corral.core.validate import parse_listen as parse_listen_address
from corral.services.context import Corral
from corral.services.users import UserStore, users_path

DEFAULT_LISTEN = "127.0.0.1:8080"
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this


def parse_listen(text: str) -> tuple[str, int]:
    return parse_listen_address(text, DEFAULT_LISTEN)


def read_password(prompt: str = "Password") -> str:
    """Twice from a hidden prompt on a terminal; one line from standard input otherwise."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass(f"{prompt} (again): ") != first:
            raise InvalidInput("the two passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise InvalidInput("no password on standard input")
    return line.removesuffix("\n").removesuffix("\r")


def register(app: typer.Typer, corral: Callable[[], Corral], out: Console, err: Console) -> None:
    user_app = typer.Typer(help="Users of the REST API and their API tokens.", no_args_is_help=True)
    app.add_typer(user_app, name="user")

    def store() -> UserStore:
        return UserStore(users_path(corral().settings.data_dir))

    @app.command()
    def serve(
        listen: Annotated[str, typer.Option(help="HOST:PORT to listen on (another than loopback needs a user).")
                          ] = DEFAULT_LISTEN,
        certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM): serve https.")] = None,
        keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
        sampler: Annotated[bool, typer.Option("--sampler/--no-sampler",
                                              help="Run the monitoring sampler in the background.")] = True,
        balancer: Annotated[bool, typer.Option("--balancer/--no-balancer",
                                               help="Run the balancer (its mode, in the config or set at run "
                                                    "time, decides what it does).")] = True,
    ) -> None:
        """The REST API (docs at /api/docs) with the monitoring sampler and live stats, in one process."""
        import uvicorn

        from corral.api.app import create_app
        from corral.api.middleware import LOOPBACK_HOSTS
        from corral.api.server import guarded_http_protocol

        host, port = parse_listen(listen)
        if (certfile is None) != (keyfile is None):
            raise InvalidInput("give both --certfile and --keyfile, or neither")
        c = corral()
        users = store()
        if not users.has_users():
            if not is_loopback(host):
                raise InvalidInput(f"refusing to listen on {host}:{port} without authentication: "
                                   "add a user first (corral user add NAME)")
            err.print("[yellow]no users yet: every API call will be refused until you add one "
                      "(corral user add NAME)[/yellow]")
        scheme = "https" if certfile else "http"
        if not is_loopback(host) and certfile is None:
            err.print(f"[yellow]serving plain http on {host}: passwords, cookies and tokens cross the network "
                      "unencrypted; give --certfile and --keyfile, or put a TLS proxy in front[/yellow]")
        shown = f"[{host}]" if ":" in host else host
        err.print(f"Corral API at {scheme}://{shown}:{port}/ (docs at /api/docs); Ctrl-C stops")
        # On loopback, only loopback names in Host: a web page cannot reach the API by DNS rebinding.
        named = (host if ":" not in host else f"[{host}]").lower()
        allowed = LOOPBACK_HOSTS | {named} if is_loopback(host) else None
        _log_to_stderr()
        limits = c.settings.api
        api = create_app(c, sampler=sampler, allowed_hosts=allowed, balancer=balancer)
        config = uvicorn.Config(api, host=host, port=port,
                                log_level="warning",
                                access_log=False, ssl_certfile=str(certfile) if certfile else None,
                                ssl_keyfile=str(keyfile) if keyfile else None, lifespan="on",
                                # Slow clients: a silent keep-alive connection ends after KEEP_ALIVE_S, a
                                # request head or an unread body must arrive within body_timeout_s.
                                http=guarded_http_protocol(limits.body_timeout_s), timeout_keep_alive=KEEP_ALIVE_S,
                                ws_max_size=limits.max_body_bytes,  # one WebSocket message, like one body
                                # The client's address is the socket's peer: X-Forwarded-For is not believed
                                # (the login throttle counts per address).
                                proxy_headers=False)
        uvicorn.Server(config).run()

    @user_app.command("add")
    def user_add(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
        """Add a user. The password comes from a hidden prompt (twice), or one line of standard input."""
        users = store()
        if users.exists(name):
            raise Conflict(f"a user named {name!r} already exists")
        users.add(name, read_password())
        out.print(f"added user {name}")

    @user_app.command("list")
    def user_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """Users and their API tokens (labels only: tokens are shown once, when made)."""
        infos = store().list()
        if as_json:
            sys.stdout.write(json.dumps([u.as_dict() for u in infos], indent=2) + "\n")
            return
        table = Table(box=None, header_style="bold")
        for column in ("User", "Created", "Tokens"):
            table.add_column(column)
        for u in infos:
            table.add_row(u.name, u.created, ", ".join(f"{t.id} ({t.label or 'no label'})" for t in u.tokens) or "-")
        out.print(table)

    @user_app.command("remove")
    def user_remove(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
        """Remove a user, their tokens and (in a running server) their sessions."""
        store().remove(name)
        out.print(f"removed user {name}")

    @user_app.command("token")
    def user_token(name: Annotated[str, typer.Argument(help="User name.")],
                   label: Annotated[str, typer.Option(help="What the token is for.")] = "") -> None:
        """Make an API token for scripts (Authorization: Bearer ...). It is shown once: keep it."""
        token, info = store().create_token(name, label)
        err.print(f"token {info.id} for {name}; it is shown once:")
        sys.stdout.write(token + "\n")

    @user_app.command("revoke")
    def user_revoke(name: Annotated[str, typer.Argument(help="User name.")],
                    token_id: Annotated[str, typer.Argument(help="Token id (see: corral user list).")]) -> None:
        """Revoke one API token."""
        store().revoke_token(name, token_id)
        out.print(f"revoked token {token_id} of {name}")


def _log_to_stderr() -> None:
    """Corral's warnings (refused logins, a stopped sampler) on standard error, with the time."""
    logger = logging.getLogger("corral")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def main() -> None:
    """`python -m corral.cli.serve serve|user ...`: these commands alone, until `corral` itself has them."""
    from corral.services.context import open_corral

    standalone = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    opened: list[Corral] = []

    def corral() -> Corral:
        if not opened:
            opened.append(open_corral())
        return opened[0]

    err = Console(stderr=True)
    register(standalone, corral, Console(), err)
    try:
        standalone()
    except CorralError as exc:
        err.print(f"[red]corral: error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        raise SystemExit(2 if isinstance(exc, InvalidInput) else 1) from None


if __name__ == "__main__":
    main()
