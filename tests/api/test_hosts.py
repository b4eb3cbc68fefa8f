"""The hosts endpoints over libvirt's test driver (no daemon): list, show, add, remove, maintenance (which
refuses before changing anything when the guests cannot go), evacuate, standby and wake, and their refusals.
Migrations between real hosts are in tests/cluster/test_api_cluster.py."""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.adapters.hoststore import HostStore
from corral.api.app import create_app
from corral.api.auth import Authenticator
from corral.core.hosts import LOCAL_HOST, HostSpec
from corral.services.context import Corral, open_corral
from corral.services.registry import HostRegistry
from tests.conftest import OFFLINE_URI

from .conftest import Api, Clock, Credentials, unique

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROW_KEYS = {"name", "uri", "state", "storage", "cores", "memory_mib", "cpu_pct", "vcpus_allocated",
            "memory_allocated_mib", "cpu_cap_cores", "guests_running", "guests_defined", "power", "error"}


@pytest.fixture
def corral(offline: Corral) -> Corral:
    return offline


@pytest.fixture
def second_node(tmp_path: Path) -> str:
    """The URI of another test-driver host (its own file: its own URI, no guests)."""
    node = tmp_path / "node2.xml"
    shutil.copy(OFFLINE_URI.removeprefix("test://"), node)
    return f"test://{node}"


@pytest.fixture
def fleet(offline: Corral, credentials: Credentials, tmp_path: Path) -> Iterator[Api]:
    """The API over a Corral whose registry is kept on disk (hosts can be added), the local host being the
    test driver's."""
    registry = HostRegistry((HostSpec(LOCAL_HOST, OFFLINE_URI, storage="shared"),),
                            HostStore(tmp_path / "hosts.sqlite"))
    corral = open_corral(offline.settings, registry)
    clock = Clock()
    auth = Authenticator(credentials.store, clock=clock)
    try:
        with TestClient(create_app(corral, authenticator=auth)) as client:
            yield Api(client, corral, auth, clock, credentials)
    finally:
        for row in corral.libvirt.rows():
            if row.name.startswith("ct-"):
                corral.guests.delete(row.name)
        corral.close()


def test_hosts_list_and_show(api: Api) -> None:
    rows = api.client.get("/api/hosts", headers=api.bearer).json()
    assert [r["name"] for r in rows] == ["local"]
    assert set(rows[0]) == ROW_KEYS
    assert rows[0] == {**rows[0], "state": "up", "cores": 4, "power": "none", "error": None}
    assert rows[0]["cpu_cap_cores"] == pytest.approx(4 * api.corral.settings.limits.cap)
    report = api.client.get("/api/hosts/local", headers=api.bearer).json()
    assert report["host"] == "local" and report["cores"] == 4 and set(report["capacity"]) == {"vcpus", "memory", "cpu"}
    missing = api.client.get("/api/hosts/nowhere", headers=api.bearer)
    assert missing.status_code == 404 and "no host named 'nowhere'" in missing.json()["error"]
    assert api.client.get("/api/hosts").status_code == 401


def test_add_and_remove_a_host(fleet: Api, second_node: str) -> None:
    b = fleet.bearer
    body = {"name": "ct-h2", "uri": second_node, "storage": "shared",
            "power": {"driver": "command", "settings": {"standby": "true", "wake": "true"}}}
    added = fleet.client.post("/api/hosts", headers=b, json=body)
    assert added.status_code == 201, added.text
    assert added.json() == {**added.json(), "name": "ct-h2", "state": "up", "cores": 4, "power": "command"}
    assert [r["name"] for r in fleet.client.get("/api/hosts", headers=b).json()] == ["local", "ct-h2"]
    again = fleet.client.post("/api/hosts", headers=b, json=body)
    assert again.status_code == 409 and "already registered" in again.json()["error"]
    same_uri = fleet.client.post("/api/hosts", headers=b, json={**body, "name": "ct-h3"})
    assert same_uri.status_code == 409 and "already registered as host ct-h2" in same_uri.json()["error"]
    removed = fleet.client.delete("/api/hosts/ct-h2", headers=b)
    assert removed.status_code == 200 and removed.json() == {"removed": "ct-h2"}
    assert fleet.client.delete("/api/hosts/ct-h2", headers=b).status_code == 404
    local = fleet.client.delete("/api/hosts/local", headers=b)
    assert local.status_code == 409 and "configured host" in local.json()["error"]


