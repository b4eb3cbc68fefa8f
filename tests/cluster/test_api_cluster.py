"""The hosts and migration endpoints over three lab hosts: the hosts and their states, a live migration started
through the API and followed over its WebSocket (progress, then the result), its abort, the maintenance switch
(which evacuates, or refuses before changing anything), evacuation, standby and wake."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from corral.api.app import create_app
from corral.api.auth import Authenticator
from corral.core.spec import GuestSpec, LoadSpec
from corral.services.users import UserStore, users_path
from tests.cluster.conftest import Cluster

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

pytestmark = [pytest.mark.libvirt, pytest.mark.cluster, pytest.mark.guest]
USER = "cluster-admin"


class Client:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> Any:
        response = self.client.get(path, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.post(path, headers=self.headers, json=body)

    def follow(self, migration_id: str, then: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Every message of a migration's WebSocket until it closes with 1000; `then(message)` is called for
        each until it returns True."""
        messages: list[dict[str, Any]] = []
        with self.client.websocket_connect(f"/api/ws/migrations/{migration_id}", headers=self.headers) as ws:
            while True:
                try:
                    messages.append(ws.receive_json())
                except WebSocketDisconnect as closed:
                    assert closed.code == 1000, closed.reason
                    return messages
                if then is not None and then(messages[-1]):
                    then = None


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[Client]:
    store = UserStore(users_path(cluster.corral.settings.data_dir))
    if not store.exists(USER):
        store.add(USER, "a cluster admin password")
    token, _ = store.create_token(USER, "cluster tests")
    with TestClient(create_app(cluster.corral, authenticator=Authenticator(store))) as client:
        yield Client(client, token)


@pytest.fixture
def guest(cluster: Cluster) -> Iterator[str]:
    """A tiny guest on lab1 burning 30 % of its vCPU."""
    name = cluster.name("apimig")
    cluster.corral.guests.create(GuestSpec(name, "tiny", memory_mib=128, load=LoadSpec(cpu_pct=30)), host="lab1",
                                 start=True, wait=True)
    yield name
    if cluster.corral.hosts.owner(name) is not None:
        cluster.corral.guests.delete(name)


def test_hosts_and_their_states(api: Client, cluster: Cluster) -> None:
    rows = api.get("/api/hosts")
    assert [r["name"] for r in rows] == ["local", *(h.name for h in cluster.hosts)]
    assert all(r["state"] == "up" and r["cores"] >= 1 for r in rows)
    assert {r["name"]: r["power"] for r in rows} == {"local": "none", **{h.name: "command" for h in cluster.hosts}}
    report = api.get("/api/hosts/lab2")
    assert report["host"] == "lab2" and report["libvirt_uri"] == cluster.corral.hosts.get("lab2").uri
    listing = api.get("/api/domains?host=lab2")
    assert listing[0] == {**listing[0], "name": "Domain-0", "host": "lab2"}


def test_live_migration_with_progress_then_its_abort(api: Client, cluster: Cluster, guest: str) -> None:
    c = cluster.corral
    started = api.post(f"/api/domains/{guest}/migrate", {"host": "lab2", "bandwidth": 40})
    assert started.status_code == 202, started.text
    job = started.json()
    assert (job["source"], job["dest"], job["live"], job["state"]) == ("lab1", "lab2", True, "running")
    messages = api.follow(job["id"])
    end = messages[-1]
    assert end["state"] == "succeeded", end
    assert any(m["progress"] and m["progress"]["memory_total"] > 0 for m in messages), messages
    result = end["result"]
    assert (result["source"], result["dest"], result["live"]) == ("lab1", "lab2", True)
    assert result["total_s"] > 0 and result["downtime_ms"] is not None and result["memory_bytes"] > 0
    assert c.guests.info(guest).host == "lab2" and not c.hosts.get("lab1").libvirt.exists(guest)
    assert c.guests.info(guest).state == "running"

    again = api.post(f"/api/domains/{guest}/migrate", {"host": "lab2"})
    assert again.status_code == 422 and "already on host lab2" in again.json()["error"]

    # Slowly back to lab1, aborted once under way: it runs on lab2 as before.
    slow = api.post(f"/api/domains/{guest}/migrate", {"host": "lab1", "bandwidth": 1}).json()

    def abort_once_moving(message: dict[str, Any]) -> bool:
        if not (message["progress"] and message["progress"]["memory_total"]):
            return False
        answer = api.client.delete(f"/api/migrations/{slow['id']}", headers=api.headers)
        assert answer.status_code == 200 and answer.json()["abort_requested"], answer.text
        return True

    end = api.follow(slow["id"], abort_once_moving)[-1]
    assert end["state"] == "aborted" and "runs on lab2" in end["error"], end
    assert c.hosts.get("lab2").libvirt.state(guest) == "running" and not c.hosts.get("lab1").libvirt.exists(guest)
    kept = [m["id"] for m in api.get("/api/migrations")]
    assert job["id"] in kept and slow["id"] in kept


