"""A minimal HTTP endpoint that serves `/metrics` in Prometheus' text format."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from corral.core.errors import BackendError, InvalidInput
from corral.monitoring.prometheus import CONTENT_TYPE


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"listen address {text!r} must be HOST:PORT, e.g. 127.0.0.1:9177")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve_metrics(address: str, render: Callable[[], str]) -> ThreadingHTTPServer:
    """Serve `render()` at /metrics from a daemon thread; return the server (call shutdown())."""
    host, port = parse_listen(address)

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
