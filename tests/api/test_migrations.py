"""The migration endpoints: start (checked first, then in the background), follow (GET and the WebSocket),
abort, and their refusals. The service's refusals come from the real MigrationService over libvirt's test
driver; the background run, its progress, its end and its abort from a stand-in service that reports
progress like libvirt's job statistics (real migrations between lab hosts: tests/cluster/test_api_cluster.py)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from corral.adapters.libvirt_host import JobProgress, MigrationRequest
from corral.api.app import create_app
from corral.api.auth import Authenticator
from corral.core.errors import NotFound
from corral.services.context import Corral
from corral.services.migration import MigrationAborted, MigrationPlan, MigrationResult

from .conftest import PASSWORD, USER, Api, Clock, Credentials, unique

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse
    from starlette.websockets import WebSocketDisconnect

MIB = 2**20


@pytest.fixture
def corral(offline: Corral) -> Corral:
    return offline


class StandIn:
    """A MigrationService that moves nothing: progress every 20 ms until released (success) or cancelled."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def check(self, name: str, dest: str, **options: Any) -> MigrationPlan:
        if name.startswith("ct-api-ghost"):
            raise NotFound(f"no domain named {name!r}")
        return MigrationPlan(name, "local", dest, True, MigrationRequest(), 1, 128)

    def migrate(self, name: str, dest: str, *, progress: Any, cancel: threading.Event,
                **options: Any) -> MigrationResult:
        self.calls.append((name, dest, options))
        for i in range(1, 10_000):
            left = max(0, 100 - 10 * i) * MIB
            progress(JobProgress(20 * i, 100 * MIB, left, 50 * MIB, 0, 0, left, i, 10))
            if cancel.wait(0.02):
                raise MigrationAborted(f"the migration of {name} was aborted; it runs on local, as before")
            if self.release.is_set():
                break
        return MigrationResult(name, "local", dest, True, 1.5, 42, 100 * MIB, 0, 3)


@pytest.fixture
def stand_in(offline: Corral, credentials: Credentials,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, StandIn]]:
    service = StandIn()
    monkeypatch.setitem(offline.__dict__, "migration", service)  # the cached property, for this app only
    clock = Clock()
    auth = Authenticator(credentials.store, clock=clock)
    with TestClient(create_app(offline, authenticator=auth)) as client:
        yield Api(client, offline, auth, clock, credentials), service
    service.release.set()


def _follow(api: Api, migration_id: str, *, then: Any = None) -> list[dict[str, Any]]:
    """Every message of the migration's WebSocket until it closes (with 1000)."""
    messages: list[dict[str, Any]] = []
    with api.client.websocket_connect(f"/api/ws/migrations/{migration_id}", headers=api.bearer) as ws:
        while True:
            try:
                messages.append(ws.receive_json())
            except WebSocketDisconnect as closed:
                assert closed.code == 1000
                return messages
            if then is not None and len(messages) == 3:
                then()


def test_a_migration_runs_in_the_background_and_streams_its_progress(stand_in: tuple[Api, StandIn]) -> None:
    api, service = stand_in
    guest = unique("mig")
    started = api.client.post(f"/api/domains/{guest}/migrate", headers=api.bearer,
                              json={"host": "h2", "bandwidth": 50, "max_downtime": 300})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job == {**job, "guest": guest, "source": "local", "dest": "h2", "live": True, "state": "running",
                   "user": USER, "result": None, "error": None, "abort_requested": False}
    twice = api.client.post(f"/api/domains/{guest}/migrate", headers=api.bearer, json={"host": "h2"})
    assert twice.status_code == 409 and "already being migrated" in twice.json()["error"]
    messages = _follow(api, job["id"], then=service.release.set)
    assert all(m["id"] == job["id"] for m in messages)
    progress = [m["progress"] for m in messages if m["progress"]]
    assert progress
    assert {"memory_total", "memory_remaining", "memory_bps", "disk_remaining", "iteration"} <= set(progress[0])
    end = messages[-1]
    assert end["state"] == "succeeded" and end["finished"] >= end["started"]
    assert end["result"] == {"guest": guest, "source": "local", "dest": "h2", "live": True, "total_s": 1.5,
                             "downtime_ms": 42, "memory_bytes": 100 * MIB, "disk_bytes": 0, "iterations": 3}
    assert service.calls == [(guest, "h2", {"offline": False, "copy_storage": False, "bandwidth_mib_s": 50,
                                            "max_downtime_ms": 300, "postcopy": False})]
    assert api.client.get(f"/api/migrations/{job['id']}", headers=api.bearer).json() == end
    assert [m["id"] for m in api.client.get("/api/migrations", headers=api.bearer).json()] == [job["id"]]
    # An ended migration's socket gives its end at once, then closes.
    assert _follow(api, job["id"]) == [end]
    ended = api.client.delete(f"/api/migrations/{job['id']}", headers=api.bearer)
    assert ended.status_code == 409 and "already ended (succeeded)" in ended.json()["error"]


