"""Login throttling per (address, name) that a stranger cannot turn against a user, and the bound on
concurrent password checks (scrypt takes 32 MiB each)."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from corral.api import throttle
from corral.api.app import create_app
from corral.api.auth import Authenticator
from corral.api.throttle import LoginThrottle, TooManyAttempts, delay_after
from corral.services.context import Corral

from .conftest import MIB, PASSWORD, USER, Api, Clock, Credentials, PeakRss

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


WRONG = "not the password"


@pytest.fixture
def corral(offline: Corral) -> Corral:
    """No daemon needed here: libvirt's test driver."""
    return offline


def _from(api: Api, address: str) -> TestClient:
    """A client of the same app that connects from `address`."""
    return TestClient(api.client.app, client=(address, 40000))


def _login(client: TestClient, user: str = USER, password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/login", json={"user": user, "password": password})


def test_a_stranger_s_failures_do_not_lock_the_user_out_from_another_address(api: Api) -> None:
    stranger, user = _from(api, "203.0.113.66"), _from(api, "192.0.2.10")
    refused = 0
    for _ in range(12):
        status = _login(stranger, USER, WRONG).status_code
        assert status in (401, 429)
        refused += status == 429
        api.clock.advance(0.5)
    assert refused >= 6
    assert _login(stranger).status_code == 429  # from the stranger's address, even the right password waits
    assert _login(user).status_code == 200  # ... but the user, from theirs, gets in
    assert api.client.get("/api/session", headers=api.bearer).status_code == 200  # tokens never are throttled


def test_delays_grow_after_a_few_failures_and_are_capped(api: Api) -> None:
    client = _from(api, "198.51.100.7")
    waits = []
    for _ in range(14):
        response = _login(client, "carol", WRONG)
        if response.status_code == 429:
            waits.append(int(response.headers["retry-after"]))
            assert f"too many failed logins for 'carol' from this address: retry in {waits[-1]} s" \
                == response.json()["error"]
            api.clock.advance(waits[-1])
            assert _login(client, "carol", WRONG).status_code == 401  # after the wait: one more try
        else:
            assert response.status_code == 401
    assert waits[:6] == [1, 2, 4, 8, 16, 32] and max(waits) == 300 and waits[-1] == 300
    assert [delay_after(n) for n in range(5)] == [0, 0, 0, 1, 2]
    api.clock.advance(throttle.FORGET_S + 1)  # forgotten after an hour without an attempt
    assert _login(client, "carol", WRONG).status_code == 401


def test_a_success_forgives_the_failures(api: Api) -> None:
    client = _from(api, "198.51.100.8")
    for _ in range(3):
        assert _login(client, USER, WRONG).status_code == 401
    api.clock.advance(1)
    assert _login(client).status_code == 200
    for _ in range(3):
        assert _login(client, USER, WRONG).status_code == 401  # three free failures again


def test_one_address_trying_many_names_is_capped_across_names(api: Api) -> None:
    sprayer = _from(api, "203.0.113.99")
    for i in range(throttle.ADDRESS_FAILURES):
        assert _login(sprayer, f"name{i}", WRONG).status_code == 401
    capped = _login(sprayer, "another-name", WRONG)
    assert capped.status_code == 429 and "from this address" in capped.json()["error"]
    assert _login(sprayer).status_code == 429
    assert int(capped.headers["retry-after"]) == throttle.ADDRESS_WINDOW_S
    assert _login(_from(api, "192.0.2.11")).status_code == 200
    api.clock.advance(throttle.ADDRESS_WINDOW_S)
    assert _login(sprayer).status_code == 200


def test_every_refusal_is_logged_with_address_and_name(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    client = _from(api, "203.0.113.5")
    with caplog.at_level(logging.WARNING, logger="corral.api"):
        for _ in range(4):
            _login(client, "mallory\nforged line", WRONG)
    lines = [r.getMessage() for r in caplog.records if r.name == "corral.api"]
    assert len(lines) == 4
    assert all("'mallory\\nforged line'" in line and "203.0.113.5" in line for line in lines)
    assert sum("wrong user name or password" in line for line in lines) == 3
    assert "too many failed logins" in lines[-1]


def test_throttled_attempts_never_reach_the_password_check(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    authenticate = api.auth.users.authenticate

    def counting(user: str, password: str) -> bool:
        checked.append(user)
        return authenticate(user, password)

    monkeypatch.setattr(api.auth.users, "authenticate", counting)
    client = _from(api, "203.0.113.6")
    statuses = [_login(client, USER, WRONG).status_code for _ in range(10)]
    assert statuses == [401] * 3 + [429] * 7 and len(checked) == 3


def test_throttle_counts_attempts_from_their_start() -> None:
    clock = Clock()
    limiter = LoginThrottle(clock)
    attempts = [limiter.begin("Alice", "a") for _ in range(3)]  # three in flight at once
    with pytest.raises(TooManyAttempts) as refused:
        limiter.begin("alice", "a")  # names are compared without case
    assert refused.value.scope == "name" and refused.value.retry_after_s == 1
    limiter.withdraw(attempts[2])  # not made after all (server busy): it does not count
    limiter.begin("alice", "a")
    limiter.succeeded(attempts[0])
    limiter.begin("alice", "a")


# --- bounded password checks -----------------------------------------------------------------------------
def test_at_most_two_password_checks_run_at_once(credentials: Credentials, corral: Corral,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(credentials.store, clock=Clock(), kdf_wait_s=0.6)
    running = peak = 0
    lock = threading.Lock()
    authenticate = credentials.store.authenticate

    def slow(user: str, password: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.25)
        with lock:
            running -= 1
        return authenticate(user, password)

    monkeypatch.setattr(credentials.store, "authenticate", slow)
    with TestClient(create_app(corral, authenticator=auth)) as client, ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda i: client.post("/api/login", json={"user": f"u{i}", "password": WRONG}),
                                  range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert peak == 2
    assert 4 <= statuses.count(401) <= 8 and statuses.count(401) + statuses.count(503) == 12, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "2" and "too many logins at once" in busy.json()["error"]
    # A login refused as busy was not counted: the address may still fail as often as the cap allows.
    for i in range(throttle.ADDRESS_FAILURES - statuses.count(401)):
        auth.throttle.begin(f"other{i}", "testclient")
    with pytest.raises(TooManyAttempts):
        auth.throttle.begin("one-more", "testclient")


def test_fifty_parallel_logins_keep_the_server_s_memory_bounded(serve_process: tuple[str, Any]) -> None:
    base, process = serve_process

    def login(i: int) -> int:
        return httpx.post(f"{base}/api/login", json={"user": f"nobody{i}", "password": WRONG}, timeout=60).status_code

    with PeakRss(process) as rss, ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(login, range(50)))
    # Each went through the password check (401), or met the cap of failures per address (429) before it.
    assert statuses.count(401) == throttle.ADDRESS_FAILURES and statuses.count(429) == 50 - throttle.ADDRESS_FAILURES
    assert rss.peak < 200 * MIB, f"peak RSS {rss.peak / MIB:.0f} MiB"
    assert rss.peak - rss.before < 100 * MIB, f"RSS grew from {rss.before / MIB:.0f} to {rss.peak / MIB:.0f} MiB"