def test_a_host_with_guests_is_not_removed(fleet: Api) -> None:
    added = fleet.client.post("/api/hosts", headers=fleet.bearer, json={"name": "ct-busy", "uri": "test:///default"})
    assert added.status_code == 201, added.text
    try:
        refused = fleet.client.delete("/api/hosts/ct-busy", headers=fleet.bearer)
        assert refused.status_code == 409 and "still has guests: test" in refused.json()["error"]
    finally:
        fleet.corral.hosts.drop("ct-busy")


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"name": "h2", "uri": "http://example.com/"}, 422, "not a libvirt URI"),
    ({"name": "h2", "uri": "qemu:///nowhere"}, 422, "not a libvirt URI"),
    ({"name": "Domain-0", "uri": "qemu+tcp://10.0.0.2/system"}, 422, "reserved"),
    ({"name": "a'b", "uri": "qemu+tcp://10.0.0.2/system"}, 422, "host name"),
    ({"name": "h2", "uri": "qemu+tcp://10.0.0.2/system", "storage": "nfs"}, 422, "storage must be one of"),
    ({"name": "h2", "uri": "qemu+tcp://10.0.0.2/system", "power": {"driver": "magic"}}, 422, "power driver"),
    ({"name": "h2", "uri": "qemu+tcp://10.0.0.2/system", "power": {"settings": {" ": "x"}}}, 422, "needs a name"),
    ({"name": "h2", "uri": "qemu+tcp://10.0.0.2/system", "colour": "red"}, 422, "colour"),
    ({"name": "h2", "uri": 7}, 422, "uri"),
    ({"name": "h2", "uri": "qemu+tcp://127.0.0.99:1/system"}, 502, "cannot add host h2"),
])
def test_adding_a_host_refuses_what_it_cannot_manage(fleet: Api, body: dict[str, object], status: int,
                                                     message: str) -> None:
    response = fleet.client.post("/api/hosts", headers=fleet.bearer, json=body)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert [r["name"] for r in fleet.client.get("/api/hosts", headers=fleet.bearer).json()] == ["local"]


def test_maintenance_refuses_before_changing_anything_when_the_guests_cannot_go(fleet: Api) -> None:
    b = fleet.bearer
    guest = unique("stay")
    assert fleet.client.post("/api/domains", headers=b, json={"name": guest, "image": "tiny"}).status_code == 201
    refused = fleet.client.post("/api/hosts/local/maintenance", headers=b, json={"on": True})
    assert refused.status_code == 507, refused.text
    assert "nothing was moved" in refused.json()["error"] and guest in refused.json()["error"]
    assert fleet.client.get("/api/hosts", headers=b).json()[0]["state"] == "up"
    evacuate = fleet.client.post("/api/hosts/local/evacuate", headers=b)
    assert evacuate.status_code == 507 and guest in evacuate.json()["error"]
    assert fleet.corral.guests.info(guest).host == "local"


