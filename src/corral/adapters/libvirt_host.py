"""The only module that talks to libvirt: a thin adapter that turns libvirt errors into Corral's.

Domains stay ordinary libvirt domains: anything virsh made is listed, anything Corral makes is
visible to virsh.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import libvirt
import libvirt_qemu

from corral.core.errors import BackendError, Conflict, GuestTimeout, NotFound
from corral.core.nics import NicInfo, Reported, agent_connected, parse_interfaces, with_addresses

if TYPE_CHECKING:
    from corral.adapters.console import SerialConsole

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
UPLOAD_CHUNK = 1 << 20
MONITOR_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
                 | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU
                 | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)
# Why a guest is paused, when it is not because someone asked: shown beside the state.
PAUSE_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "I/O error",
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "migrating",
    libvirt.VIR_DOMAIN_PAUSED_SAVE: "saving",
    libvirt.VIR_DOMAIN_PAUSED_DUMP: "dumping",
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: "snapshot",
    libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: "shutting down",
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "post-copy migration failed",
}


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
    reason: str | None = None  # why it is paused (I/O error, …), when it is paused by something else


@dataclass(frozen=True)
class NodeInfo:
    """A host as its own libvirt describes it (virNodeGetInfo, the capabilities, the host name)."""

    hostname: str
    uuid: str  # libvirt's host UUID: two hosts with the same one cannot migrate to each other
    arch: str
    cpu_model: str
    cores: int  # logical CPUs guests share
    mhz: int
    memory_mib: int
    emulator: str  # the QEMU binary for x86_64 guests, from the capabilities


@dataclass(frozen=True)
class NodeCounters:
    """Cumulative CPU time and memory of a host, from libvirt's node calls."""

    cpu_busy_ns: int  # kernel + user over all CPUs
    cpu_idle_ns: int
    memory_total_kib: int
    memory_available_kib: int  # free + buffers + cached


@dataclass(frozen=True)
class MigrationRequest:
    """How to move a guest: what libvirt's migration is told (pure data; the service decides it)."""

    live: bool = True  # False: a shut-off guest's definition (and disks) only
    shared_storage: bool = True  # its disks are on storage both hosts see (no copy)
    copy_storage: bool = False  # copy its disks to volumes pre-created on the destination
    bandwidth_mib_s: int | None = None
    max_downtime_ms: int | None = None
    postcopy: bool = False
    auto_converge: bool = False
    dest_xml: str | None = None  # the definition at the destination, when its files are elsewhere there


@dataclass(frozen=True)
class JobProgress:
    """A migration while it runs (or, `completed`, once it ran), from libvirt's job statistics."""

    elapsed_ms: int
    memory_total: int  # bytes
    memory_remaining: int
    memory_bps: int
    disk_total: int
    disk_remaining: int
    data_remaining: int
    iteration: int
    dirty_rate: int  # pages/s
    downtime_ms: int | None = None  # known once it completed


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


