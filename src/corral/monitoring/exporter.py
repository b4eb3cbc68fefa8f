"""A minimal HTTP endpoint that serves `/metrics` in Prometheus' text format."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from corral.core.errors import BackendError, InvalidInput
from corral.monitoring.prometheus import CONTENT_TYPE


def parse_listen(text: str, example: str = "127.0.0.1:9177") -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (loopback)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"listen address {text!r}: expected HOST:PORT, e.g. {example}")
    host = host.strip("[]") or "127.0.0.1"
    if any(ch.isspace() for ch in host) or "/" in host:
        raise InvalidInput(f"listen address {text!r}: {host!r} is not a host name or address")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_metrics(address: str, render: Callable[[], str]) -> ThreadingHTTPServer:
    """Serve `render()` at /metrics from a daemon thread; return the server (call shutdown())."""
    host, port = parse_listen(address)
    if not is_loopback(host):  # no authentication here: remote scrapers go through `corral serve` and a token
        raise InvalidInput(f"--prometheus {address!r}: only a loopback address; for remote scraping use "
                           "`corral serve` and its /metrics with an API token")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is here")
                return
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise BackendError(f"cannot listen on {address}: {exc.strerror}") from None
    threading.Thread(target=server.serve_forever, name="prometheus", daemon=True).start()
    return server
