"""Autostart, vCPUs and memory, tags and bulk actions over the REST API, on libvirt's test driver (no daemon,
no guest boots here: tests/test_edit.py does that against the real daemon)."""

from __future__ import annotations

from .conftest import Api, unique


def _guest(api: Api, stem: str) -> str:
    guest = unique(stem)
    response = api.client.post("/api/domains", headers=api.bearer, json={"name": guest, "image": "tiny",
                                                                          "memory": 128})
    assert response.status_code == 201, response.text
    return guest


def test_autostart_and_resources_over_the_api(api: Api) -> None:
    put, patch, b = api.client.put, api.client.patch, api.bearer
    guest = _guest(api, "edit")
    on = put(f"/api/domains/{guest}/autostart", headers=b, json={"autostart": True})
    assert on.status_code == 200 and on.json()["autostart"] is True, on.text
    row = next(r for r in api.client.get("/api/domains", headers=b).json() if r["name"] == guest)
    assert row["autostart"] is True and row["tags"] == []
    assert put(f"/api/domains/{guest}/autostart", headers=b, json={"autostart": "yes"}).status_code == 422
    assert put(f"/api/domains/{guest}/autostart", headers=b, json={"autostart": False}).json()["autostart"] is False

    changed = patch(f"/api/domains/{guest}", headers=b, json={"vcpus": 2, "memory": 192, "max_memory": 256})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"name": guest, "state": "shut-off", "live": None, "next_boot": {
        "vcpus": 2, "max_vcpus": 2, "memory_mib": 192, "max_memory_mib": 256}}
    assert api.client.get(f"/api/domains/{guest}/resources", headers=b).json() == changed.json()
    # Refused: nothing changed.
    for body, status, message in (({}, 422, "nothing to change"), ({"vcpus": 0}, 422, "vcpus=0"),
                                  ({"vcpus": 65}, 422, "vcpus=65"), ({"memory": 1}, 422, "memory=1"),
                                  ({"memory": 1024 * 1024}, 507, "does not fit"),
                                  ({"memory": 128, "live": True}, 409, "--live changes a running guest"),
                                  ({"memory": 300, "max_memory": 256}, 422, "below the 300 MiB")):
        refused = patch(f"/api/domains/{guest}", headers=b, json=body)
        assert refused.status_code == status and message in refused.json()["error"], (body, refused.text)
    assert api.client.get(f"/api/domains/{guest}/resources", headers=b).json() == changed.json()


def test_tags_filtered_listing_and_a_bulk_action_with_one_failure(api: Api) -> None:
    put, post, get, b = api.client.put, api.client.post, api.client.get, api.bearer
    running, off = _guest(api, "run"), _guest(api, "off")
    api.corral.guests.start(running)
    for guest in (running, off):
        tagged = put(f"/api/domains/{guest}/tags", headers=b, json={"tags": ["web", "prod", "web"]})
        assert tagged.status_code == 200 and tagged.json()["tags"] == ["web", "prod"], tagged.text
    for bad in (["bad tag"], ["<b>"], ["Prod"], "web"):
        refused = put(f"/api/domains/{off}/tags", headers=b, json={"tags": bad})
        assert refused.status_code == 422, refused.text
    assert get(f"/api/domains/{off}", headers=b).json()["tags"] == ["web", "prod"]
    assert sorted(r["name"] for r in get("/api/domains?tag=prod", headers=b).json()) == sorted([running, off])
    assert get("/api/domains?tag=Bad%20tag", headers=b).status_code == 422
    assert put(f"/api/domains/{off}/tags", headers=b, json={"tags": []}).json()["tags"] == []
    assert [r["name"] for r in get("/api/domains?tag=prod", headers=b).json()] == [running]
    put(f"/api/domains/{off}/tags", headers=b, json={"tags": ["prod"]})

    done = post("/api/bulk/poweroff", headers=b, json={"tag": "prod"})
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["action"], body["tag"], body["succeeded"], body["failed"]) == ("poweroff", "prod", 1, 1)
    results = {r["name"]: r for r in body["results"]}
    assert results[running] == {"name": running, "ok": True, "state": "shut-off", "error": None, "status": None}
    assert results[off]["ok"] is False and results[off]["status"] == 409 and "shut-off" in results[off]["error"]
    assert api.corral.libvirt.state(running) == "shut-off"

    snap = post("/api/bulk/snapshot", headers=b, json={"names": [running, off], "snapshot": "s1"})
    assert snap.status_code == 200 and snap.json()["succeeded"] == 2, snap.text
    assert post("/api/bulk/reboot", headers=b, json={"tag": "prod"}).status_code == 422
    assert post("/api/bulk/poweroff", headers=b, json={"tag": "prod", "names": [off]}).status_code == 422
    assert post("/api/bulk/poweroff", headers=b, json={}).status_code == 422
    assert post("/api/bulk/snapshot", headers=b, json={"tag": "prod"}).status_code == 422
    assert post("/api/bulk/poweroff", headers=b, json={"tag": "nobody-has-it"}).status_code == 404