def test_maintenance_on_and_off(fleet: Api) -> None:
    b = fleet.bearer
    try:
        on = fleet.client.post("/api/hosts/local/maintenance", headers=b, json={"on": True})
        assert on.status_code == 200, on.text
        assert on.json() == {"host": "local", "maintenance": True, "evacuation": {"host": "local", "moved": [],
                                                                                  "left": []}}
        assert fleet.client.get("/api/hosts", headers=b).json()[0]["state"] == "maintenance"
        guest = unique("late")
        refused = fleet.client.post("/api/domains", headers=b, json={"name": guest, "image": "tiny"})
        assert refused.status_code == 409 and "in maintenance" in refused.json()["error"]
    finally:
        off = fleet.client.post("/api/hosts/local/maintenance", headers=b, json={"on": False})
    assert off.status_code == 200 and off.json() == {"host": "local", "maintenance": False, "evacuation": None}
    assert fleet.client.get("/api/hosts", headers=b).json()[0]["state"] == "up"


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/hosts/nowhere/maintenance", {"on": True}, 404, "no host named"),
    ("/api/hosts/nowhere/maintenance", {"on": False}, 404, "no host named"),
    ("/api/hosts/local/maintenance", {"on": "yes"}, 422, "on"),
    ("/api/hosts/local/maintenance", {}, 422, "on"),
    ("/api/hosts/local/maintenance?parallel=0", {"on": True}, 422, "parallel"),
    ("/api/hosts/local/evacuate?parallel=17", None, 422, "parallel"),
    ("/api/hosts/nowhere/evacuate", None, 404, "no host named"),
    ("/api/hosts/local/standby", None, 409, "configured host"),
    ("/api/hosts/nowhere/standby", None, 404, "no host named"),
    ("/api/hosts/nowhere/wake", None, 404, "no host named"),
    ("/api/hosts/local/wake?timeout=0", None, 422, "timeout"),
])
def test_host_actions_refuse(api: Api, path: str, body: dict[str, object] | None, status: int, message: str) -> None:
    response = api.client.post(path, headers=api.bearer, json=body)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert api.corral.hosts.get("local").maintenance is False


def test_standby_and_wake_through_the_power_driver(fleet: Api, second_node: str) -> None:
    b = fleet.bearer
    body = {"name": "ct-sleepy", "uri": second_node, "power": {"driver": "command",
                                                               "settings": {"standby": "true", "wake": "true"}}}
    assert fleet.client.post("/api/hosts", headers=b, json=body).status_code == 201
    nopower = {"name": "ct-nopower", "uri": "test:///default"}
    assert fleet.client.post("/api/hosts", headers=b, json=nopower).status_code == 201
    try:
        asleep = fleet.client.post("/api/hosts/ct-sleepy/standby", headers=b)
        assert asleep.status_code == 200 and asleep.json()["state"] == "standby", asleep.text
        awake = fleet.client.post("/api/hosts/ct-sleepy/wake", headers=b)
        assert awake.status_code == 200, awake.text
        assert awake.json()["host"]["state"] == "up" and awake.json()["after_s"] >= 0
        running = fleet.client.post("/api/hosts/ct-nopower/standby", headers=b)  # its "test" guest runs
        assert running.status_code == 409 and "guests run on ct-nopower: test" in running.json()["error"]
        fleet.corral.hosts.set_state("ct-nopower", standby=True)
        cannot = fleet.client.post("/api/hosts/ct-nopower/wake", headers=b)
        assert cannot.status_code == 409 and "no power driver" in cannot.json()["error"]
    finally:
        fleet.corral.hosts.drop("ct-sleepy")
        fleet.corral.hosts.drop("ct-nopower")


def test_host_changes_need_the_csrf_token_with_a_session(api: Api) -> None:
    api.login()
    for path, body in (("/api/hosts/local/maintenance", {"on": False}), ("/api/hosts/local/evacuate", None),
                       ("/api/hosts", {"name": "h2", "uri": "qemu+tcp://10.0.0.2/system"})):
        refused = api.client.post(path, json=body)
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]
    answer = api.client.post("/api/hosts/local/maintenance", json={"on": False}, headers=api.csrf_header)
    assert answer.status_code == 200 and answer.json()["maintenance"] is False
    assert api.client.delete("/api/hosts/local").status_code == 403


