"""A real guest through the REST API: create+start+wait, pause, resume, snapshot, reboot, shutdown, start,
poweroff, console ticket, delete. Three boots in all (the first, the reboot, the second start)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.services.context import Corral
from tests.conftest import overriding

from .conftest import Api, unique

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]


@pytest.fixture
def api(live_api: Api) -> Api:
    """Real guests: the API over the real libvirt daemon."""
    return live_api


@pytest.fixture
def override(corral: Corral) -> Iterator[Callable[..., None]]:
    yield from overriding(corral)


def test_life_cycle_over_the_api(api: Api) -> None:
    b = api.bearer
    guest = unique("life")
    created = api.client.post("/api/domains?start=true&wait=true", headers=b,
                              json={"name": guest, "image": "tiny", "memory": 160, "load": {"cpu": 5}})
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "running" and created.json()["id"] is not None
    log = Path(created.json()["console_log"])
    assert b"CORRAL-READY" in log.read_bytes()

    again = api.client.post(f"/api/domains/{guest}/start", headers=b)
    assert again.status_code == 409 and "already running" in again.json()["error"]
    clone = api.client.post(f"/api/domains/{guest}/clone", headers=b, json={"name": unique("c")})
    assert clone.status_code == 409 and "shut it down first" in clone.json()["error"]

    row = next(r for r in api.client.get("/api/domains", headers=b).json() if r["name"] == guest)
    assert row["state"] == "running" and row["cpu_pct"] is not None

    # With a cookie session this time: the CSRF token goes along.
    api.login()
    assert api.client.post(f"/api/domains/{guest}/pause", headers=api.csrf_header).json()["state"] == "paused"
    assert api.client.post(f"/api/domains/{guest}/pause", headers=api.csrf_header).status_code == 409
    paused_shutdown = api.client.post(f"/api/domains/{guest}/shutdown", headers=api.csrf_header)
    assert paused_shutdown.status_code == 409 and "paused" in paused_shutdown.json()["error"]
    assert api.client.post(f"/api/domains/{guest}/resume", headers=api.csrf_header).json()["state"] == "running"
    ticket = api.client.post(f"/api/domains/{guest}/console-ticket", headers=api.csrf_header).json()["ticket"]
    assert api.auth.redeem_ticket(ticket, guest, api.client.cookies.get("corral_session")) == "alice"

    boots = log.read_bytes().count(b"CORRAL-READY")
    assert api.client.post(f"/api/domains/{guest}/reboot", headers=b).status_code == 200
    deadline = time.monotonic() + 90
    while log.read_bytes().count(b"CORRAL-READY") <= boots:
        assert time.monotonic() < deadline, "guest did not come back after reboot"
        time.sleep(0.2)

    # A shutdown that does not finish in time is 504 (the guest goes on shutting down).
    late = api.client.post(f"/api/domains/{guest}/shutdown?timeout=0.001", headers=b)
    assert late.status_code == 504 and "did not shut down within" in late.json()["error"]
    deadline = time.monotonic() + 60
    while api.client.get(f"/api/domains/{guest}", headers=b).json()["state"] != "shut-off":
        assert time.monotonic() < deadline, "guest did not shut down after the ACPI power button"
        time.sleep(0.2)
    assert api.client.post(f"/api/domains/{guest}/shutdown", headers=b).status_code == 409
    started = api.client.post(f"/api/domains/{guest}/start?wait=true", headers=b)
    assert started.status_code == 200 and started.json()["state"] == "running"
    assert api.client.post(f"/api/domains/{guest}/poweroff", headers=b).json()["state"] == "shut-off"
    deleted = api.client.delete(f"/api/domains/{guest}", headers=api.csrf_header)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": guest, "kept": []}
    assert not api.corral.libvirt.exists(guest)
    assert not (api.corral.settings.guests_dir / guest).exists()


def test_start_refused_by_admission_is_507_and_changes_nothing(api: Api, override: object) -> None:
    b = api.bearer
    guest = unique("full")
    assert api.client.post("/api/domains", headers=b,
                           json={"name": guest, "image": "tiny", "load": {"cpu": 50}}).status_code == 201
    assert callable(override)
    override(limits={"cap": 0.01})
    refused = api.client.post(f"/api/domains/{guest}/start", headers=b)
    assert refused.status_code == 507
    assert "expected CPU demand" in refused.json()["error"] and "over" in refused.json()["error"]
    assert api.client.get(f"/api/domains/{guest}", headers=b).json()["state"] == "shut-off"
    create_refused = api.client.post("/api/domains?start=true", headers=b,
                                     json={"name": unique("full2"), "image": "tiny", "load": {"cpu": 50}})
    assert create_refused.status_code == 507
