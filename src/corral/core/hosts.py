"""Hosts as values: what Corral knows of each libvirt host it manages (pure, no I/O).

One host or many, the code is the same: a single-host installation is a cluster of one host, the
local one. A host is named; its libvirt URI says how to reach it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from corral.core.errors import InvalidInput
from corral.core.validate import check_name

LOCAL_HOST = "local"  # the host Corral runs on, there from the start
DEFAULT_URI = "qemu:///system"
STORAGE_MODES = ("shared", "copy")  # disks on storage every host sees, or copied when guests move
ACCELERATORS = ("auto", "kvm", "tcg")
# qemu, qemu+ssh, qemu+tcp, qemu+tls, qemu+unix, qemu+libssh2 … and libvirt's test driver for tests.
_SCHEME = re.compile(r"^(qemu|test)(\+(ssh|libssh|libssh2|tcp|tls|unix|ext))?$")


POWER_DRIVERS = ("none", "command", "wol", "ipmi")


@dataclass(frozen=True)
class PowerSpec:
    """How Corral puts a host in standby and wakes it: a driver and its settings."""

    driver: str = "none"
    settings: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.driver not in POWER_DRIVERS:
            raise InvalidInput(f"power driver {self.driver!r}: use one of {', '.join(POWER_DRIVERS)}")

    def get(self, key: str, default: str = "") -> str:
        return dict(self.settings).get(key, default)


@dataclass(frozen=True)
class HostSpec:
    """A managed host: its name, how to reach its libvirt, and what Corral is told about it."""

    name: str
    uri: str
    storage: str = "copy"  # "shared": Corral's data folder is on storage this host sees too
    accelerator: str = "auto"  # auto: probe (local hosts) or libvirt's domain capabilities (remote)
    power: PowerSpec = field(default_factory=PowerSpec)
    network: str | None = None  # libvirt network for guests' NICs there; None: the configured one, "": user-mode

    def __post_init__(self) -> None:
        check_host_name(self.name)
        check_uri(self.uri)
        if self.storage not in STORAGE_MODES:
            raise InvalidInput(f"host {self.name}: storage must be one of {', '.join(STORAGE_MODES)}, "
                               f"not {self.storage!r}")
        if self.accelerator not in ACCELERATORS:
            raise InvalidInput(f"host {self.name}: accelerator must be one of {', '.join(ACCELERATORS)}")
        if self.network:
            check_name(self.network, "network name")

    @property
    def reachable_by_peers(self) -> bool:
        """Whether other hosts' libvirt can reach this one by its URI (what a peer-to-peer migration into
        it needs): a URI with a host name, or an explicit socket; not the default local socket, which on
        another host (or in a lab host's namespace) is that host's own."""
        parts = urlsplit(self.uri)
        return bool(parts.hostname) or "socket" in parse_qs(parts.query)

    @property
    def on_this_machine(self) -> bool:
        """Reached without a network: its QEMU runs on the machine Corral runs on (the KVM probe and
        psutil describe it)."""
        return uri_is_local(self.uri)


def check_host_name(name: str) -> str:
    check_name(name, "host name")
    if name.lower() in ("domain-0", "dom0", "auto"):
        raise InvalidInput(f"host name {name!r} is reserved")
    return name


def check_uri(uri: str) -> str:
    """A libvirt URI Corral can manage: qemu (any transport) or libvirt's test driver."""
    if not isinstance(uri, str) or not uri or len(uri) > 1024 or any(ch.isspace() for ch in uri):
        raise InvalidInput(f"{uri!r} is not a libvirt URI (e.g. qemu:///system, qemu+ssh://host/system)")
    parts = urlsplit(uri)
    scheme = parts.scheme or ""
    if not _SCHEME.match(scheme) or (scheme.startswith("qemu") and parts.path not in ("/system", "/session")):
        raise InvalidInput(f"{uri!r} is not a libvirt URI Corral can manage (e.g. qemu:///system, "
                           "qemu+ssh://host/system, qemu+tcp://10.0.0.2/system, qemu+unix:///system?socket=PATH)")
    return uri


def uri_is_local(uri: str) -> bool:
    parts = urlsplit(uri)
    if parts.hostname in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback or "socket" in parse_qs(parts.query)
    except ValueError:
        return False


@dataclass(frozen=True)
class HostSize:
    """A host's size as its libvirt last told it: what the balancer counts on for a host in standby,
    which cannot be asked."""

    cores: int
    mhz: float
    memory_mib: int


@dataclass(frozen=True)
class HostRecord:
    """A registered host and the states an administrator sets on it."""

    spec: HostSpec
    maintenance: bool = False  # no new guests, evacuated; the balancer leaves it alone
    standby: bool = False  # powered down by Corral to save energy; woken when needed
    size: HostSize | None = None  # as last seen up


HOST_STATES = ("up", "unreachable", "maintenance", "standby")


def host_state(record: HostRecord, reachable: bool) -> str:
    """What `corral host list` calls a host's state."""
    if record.standby:
        return "standby"
    if record.maintenance:
        return "maintenance"
    return "up" if reachable else "unreachable"
