"""The hosts Corral manages, each a value with its own libvirt connection.

A single-host installation is a registry of one host, the local one: every service takes the host it
acts on from here, so one host and many go through the same code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from corral.adapters.libvirt_host import LibvirtHost
from corral.core.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.core.hosts import HostSpec


@dataclass
class Host:
    """One managed host: what Corral was told about it, and its libvirt connection."""

    spec: HostSpec
    libvirt: LibvirtHost

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uri(self) -> str:
        return self.spec.uri


Connect = Callable[[HostSpec], LibvirtHost]


def _connect(spec: HostSpec) -> LibvirtHost:
    return LibvirtHost(spec.uri, name=spec.name)


class HostRegistry:
    """Hosts by name, in the order they were registered; the first is the default for new guests."""

    def __init__(self, specs: Sequence[HostSpec], connect: Connect = _connect) -> None:
        if not specs:
            raise InvalidInput("Corral needs at least one host")
        self._connect = connect
        self._hosts: dict[str, Host] = {}
        for spec in specs:
            self._add(spec)

    def _add(self, spec: HostSpec) -> Host:
        if spec.name in self._hosts:
            raise Conflict(f"a host named {spec.name!r} is already registered")
        host = Host(spec, self._connect(spec))
        self._hosts[spec.name] = host
        return host

    def __iter__(self) -> Iterator[Host]:
        return iter(list(self._hosts.values()))

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def default(self) -> Host:
        """Where a new guest goes when no host is named (the local host)."""
        return next(iter(self._hosts.values()))

    def get(self, name: str | None) -> Host:
        """The host called `name`; the default host for None."""
        if name is None:
            return self.default
        try:
            return self._hosts[name]
        except KeyError:
            known = ", ".join(self._hosts)
            raise NotFound(f"no host named {name!r} (known: {known})") from None

    def locate(self, domain: str) -> Host:
        """The host that has a domain called `domain` (names are unique across hosts). A host that cannot
        be reached is skipped; if the domain is found nowhere and some host could not be asked, the error
        says so."""
        unreachable: list[str] = []
        for host in self:
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

    def close(self) -> None:
        for host in self:
            host.libvirt.close()
