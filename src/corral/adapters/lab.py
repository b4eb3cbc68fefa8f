"""A lab of private libvirt hosts on this machine: stand-ins for physical hosts, for tests and the demo.

Each lab host is a privileged `libvirtd` of its own in a private mount and UTS namespace, with its own
/etc, /run, /var/lib, /var/log and /var/cache libvirt folders bind-mounted over the real ones, its own
host UUID (so libvirt sees different hosts), a loopback address of its own (127.0.0.N) for TCP,
migration and displays, and an /etc/hosts and resolv.conf of its own so that every name lookup stays on
this machine. Reach one as `qemu+tcp://127.0.0.N/system` (or through its Unix socket). Its guests share
this machine's file system, so Corral's data folder is storage every lab host sees.

The recipe and its measured facts are in ../shared/notes/virt-host.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from corral.adapters.files import write_atomic
from corral.core.errors import BackendError, InvalidInput, NotFound
from corral.core.hosts import check_host_name

MAX_HOSTS = 16
LIBVIRT_TCP_PORT = 16509
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 2.0  # then SIGKILL: a lab host's power-off need not be graceful
MOUNTS = (("etc", "/etc/libvirt"), ("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"), ("log", "/var/log/libvirt"),
          ("cache", "/var/cache/libvirt"))


@dataclass(frozen=True)
class LabHost:
    name: str
    index: int  # 1.. : its address is 127.0.0.(index + 1)
    root: Path  # its own folders

    @property
    def address(self) -> str:
        return f"127.0.0.{self.index + 1}"

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    @property
    def running(self) -> bool:
        return self.pid() is not None and self.socket.exists()


class Lab:
    """The lab hosts kept under one folder (`<data_dir>/lab` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def _index_file(self) -> Path:
        return self.root / "hosts.json"

    def hosts(self) -> list[LabHost]:
        try:
            entries = json.loads(self._index_file.read_text())
        except (OSError, ValueError):
            return []
        return [LabHost(e["name"], int(e["index"]), self.root / e["name"]) for e in entries
                if isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("index"), int)]

    def get(self, name: str) -> LabHost:
        for host in self.hosts():
            if host.name == name:
                return host
        raise NotFound(f"no lab host named {name!r}")

    def create(self, names: list[str]) -> list[LabHost]:
        """Lay out and start lab hosts (those that exist already are started if they are down)."""
        for name in names:
            check_host_name(name)
        known = {h.name: h for h in self.hosts()}
        if len(set(names) | set(known)) > MAX_HOSTS:
            raise InvalidInput(f"a lab holds at most {MAX_HOSTS} hosts")
        used = {h.index for h in known.values()}
        for name in names:
            if name not in known:  # a free address: not this lab's, and not another lab's either
                free = [i for i in range(1, MAX_HOSTS * 4 + 1) if i not in used and not _listening(f"127.0.0.{i + 1}")]
                if not free:
                    raise BackendError("no free loopback address for another lab host")
                used.add(free[0])
                known[name] = LabHost(name, free[0], self.root / name)
        ordered = sorted(known.values(), key=lambda h: h.index)
        write_atomic(self._index_file, json.dumps([{"name": h.name, "index": h.index} for h in ordered]))
        for host in ordered:
            _lay_out(host, ordered)
        result = []
        for name in names:
            self.start(name)
            result.append(known[name])
        return result

    def start(self, name: str) -> LabHost:
        host = self.get(name)
        if host.running:
            return host
        if not shutil.which("libvirtd") or not shutil.which("unshare"):
            raise BackendError("a lab host needs libvirtd and unshare (Debian packages libvirt-daemon, util-linux)")
        with contextlib.suppress(FileNotFoundError):
            host.socket.unlink()
        binds = " ".join(f"mount --bind {host.root / sub} {target};" for sub, target in MOUNTS)
        script = (f"{binds} mount --bind {host.root / 'hosts'} /etc/hosts; "
                  f"mount --bind {host.root / 'resolv.conf'} /etc/resolv.conf; hostname {host.name}; "
                  "exec libvirtd --listen -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid")
        log = (host.root / "daemon.log").open("ab")
        try:
            proc = subprocess.Popen(["unshare", "-m", "-u", "--propagation", "private", "sh", "-c", script],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        host.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_accepts(host.socket) and _listening(host.address)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (host.root / "daemon.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise BackendError(f"lab host {name} ({host.address}) did not start: "
                                   f"{tail[0] if tail else 'no output'}")
            time.sleep(0.05)
        return host

    def stop(self, name: str) -> None:
        """Stop a lab host's daemon as a power-off would: its running guests are killed with it."""
        host = self.get(name)
        pid = host.pid()
        if pid is None:
            return
        _kill_guests(host)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while host.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if host.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            host.socket.unlink()

    def forget(self, names: list[str]) -> None:
        """Stop some lab hosts and remove their folders and their place in the lab."""
        for name in names:
            with contextlib.suppress(NotFound):
                self.stop(name)
        kept = [h for h in self.hosts() if h.name not in names]
        write_atomic(self._index_file, json.dumps([{"name": h.name, "index": h.index} for h in kept]))
        for name in names:
            shutil.rmtree(self.root / name, ignore_errors=True)

    def destroy(self) -> list[str]:
        """Stop every lab host and remove the lab's folders."""
        names = [h.name for h in self.hosts()]
        for name in names:
            self.stop(name)
        if self.root.is_dir():
            shutil.rmtree(self.root, ignore_errors=True)
        return names


def _lay_out(host: LabHost, everyone: list[LabHost]) -> None:
    """Write a lab host's folders and configuration (again: idempotent; its UUID is kept)."""
    for sub, _target in MOUNTS:
        (host.root / sub).mkdir(parents=True, exist_ok=True)
    etc = host.root / "etc"  # a configuration of its own: no domains, networks or pools of this machine's
    for sub in ("etc/qemu", "lib/qemu", "log/qemu", "cache/qemu", "lib/images"):
        (host.root / sub).mkdir(parents=True, exist_ok=True)
    # QEMU's capabilities as this machine's daemon cached them (same binaries, same kernel): a fresh
    # daemon would otherwise spend seconds probing QEMU on its first connection.
    seed = Path("/var/cache/libvirt/qemu/capabilities")
    if seed.is_dir():
        shutil.copytree(seed, host.root / "cache" / "qemu" / "capabilities", dirs_exist_ok=True)
    uuid_file = host.root / "host-uuid"
    if not uuid_file.exists():
        uuid_file.write_text(str(uuid.uuid4()))
    port = 49152 + host.index * 100
    (etc / "libvirtd.conf").write_text(
        f'host_uuid = "{uuid_file.read_text().strip()}"\nauth_unix_rw = "none"\nunix_sock_group = "root"\n'
        f'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "{host.address}"\nauth_tcp = "none"\n')
    (etc / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\nsecurity_driver = "none"\ncgroup_controllers = [ ]\n'
        'stdio_handler = "file"\ndynamic_ownership = 0\nremember_owner = 0\n'
        f'migration_address = "{host.address}"\nmigration_host = "{host.address}"\n'
        f"migration_port_min = {port}\nmigration_port_max = {port + 63}\n"
        f"remote_display_port_min = {5900 + host.index * 100}\nremote_display_port_max = {5963 + host.index * 100}\n")
    (host.root / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in everyone))
    (host.root / "resolv.conf").write_text("nameserver 127.0.0.1\n")


def _accepts(path: Path) -> bool:
    """The daemon accepts connections on its Unix socket (it creates the file before it listens)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        sock.connect(str(path))
        return True
    return False


def _listening(address: str, port: int = LIBVIRT_TCP_PORT) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.2):
        return True
    return False


def _kill_guests(host: LabHost) -> None:
    """The QEMU processes of a lab host's guests (their libvirt pid files are under its run folder)."""
    for pid_file in (host.root / "run" / "qemu").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)

