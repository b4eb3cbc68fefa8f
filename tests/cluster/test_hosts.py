"""Several hosts from one place: the registry, one view of all hosts, placement of new guests."""

from __future__ import annotations

import json

import pytest

from corral.core.errors import AdmissionRefused, Conflict, InvalidInput, NotFound
from corral.core.hosts import HostSpec
from corral.core.spec import GuestSpec
from tests.cluster.conftest import Cluster

pytestmark = [pytest.mark.libvirt, pytest.mark.cluster]


def test_host_list_shows_every_host_and_its_state(cluster: Cluster) -> None:
    listed = json.loads(cluster.cli("host", "list", "--json").stdout)
    assert [h["name"] for h in listed] == ["local", "lab1", "lab2", "lab3", "lab4"]
    assert all(h["state"] == "up" and h["cores"] >= 1 for h in listed)
    table = cluster.cli("host", "list")
    assert table.returncode == 0 and "lab2" in table.stdout


def test_the_registry_refuses_what_it_cannot_manage(cluster: Cluster) -> None:
    c = cluster.corral
    with pytest.raises(Conflict, match="already registered"):
        c.host.add(HostSpec("again", cluster.hosts[0].uri))
    socket_uri = f"qemu+unix:///system?socket={cluster.hosts[0].socket}"
    with pytest.raises(Conflict, match="host UUID of host lab1"):  # the same daemon under another URI
        c.host.add(HostSpec("twin", socket_uri))
    for bad in ("http://example.com/", "qemu:///nowhere", "lxc:///"):
        result = cluster.cli("host", "add", "bad", bad)
        assert result.returncode == 2 and "not a libvirt URI" in result.stderr, result.stderr
    result = cluster.cli("host", "add", "ghost", "qemu+tcp://127.0.0.99/system")
    assert result.returncode == 1 and "cannot add host ghost" in result.stderr
    with pytest.raises(InvalidInput, match="reserved"):
        HostSpec("Domain-0", "qemu:///system")
    with pytest.raises(Conflict, match="configured host"):
        c.host.remove("local")


def test_guests_live_on_any_host_with_names_unique_across_them(cluster: Cluster) -> None:
    c = cluster.corral
    guest = cluster.name("where")
    made = c.guests.create(GuestSpec(guest, "tiny", memory_mib=128), host="lab2", start=True, wait=True)
    try:
        assert made.host == "lab2" and made.state == "running"
        # Every guest command finds the guest's host by itself.
        assert c.guests.info(guest).host == "lab2"
        with pytest.raises(Conflict, match="already exists on host lab2"):
            c.guests.create(GuestSpec(guest, "tiny", memory_mib=128), host="lab3")
        rows = json.loads(cluster.cli("list", "--json").stdout)
        assert [r["host"] for r in rows if r["name"] == "Domain-0"] == ["local", "lab1", "lab2", "lab3", "lab4"]
        assert {r["host"] for r in rows if r["name"] == guest} == {"lab2"}
        only = json.loads(cluster.cli("list", "--host", "lab2", "--json").stdout)
        assert {r["host"] for r in only} == {"lab2"} and guest in {r["name"] for r in only}
        # A host with guests cannot be removed.
        with pytest.raises(Conflict, match="still has guests"):
            c.host.remove("lab2")
        assert cluster.cli("poweroff", guest).returncode == 0
        assert c.hosts.get("lab2").libvirt.state(guest) == "shut-off"
    finally:
        c.guests.delete(guest)
    with pytest.raises(NotFound):
        c.guests.info(guest)


def test_placement_packs_and_explains(cluster: Cluster) -> None:
    c = cluster.corral
    first = cluster.name("pack")
    c.guests.create(GuestSpec(first, "tiny", memory_mib=512), host="lab3")
    c.guests.start(first)
    c.hosts.set_state("lab1", maintenance=True)
    try:
        second = cluster.name("auto")
        result = cluster.cli("create", second, "--image", "tiny", "--memory", "128", "--host", "auto", "--explain")
        assert result.returncode == 0, result.stderr
        assert "lab1: removed by not-in-maintenance" in result.stderr
        assert "lab3: pack weight" in result.stderr and "<- chosen" in result.stderr
        assert c.guests.info(second).host == "lab3"  # the busiest host that still fits
        spread = cluster.name("spread")
        result = cluster.cli("create", spread, "--image", "tiny", "--memory", "128", "--host", "auto",
                             "--weigher", "spread")
        assert result.returncode == 0 and c.guests.info(spread).host in ("local", "lab2")
        # Nothing fits anywhere: refused before anything is made, every host's reason given.
        with pytest.raises(AdmissionRefused, match="no host can take") as refused:
            c.guests.create(GuestSpec(cluster.name("huge"), "tiny", memory_mib=1024 * 1024), host="auto")
        assert "lab1: in maintenance" in str(refused.value) and "lab2: memory" in str(refused.value)
        with pytest.raises(Conflict, match="in maintenance"):
            c.guests.create(GuestSpec(cluster.name("named"), "tiny", memory_mib=128), host="lab1")
    finally:
        c.hosts.set_state("lab1", maintenance=False)
        for row in c.guests.listing():
            if row.name.startswith("ct-"):
                c.guests.delete(row.name)


def test_an_unreachable_host_is_shown_and_does_not_fail_the_listing(cluster: Cluster) -> None:
    c = cluster.corral
    cluster.lab.stop("lab3")
    try:
        rows = json.loads(cluster.cli("list", "--json").stdout)
        lab3 = [r for r in rows if r["host"] == "lab3"]
        assert len(lab3) == 1 and lab3[0]["state"] == "unreachable"
        hosts = {h["name"]: h for h in json.loads(cluster.cli("host", "list", "--json").stdout)}
        assert hosts["lab3"]["state"] == "unreachable" and hosts["lab2"]["state"] == "up"
        placed = c.guests.placement(GuestSpec(cluster.name("x"), "tiny", memory_mib=128))
        assert placed.removed["lab3"][0] == "reachable"
    finally:
        cluster.lab.start("lab3")
    assert c.hosts.get("lab3").reachable()