def library_version() -> str:
    """The version of the libvirt library Corral calls (major.minor.micro)."""
    number = int(libvirt.getVersion())
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class LibvirtHost:
    """One host's libvirt connection, opened on first use (and again after libvirtd restarts)."""

    def __init__(self, uri: str, name: str = "local") -> None:
        self.uri = uri
        self.name = name
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._identity: tuple[int, int] | None = None
        self._node: NodeInfo | None = None

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
                    reason = _pause_reason(dom) if state == libvirt.VIR_DOMAIN_PAUSED else None
                    rows.append(DomainRow(
                        name=dom.name(),
                        id=dom.ID() if dom.ID() >= 0 else None,
                        uuid=dom.UUIDString(),
                        state=STATE_NAMES.get(state, "unknown"),
                        vcpus=vcpus,
                        memory_mib=max_kib // 1024,
                        cpu_time_ns=cpu_time,
                        persistent=bool(dom.isPersistent()),
                        reason=reason,
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

    def _domain(self, name: str) -> libvirt.virDomain:
        with translated("look up", name):
            return self.conn.lookupByName(name)

    def uuid_of(self, name: str) -> str | None:
        """The UUID of the domain called `name`, or None when there is none."""
        try:
            return str(self.conn.lookupByName(name).UUIDString())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise_translated(exc, "look up", name)

    def state(self, name: str) -> str:
        with translated("read the state of", name):
            state, _reason = self._domain(name).state()
        return STATE_NAMES.get(state, "unknown")

    def pause_reason(self, name: str) -> str | None:
        """Why a paused guest is paused when it was not asked to be (an I/O error, …); else None."""
        with translated("read the state of", name):
            dom = self._domain(name)
            return _pause_reason(dom) if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED else None

    def xml(self, name: str, inactive: bool = False, *, secure: bool = False) -> str:
        """The domain's XML; `secure` includes what libvirt leaves out otherwise (a VNC password): for XML
        that is defined again."""
        flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (libvirt.VIR_DOMAIN_XML_SECURE if secure else 0)
        with translated("read the XML of", name):
            return str(self._domain(name).XMLDesc(flags))

    def autostart(self, name: str) -> bool:
        with translated("read autostart of", name):
            return bool(self._domain(name).autostart())

    def answers(self) -> bool:
        """Whether this host's libvirt answers now (a real round trip, reconnecting if needed)."""
        try:
            with translated("reach"):
                self.conn.getLibVersion()
        except BackendError:
            return False
        return True

    def node_info(self) -> NodeInfo:
        if self._node is None:
            with translated("read the host's facts"):
                model, memory_mib, cpus, mhz, *_ = self.conn.getInfo()
                caps = ET.fromstring(self.conn.getCapabilities())
                hostname = str(self.conn.getHostname())
            emulator = ""
            for guest in caps.iterfind("guest"):
                arch = guest.find("arch")
                if arch is not None and arch.get("name") == "x86_64":
                    emulator = arch.findtext("emulator") or ""
            model_name = caps.findtext("host/cpu/model") or model
            self._node = NodeInfo(hostname, caps.findtext("host/uuid") or "", str(model), model_name, int(cpus),
                                  int(mhz), int(memory_mib), emulator or "/usr/bin/qemu-system-x86_64")
        return self._node

    def node_counters(self) -> NodeCounters:
        with translated("read the host's CPU and memory counters"):
            cpu = self.conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
            try:
                mem = self.conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            except libvirt.libvirtError:  # drivers without it (the test driver): total and free only
                mem = {"total": self.node_info().memory_mib * 1024, "free": self.conn.getFreeMemory() // 1024}
        busy = int(cpu.get("kernel", 0)) + int(cpu.get("user", 0))
        available = int(mem.get("free", 0)) + int(mem.get("buffers", 0)) + int(mem.get("cached", 0))
        return NodeCounters(busy, int(cpu.get("idle", 0)) + int(cpu.get("iowait", 0)), int(mem.get("total", 0)),
                            available)

    def kvm_offered(self) -> bool:
        """libvirt on this host offers KVM domains (it has /dev/kvm; whether KVM works is another matter)."""
        try:
            caps = self.conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
        except libvirt.libvirtError:
            return False
        return "<domain>kvm</domain>" in caps

    def qemu_identity(self) -> tuple[int, int]:
        """The uid and gid QEMU runs as on this host (the DAC base label in libvirt's capabilities), so
        Corral can give the files it makes for a guest to that user itself."""
        if self._identity is None:
            with translated("read the host's capabilities"):
                caps = ET.fromstring(self.conn.getCapabilities())
            identity = (0, 0)
            for model in caps.iterfind("host/secmodel"):
                if model.findtext("model") != "dac":
                    continue
                for label in model.iterfind("baselabel"):
                    user, _, group = (label.text or "").partition(":")
                    with contextlib.suppress(ValueError):
                        identity = (int(user.lstrip("+")), int(group.lstrip("+")))
                        break
            self._identity = identity
        return self._identity

    def agent_ping(self, name: str) -> bool:
        """True when the guest's QEMU guest agent answers within a second."""
        try:
            libvirt_qemu.qemuAgentCommand(self._domain(name), '{"execute":"guest-ping"}', 1, 0)
        except (libvirt.libvirtError, NotFound):
            return False
        return True

    def interfaces(self, name: str) -> list[NicInfo]:
        """A guest's NICs from its domain XML (MAC, network or bridge, model, host device) with their IP
        addresses: from the DHCP leases of libvirt's networks and, when the guest agent is connected, from
        the agent (its errors are ignored: an agent that does not answer only gives no addresses)."""
        with translated("read the NICs of", name):
            dom = self._domain(name)
            xml = str(dom.XMLDesc(0))
            nics = parse_interfaces(xml)
            if not nics or not dom.isActive():
                return nics
            try:
                leases = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                                            libvirt.VIR_ERR_OPERATION_INVALID):  # e.g. it stopped meanwhile
                    leases = None
                else:
                    raise
        nics = with_addresses(nics, "lease", _reported(leases))
        if agent_connected(xml):  # only then: asking an agent that is not there would wait for its timeout
            try:
                agent = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
            except libvirt.libvirtError:
                agent = None
            nics = with_addresses(nics, "agent", _reported(agent))
        return nics

    def all_stats(self) -> list[tuple[str, int, dict[str, object]]]:
        """(name, libvirt ID, stats) of every running domain, in one bulk call: state, CPU, balloon,
        vCPUs, NICs and disks (libvirt's bulk-stats keys, which monitoring/rates.py reads)."""
        with translated("read domain statistics"):
            stats = self.conn.getAllDomainStats(MONITOR_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        return [(dom.name(), dom.ID(), values) for dom, values in stats]

    # --- acting --------------------------------------------------------------------------
    def define(self, xml: str) -> None:
        with translated("define"):
            self.conn.defineXML(xml)

    def start(self, name: str) -> None:
        with translated("start", name):
            self._domain(name).create()

    def destroy(self, name: str) -> None:
        """Power off at once."""
        with translated("power off", name):
            self._domain(name).destroy()

    def shutdown(self, name: str, *, agent: bool = False) -> None:
        """The ACPI power button; with `agent`, the guest agent asked to power the guest off."""
        flags = libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT if agent else libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
        with translated("shut down", name):
            self._domain(name).shutdownFlags(flags)

    def agent_command(self, name: str, command: str, arguments: dict[str, object] | None = None,
                      timeout_s: int = 5) -> object:
        """One QEMU guest agent command (e.g. guest-get-osinfo) and its `return` value."""
        request = json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
        with translated(f"ask the guest agent ({command}) of", name):
            try:
                reply = libvirt_qemu.qemuAgentCommand(self._domain(name), request, timeout_s, 0)
            except libvirt.libvirtError as exc:
                message = (exc.get_error_message() or "").strip()
                if exc.get_error_code() in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                                            libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
                    raise Conflict(f"the guest agent of {name} does not answer: is qemu-guest-agent running in "
                                   "the guest?") from None
                if "agent command failed" in message.lower():  # the agent's own error (an internal error)
                    raise BackendError(f"the guest agent of {name} refused {command}: "
                                       f"{message.split('error was', 1)[-1].strip(' :')}") from None
                raise
        try:
            return json.loads(reply).get("return")
        except (ValueError, AttributeError):
            raise BackendError(f"the guest agent of {name} gave an unreadable answer to {command}") from None

    def agent_exec(self, name: str, argv: list[str], timeout_s: float, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        """Run a program in the guest through its agent (guest-exec), wait for it (the agent reports no
        events: its status is asked every 0.1 s), and return its exit code, stdout and stderr."""
        arguments: dict[str, object] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        started = self.agent_command(name, "guest-exec", arguments)
        pid = started.get("pid") if isinstance(started, dict) else None
        if not isinstance(pid, int):
            raise BackendError(f"the guest agent of {name} started {argv[0]} but gave no process id")
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.agent_command(name, "guest-exec-status", {"pid": pid})
            if isinstance(status, dict) and status.get("exited"):
                out, err = (status.get(key) for key in ("out-data", "err-data"))
                code = status.get("exitcode")
                if not isinstance(code, int):
                    signal = status.get("signal")
                    code = 128 + signal if isinstance(signal, int) else 1
                try:  # the guest's agent answers: what it says is checked like any input
                    return (code, base64.b64decode(out, validate=True) if isinstance(out, str) else b"",
                            base64.b64decode(err, validate=True) if isinstance(err, str) else b"")
                except ValueError:
                    raise BackendError(f"the guest agent of {name} gave unreadable output for {argv[0]}") from None
            if time.monotonic() >= deadline:
                raise GuestTimeout(f"{argv[0]} did not finish in {name} within {timeout_s:g} s "
                                   f"(it keeps running there as process {pid})")
            time.sleep(0.1)

    def reboot(self, name: str) -> None:
        with translated("reboot", name):
            self._domain(name).reboot(0)

    def suspend(self, name: str) -> None:
        with translated("pause", name):
            self._domain(name).suspend()

    def resume(self, name: str) -> None:
        with translated("resume", name):
            self._domain(name).resume()

    def snapshot_create(self, name: str, xml: str) -> None:
        with translated("snapshot", name):
            self._domain(name).snapshotCreateXML(xml, 0)

    def snapshots(self, name: str) -> list[tuple[str, str, bool]]:
        """(name, XML, is current) of each snapshot of a domain."""
        with translated("list snapshots of", name):
            return [(snap.getName(), snap.getXMLDesc(0), bool(snap.isCurrent(0)))
                    for snap in self._domain(name).listAllSnapshots(0)]

    def snapshot_revert(self, name: str, snapshot: str) -> None:
        with translated(f"revert to snapshot {snapshot} of", name):
            dom = self._domain(name)
            dom.revertToSnapshot(dom.snapshotLookupByName(snapshot, 0), 0)

    def snapshot_delete(self, name: str, snapshot: str) -> None:
        with translated(f"delete snapshot {snapshot} of", name):
            self._domain(name).snapshotLookupByName(snapshot, 0).delete(0)

    def undefine(self, name: str) -> None:
        """Undefine with everything libvirt keeps beside the definition (snapshot and checkpoint metadata,
        managed save, NVRAM); a driver that knows fewer of these flags is asked with fewer."""
        everything = (libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                      | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        fewer = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        with translated("undefine", name):
            dom = self._domain(name)
            for flags in (everything, fewer):
                try:
                    dom.undefineFlags(flags)
                    return
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                        raise
            dom.undefine()

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

    # --- storage pools (guests' disks on every host; images too on hosts that do not share the data folder)
    def ensure_pool(self, name: str, xml: str) -> str:
        """Define, build and start a directory pool from `xml` when it does not exist; its target path."""
        with translated("set up storage pool", name):
            try:
                pool = self.conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = self.conn.storagePoolDefineXML(xml, 0)
                pool.build(0)
                pool.setAutostart(True)
            if not pool.isActive():
                pool.create(0)
            pool.refresh(0)
            return ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""

    def refresh_pool(self, name: str) -> None:
        """Make a pool see the files made in its folder behind libvirt's back (and forget removed ones)."""
        with translated("refresh storage pool", name):
            pool = self.conn.storagePoolLookupByName(name)
            if pool.isActive():
                pool.refresh(0)

    def remove_pool(self, name: str) -> None:
        """Stop and forget a pool (its folder and files stay); nothing when there is none."""
        with translated("remove storage pool", name):
            try:
                pool = self.conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                    return
                raise
            if pool.isActive():
                pool.destroy()
            pool.undefine()

    def pools(self) -> list[tuple[str, str]]:
        """Every pool of the host: its name and target path."""
        with translated("list storage pools", self.name):
            return [(str(pool.name()), ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or "")
                    for pool in self.conn.listAllStoragePools(0)]

    def volume_path(self, pool: str, volume: str) -> str | None:
        """The path of a volume in a pool, or None when it has none of that name."""
        with translated("look in storage pool", pool):
            try:
                return str(self.conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
                return None

    def create_volume(self, pool: str, xml: str) -> str:
        """A new volume from its XML (an overlay names its backing store there); its path."""
        with translated("create a volume in storage pool", pool):
            return str(self.conn.storagePoolLookupByName(pool).createXML(xml, 0).path())

    def upload_volume(self, pool: str, xml: str, source: Path, progress: Callable[[int, int], None] | None = None
                      ) -> str:
        """A new volume holding the bytes of a local file, sent over libvirt's stream; its path. A
        failed upload leaves no volume behind."""
        size = source.stat().st_size
        with translated("upload into storage pool", pool):
            vol = self.conn.storagePoolLookupByName(pool).createXML(xml, 0)
            try:
                stream = self.conn.newStream(0)
                vol.upload(stream, 0, size, 0)
                sent = 0
                with source.open("rb") as handle:
                    while chunk := handle.read(UPLOAD_CHUNK):
                        view = memoryview(chunk)
                        while view:
                            n = stream.send(bytes(view))
                            view = view[n:]
                            sent += n
                        if progress is not None:
                            progress(sent, size)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError, NameError):
                    stream.abort()
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
                raise
            return str(vol.path())

    def download_volume(self, pool: str, volume: str, limit: int) -> bytes:
        """The bytes of a small volume (at most `limit`), over libvirt's stream."""
        with translated("download from storage pool", pool):
            vol = self.conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
            size = int(vol.info()[2])  # allocation: what the file holds
            if size > limit:
                raise BackendError(f"volume {volume} holds {size} bytes, more than the {limit} expected")
            stream = self.conn.newStream(0)
            vol.download(stream, 0, 0, 0)
            chunks: list[bytes] = []
            total = 0
            try:
                while True:
                    chunk = stream.recv(UPLOAD_CHUNK)
                    if chunk in (b"", None) or isinstance(chunk, int):
                        break
                    total += len(chunk)
                    if total > limit:
                        raise BackendError(f"volume {volume} holds more than the {limit} bytes expected")
                    chunks.append(chunk)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
            return b"".join(chunks)

    def volume_capacity(self, pool: str, volume: str) -> int:
        """A volume's virtual size in bytes."""
        with translated("read a volume of storage pool", pool):
            return int(self.conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).info()[1])

    def delete_volume(self, pool: str, volume: str) -> bool:
        """Delete a volume of a pool; False when there is none of that name."""
        with translated("delete a volume of storage pool", pool):
            try:
                vol = self.conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL):
                    return False
                raise
            vol.delete(0)
            return True

    def volumes(self, pool: str) -> list[str]:
        with translated("list storage pool", pool):
            try:
                found = self.conn.storagePoolLookupByName(pool)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                    return []
                raise
            found.refresh(0)
            return sorted(str(name) for name in found.listVolumes())

    def open_console(self, name: str, *, force: bool = False) -> SerialConsole:
        """A guest's serial console over a stream of its own connection (see adapters/console.py)."""
        from corral.adapters.console import SerialConsole  # its event loop only when a console opens

        return SerialConsole(self.uri, name, force=force)

    # --- migration -------------------------------------------------------------------------
    def migrate(self, name: str, dest_uri: str, request: MigrationRequest) -> None:
        """Move a guest to the host at `dest_uri`, peer to peer (this host's libvirt talks to the
        destination's; the definition is kept there and removed here). Blocks until it is done; poll
        `job()` and `abort_job()` from another connection meanwhile."""
        flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        params: dict[str, object] = {}
        if request.live:
            flags |= libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        else:
            flags |= libvirt.VIR_MIGRATE_OFFLINE
        if request.copy_storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            if request.dest_xml:  # its disks, kernel and log at the destination's paths
                params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = request.dest_xml
                params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = request.dest_xml
        elif request.shared_storage and request.live:
            # One file system both hosts see: libvirt cannot tell it is shared (it is not NFS or Ceph)
            # and would refuse; the administrator declared it shared.
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        if request.postcopy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if request.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if request.bandwidth_mib_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(request.bandwidth_mib_s)
        with translated("migrate", name):
            dom = self._domain(name)
            if request.max_downtime_ms and request.live:
                dom.migrateSetMaxDowntime(int(request.max_downtime_ms), 0)
            dom.migrateToURI3(dest_uri, params, flags)

    def job(self, name: str) -> JobProgress | None:
        """The guest's running job (a migration), or None when it has none."""
        with translated("read the job of", name):
            stats = self._domain(name).jobStats(0)
        if not stats or stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return _job_progress(stats)

    def completed_job(self, name: str) -> JobProgress | None:
        """What the guest's last migration took (asked on the host it arrived at)."""
        try:
            stats = self._domain(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return None
        return _job_progress(stats) if stats else None

    def start_postcopy(self, name: str) -> None:
        """Switch a running migration (started with `postcopy`) to post-copy: the guest runs on the
        destination from now on, and its remaining memory is pulled from the source as it is touched."""
        with translated("switch to post-copy the migration of", name):
            self._domain(name).migrateStartPostCopy(0)

    def abort_job(self, name: str) -> None:
        with translated("abort the migration of", name):
            self._domain(name).abortJob()

    def update_device(self, name: str, device_xml: str, *, live: bool) -> None:
        """Change a device (e.g. a CD drive's media) in the definition, and in the running guest too
        when `live`."""
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
        with translated("update a device of", name):
            self._domain(name).updateDeviceFlags(device_xml, flags)

    # --- disks and NICs added and removed (corral disk, corral nic) ------------------------------------
    def attach_device(self, name: str, device_xml: str, *, live: bool) -> None:
        """Add a device to the definition, and hot-plug it into the running guest too when `live` (both or
        neither: libvirt saves the definition only once the hot-plug worked)."""
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
        with translated("attach a device to", name):
            self._domain(name).attachDeviceFlags(device_xml, flags)

    def detach_device(self, name: str, device_xml: str, *, live: bool, config: bool = True) -> None:
        """Remove a device from the definition (`config`) and ask the running guest to release it (`live`):
        a hot-unplug completes when the guest lets go, which may be after this returns."""
        flags = (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0) | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
        with translated("detach a device from", name):
            self._domain(name).detachDeviceFlags(device_xml, flags)

    def block_capacity(self, name: str, target: str) -> int:
        """The virtual size in bytes of a guest's disk (vda), running or not."""
        with translated(f"read the size of disk {target} of", name):
            return int(self._domain(name).blockInfo(target, 0)[0])

    def block_resize(self, name: str, target: str, size_bytes: int) -> None:
        """Grow a running guest's disk; the guest sees the new size at once."""
        with translated(f"resize disk {target} of", name):
            self._domain(name).blockResize(target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def resize_volume(self, pool: str, volume: str, size_bytes: int) -> None:
        """Grow a volume of a pool (libvirt runs qemu-img resize for a qcow2 volume)."""
        with translated("resize a volume of storage pool", pool):
            self.conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).resize(size_bytes, 0)

    def networks(self) -> list[tuple[str, bool]]:
        """Every libvirt network of the host: its name and whether it is running."""
        with translated("list networks", self.name):
            return sorted((str(n.name()), bool(n.isActive())) for n in self.conn.listAllNetworks(0))

    def set_metadata(self, name: str, element_xml: str, key: str, uri: str, *, live: bool) -> None:
        """Replace the domain's metadata element of namespace `uri` (prefix `key`) in its definition, and in
        the running guest's too when `live`."""
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
        with translated("change the metadata of", name):
            self._domain(name).setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, element_xml, key, uri, flags)

    def set_autostart(self, name: str, on: bool) -> None:
        """Start the guest when its host's libvirt starts (libvirt's autostart)."""
        with translated("set autostart of", name):
            self._domain(name).setAutostart(1 if on else 0)

    def set_vcpus(self, name: str, count: int, *, live: bool = False, config: bool = False,
                  maximum: bool = False) -> None:
        """A guest's vCPUs: in the running guest (`live`, a hot-plug) and/or its definition (`config`);
        `maximum`: the definition's maximum, up to which a later live raise is possible."""
        flags = ((libvirt.VIR_DOMAIN_VCPU_MAXIMUM if maximum else 0) | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
                 | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0))
        with translated("set the vCPUs of", name):
            self._domain(name).setVcpusFlags(count, flags)

    def set_memory(self, name: str, mib: int, *, live: bool = False, config: bool = False,
                   maximum: bool = False) -> None:
        """A guest's memory: the balloon of the running guest (`live`) and/or its definition's current memory
        (`config`); `maximum`: the definition's maximum memory (the balloon's ceiling from the next boot)."""
        flags = ((libvirt.VIR_DOMAIN_MEM_MAXIMUM if maximum else 0) | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
                 | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0))
        with translated("set the memory of", name):
            self._domain(name).setMemoryFlags(mib * 1024, flags)

    def wait_state(self, name: str, states: set[str], timeout_s: float) -> bool:
        """Block until the domain is in one of `states` or gone; False at the timeout. Woken by libvirt's
        domain lifecycle events, on a connection of its own opened once libvirt's event loop runs (a
        connection only delivers events registered on an event loop that was there when it opened).
        libvirt's test driver keeps its domains per connection, so there the state is polled."""
        if self.uri.startswith("test:"):
            return self._poll_state(name, states, timeout_s)
        from corral.adapters.console import ensure_event_loop

        ensure_event_loop()
        changed = threading.Event()
        deadline = time.monotonic() + timeout_s
        with translated("watch the state of", name):
            watcher = libvirt.open(self.uri)
        try:
            with translated("watch the state of", name):
                try:
                    domain = watcher.lookupByName(name)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        return True
                    raise
                callback = watcher.domainEventRegisterAny(
                    domain, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *_args: changed.set(), None)
            try:
                while True:
                    changed.clear()  # before looking: an event after the look wakes the wait below
                    if not self.exists(name) or self.state(name) in states:
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    # An event wakes it at once; the bounded wait covers a connection that died.
                    changed.wait(min(remaining, 5.0))
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    watcher.domainEventDeregisterAny(callback)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                watcher.close()

    def _poll_state(self, name: str, states: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.exists(name) or self.state(name) in states:
                return True
            time.sleep(0.1)
        return False


def _reported(found: dict[str, dict[str, object]] | None) -> list[Reported]:
    """libvirt's virDomainInterfaceAddresses answer as plain data."""
    families = {libvirt.VIR_IP_ADDR_TYPE_IPV4: "ipv4", libvirt.VIR_IP_ADDR_TYPE_IPV6: "ipv6"}
    reported = []
    for ifname, details in (found or {}).items():
        addrs = details.get("addrs") or []
        hwaddr = details.get("hwaddr")
        reported.append(Reported(str(ifname), str(hwaddr) if hwaddr else None, [
            (families.get(a.get("type"), "unknown"), str(a.get("addr", "")), int(a.get("prefix", 0) or 0))
            for a in addrs if isinstance(a, dict) and a.get("addr")] if isinstance(addrs, list) else []))
    return reported


def _pause_reason(dom: libvirt.virDomain) -> str | None:
    try:
        state, reason = dom.state()
    except libvirt.libvirtError:
        return None
    return PAUSE_REASONS.get(reason) if state == libvirt.VIR_DOMAIN_PAUSED else None


def _job_progress(stats: dict[str, object]) -> JobProgress:
    def num(key: str) -> int:
        value = stats.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    downtime = stats.get("downtime")
    return JobProgress(
        elapsed_ms=num("time_elapsed"), memory_total=num("memory_total"), memory_remaining=num("memory_remaining"),
        memory_bps=num("memory_bps"), disk_total=num("disk_total"), disk_remaining=num("disk_remaining"),
        data_remaining=num("data_remaining"), iteration=num("memory_iteration"), dirty_rate=num("memory_dirty_rate"),
        downtime_ms=int(downtime) if isinstance(downtime, int | float) else None)
