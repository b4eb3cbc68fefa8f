"""A guest's NICs and their IP addresses: read from its domain XML, addresses merged from what libvirt
reports (the DHCP leases of its network, the guest agent). Pure: the adapter asks libvirt, this decides.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

SOURCES = ("lease", "agent")  # in the order an address's sources are listed
NO_MAC = "00:00:00:00:00:00"  # what the agent reports for the guest's loopback


@dataclass(frozen=True)
class IpAddress:
    address: str
    prefix: int
    family: str  # ipv4 | ipv6
    sources: list[str] = field(default_factory=list)  # lease (libvirt's DHCP server), agent (the guest says)

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "prefix": self.prefix, "family": self.family, "sources": list(self.sources)}


@dataclass(frozen=True)
class NicInfo:
    """One NIC of a guest, as its domain XML declares it, with the addresses known for its MAC."""

    mac: str
    type: str  # network, bridge, user, direct, ...: libvirt's <interface type>
    network: str | None = None  # the libvirt network it joins (type network)
    bridge: str | None = None  # the host bridge it is plugged into (known while it runs, or type bridge)
    model: str | None = None  # virtio, e1000, ...
    target: str | None = None  # its device on the host (vnet3) while the guest runs
    guest_name: str | None = None  # its name inside the guest (eth0), when the guest agent says
    addresses: list[IpAddress] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"mac": self.mac, "type": self.type, "network": self.network, "bridge": self.bridge,
                "model": self.model, "target": self.target, "guest_name": self.guest_name,
                "addresses": [a.as_dict() for a in self.addresses]}

    def describe(self) -> str:
        """One line: `52:54:00:12:34:56 network corral (virtio, vnet3): 192.168.123.45/24 (lease)`."""
        where = {"network": f"network {self.network}", "bridge": f"bridge {self.bridge}",
                 "user": "user-mode"}.get(self.type, self.type)
        details = ", ".join(d for d in (self.model, self.target, self.guest_name) if d)
        addresses = ", ".join(f"{a.cidr} ({'+'.join(a.sources)})" for a in self.addresses) or "no address known"
        return f"{self.mac} {where}{f' ({details})' if details else ''}: {addresses}"


@dataclass(frozen=True)
class Reported:
    """One interface as a source of addresses reports it (libvirt's virDomainInterfaceAddresses)."""

    name: str  # the host's tap for leases; the guest's own name (eth0) for the agent
    mac: str | None
    addresses: Sequence[tuple[str, str, int]]  # (family, address, prefix)


def parse_interfaces(xml: str) -> list[NicInfo]:
    """The NICs a domain XML declares, in its order, without addresses."""
    root = ET.fromstring(xml)
    nics = []
    for iface in root.iterfind("devices/interface"):
        mac = iface.find("mac")
        source = iface.find("source")
        model = iface.find("model")
        target = iface.find("target")
        kind = iface.get("type", "")
        nics.append(NicInfo(
            mac=(mac.get("address", "") if mac is not None else "").lower(),
            type=kind,
            network=source.get("network") if source is not None and kind == "network" else None,
            bridge=source.get("bridge") if source is not None else None,
            model=model.get("type") if model is not None else None,
            target=target.get("dev") if target is not None else None,
        ))
    return nics


def agent_connected(xml: str) -> bool:
    """The guest agent is connected to its channel (a running domain's XML says so): asking it makes sense."""
    return any(t.get("name") == "org.qemu.guest_agent.0" and t.get("state") == "connected"
               for t in ET.fromstring(xml).iterfind("devices/channel/target"))


def with_addresses(nics: Sequence[NicInfo], source: str, reported: Iterable[Reported]) -> list[NicInfo]:
    """The NICs with what `source` reported merged in, matched by MAC: an address already known gains the
    source; a new one is added. Interfaces whose MAC no NIC has (the guest's loopback) are left out. The
    agent also gives each NIC its name inside the guest."""
    by_mac: dict[str, list[Reported]] = {}
    for item in reported:
        mac = (item.mac or "").lower()
        if mac and mac != NO_MAC:
            by_mac.setdefault(mac, []).append(item)
    merged = []
    for nic in nics:
        items = by_mac.get(nic.mac, [])
        addresses = list(nic.addresses)
        for item in items:
            for family, address, prefix in item.addresses:
                known = next((i for i, a in enumerate(addresses) if a.address == address), None)
                if known is None:
                    addresses.append(IpAddress(address, prefix, family, [source]))
                elif source not in addresses[known].sources:
                    sources = sorted({*addresses[known].sources, source}, key=_source_order)
                    addresses[known] = replace(addresses[known], sources=sources)
        guest_name = nic.guest_name
        if source == "agent" and items:
            guest_name = items[0].name
        addresses.sort(key=lambda a: a.family != "ipv4")  # IPv4 first, each family in the order reported
        merged.append(replace(nic, guest_name=guest_name, addresses=addresses))
    return merged


def _source_order(source: str) -> int:
    return SOURCES.index(source) if source in SOURCES else len(SOURCES)
