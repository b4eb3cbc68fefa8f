"""Bounded requests: bodies over the limit get 413 before they are read, on every route; slow bodies get 408;
slow request heads are cut off; `corral serve`'s memory stays flat under oversized requests; /api/health
answers while every worker thread is busy."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.api.app import create_app
from corral.api.middleware import BodyLimit
from corral.config import ApiSettings, Settings, load_settings
from corral.core.errors import InvalidInput
from corral.services.context import Corral

from .conftest import MIB, PASSWORD, USER, Api, Credentials, PeakRss

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient




@pytest.fixture
def corral(offline: Corral) -> Corral:
    """No daemon needed here: libvirt's test driver."""
    return offline


def _login_body(size: int) -> bytes:
    return b'{"user": "alice", "password": "' + b"x" * size + b'"}'


# --- in process -------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_refused_on_every_route_before_authentication(api: Api) -> None:
    big = b"{" + b" " * (2 * MIB) + b"}"
    json_type = {"Content-Type": "application/json"}
    for method, path, headers in [
        ("POST", "/api/login", {}),  # public
        ("POST", "/api/domains", {}),  # not public, no credentials: 413 comes first, not 401
        ("POST", "/api/domains", api.bearer),
        ("POST", "/api/domains/check", api.bearer),
        ("POST", "/api/images", api.bearer),
        ("PUT", "/api/nothing", api.bearer),
        ("GET", "/api/health", {}),
        ("POST", "/ui/app.css", {}),
    ]:
        response = api.client.request(method, path, content=big, headers={**headers, **json_type})
        assert response.status_code == 413, (method, path, response.text)
        limit = 16384 if path == "/api/login" else MIB
        assert response.json() == {"error": f"request body too large: at most {limit} bytes"}
    # A login needs no more than 16 KiB; the limit is a body's, not a password's (that is 1024 characters).
    refused = api.client.post("/api/login", content=_login_body(20_000), headers=json_type)
    assert refused.status_code == 413 and "16384 bytes" in refused.json()["error"]
    assert api.client.post("/api/login", content=_login_body(2000), headers=json_type).status_code == 422
    # Just under the limit is read and judged as usual.
    spec = b'{"name": "ct-api-limit", "image": "tiny"' + b" " * (MIB - 100) + b"}"
    assert api.client.post("/api/domains/check", content=spec, headers={**api.bearer, **json_type}).status_code == 200


def test_a_chunked_body_is_counted_as_it_arrives(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "ct-api-chunked", "image": "tiny", "iso": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = api.client.post("/api/domains/check", content=chunks(), headers=api.bearer)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413


def test_the_limit_comes_from_the_config(corral: Corral, credentials: Credentials,
                                         override: Callable[..., None]) -> None:
    override(api=ApiSettings(max_body_bytes=4096))
    with TestClient(create_app(corral)) as client:
        body = b'{"name": "ct-api-x", "image": "tiny"' + b" " * 5000 + b"}"
        response = client.post("/api/domains/check", content=body, headers=credentials.bearer)
    assert response.status_code == 413 and "4096 bytes" in response.json()["error"]


def test_the_api_table_of_the_config_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[api]\nmax_body_bytes = 65536\nbody_timeout_s = 5\n")
    assert load_settings(config).api == ApiSettings(max_body_bytes=65536, body_timeout_s=5)
    for table, message in [("max_body_bytes = true", "max_body_bytes must be a whole number of bytes"),
                           ("max_body_bytes = 1.5e6", "max_body_bytes must be a whole number of bytes"),
                           ("max_body_bytes = 10", "between 1024 and 1073741824"),
                           ('body_timeout_s = "30"', "body_timeout_s must be a number of seconds"),
                           ("body_timeout_s = nan", "between 1 and 3600"),
                           ("body_timeout_s = 0", "between 1 and 3600"),
                           ("max_body = 5", "[api] accepts body_timeout_s, max_body_bytes")]:
        config.write_text(f"[api]\n{table}\n")
        with pytest.raises(InvalidInput, match=re.escape(message)):
            load_settings(config)
    assert load_settings(tmp_path / "none.toml").api == ApiSettings(max_body_bytes=MIB, body_timeout_s=30)


def _drive(middleware: BodyLimit, messages: list[tuple[float, dict[str, Any]]]) -> tuple[list[dict[str, Any]], int]:
    """Run `middleware` around an app that reads the whole body; the client sends `messages` (each after a
    pause). Returns what was sent back and how many of the client's messages were taken."""
    sent: list[dict[str, Any]] = []
    taken = 0

    async def receive() -> dict[str, Any]:
        nonlocal taken
        if taken >= len(messages):
            await asyncio.sleep(3600)
        pause, message = messages[taken]
        await asyncio.sleep(pause)
        taken += 1
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(_scope: Any, app_receive: Any, app_send: Any) -> None:
        while True:
            message = await app_receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone, as far as the app can tell
            if not message.get("more_body"):
                break
        await app_send({"type": "http.response.start", "status": 200, "headers": []})
        await app_send({"type": "http.response.body", "body": b"read it all"})

    middleware.app = app
    scope = {"type": "http", "method": "POST", "path": "/api/domains", "headers": []}
    asyncio.run(middleware(scope, receive, send))  # type: ignore[arg-type]
    return sent, taken


def test_a_streamed_body_stops_being_read_at_the_limit() -> None:
    chunk: dict[str, Any] = {"type": "http.request", "body": b"x" * 1000, "more_body": True}
    sent, taken = _drive(BodyLimit(None, max_bytes=4500), [(0.0, chunk)] * 1000)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413 and taken == 5  # the fifth thousand passed the limit: no sixth is read
    assert len(sent) == 2 and b"at most 4500 bytes" in sent[1]["body"]


def test_a_slow_body_gets_408_and_the_connection_closes() -> None:
    chunk: dict[str, Any] = {"type": "http.request", "body": b"x" * 10, "more_body": True}
    start = time.monotonic()
    sent, taken = _drive(BodyLimit(None, timeout_s=0.5), [(0.1, chunk)] * 3 + [(1.0, chunk)])  # type: ignore[arg-type]
    assert time.monotonic() - start < 0.9
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert b"not received within 0.5 s" in sent[1]["body"] and taken == 3
    # A body in time goes through untouched.
    last: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}
    sent, _ = _drive(BodyLimit(None, timeout_s=0.5), [(0.1, chunk), (0.1, last)])  # type: ignore[arg-type]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"read it all"


