"""Fixtures of the REST API tests: a user with a password and an API token in the test data folder,
and an in-process client of the app over the real Corral (real libvirt daemon) with a fake clock."""

from __future__ import annotations

import contextlib
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2
    from fastapi.testclient import TestClient

from corral.api.app import create_app
from corral.api.auth import Authenticator
from corral.config import Settings
from corral.services.context import Corral
from corral.services.users import UserStore, users_path
from tests.conftest import OFFLINE_URI, overriding

USER = "alice"
PASSWORD = "correct horse battery"
MIB = 1024 * 1024


def unique(stem: str) -> str:
    """A guest name the cleanup fixtures recognise (ct-) that nothing else uses."""
    return f"ct-api-{stem}-{uuid.uuid4().hex[:6]}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Credentials:
    store: UserStore
    token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def credentials(settings: Settings) -> Credentials:
    store = UserStore(users_path(settings.data_dir))
    if not store.exists(USER):
        store.add(USER, PASSWORD)
    token, _ = store.create_token(USER, "tests")
    return Credentials(store, token)


@dataclass
class Api:
    client: TestClient
    corral: Corral
    auth: Authenticator
    clock: Clock
    creds: Credentials
    csrf: str | None = field(default=None)

    @property
    def bearer(self) -> dict[str, str]:
        return self.creds.bearer

    def login(self, user: str = USER, password: str = PASSWORD) -> str:
        response = self.client.post("/api/login", json={"user": user, "password": password})
        assert response.status_code == 200, response.text
        self.csrf = str(response.json()["csrf_token"])
        return self.csrf

    @property
    def csrf_header(self) -> dict[str, str]:
        assert self.csrf is not None, "log in first"
        return {"X-CSRF-Token": self.csrf}


def _api(corral: Corral, credentials: Credentials) -> Iterator[Api]:
    clock = Clock()
    auth = Authenticator(credentials.store, clock=clock)
    with TestClient(create_app(corral, authenticator=auth)) as client:
        yield Api(client, corral, auth, clock, credentials)


@pytest.fixture
def api(offline: Corral, credentials: Credentials) -> Iterator[Api]:
    """The API in this process over libvirt's test driver: no daemon, no QEMU (auth, CSRF, validation,
    definitions, images, plans)."""
    yield from _api(offline, credentials)


@pytest.fixture
def live_api(corral: Corral, credentials: Credentials) -> Iterator[Api]:
    """The API over the real libvirt daemon, for tests with real guests."""
    yield from _api(corral, credentials)


@pytest.fixture
def override(offline: Corral) -> Iterator[Callable[..., None]]:
    """Change the offline Corral's settings for one test (as the root conftest's `override`)."""
    yield from overriding(offline)


def _serve_process(base: str) -> Any:
    """The psutil.Process of the `corral serve` (a child of this one) that listens at `base`."""
    listen = base.removeprefix("http://")
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if listen in child.cmdline():
                return child
    raise AssertionError(f"no corral serve listening at {listen} among this process's children")


@pytest.fixture
def serve_process(settings: Settings, credentials: Credentials, tmp_path: Path,
                  running_serve: Callable[..., contextlib.AbstractContextManager[str]]) -> Iterator[tuple[str, Any]]:
    """A real `corral serve` (no sampler) with the default limits: (its URL, its psutil.Process)."""
    config = tmp_path / "offline.toml"
    config.write_text(f'libvirt_uri = "{OFFLINE_URI}"\n')  # no daemon needed for what these tests ask
    with running_serve(settings.data_dir, config, "--no-sampler") as base:
        yield base, _serve_process(base)


class PeakRss:
    """The highest RSS of a process, sampled every 10 ms while in the `with` block."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.before = process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
