"""`corral serve` as a real process on loopback, and `corral user ...` on the command line."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner
from websockets.sync.client import connect

from corral.cli.serve import parse_listen, register
from corral.config import Settings
from corral.core.errors import Conflict, InvalidInput, NotFound
from corral.services.users import UserStore, users_path

from ..conftest import SERVE, free_port
from .conftest import PASSWORD, USER, Credentials

pytestmark = pytest.mark.libvirt


def _env(data_dir: Path, config: Path) -> dict[str, str]:
    return {**os.environ, "CORRAL_DATA_DIR": str(data_dir), "CORRAL_CONFIG": str(config)}


@pytest.fixture
def server(settings: Settings, credentials: Credentials, tmp_path: Path,
           running_serve: Callable[..., contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    config = tmp_path / "config.toml"
    config.write_text("[monitor]\ninterval_s = 0.5\n")
    with running_serve(settings.data_dir, config) as base:
        yield base


def test_serve_over_real_http(server: str, credentials: Credentials) -> None:
    assert httpx.get(f"{server}/api/domains").status_code == 401
    assert "/api/docs" in httpx.get(f"{server}/").text
    with httpx.Client(base_url=server) as client:
        login = client.post("/api/login", json={"user": USER, "password": PASSWORD})
        assert login.status_code == 200
        assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=strict" in login.headers["set-cookie"]
        csrf = login.json()["csrf_token"]
        rows = client.get("/api/domains").json()
        assert rows[0]["name"] == "Domain-0"
        spec = {"name": "ct-api-http", "image": "tiny"}
        assert client.post("/api/domains/check", json=spec).status_code == 403
        check = client.post("/api/domains/check", json=spec, headers={"X-CSRF-Token": csrf})
        assert check.status_code == 200 and check.json()["fits"] is True
        assert client.get("/metrics").status_code == 401
    metrics = httpx.get(f"{server}/metrics", headers=credentials.bearer)
    assert metrics.status_code == 200
    ws_url = server.replace("http://", "ws://") + "/api/ws/stats"
    with connect(ws_url, additional_headers=credentials.bearer, open_timeout=10) as ws:
        samples = json.loads(ws.recv(timeout=10))
    assert samples[0]["domain"] == "Domain-0"
    # DNS rebinding: a page of another site resolving to 127.0.0.1 names its own host in Host.
    port = server.rsplit(":", 1)[1]
    rebound = httpx.get(f"{server}/api/health", headers={"Host": f"rebind.example:{port}"})
    assert rebound.status_code == 400 and "Host" in rebound.json()["error"]
    assert httpx.get(f"{server}/api/health", headers={"Host": f"localhost:{port}"}).status_code == 200
    live = httpx.get(f"{server}/api/stats", headers=credentials.bearer).json()
    assert live["sampler"] is True and live["interval_s"] == 0.5


@pytest.mark.parametrize("listen", ["0.0.0.0:18931", "[::]:18931", "192.0.2.1:18931", "example.org:18931"])
def test_serve_refuses_other_addresses_without_users(tmp_path: Path, listen: str) -> None:
    result = subprocess.run([*SERVE, "--listen", listen], env=_env(tmp_path, tmp_path / "none.toml"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to listen" in result.stderr and "corral user add" in result.stderr


def test_serve_on_loopback_without_users_warns_and_refuses_every_call(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*SERVE, "--listen", f"127.0.0.1:{port}", "--no-sampler"],
                            env=_env(tmp_path, tmp_path / "none.toml"), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "no users yet" in proc.stderr.readline()
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/host", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 401
    finally:
        proc.terminate()
        proc.wait(15)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen(":8081") == ("127.0.0.1", 8081)
    for bad in ("8080", "host:", "host:http", "host:70000", "a b:80", "h/x:80"):
        with pytest.raises(InvalidInput):
            parse_listen(bad)


# --- corral user ----------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path) -> tuple[typer.Typer, Path]:
    app = typer.Typer()
    fake = SimpleNamespace(settings=SimpleNamespace(data_dir=tmp_path))
    register(app, lambda: fake, Console(), Console(stderr=True))  # type: ignore[arg-type, return-value]
    return app, tmp_path


def test_user_commands(cli: tuple[typer.Typer, Path]) -> None:
    app, data = cli
    runner = CliRunner()
    added = runner.invoke(app, ["user", "add", "bob"], input="a long password\n")
    assert added.exit_code == 0, added.output
    path = users_path(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "a long password" not in text and "scrypt$" in text
    store = UserStore(path)
    assert store.authenticate("bob", "a long password") and not store.authenticate("bob", "a long passwor")

    again = runner.invoke(app, ["user", "add", "bob"], input="another password\n")
    assert isinstance(again.exception, Conflict)
    short = runner.invoke(app, ["user", "add", "carol"], input="short\n")
    assert isinstance(short.exception, InvalidInput) and "too short" in short.exception.message
    bad = runner.invoke(app, ["user", "add", "a'b"], input="a long password\n")
    assert isinstance(bad.exception, InvalidInput)

    made = runner.invoke(app, ["user", "token", "bob", "--label", "backup script"])
    assert made.exit_code == 0
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("corral_")
    owner = store.token_owner(token)
    assert owner is not None and owner[0] == "bob"
    assert token.split(".", 1)[1] not in path.read_text()  # only its hash is kept
    assert store.token_owner(token[:-1] + ("A" if token[-1] != "A" else "B")) is None

    listed = json.loads(runner.invoke(app, ["user", "list", "--json"]).stdout)
    assert listed[0]["name"] == "bob" and listed[0]["tokens"][0]["label"] == "backup script"
    assert "password" not in json.dumps(listed) and "hash" not in json.dumps(listed)

    revoked = runner.invoke(app, ["user", "revoke", "bob", owner[1]])
    assert revoked.exit_code == 0 and store.token_owner(token) is None
    assert runner.invoke(app, ["user", "remove", "bob"]).exit_code == 0
    assert not store.exists("bob")
    missing = runner.invoke(app, ["user", "remove", "bob"])
    assert isinstance(missing.exception, NotFound)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_password_prompt_asks_twice_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.cli import serve as serve_module

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["first password", "first password", "one password", "another one"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert serve_module.read_password() == "first password"
    with pytest.raises(InvalidInput, match="differ"):
        serve_module.read_password()
    assert prompts == ["Password: ", "Password (again): "] * 2


def test_serve_with_a_user_goes_past_the_refusal_and_warns_about_plain_http(tmp_path: Path) -> None:
    UserStore(users_path(tmp_path)).add("admin", "an admin password")
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind itself fails, after the checks.
    result = subprocess.run([*SERVE, "--listen", "192.0.2.1:18932", "--no-sampler"],
                            env=_env(tmp_path, tmp_path / "none.toml"), capture_output=True, text=True, timeout=60)
    assert "refusing" not in result.stderr
    assert "plain http" in result.stderr and "--certfile" in result.stderr
    assert result.returncode != 0


def test_serve_over_https_sets_a_secure_cookie(settings: Settings, credentials: Credentials, tmp_path: Path,
                                               require_tool: Callable[[str], None]) -> None:
    require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([*SERVE, "--listen", f"127.0.0.1:{port}", "--no-sampler", "--certfile",
                             str(cert), "--keyfile", str(key)], env=_env(settings.data_dir, tmp_path / "none.toml"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert)),
                          timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/api/health")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            login = client.post("/api/login", json={"user": USER, "password": PASSWORD})
            assert login.status_code == 200
            cookie = login.headers["set-cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert client.get("/api/session").json()["via"] == "session"
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_start_held_up_by_the_admission_lock_is_bounded_and_an_abandoned_one_starts_nothing(
        server: str, credentials: Credentials, corral_session: Any) -> None:
    """A stuck start elsewhere (the host's admission lock held) neither hangs the server nor, once the
    client gave up, starts the guest later."""
    from corral.adapters.files import locked
    from corral.core.spec import GuestSpec

    guest = f"ct-api-abandon-{os.getpid()}"
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    lock = corral_session.settings.data_dir / "locks" / "admission-local.lock"
    try:
        with locked(lock):
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{server}/api/domains/{guest}/start", headers=credentials.bearer, timeout=1.5)
            began = time.monotonic()
            assert httpx.get(f"{server}/api/health", timeout=5).status_code == 200
            assert time.monotonic() - began < 2
            time.sleep(1.0)  # the server notices the client has gone while it still waits for the lock
        time.sleep(3.0)  # lock free: the abandoned request must not start the guest now
        assert corral_session.libvirt.state(guest) == "shut-off"
        # A request that waits longer than the bound gets 503, saying why.
        with locked(lock):
            waited = httpx.post(f"{server}/api/domains/{guest}/start", headers=credentials.bearer, timeout=60)
        assert waited.status_code == 503 and "admission lock" in waited.json()["error"]
        assert corral_session.libvirt.state(guest) == "shut-off"
    finally:
        corral_session.guests.delete(guest)