def test_a_hosts_load_over_time_with_the_balancers_migrations(fleet: Api) -> None:
    """GET /api/hosts/{name}/load: what the guests that ran on the host took of it at each reading (its
    Domain-0 and other hosts' guests left out), the cap, and the balancer's migrations into or out of it."""
    from corral.monitoring.metrics import HOST_DOMAIN, METRICS, Sample

    c = fleet.corral
    now = time.time()
    a, b, elsewhere = unique("la"), unique("lb"), unique("lc")

    def sample(t: float, domain: str, pct: float, host: str = LOCAL_HOST) -> Sample:
        return Sample(t, domain, {m: (pct if m == "cpu_host_pct" else None) for m in METRICS}, host)

    with c.monitoring.open_store() as store:
        store.write([sample(now - 20, a, 10), sample(now - 20, b, 15), sample(now - 20, HOST_DOMAIN, 90),
                     sample(now - 20, elsewhere, 50, host="elsewhere"),
                     sample(now - 10, a, 12), sample(now - 10, HOST_DOMAIN, 90)])
    audit = c.balancer.audit
    round_id = audit.start_round("automatic")
    audit.record(round_id, "move", "local can be emptied", "done in 2.1 s, downtime 80 ms", guest=b,
                 source=LOCAL_HOST, dest="other")
    audit.record(round_id, "move", "elsewhere is over its cap", "done in 2.0 s", guest=elsewhere, source="elsewhere",
                 dest="third")
    audit.record(round_id, "move", "local can be emptied", "failed: no", guest=a, source=LOCAL_HOST,
                 dest="other")
    answer = fleet.client.get(f"/api/hosts/{LOCAL_HOST}/load", params={"since": "10m"}, headers=fleet.bearer)
    assert answer.status_code == 200, answer.text
    load = answer.json()
    assert load["host"] == LOCAL_HOST and load["cap_pct"] == pytest.approx(100 * c.settings.limits.cap)
    assert [p[1] for p in load["points"]] == pytest.approx([25.0, 12.0])
    assert [(m["guest"], m["dest"]) for m in load["moves"]] == [(b, "other")]  # done, and this host's
    assert fleet.client.get("/api/hosts/nowhere/load", headers=fleet.bearer).status_code == 404
    bad = fleet.client.get(f"/api/hosts/{LOCAL_HOST}/load", params={"since": "soon"}, headers=fleet.bearer)
    assert bad.status_code == 422 and "since" in bad.json()["error"]


def test_prometheus_counts_the_balancers_decisions(fleet: Api) -> None:
    """/metrics: the balancer's counters (migrations, decisions by kind and what happened, a handful of label
    values whatever the details) only go up; hosts active and in standby are gauges."""
    import re

    def scrape() -> dict[str, float]:
        text = fleet.client.get("/metrics", headers=fleet.bearer).text
        assert "# TYPE corral_balancer_migrations_total counter" in text
        assert "# TYPE corral_balancer_hosts_standby gauge" in text
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(corral_balancer_\S+) (\S+)$", text, re.M)}

    before = scrape()
    audit = fleet.corral.balancer.audit
    round_id = audit.start_round("automatic")
    audit.record(round_id, "move", "packing", "done in 2.1 s, downtime 80 ms", guest=unique("m1"), source="a",
                 dest="b")
    audit.record(round_id, "move", "packing", "done on c instead (b: full), in 2.4 s", guest=unique("m2"),
                 source="a", dest="b")
    audit.record(round_id, "move", "packing", "failed: b is unreachable", guest=unique("m3"), source="a", dest="b")
    audit.record(round_id, "wake", "room for m1", "done (1.2 s until its libvirt answered)", dest="b")
    after = scrape()
    assert after["corral_balancer_migrations_total"] == before.get("corral_balancer_migrations_total", 0) + 2
    assert after["corral_balancer_migrations_failed_total"] == before.get(
        "corral_balancer_migrations_failed_total", 0) + 1
    done = 'corral_balancer_decisions_total{kind="move",outcome="done"}'
    assert after[done] == before.get(done, 0) + 2
    assert all(re.search(r'outcome="(done|failed|skipped|recommended|refused|running)"', k)
               for k in after if k.startswith("corral_balancer_decisions_total"))
    assert after["corral_balancer_hosts_active"] >= 1 and "corral_balancer_hosts_standby" in after
