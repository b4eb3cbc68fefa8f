"""A minimal HTTP endpoint that serves `/metrics` in Prometheus' text format."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from corral.core.errors import BackendError, InvalidInput
from corral.core.validate import is_loopback, parse_listen
from corral.monitoring.prometheus import CONTENT_TYPE


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
