"""Evacuating a host, maintenance, and host power (standby and wake through the command driver)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from corral.core.errors import AdmissionRefused, Conflict
from corral.core.spec import GuestSpec
from tests.cluster.conftest import Cluster

pytestmark = [pytest.mark.libvirt, pytest.mark.cluster, pytest.mark.guest]


@pytest.fixture
def three_on_lab2(cluster: Cluster) -> Iterator[list[str]]:
    names = [cluster.name(f"evac{i}") for i in range(3)]
    for i, name in enumerate(names):
        cluster.corral.guests.create(GuestSpec(name, "tiny", memory_mib=128), host="lab2", start=i < 2, wait=i < 2)
    yield names
    for name in names:
        if cluster.corral.hosts.owner(name) is not None:
            cluster.corral.guests.delete(name)


def test_evacuation_refused_when_the_rest_cannot_hold_them(cluster: Cluster, three_on_lab2: list[str]) -> None:
    c = cluster.corral
    original = c.settings
    room = 100  # MiB left for guests on every host: none of these 128 MiB guests fits anywhere
    tight = replace(original, limits=replace(original.limits,
                                             memory_reserve_mib=c.host.facts("lab1").memory_mib - room))
    c.settings = c.guests.settings = c.host.settings = c.migration.settings = tight
    try:
        with pytest.raises(AdmissionRefused, match=r"nothing was moved\. Fits nowhere: ct-evac"):
            c.migration.evacuate("lab2")
    finally:
        c.settings = c.guests.settings = c.host.settings = c.migration.settings = original
    assert {c.guests.info(n).host for n in three_on_lab2} == {"lab2"}


def test_maintenance_on_evacuates_a_host_spreading_its_guests(cluster: Cluster, three_on_lab2: list[str]) -> None:
    c = cluster.corral
    result = cluster.cli("host", "maintenance", "lab2", "on")
    try:
        assert result.returncode == 0, result.stderr
        assert "3 guest(s) moved away" in result.stdout
        where = {n: c.guests.info(n) for n in three_on_lab2}
        assert all(info.host != "lab2" for info in where.values())
        assert len({info.host for info in where.values()}) >= 2  # spread, not piled onto one host
        assert [info.state for info in where.values()] == ["running", "running", "shut-off"]
        hosts = {h["name"]: h for h in json.loads(cluster.cli("host", "list", "--json").stdout)}
        assert hosts["lab2"]["state"] == "maintenance" and hosts["lab2"]["guests_defined"] == 0
        # Run again: nothing left, nothing to do.
        again = cluster.cli("host", "evacuate", "lab2", "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["moved"] == []
    finally:
        c.hosts.set_state("lab2", maintenance=False)


def test_standby_and_wake_through_the_command_driver(cluster: Cluster) -> None:
    c = cluster.corral
    guest = cluster.name("stay")
    c.guests.create(GuestSpec(guest, "tiny", memory_mib=128), host="lab3", start=True)
    try:
        with pytest.raises(Conflict, match=f"guests run on lab3: {guest}"):
            c.host.standby("lab3")
    finally:
        c.guests.delete(guest)
    with pytest.raises(Conflict, match="configured host"):
        c.host.standby("local")
    result = cluster.cli("host", "standby", "lab3")
    assert result.returncode == 0, result.stderr
    try:
        assert not cluster.lab.get("lab3").running  # the command really powered it down
        hosts = {h["name"]: h for h in json.loads(cluster.cli("host", "list", "--json").stdout)}
        assert hosts["lab3"]["state"] == "standby"
        assert c.hosts.get("lab3").standby  # a running Corral (corral serve) sees what another process set
        placed = c.guests.placement(GuestSpec(cluster.name("x"), "tiny", memory_mib=128))
        assert placed.removed["lab3"][0] == "not-in-standby"
    finally:
        woken = cluster.cli("host", "wake", "lab3")
    assert woken.returncode == 0 and "libvirt answered" in woken.stdout, woken.stderr
    assert cluster.lab.get("lab3").running
    hosts = {h["name"]: h for h in json.loads(cluster.cli("host", "list", "--json").stdout)}
    assert hosts["lab3"]["state"] == "up" and not c.hosts.get("lab3").standby
