"""A guest's disks and NICs over the REST API, on a shut-off guest of the real libvirt daemon (no guest boots
here: tests/test_devices.py hot-plugs into a running one)."""

from __future__ import annotations

import pytest

from corral.core.domxml import domain_disks
from corral.core.nics import parse_interfaces
from corral.services.context import Corral

from .conftest import Api, unique

pytestmark = [pytest.mark.libvirt]


def test_disks_and_nics_over_the_api(live_api: Api, corral: Corral) -> None:
    post, delete, b = live_api.client.post, live_api.client.delete, live_api.bearer
    guest = unique("dev")
    assert post("/api/domains", headers=b, json={"name": guest, "image": "tiny", "memory": 128}).status_code == 201

    added = post(f"/api/domains/{guest}/disks", headers=b, json={"size": 0.02})
    assert added.status_code == 201, added.text
    disk = added.json()
    assert disk == {**disk, "domain": guest, "device": "vdb", "action": "added", "live": False, "kept": False}
    assert disk["path"].endswith(f"guest-{guest}-disk1.qcow2") and disk["size_bytes"] >= 0.02 * 1024**3
    assert list(disk) == ["domain", "host", "device", "action", "path", "size_bytes", "live", "kept"]

    grown = post(f"/api/domains/{guest}/disks/vdb/resize", headers=b, json={"size": 0.05})
    assert grown.status_code == 200 and grown.json()["action"] == "resized", grown.text
    assert corral.libvirt.block_capacity(guest, "vdb") == grown.json()["size_bytes"]
    shrink = post(f"/api/domains/{guest}/disks/vdb/resize", headers=b, json={"size": 0.02})
    assert shrink.status_code == 422 and "cannot shrink" in shrink.json()["error"]

    nic = post(f"/api/domains/{guest}/nics", headers=b, json={})
    assert nic.status_code == 201, nic.text
    mac = nic.json()["mac"]
    assert mac in [n.mac for n in parse_interfaces(corral.libvirt.xml(guest, inactive=True))]
    unknown = post(f"/api/domains/{guest}/nics", headers=b, json={"network": "no-such-net"})
    assert unknown.status_code == 422 and "no network named 'no-such-net'" in unknown.json()["error"]

    removed_nic = delete(f"/api/domains/{guest}/nics/{mac}", headers=b)
    assert removed_nic.status_code == 200 and removed_nic.json()["action"] == "removed"
    assert mac not in [n.mac for n in parse_interfaces(corral.libvirt.xml(guest, inactive=True))]
    assert delete(f"/api/domains/{guest}/nics/{mac}", headers=b).status_code == 404

    assert delete(f"/api/domains/{guest}/disks/vda", headers=b).status_code == 422
    removed = delete(f"/api/domains/{guest}/disks/vdb", headers=b)
    assert removed.status_code == 200 and removed.json()["kept"] is False, removed.text
    assert [d.target for d in domain_disks(corral.libvirt.xml(guest, inactive=True))] == ["vda"]
    assert f"guest-{guest}-disk1.qcow2" not in corral.libvirt.volumes(corral.settings.pool_name)


def test_bad_bodies_and_paths_are_refused(live_api: Api) -> None:
    post, b = live_api.client.post, live_api.bearer
    guest = unique("devbad")
    assert post("/api/domains", headers=b, json={"name": guest, "image": "tiny", "memory": 128}).status_code == 201
    for body in ({}, {"size": "1"}, {"size": 1, "extra": 1}, {"size": 0}, {"size": 1e9}):
        assert post(f"/api/domains/{guest}/disks", headers=b, json=body).status_code == 422, body
    assert post(f"/api/domains/{guest}/disks/vd1/resize", headers=b, json={"size": 1}).status_code == 422
    assert live_api.client.delete(f"/api/domains/{guest}/nics/not-a-mac", headers=b).status_code == 422
    assert post("/api/domains/ct-api-none-000000/disks", headers=b, json={"size": 1}).status_code == 404
