"""The hosts Corral manages, each a value with its own libvirt connection.

A single-host installation is a registry of one host, the local one (its URI from the configuration):
every service takes the host it acts on from here, so one host and many go through the same code.
Hosts added with `corral host add` are kept in `<data_dir>/hosts.sqlite`, with the states an
administrator sets (maintenance, standby).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from corral.adapters.hoststore import HostStore
from corral.adapters.libvirt_host import LibvirtHost
from corral.core.errors import BackendError, Conflict, CorralError, InvalidInput, NotFound
from corral.core.hosts import HostRecord, HostSize, HostSpec, host_state


@dataclass
class Host:
    """One managed host: what Corral was told about it, the states set on it, its libvirt connection."""

    spec: HostSpec
    libvirt: LibvirtHost
    maintenance: bool = False
    standby: bool = False
    size: HostSize | None = None  # as its libvirt last told it (a host in standby cannot be asked)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uri(self) -> str:
        return self.spec.uri

    @property
    def record(self) -> HostRecord:
        return HostRecord(self.spec, self.maintenance, self.standby, self.size)

    def reachable(self) -> bool:
        return self.libvirt.answers()

    def state(self) -> str:
        """up, unreachable, maintenance or standby (a host in standby is not asked: it is off)."""
        if self.standby or self.maintenance:
            return host_state(self.record, True)
        return host_state(self.record, self.reachable())


Connect = Callable[[HostSpec], LibvirtHost]


def _connect(spec: HostSpec) -> LibvirtHost:
    return LibvirtHost(spec.uri, name=spec.name)


class HostRegistry:
    """Hosts by name: the configured ones (the local host) first, then those added, in order. The first
    is the default for new guests when no host is named."""

    def __init__(self, configured: Sequence[HostSpec], store: HostStore | None = None,
                 connect: Connect = _connect) -> None:
        if not configured:
            raise InvalidInput("Corral needs at least one host")
        self._connect = connect
        self._store = store
        self._configured = [spec for spec in configured]
        self._hosts: dict[str, Host] = {}
        self._seen: tuple[int, int] | None = None
        self._refresh(force=True)

    def _refresh(self, *, force: bool = False) -> None:
        """Follow the store when another process (the CLI beside `corral serve`) changed it: hosts added
        or removed, maintenance and standby set. A stat per call; the file is read only when it changed."""
        if self._store is None:
            if force:
                self._hosts = {spec.name: Host(spec, self._connect(spec)) for spec in self._configured}
            return
        stamp = self._store.stamp()
        if not force and stamp == self._seen:
            return
        self._seen = stamp
        stored = {r.spec.name: r for r in self._store.records()}
        hosts: dict[str, Host] = {}
        for spec in self._configured:  # its URI from the configuration, its states from the store
            kept = stored.pop(spec.name, None) or HostRecord(spec)
            hosts[spec.name] = self._host(spec, kept.maintenance, kept.standby, kept.size)
        for record in stored.values():
            hosts[record.spec.name] = self._host(record.spec, record.maintenance, record.standby, record.size)
        for name, old in self._hosts.items():
            if name not in hosts:
                old.libvirt.close()
        self._hosts = hosts

    def _host(self, spec: HostSpec, maintenance: bool, standby: bool, size: HostSize | None) -> Host:
        """The host with these states, keeping its open connection when nothing about it changed."""
        known = self._hosts.get(spec.name)
        if known is not None and known.spec == spec:
            known.maintenance, known.standby, known.size = maintenance, standby, size or known.size
            return known
        if known is not None:
            known.libvirt.close()
        return Host(spec, self._connect(spec), maintenance, standby, size)

    def __iter__(self) -> Iterator[Host]:
        self._refresh()
        return iter(list(self._hosts.values()))

    def __len__(self) -> int:
        self._refresh()
        return len(self._hosts)

    @property
    def default(self) -> Host:
        """Where a new guest goes when no host is named (the local host)."""
        self._refresh()
        return next(iter(self._hosts.values()))

    def get(self, name: str | None) -> Host:
        """The host called `name`; the default host for None."""
        if name is None:
            return self.default
        self._refresh()
        try:
            return self._hosts[name]
        except KeyError:
            known = ", ".join(self._hosts)
            raise NotFound(f"no host named {name!r} (known: {known})") from None

    def locate(self, domain: str) -> Host:
        """The host that has a domain called `domain` (names are unique across hosts). Hosts in standby
        and hosts that cannot be reached are skipped; if the domain is found nowhere and some host could
        not be asked, the error says so."""
        unreachable: list[str] = []
        for host in self:
            if host.standby:
                continue
            try:
                if host.libvirt.exists(domain):
                    return host
            except CorralError:
                unreachable.append(host.name)
        if unreachable:
            raise NotFound(f"no domain named {domain!r} on the hosts that answer "
                           f"({', '.join(unreachable)} could not be reached)")
        raise NotFound(f"no domain named {domain!r}")

    def owner(self, domain: str) -> Host | None:
        """Like `locate`, but None when no host that answers has it."""
        with contextlib.suppress(NotFound):
            return self.locate(domain)
        return None

    # --- changing the registry -----------------------------------------------------------------
    def add(self, spec: HostSpec) -> Host:
        """Register a host after checking that its libvirt answers and is not a host already registered
        (the same URI, or the same libvirt host UUID: such hosts cannot migrate to each other)."""
        if self._store is None:
            raise InvalidInput("this Corral has no host registry to add hosts to")
        if spec.name in self._hosts:
            raise Conflict(f"a host named {spec.name!r} is already registered")
        for host in self:
            if host.uri == spec.uri:
                raise Conflict(f"{spec.uri} is already registered as host {host.name}")
        connection = self._connect(spec)
        try:
            node = connection.node_info()
        except CorralError as exc:
            connection.close()
            raise BackendError(f"cannot add host {spec.name}: {exc.message}") from None
        for host in self:
            other = ""
            with contextlib.suppress(CorralError):  # a host that does not answer now cannot be compared
                other = host.libvirt.node_info().uuid
            if node.uuid and other == node.uuid:
                connection.close()
                raise Conflict(f"{spec.uri} answers with the libvirt host UUID of host {host.name} "
                               f"({node.uuid}): it is the same host, or a copy of its configuration "
                               "(give it its own host_uuid in libvirtd.conf)")
        size = HostSize(node.cores, float(node.mhz or 1000), node.memory_mib)
        self._store.add(spec)
        self._store.set_state(spec, size=size)
        host = Host(spec, connection, size=size)
        self._hosts[spec.name] = host
        return host

    def remove(self, name: str) -> None:
        """Forget a host; refused for the configured host and while any guest is defined there."""
        host = self.get(name)
        if name in {spec.name for spec in self._configured}:
            raise Conflict(f"{name} is the configured host ({host.uri}); it cannot be removed")
        try:
            guests = [row.name for row in host.libvirt.rows()]
        except CorralError as exc:
            raise Conflict(f"cannot tell whether guests live on {name} ({exc.message}); "
                           "bring it back before removing it") from None
        if guests:
            raise Conflict(f"{name} still has guests: {', '.join(guests)}; migrate or delete them first")
        assert self._store is not None
        self._store.remove(name)
        del self._hosts[name]
        host.libvirt.close()

    def drop(self, name: str) -> None:
        """Forget a host that is gone for good with its guests (a lab host torn down), unchecked."""
        host = self.get(name)
        if name in {spec.name for spec in self._configured}:
            raise Conflict(f"{name} is the configured host; it cannot be dropped")
        if self._store is not None:
            with contextlib.suppress(NotFound):
                self._store.remove(name)
        del self._hosts[name]
        host.libvirt.close()

    def remember_size(self, name: str, size: HostSize) -> None:
        """Keep a host's size as its libvirt told it, for when it is in standby (written only on a change)."""
        host = self.get(name)
        if host.size == size:
            return
        if self._store is not None:
            self._store.set_state(host.spec, size=size)
        host.size = size

    def set_state(self, name: str, *, maintenance: bool | None = None, standby: bool | None = None) -> Host:
        host = self.get(name)
        if self._store is not None:
            self._store.set_state(host.spec, maintenance=maintenance, standby=standby)
        if maintenance is not None:
            host.maintenance = maintenance
        if standby is not None:
            host.standby = standby
        return host

    def close(self) -> None:
        for host in self:
            host.libvirt.close()