def test_health_answers_while_every_worker_thread_is_busy(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    blocked = threading.Semaphore(0)
    report = api.corral.host.report

    def stuck_report() -> Any:
        blocked.release()
        release.wait(60)
        return report()

    monkeypatch.setattr(api.corral.host, "report", stuck_report)
    with ThreadPoolExecutor(48) as pool:
        try:
            stuck = [pool.submit(api.client.get, "/api/host", headers=api.bearer) for _ in range(45)]
            for _ in range(40):  # anyio's worker threads: 40, all taken
                assert blocked.acquire(timeout=30)
            time.sleep(0.2)
            assert not blocked.acquire(timeout=0.3)  # the other 5 wait for a thread
            health = pool.submit(api.client.get, "/api/health").result(timeout=5)
            assert health.status_code == 200 and health.json()["status"] == "ok"
        finally:
            release.set()
            for future in stuck:
                assert future.result(timeout=60).status_code == 200


# --- a real `corral serve` -------------------------------------------------------------------------------
@pytest.fixture
def impatient_serve(settings: Settings, credentials: Credentials, tmp_path: Path,
                    running_serve: Callable[..., contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    """A real `corral serve` with body_timeout_s = 2."""
    config = tmp_path / "config.toml"
    config.write_text("[api]\nbody_timeout_s = 2\n")
    with running_serve(settings.data_dir, config, "--no-sampler") as base:
        yield base


def test_oversized_bodies_leave_the_server_s_memory_flat(serve_process: tuple[str, Any],
                                                         credentials: Credentials) -> None:
    base, process = serve_process
    body = _login_body(50 * MIB)
    with PeakRss(process) as rss:
        response = httpx.post(f"{base}/api/login", content=body, timeout=60,
                              headers={"Content-Type": "application/json"})
        assert response.status_code == 413, response.text

        def chunked() -> Iterator[bytes]:
            for start in range(0, len(body), MIB):
                yield body[start:start + MIB]

        def oversized(i: int) -> int:
            path, headers = ("/api/login", {}) if i % 2 else ("/api/domains", credentials.bearer)
            content: Any = body if i % 4 < 2 else chunked()  # declared, or streamed without a length
            return httpx.post(f"{base}{path}", content=content, headers=headers, timeout=60).status_code

        with ThreadPoolExecutor(20) as pool:
            assert list(pool.map(oversized, range(20))) == [413] * 20
    assert rss.peak < 200 * MIB, f"peak RSS {rss.peak / MIB:.0f} MiB"
    assert rss.peak - rss.before < 40 * MIB, f"RSS grew from {rss.before / MIB:.0f} to {rss.peak / MIB:.0f} MiB"
    assert httpx.get(f"{base}/api/health").status_code == 200


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(conn: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing `conn`; fails if it is still open after `seconds`."""
    conn.settimeout(seconds)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while data := conn.recv(65536):
            received += data
    return received


def test_a_slow_body_gets_408_from_the_server(impatient_serve: str) -> None:
    base = impatient_serve
    with _connect(base) as conn:
        conn.sendall(b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"user\": ")
        start = time.monotonic()
        answer = _closed_within(conn, 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"not received within 2 s" in answer and 1.5 < time.monotonic() - start < 5


def test_a_slow_request_head_is_cut_off(impatient_serve: str) -> None:
    base = impatient_serve
    with _connect(base) as conn:
        start = time.monotonic()
        conn.sendall(b"GET /api/health HTTP/1.1\r\n")
        with contextlib.suppress(OSError):  # a header line a second, which resets uvicorn's keep-alive timer
            for _ in range(10):
                time.sleep(0.5)
                conn.sendall(b"X-Slow: 1\r\n")
        assert _closed_within(conn, 10) == b""
    assert time.monotonic() - start < 4


def test_a_silent_connection_is_closed(impatient_serve: str) -> None:
    base = impatient_serve
    with _connect(base) as conn:
        start = time.monotonic()
        assert _closed_within(conn, 10) == b""
    assert time.monotonic() - start < 4


def test_keep_alive_still_works(impatient_serve: str) -> None:
    base = impatient_serve
    with httpx.Client(base_url=base) as client:
        for _ in range(3):
            assert client.get("/api/health").status_code == 200
            time.sleep(0.5)
        login = client.post("/api/login", json={"user": USER, "password": PASSWORD})
        assert login.status_code == 200
