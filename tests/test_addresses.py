"""A guest's NICs and addresses (issue 15, item 3): read from its domain XML, addresses from the DHCP leases of
libvirt's network and from the guest agent; shown by `info`, `list --long`, their --json and the API.

The merge is pure (core/nics.py); the API's shape is checked on libvirt's test driver; a real tiny guest on
the `corral` network gets its address from libvirt's DHCP server (busybox udhcpc in its init), and `info
--json` must show the lease's address with the NIC's MAC and network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from corral.api.schemas import DomainDetails, DomainRow, Nic
from corral.core.nics import IpAddress, NicInfo, Reported, agent_connected, parse_interfaces, with_addresses
from corral.core.spec import GuestSpec
from corral.services.context import Corral
from corral.services.guests import GuestInfo, ListedDomain

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))
LEASE_WAIT_S = 60.0

LIVE_XML = """<domain type='qemu' id='7'><name>web</name><devices>
  <interface type='network'>
    <mac address='52:54:00:AB:cd:01'/>
    <source network='corral' portid='f00' bridge='corralbr0'/>
    <target dev='vnet3'/>
    <model type='virtio'/>
  </interface>
  <interface type='user'><mac address='52:54:00:ab:cd:02'/><model type='e1000'/></interface>
  <interface type='bridge'><mac address='52:54:00:ab:cd:03'/><source bridge='br0'/></interface>
  <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>
</devices></domain>"""


def name(label: str) -> str:
    return f"ct-{label}-{uuid.uuid4().hex[:6]}"


# --- the pure part ------------------------------------------------------------------------------------------
def test_the_nics_of_a_domain_xml() -> None:
    nics = parse_interfaces(LIVE_XML)
    assert [n.mac for n in nics] == ["52:54:00:ab:cd:01", "52:54:00:ab:cd:02", "52:54:00:ab:cd:03"]
    first, user, bridged = nics
    assert (first.type, first.network, first.bridge, first.model, first.target) == (
        "network", "corral", "corralbr0", "virtio", "vnet3")
    assert (user.type, user.network, user.bridge, user.model, user.target) == ("user", None, None, "e1000", None)
    assert (bridged.type, bridged.network, bridged.bridge) == ("bridge", None, "br0")
    assert all(n.addresses == [] for n in nics)
    assert agent_connected(LIVE_XML)
    assert not agent_connected(LIVE_XML.replace("state='connected'", "state='disconnected'"))
    assert parse_interfaces("<domain><name>x</name></domain>") == []


def test_lease_and_agent_addresses_merge_by_mac() -> None:
    nics = parse_interfaces(LIVE_XML)
    leases = [Reported("vnet3", "52:54:00:ab:cd:01", [("ipv4", "192.168.123.45", 24)])]
    agent = [Reported("lo", "00:00:00:00:00:00", [("ipv4", "127.0.0.1", 8), ("ipv6", "::1", 128)]),
             Reported("eth0", "52:54:00:AB:CD:01", [("ipv6", "fe80::5054:ff:feab:cd01", 64),
                                                    ("ipv4", "192.168.123.45", 24)]),
             Reported("eth1", "52:54:00:ab:cd:02", [("ipv4", "10.0.2.15", 24)]),
             Reported("eth9", "52:54:00:99:99:99", [("ipv4", "10.9.9.9", 24)])]  # no such NIC: left out
    merged = with_addresses(with_addresses(nics, "lease", leases), "agent", agent)
    first, user, bridged = merged
    assert first.addresses == [IpAddress("192.168.123.45", 24, "ipv4", ["lease", "agent"]),
                               IpAddress("fe80::5054:ff:feab:cd01", 64, "ipv6", ["agent"])]
    assert first.guest_name == "eth0" and first.target == "vnet3"
    assert user.addresses == [IpAddress("10.0.2.15", 24, "ipv4", ["agent"])] and user.guest_name == "eth1"
    assert bridged.addresses == [] and bridged.guest_name is None
    assert "127.0.0.1" not in json.dumps([n.as_dict() for n in merged])
    assert first.describe() == ("52:54:00:ab:cd:01 network corral (virtio, vnet3, eth0): "
                                "192.168.123.45/24 (lease+agent), fe80::5054:ff:feab:cd01/64 (agent)")
    assert bridged.describe() == "52:54:00:ab:cd:03 bridge br0: no address known"
    # Asked again, the same source adds nothing twice.
    assert with_addresses(merged, "lease", leases) == merged


def test_the_api_models_give_the_json_the_services_give() -> None:
    nic = NicInfo("52:54:00:ab:cd:01", "network", "corral", "corralbr0", "virtio", "vnet3", None,
                  [IpAddress("192.168.123.45", 24, "ipv4", ["lease"])])
    info = GuestInfo("web", "f00", 3, "running", None, 1, 256, 0.5, True, "tiny", "cpu=15", [], None, None,
                     [], False, "local", [nic])
    adapter: TypeAdapter[Any] = TypeAdapter(DomainDetails)
    given = adapter.dump_json(adapter.validate_python(info, from_attributes=True))
    assert given == TypeAdapter(Any).dump_json(info.as_dict())
    assert json.loads(given)["nics"][0]["addresses"][0] == {"address": "192.168.123.45", "prefix": 24,
                                                            "family": "ipv4", "sources": ["lease"]}
    rows = [ListedDomain("Domain-0", 0, "running", 4, 16000, 1.0, 2.0),
            ListedDomain("web", 3, "running", 1, 256, 1.0, 2.0, None, "local", [nic])]
    rows_adapter: TypeAdapter[Any] = TypeAdapter(list[DomainRow])
    listed = json.loads(rows_adapter.dump_json(rows_adapter.validate_python([r.as_dict() for r in rows])))
    assert listed[0]["nics"] is None and listed[1]["nics"][0]["mac"] == nic.mac
    assert set(Nic.model_fields) == {"mac", "type", "network", "bridge", "model", "target", "guest_name",
                                     "addresses"}


# --- libvirt's test driver: the API and the listing, no daemon -------------------------------------------------
def test_info_and_the_long_listing_carry_the_nics_on_the_test_driver(offline: Corral) -> None:
    guest = name("nics")
    offline.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    shut_off = offline.guests.info(guest)
    assert len(shut_off.nics) == 1 and shut_off.nics[0].addresses == []  # no address while it is off
    mac = shut_off.nics[0].mac
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
    offline.libvirt.start(guest)
    running = offline.guests.info(guest)
    nic = running.nics[0]
    assert nic.mac == mac and nic.addresses and nic.addresses[0].sources == ["lease"]  # the test driver's lease
    assert running.as_dict()["nics"][0]["addresses"][0]["address"] == nic.addresses[0].address
    rows = {r.name: r for r in offline.guests.listing(nics=True)}
    assert rows["Domain-0"].nics is None and rows[guest].nics == running.nics
    assert all(r.nics is None for r in offline.guests.listing())  # not asked: not read


# --- a real tiny guest on the corral network ----------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, its tables as wide as a wide terminal (so that no cell is cut)."""
    return subprocess.run([CORRAL_BIN, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def booted(corral_session: Corral) -> Iterator[tuple[Corral, str]]:
    """One tiny guest on the corral network, running and up (its init ran udhcpc)."""
    network, why = corral_session.host.network()
    assert network == "corral", f"the tests need the corral libvirt network: {why}"
    guest = name("addr")
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=128), start=True, wait=True)
    yield corral_session, guest
    if corral_session.libvirt.exists(guest):
        corral_session.guests.delete(guest)