def test_abort_ends_a_migration_as_aborted(stand_in: tuple[Api, StandIn]) -> None:
    api, _service = stand_in
    guest = unique("abort")
    job = api.client.post(f"/api/domains/{guest}/migrate", headers=api.bearer, json={"host": "h2"}).json()

    def abort() -> None:
        answer = api.client.delete(f"/api/migrations/{job['id']}", headers=api.bearer)
        assert answer.status_code == 200 and answer.json()["abort_requested"] is True, answer.text

    end = _follow(api, job["id"], then=abort)[-1]
    assert end["state"] == "aborted" and end["error_status"] == 409 and "runs on local, as before" in end["error"]
    assert end["result"] is None


def test_the_server_aborts_what_runs_when_it_stops(offline: Corral, credentials: Credentials,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(offline.__dict__, "migration", StandIn())
    app = create_app(offline, authenticator=Authenticator(credentials.store))
    with TestClient(app) as client:
        job = client.post(f"/api/domains/{unique('stop')}/migrate", headers=credentials.bearer, json={"host": "h2"})
        assert job.status_code == 202
    status = app.state.migrations.get(job.json()["id"])  # the lifespan's end aborted it and waited
    assert status.state == "aborted" and "runs on local" in (status.error or "")


def test_migration_refusals_from_the_service(api: Api) -> None:
    """The real MigrationService, over the test driver: every refusal before anything moves."""
    b = api.bearer
    guest = unique("stay")
    assert api.client.post("/api/domains", headers=b, json={"name": guest, "image": "tiny"}).status_code == 201
    for body, status, message in [
        ({"host": "local"}, 422, "already on host local"),
        ({"host": "nowhere"}, 404, "no host named 'nowhere'"),
        ({"host": "local", "bandwidth": "5"}, 422, "bandwidth"),
        ({"host": "local", "bandwidth": 5.0}, 422, "bandwidth"),
        ({"host": "local", "offline": 1}, 422, "offline"),
        ({"host": "local", "speed": 1}, 422, "speed"),
        ({}, 422, "host"),
    ]:
        response = api.client.post(f"/api/domains/{guest}/migrate", headers=b, json=body)
        assert response.status_code == status and message in response.json()["error"], (body, response.text)
    for name, status, message in [(unique("ghost"), 404, "no domain named"), ("Domain-0", 422, "reserved"),
                                  ("a'b", 422, "")]:
        response = api.client.post(f"/api/domains/{name}/migrate", headers=b, json={"host": "local"})
        assert response.status_code == status and message in response.json()["error"], (name, response.text)
    assert api.client.get("/api/migrations", headers=b).json() == []


def test_unknown_migrations_and_socket_refusals(api: Api) -> None:
    b = api.bearer
    for method in ("GET", "DELETE"):
        response = api.client.request(method, "/api/migrations/0123abcd", headers=b)
        assert response.status_code == 404 and "no migration '0123abcd'" in response.json()["error"]
    with pytest.raises(WebSocketDisconnect) as closed, \
            api.client.websocket_connect("/api/ws/migrations/0123abcd", headers=b) as ws:
        ws.receive_json()
    assert closed.value.code == 4404 and "no migration" in closed.value.reason
    with pytest.raises(WebSocketDenialResponse) as denied, api.client.websocket_connect("/api/ws/migrations/x"):
        pass
    assert denied.value.status_code == 401
    api.login(USER, PASSWORD)
    with pytest.raises(WebSocketDenialResponse) as foreign, \
            api.client.websocket_connect("/api/ws/migrations/x", headers={"Origin": "http://evil.example"}):
        pass
    assert foreign.value.status_code == 403
    refused = api.client.post("/api/domains/x/migrate", json={"host": "local"})  # a session without its token
    assert refused.status_code == 403 and api.client.delete("/api/migrations/x").status_code == 403
