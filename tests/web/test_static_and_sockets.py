"""The web UI's files as `corral serve` serves them, and the console WebSockets' refusals (no browser, no boot)."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from corral.config import Settings
from corral.services.users import UserStore, users_path

from .conftest import USER, unique

pytestmark = pytest.mark.libvirt


@pytest.fixture(scope="module")
def bearer(server: str, settings: Settings) -> dict[str, str]:
    token, _ = UserStore(users_path(settings.data_dir)).create_token(USER, "web tests")
    return {"Authorization": f"Bearer {token}"}


def test_the_ui_is_served_at_the_root_without_credentials(server: str) -> None:
    home = httpx.get(f"{server}/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/app.js">' in home.text and 'href="/api/docs"' in home.text
    csp = home.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
    assert home.headers["x-frame-options"] == "DENY" and home.headers["cache-control"] == "no-cache"
    for path, kind in [("/ui/app.css", "text/css"), ("/ui/js/app.js", "text/javascript"),
                       ("/ui/vendor/xterm/xterm.mjs", "text/javascript"), ("/ui/vendor/xterm/xterm.css", "text/css"),
                       ("/ui/vendor/novnc/core/rfb.js", "text/javascript")]:
        response = httpx.get(f"{server}{path}")
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), path
    missing = httpx.get(f"{server}/ui/js/nothing.js")
    assert missing.status_code == 404 and missing.json() == {"error": "no such file of the web UI"}
    assert httpx.post(f"{server}/ui/app.css").status_code == 405
    # Nothing outside the static folder, and the API stays behind authentication.
    escape = httpx.get(f"{server}/ui/..%2F..%2Fapi%2Fapp.py")
    assert escape.status_code == 404
    assert httpx.get(f"{server}/api/domains").status_code == 401
    # The API documentation's page loads Swagger UI from the vendored files, never from a CDN.
    docs = httpx.get(f"{server}/api/docs")
    assert docs.status_code == 200 and "/ui/vendor/swagger/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert httpx.get(f"{server}/ui/vendor/swagger/swagger-ui-bundle.js").status_code == 200


def test_console_sockets_need_credentials_and_a_ticket(server: str, bearer: dict[str, str]) -> None:
    ws = server.replace("http://", "ws://")
    guest = unique("ticket")
    created = httpx.post(f"{server}/api/domains", headers=bearer, json={"name": guest, "image": "tiny", "memory": 128})
    assert created.status_code == 201, created.text
    try:
        with pytest.raises(InvalidStatus):  # no cookie, no token: refused before the handshake
            connect(f"{ws}/api/ws/console/{guest}?ticket=x", open_timeout=10)
        for path in (f"/api/ws/console/{guest}", f"/api/ws/vnc/{guest}"):
            with connect(f"{ws}{path}?ticket=forged", additional_headers=bearer, open_timeout=10) as conn, \
                    pytest.raises(ConnectionClosed) as closed:
                conn.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
            assert "ticket" in closed.value.rcvd.reason
        # A good ticket for a shut-off guest: redeemed, then the guest has no console to give (409).
        for kind in ("console", "vnc"):
            ticket = httpx.post(f"{server}/api/domains/{guest}/console-ticket", headers=bearer).json()["ticket"]
            with connect(f"{ws}/api/ws/{kind}/{guest}?ticket={ticket}", additional_headers=bearer,
                         open_timeout=10) as conn, pytest.raises(ConnectionClosed) as closed:
                conn.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409, closed.value.rcvd
            # ... and the ticket was good once.
            with connect(f"{ws}/api/ws/{kind}/{guest}?ticket={ticket}", additional_headers=bearer,
                         open_timeout=10) as conn, pytest.raises(ConnectionClosed) as again:
                conn.recv(timeout=10)
            assert again.value.rcvd is not None and again.value.rcvd.code == 4403
        # A ticket for one guest does not open another.
        ticket = httpx.post(f"{server}/api/domains/{guest}/console-ticket", headers=bearer).json()["ticket"]
        with connect(f"{ws}/api/ws/console/ct-web-other?ticket={ticket}", additional_headers=bearer,
                     open_timeout=10) as conn, pytest.raises(ConnectionClosed) as other:
            conn.recv(timeout=10)
        assert other.value.rcvd is not None and other.value.rcvd.code == 4403
    finally:
        httpx.delete(f"{server}/api/domains/{guest}", headers=bearer)