def _lease_of(details: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for nic in details["nics"] for a in nic["addresses"] if "lease" in a["sources"]]


@pytest.mark.libvirt
@pytest.mark.guest
def test_info_json_shows_the_lease_of_a_tiny_guest(booted: tuple[Corral, str]) -> None:
    corral, guest = booted
    deadline = time.monotonic() + LEASE_WAIT_S
    while True:  # the lease comes a moment after the guest's DHCP client asks: a bounded poll
        result = cli("info", guest, "--json")
        assert result.returncode == 0, result.stderr
        details = json.loads(result.stdout)
        if _lease_of(details):
            break
        assert time.monotonic() < deadline, f"no DHCP lease for {guest} after {LEASE_WAIT_S:g} s: {details['nics']}"
        time.sleep(1)
    [nic] = details["nics"]
    [address] = nic["addresses"]
    # The NIC as libvirt has it: its MAC, the corral network, virtio, a tap on the host.
    iflist = virsh("domiflist", guest)
    assert nic["mac"] in iflist and "corral" in iflist
    assert (nic["type"], nic["network"], nic["model"]) == ("network", "corral", "virtio")
    assert nic["target"] and nic["target"] in iflist
    # The address is the one libvirt's DHCP server leased to that MAC ...
    leases = virsh("net-dhcp-leases", "corral", "--mac", nic["mac"])
    assert f"{address['address']}/{address['prefix']}" in leases, leases
    assert address["family"] == "ipv4" and address["sources"] == ["lease"]  # the tiny image has no agent
    # ... and the one the guest itself configured (its readiness line on the console says it).
    log = Path(details["console_log"]).read_text(errors="replace")
    assert f"CORRAL-READY name={guest} ip={address['address']}" in log
    # The same through the service and in the plain `info` table.
    assert corral.guests.info(guest).nics[0].addresses[0].address == address["address"]
    table = cli("info", guest)
    assert address["address"] in table.stdout and nic["mac"] in table.stdout and "network corral" in table.stdout


@pytest.mark.libvirt
@pytest.mark.guest
def test_list_long_shows_addresses_and_nics(booted: tuple[Corral, str]) -> None:
    corral, guest = booted
    deadline = time.monotonic() + LEASE_WAIT_S
    while not (addresses := [a.address for n in corral.guests.info(guest).nics for a in n.addresses]):
        assert time.monotonic() < deadline, "no lease"
        time.sleep(1)
    rows = {r["name"]: r for r in json.loads(cli("list", "--long", "--json").stdout)}
    assert rows["Domain-0"]["nics"] is None
    [nic] = rows[guest]["nics"]
    assert nic["network"] == "corral" and nic["addresses"][0]["address"] == addresses[0]
    assert all(r["nics"] is None for r in json.loads(cli("list", "--json").stdout))  # only when asked
    result = cli("list", "--long")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if guest in line)
    assert f"{addresses[0]}/24" in line and nic["mac"] in line
    assert "Addresses" in result.stdout and "NICs" in result.stdout
    assert "Addresses" not in cli("list").stdout
