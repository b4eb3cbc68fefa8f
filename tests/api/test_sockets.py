"""Every refusal of the WebSockets (/api/ws/console, /api/ws/vnc, /api/ws/stats) and the codes docs/api.md
gives for them: before the socket opens, the handshake gets the HTTP error (JSON, like any route); after,
the socket closes with 4000 + the HTTP status of the same error."""

from __future__ import annotations

import contextlib
import re
import socket
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from corral.api.app import create_app
from corral.api.middleware import LOOPBACK_HOSTS
from corral.core.errors import BackendError
from corral.core.spec import GuestSpec
from corral.services.context import Corral

from .conftest import PASSWORD, USER, Api, Credentials, unique

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse
    from starlette.websockets import WebSocketDisconnect


API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _documented_codes() -> set[int]:
    """The statuses and close codes in the tables of docs/api.md's section "WebSocket refusals"."""
    text = API_MD.read_text()
    section = text[text.index("### WebSocket refusals"):]
    section = section[:section.index("\n## ")]
    return {int(code) for code in re.findall(r"^\| (\d{3,4}) \|", section, re.MULTILINE)}


DOCUMENTED = _documented_codes()


def _denied(client: TestClient, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """The HTTP status and error of a handshake refused before the socket opens."""
    with pytest.raises(WebSocketDenialResponse) as denied, \
            client.websocket_connect(url, headers=dict(headers or {})):
        pass
    body = denied.value.json()
    assert set(body) == {"error"} and denied.value.status_code in DOCUMENTED, (denied.value.status_code, body)
    return denied.value.status_code, str(body["error"])


def _closed(client: TestClient, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """The close code and reason of a socket that opened, then was refused."""
    with pytest.raises(WebSocketDisconnect) as closed, \
            client.websocket_connect(url, headers=dict(headers or {})) as ws:
        ws.receive_bytes()
    assert not isinstance(closed.value, WebSocketDenialResponse)
    assert closed.value.code in DOCUMENTED, (closed.value.code, closed.value.reason)
    return closed.value.code, closed.value.reason


def _ticket(api: Api, guest: str, headers: dict[str, str] | None = None) -> str:
    response = api.client.post(f"/api/domains/{guest}/console-ticket", headers=headers or api.bearer)
    assert response.status_code == 200, response.text
    return str(response.json()["ticket"])


@pytest.fixture
def corral(offline: Corral) -> Corral:
    """No daemon needed here: libvirt's test driver."""
    return offline


@pytest.fixture
def guest(api: Api) -> str:
    name = unique("sock")
    api.corral.guests.create(GuestSpec(name, "tiny", memory_mib=128))
    return name


def test_refusals_before_the_socket_opens_are_http_errors(api: Api, corral: Corral, credentials: Credentials,
                                                          guest: str) -> None:
    for path in ("/api/ws/stats", f"/api/ws/console/{guest}?ticket=x", f"/api/ws/vnc/{guest}?ticket=x"):
        assert _denied(api.client, path)[0] == 401
        assert _denied(api.client, path, {"Authorization": "Bearer corral_nope.nope"}) == (
            401, "invalid or revoked API token")
        assert _denied(api.client, path, {"Cookie": "corral_session=forged"})[0] == 401
    api.login()
    assert _denied(api.client, "/api/ws/stats", {"Origin": "https://evil.example"}) == (
        403, "cross-origin WebSocket refused")
    assert _denied(api.client, "/api/ws/nothing", api.bearer) == (404, "no such WebSocket: /api/ws/nothing")
    with TestClient(create_app(corral, allowed_hosts=LOOPBACK_HOSTS), base_url="http://127.0.0.1") as client:
        status, error = _denied(client, "/api/ws/stats", {**credentials.bearer, "Host": "evil.example"})
        assert status == 400 and "Host" in error
        with client.websocket_connect("/api/ws/stats", headers={**credentials.bearer, "Host": "127.0.0.1:8080"}):
            pass  # opens


@pytest.mark.parametrize("kind", ["console", "vnc"])
def test_refusals_after_the_socket_opens_close_with_4000_plus_the_status(api: Api, guest: str, kind: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"/api/ws/{kind}"
    b = api.bearer
    assert _closed(api.client, f"{url}/a'b?ticket=x", b)[0] == 4422
    assert _closed(api.client, f"{url}/Domain-0?ticket=x", b) == (4422, "domain name 'Domain-0' is reserved for "
                                                                          "the host itself")
    for ticket in ("", "?ticket=", "?ticket=forged"):
        assert _closed(api.client, f"{url}/{guest}{ticket}", b) == (
            4403, "invalid or expired console ticket: ask for a new one")
    assert _closed(api.client, f"{url}/ct-api-other?ticket={_ticket(api, guest)}", b)[0] == 4403  # another guest
    api.login()
    session_ticket = _ticket(api, guest, api.csrf_header)
    assert _closed(api.client, f"{url}/{guest}?ticket={session_ticket}", b)[0] == 4403  # another principal
    used = _ticket(api, guest)
    code, reason = _closed(api.client, f"{url}/{guest}?ticket={used}", b)
    assert code == 4409 and guest in reason and "shut-off" in reason
    assert _closed(api.client, f"{url}/{guest}?ticket={used}", b)[0] == 4403  # a ticket is good once
    late = _ticket(api, guest)
    api.clock.advance(31)
    assert _closed(api.client, f"{url}/{guest}?ticket={late}", b)[0] == 4403  # expired
    # libvirt (or the display) cannot be reached: 4502.
    if kind == "console":
        def broken(name: str, force: bool = False) -> Any:
            raise BackendError(f"cannot open the console of {name}: libvirt is gone")
        monkeypatch.setattr(api.corral.guests, "open_console", broken)
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        info = api.corral.guests.info

        def running_with_display(name: str) -> Any:
            return replace(info(name), state="running", vnc=f"127.0.0.1:{closed_port}")
        monkeypatch.setattr(api.corral.guests, "info", running_with_display)
    code, reason = _closed(api.client, f"{url}/{guest}?ticket={_ticket(api, guest)}", b)
    assert code == 4502 and guest in reason
    monkeypatch.undo()
    # The guest is gone by the time the ticket is used: 4404.
    ticket = _ticket(api, guest)
    api.corral.guests.delete(guest)
    assert _closed(api.client, f"{url}/{guest}?ticket={ticket}", b) == (4404, f"no domain named {guest!r}")


def test_the_docs_list_the_codes_the_sockets_use() -> None:
    """The tests here meet each of these (and check each code they meet is documented)."""
    assert {400, 401, 403, 404, 4403, 4404, 4409, 4422, 4502} == DOCUMENTED


def test_the_server_answers_a_refused_handshake_with_its_http_status(
        settings: Any, credentials: Credentials, tmp_path: Path,
        running_serve: Callable[..., contextlib.AbstractContextManager[str]]) -> None:
    with running_serve(settings.data_dir, tmp_path / "none.toml", "--no-sampler") as base:
        ws = base.replace("http://", "ws://")
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws}/api/ws/stats", open_timeout=10)
        assert refused.value.response.status_code == 401
        assert b"authentication required" in refused.value.response.body
        with httpx.Client(base_url=base) as client:
            assert client.post("/api/login", json={"user": USER, "password": PASSWORD}).status_code == 200
            cookie = f"corral_session={client.cookies['corral_session']}"
        with pytest.raises(InvalidStatus) as cross:
            connect(f"{ws}/api/ws/stats", additional_headers={"Cookie": cookie, "Origin": "https://evil.example"},
                    open_timeout=10)
        assert cross.value.response.status_code == 403
        with connect(f"{ws}/api/ws/stats", additional_headers={"Cookie": cookie, "Origin": base},
                     open_timeout=10, max_size=None) as conn, pytest.raises(ConnectionClosed) as too_big:
            conn.send("x" * (2 * 1024 * 1024))  # one message may be max_body_bytes at most
            conn.recv(timeout=10)
        assert too_big.value.rcvd is not None and too_big.value.rcvd.code == 1009  # message too big
