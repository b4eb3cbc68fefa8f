"""`corral monitor --prometheus`: Corral's registry served by prometheus_client's own HTTP server."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from corral.core.errors import BackendError, InvalidInput
from corral.core.validate import is_loopback, parse_listen


def serve_metrics(address: str, registry: CollectorRegistry) -> WSGIServer:
    """Serve `registry` at http://ADDRESS/metrics from a daemon thread; return the server (call shutdown())."""
    host, port = parse_listen(address)
    if not is_loopback(host):  # no authentication here: remote scrapers go through `corral serve` and a token
        raise InvalidInput(f"--prometheus {address!r}: only a loopback address; for remote scraping use "
                           "`corral serve` and its /metrics with an API token")
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise BackendError(f"cannot listen on {address}: {exc.strerror}") from None
    return server
