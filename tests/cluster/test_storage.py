"""A host that does not share Corral's data folder (lab4, storage copy): images reach it through its
storage pool, guests' disks are volumes there, and guests move to and from it with their disks copied."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from corral.core.errors import Conflict, InvalidInput
from corral.core.spec import GuestSpec, LoadSpec
from tests.cluster.conftest import COPY_HOST, Cluster

pytestmark = [pytest.mark.libvirt, pytest.mark.cluster, pytest.mark.guest]


def volumes(cluster: Cluster, host: str) -> list[str]:
    uri = cluster.corral.hosts.get(host).uri
    pool = cluster.corral.settings.pool_name
    out = subprocess.run(["virsh", "-c", uri, "vol-list", pool], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]  # past the header and its rule
    return [row[0] for row in rows]


@pytest.fixture
def pool_guest(cluster: Cluster) -> Iterator[str]:
    name = cluster.name("pool")
    cluster.corral.guests.create(GuestSpec(name, "tiny", memory_mib=128, load=LoadSpec(cpu_pct=20)), host=COPY_HOST,
                                 start=True, wait=True)
    yield name
    if cluster.corral.hosts.owner(name) is not None:
        cluster.corral.guests.delete(name)


def works(cluster: Cluster, name: str) -> None:
    before = cluster.corral.guests.info(name).cpu_time_s
    time.sleep(1.0)
    assert cluster.corral.guests.info(name).cpu_time_s > before
    with cluster.corral.guests.open_console(name) as console:
        console.send(b"\n")
        time.sleep(0.3)
        console.send(b"echo here-$((40+2))\n")
        assert b"here-42" in console.expect(b"here-42", 20)


def test_a_guest_on_a_host_without_shared_storage(cluster: Cluster, pool_guest: str) -> None:
    c = cluster.corral
    info = c.guests.info(pool_guest)
    assert info.host == COPY_HOST and info.state == "running"
    assert info.disks[0]["path"] == f"/var/lib/libvirt/images/corral/guest-{pool_guest}-disk0.qcow2"
    listed = volumes(cluster, COPY_HOST)
    assert f"guest-{pool_guest}-disk0.qcow2" in listed  # virsh sees its disk in the corral pool
    assert any(v.startswith("image-tiny-") and v.endswith("vmlinux") for v in listed)  # the image, uploaded
    works(cluster, pool_guest)
    c.guests.poweroff(pool_guest)
    with pytest.raises(Conflict, match="storage pool"):
        c.guests.clone(pool_guest, cluster.name("clone"))
    c.guests.delete(pool_guest)
    assert f"guest-{pool_guest}-disk0.qcow2" not in volumes(cluster, COPY_HOST)


def test_copy_storage_migration_both_ways(cluster: Cluster, pool_guest: str) -> None:
    c = cluster.corral
    with pytest.raises(Conflict, match="--copy-storage"):
        c.migration.check(pool_guest, "lab1")
    to_shared = c.migration.migrate(pool_guest, "lab1", copy_storage=True)
    assert to_shared.live and c.guests.info(pool_guest).host == "lab1"
    assert c.guests.info(pool_guest).disks[0]["path"] == str(c.settings.disks_dir / f"guest-{pool_guest}-disk0.qcow2")
    assert f"guest-{pool_guest}-disk0.qcow2" in volumes(cluster, "lab1")  # a volume of lab1's pool now
    assert f"guest-{pool_guest}-disk0.qcow2" not in volumes(cluster, COPY_HOST)  # the source's copy went
    works(cluster, pool_guest)
    result = cluster.cli("migrate", pool_guest, COPY_HOST, "--copy-storage")
    assert result.returncode == 0, result.stderr
    assert c.guests.info(pool_guest).host == COPY_HOST
    assert f"guest-{pool_guest}-disk0.qcow2" in volumes(cluster, COPY_HOST)
    assert not (c.settings.disks_dir / f"guest-{pool_guest}-disk0.qcow2").exists()
    works(cluster, pool_guest)
    c.guests.poweroff(pool_guest)
    with pytest.raises(Conflict, match="copied by a live migration"):
        c.migration.check(pool_guest, "lab1", copy_storage=True)


def test_copy_storage_between_hosts_that_share_it_is_refused(cluster: Cluster) -> None:
    c = cluster.corral
    name = cluster.name("shared")
    c.guests.create(GuestSpec(name, "tiny", memory_mib=128), host="lab1", start=True)
    try:
        with pytest.raises(InvalidInput, match="nothing to copy"):
            c.migration.check(name, "lab2", copy_storage=True)
    finally:
        c.guests.delete(name)
