"""The only module that talks to libvirt: a thin adapter that turns libvirt errors into Corral's.

Domains stay ordinary libvirt domains: anything virsh made is listed, anything Corral makes is
visible to virsh.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import libvirt

from corral.core.errors import BackendError, Conflict, NotFound

# libvirt prints every error to stderr by default; Corral reports them itself, once.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no-state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut-off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
ACTIVE_STATES = {"running", "blocked", "paused", "shutting-down", "suspended", "no-state"}


@dataclass(frozen=True)
class DomainRow:
    name: str
    id: int | None  # None while shut off, like `xl list` shows no ID
    uuid: str
    state: str
    vcpus: int
    memory_mib: int
    cpu_time_ns: int
    persistent: bool


@contextlib.contextmanager
def translated(action: str, name: str | None = None) -> Iterator[None]:
    """Re-raise libvirt errors as Corral errors with one clear line."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise_translated(exc, action, name)


def raise_translated(exc: libvirt.libvirtError, action: str, name: str | None) -> NoReturn:
    code = exc.get_error_code()
    message = (exc.get_error_message() or str(exc)).strip()
    subject = f"{action} {name}" if name else action
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        raise NotFound(f"no domain named {name!r}") from None
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        raise NotFound(f"{subject}: {message}") from None
    if code in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_DOM_EXIST):
        raise Conflict(f"{subject}: {message}") from None
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC):
        raise BackendError(f"{subject}: libvirt is unreachable ({message})") from None
    raise BackendError(f"{subject}: {message}") from None


class LibvirtHost:
    """One libvirt connection, opened on first use."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                if self._conn is not None:  # dead (libvirtd restarted): release it before reopening
                    with contextlib.suppress(libvirt.libvirtError):
                        self._conn.close()
                    self._conn = None
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise BackendError(
                        f"cannot connect to libvirt at {self.uri}: "
                        f"{(exc.get_error_message() or str(exc)).strip()} "
                        "(is libvirtd running? scripts/setup starts it)"
                    ) from None
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    # --- reading -------------------------------------------------------------------------
    def rows(self) -> list[DomainRow]:
        with translated("list domains"):
            domains = self.conn.listAllDomains(0)
            rows = []
            for dom in domains:
                try:
                    state, max_kib, _mem_kib, vcpus, cpu_time = dom.info()
                    rows.append(DomainRow(
                        name=dom.name(),
                        id=dom.ID() if dom.ID() >= 0 else None,
                        uuid=dom.UUIDString(),
                        state=STATE_NAMES.get(state, "unknown"),
                        vcpus=vcpus,
                        memory_mib=max_kib // 1024,
                        cpu_time_ns=cpu_time,
                        persistent=bool(dom.isPersistent()),
                    ))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # vanished while listing
                        raise
        return sorted(rows, key=lambda r: (r.id is None, r.id or 0, r.name))

    def exists(self, name: str) -> bool:
        try:
            self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise_translated(exc, "look up", name)
        return True

    def domain(self, name: str) -> libvirt.virDomain:
        with translated("look up", name):
            return self.conn.lookupByName(name)

    def state(self, name: str) -> str:
        with translated("read the state of", name):
            state, _reason = self.domain(name).state()
        return STATE_NAMES.get(state, "unknown")

    def xml(self, name: str, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with translated("read the XML of", name):
            return str(self.domain(name).XMLDesc(flags))

    def cpu_times(self) -> dict[str, int]:
        """Total CPU time (ns) of every running domain, in one bulk call."""
        with translated("read CPU times"):
            stats = self.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_CPU_TOTAL,
                                                libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        return {dom.name(): int(values.get("cpu.time", 0)) for dom, values in stats}

    def capabilities_has_kvm(self) -> bool:
        with translated("read domain capabilities"):
            caps = self.conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
        return "<domain>kvm</domain>" in caps

    # --- acting --------------------------------------------------------------------------
    def define(self, xml: str) -> None:
        with translated("define"):
            self.conn.defineXML(xml)

    def act(self, name: str, action: str, call: Callable[[libvirt.virDomain], Any]) -> Any:
        with translated(action, name):
            return call(self.domain(name))

    def undefine(self, name: str) -> None:
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        with translated("undefine", name):
            self.domain(name).undefineFlags(flags)

    def ensure_network(self, name: str, xml: str) -> None:
        """Define the network from `xml` when it does not exist, and start it when it is down."""
        with translated("set up network", name):
            try:
                network = self.conn.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                network = self.conn.networkDefineXML(xml)
                network.setAutostart(True)
            if not network.isActive():
                network.create()

    def wait_state(self, name: str, states: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.exists(name) or self.state(name) in states:
                return True
            time.sleep(0.1)
        return False