def test_migration_refusals_name_the_reason(api: Client, cluster: Cluster, guest: str) -> None:
    c = cluster.corral
    c.hosts.set_state("lab2", maintenance=True)
    try:
        refused = api.post(f"/api/domains/{guest}/migrate", {"host": "lab2"})
        assert refused.status_code == 409 and "in maintenance" in refused.json()["error"]
    finally:
        c.hosts.set_state("lab2", maintenance=False)
    original = c.settings
    c.settings = c.guests.settings = c.host.settings = replace(
        original, limits=replace(original.limits, memory_reserve_mib=10**7))
    try:
        full = api.post(f"/api/domains/{guest}/migrate", {"host": "lab3"})
        assert full.status_code == 507 and "on host lab3" in full.json()["error"]
    finally:
        c.settings = c.guests.settings = c.host.settings = original
    assert c.guests.info(guest).host == "lab1"


@pytest.fixture
def shared_only(cluster: Cluster) -> Iterator[None]:
    """Evacuations go to the hosts that share storage: the others are put in maintenance meanwhile."""
    others = [h.name for h in cluster.hosts if cluster.corral.hosts.get(h.name).spec.storage != "shared"]
    for name in others:
        cluster.corral.hosts.set_state(name, maintenance=True)
    yield
    for name in others:
        cluster.corral.hosts.set_state(name, maintenance=False)


@pytest.mark.usefixtures("shared_only")
def test_the_maintenance_switch_evacuates_or_refuses(api: Client, cluster: Cluster) -> None:
    c = cluster.corral
    guest = cluster.name("apievac")
    c.guests.create(GuestSpec(guest, "tiny", memory_mib=128), host="lab3")  # shut off: it moves offline
    try:
        original = c.settings
        room = 100  # MiB for guests on every host: the 128 MiB guest fits nowhere
        tight = replace(original, limits=replace(original.limits,
                                                 memory_reserve_mib=c.host.facts("lab1").memory_mib - room))
        c.settings = c.guests.settings = c.host.settings = c.migration.settings = tight
        try:
            refused = api.post("/api/hosts/lab3/maintenance", {"on": True})
            assert refused.status_code == 507 and f"Fits nowhere: {guest}" in refused.json()["error"]
            evacuate = api.post("/api/hosts/lab3/evacuate")
            assert evacuate.status_code == 507
        finally:
            c.settings = c.guests.settings = c.host.settings = c.migration.settings = original
        assert {r["name"]: r["state"] for r in api.get("/api/hosts")}["lab3"] == "up"

        on = api.post("/api/hosts/lab3/maintenance", {"on": True})
        assert on.status_code == 200, on.text
        moved = on.json()["evacuation"]["moved"]
        assert [m["guest"] for m in moved] == [guest] and moved[0]["dest"] != "lab3" and not moved[0]["live"]
        assert c.guests.info(guest).host == moved[0]["dest"]
        lab3 = {r["name"]: r for r in api.get("/api/hosts")}["lab3"]
        assert lab3["state"] == "maintenance" and lab3["guests_defined"] == 0
        into = api.post(f"/api/domains/{guest}/migrate", {"host": "lab3"})
        assert into.status_code == 409 and "in maintenance" in into.json()["error"]
        off = api.post("/api/hosts/lab3/maintenance", {"on": False})
        assert off.status_code == 200 and off.json()["maintenance"] is False
        assert {r["name"]: r["state"] for r in api.get("/api/hosts")}["lab3"] == "up"
        # Evacuation of a host without guests has nothing to do.
        empty = api.post("/api/hosts/lab3/evacuate")
        assert empty.status_code == 200 and empty.json() == {"host": "lab3", "moved": [], "left": []}
    finally:
        c.hosts.set_state("lab3", maintenance=False)
        if c.hosts.owner(guest) is not None:
            c.guests.delete(guest)


def test_standby_and_wake_over_the_api(api: Client, cluster: Cluster) -> None:
    c = cluster.corral
    guest = cluster.name("apiawake")
    c.guests.create(GuestSpec(guest, "tiny", memory_mib=128), host="lab3", start=True)
    try:
        refused = api.post("/api/hosts/lab3/standby")
        assert refused.status_code == 409 and f"guests run on lab3: {guest}" in refused.json()["error"]
    finally:
        c.guests.delete(guest)
    asleep = api.post("/api/hosts/lab3/standby")
    try:
        assert asleep.status_code == 200 and asleep.json()["state"] == "standby", asleep.text
        assert not cluster.lab.get("lab3").running
        listing = api.get("/api/domains")  # a host in standby does not make the listing fail
        assert any(r["host"] == "lab1" for r in listing)
    finally:
        began = time.monotonic()
        woken = api.post("/api/hosts/lab3/wake", None)
    assert woken.status_code == 200, woken.text
    assert woken.json()["host"]["state"] == "up" and 0 <= woken.json()["after_s"] <= time.monotonic() - began
    assert cluster.lab.get("lab3").running
