"""Putting hosts in standby and waking them: small drivers behind one interface.

- `command`: commands the administrator configures (`standby=…`, `wake=…`), run without a shell;
- `wol`: a Wake-on-LAN magic packet to the host's MAC (`mac=…`, optional `broadcast=…`, `port=…`) to
  wake it; standby through a configured command (`standby=…`, e.g. `ssh root@h2 systemctl suspend`);
- `ipmi`: the host's BMC through Debian's `fence_ipmilan` (fence-agents) or `ipmitool`
  (`address=…`, `user=…`, `password_file=…`, optional `lanplus=1`): soft power-off and power-on;
- `none`: Corral cannot power this host, and says so when asked.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Protocol

from corral.core.errors import BackendError, Conflict, InvalidInput
from corral.core.hosts import PowerSpec

COMMAND_TIMEOUT_S = 120.0
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")


class PowerDriver(Protocol):
    def standby(self) -> None: ...

    def wake(self) -> None: ...


def _run(argv: list[str], what: str) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise BackendError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what}: {argv[0]} did not finish within {COMMAND_TIMEOUT_S:g} s") from None
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}")
        raise BackendError(f"{what}: {detail.splitlines()[-1][:300]}")


def _command(spec: PowerSpec, key: str, host: str) -> list[str]:
    text = spec.get(key)
    if not text:
        raise Conflict(f"host {host} has no {key} command (corral host add … --power-opt {key}='…')")
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise InvalidInput(f"host {host}: the {key} command {text!r} cannot be parsed: {exc}") from None
    if not argv:
        raise InvalidInput(f"host {host}: the {key} command is empty")
    return argv


class CommandDriver:
    def __init__(self, host: str, spec: PowerSpec) -> None:
        self.host, self.spec = host, spec

    def standby(self) -> None:
        _run(_command(self.spec, "standby", self.host), f"standby of {self.host}")

    def wake(self) -> None:
        _run(_command(self.spec, "wake", self.host), f"wake of {self.host}")


def magic_packet(mac: str) -> bytes:
    """Wake-on-LAN: six 0xFF bytes, then the MAC sixteen times."""
    if not _MAC.match(mac):
        raise InvalidInput(f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    raw = bytes.fromhex(re.sub(r"[:-]", "", mac))
    return b"\xff" * 6 + raw * 16


class WolDriver:
    def __init__(self, host: str, spec: PowerSpec) -> None:
        self.host, self.spec = host, spec

    def standby(self) -> None:
        _run(_command(self.spec, "standby", self.host), f"standby of {self.host}")

    def wake(self) -> None:
        packet = magic_packet(self.spec.get("mac"))
        address = self.spec.get("broadcast", "255.255.255.255")
        try:
            port = int(self.spec.get("port", "9"))
        except ValueError:
            raise InvalidInput(f"host {self.host}: the Wake-on-LAN port must be a number") from None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            try:
                sock.sendto(packet, (address, port))
            except OSError as exc:
                raise BackendError(f"wake of {self.host}: cannot send the magic packet to {address}: "
                                   f"{exc.strerror}") from None


class IpmiDriver:
    def __init__(self, host: str, spec: PowerSpec) -> None:
        self.host, self.spec = host, spec

    def _argv(self, action: str) -> list[str]:
        address, user, password_file = (self.spec.get(k) for k in ("address", "user", "password_file"))
        if not address or not user or not password_file:
            raise Conflict(f"host {self.host}: the ipmi driver needs address, user and password_file")
        if not Path(password_file).is_file():
            raise InvalidInput(f"host {self.host}: password_file {password_file} does not exist")
        if shutil.which("fence_ipmilan"):
            fence = {"soft": "off", "on": "on"}[action]
            argv = ["fence_ipmilan", "--ip", address, "--username", user, "--password-script",
                    f"cat {shlex.quote(password_file)}", "--action", fence]
            if self.spec.get("lanplus"):
                argv.append("--lanplus")
            if action == "soft":
                argv.append("--method=onoff")
            return argv
        interface = ["-I", "lanplus"] if self.spec.get("lanplus") else []
        return ["ipmitool", *interface, "-H", address, "-U", user, "-f", password_file, "chassis", "power", action]

    def standby(self) -> None:
        _run(self._argv("soft"), f"standby of {self.host} (IPMI)")

    def wake(self) -> None:
        _run(self._argv("on"), f"wake of {self.host} (IPMI)")


class NoDriver:
    def __init__(self, host: str, _spec: PowerSpec) -> None:
        self.host = host

    def _refuse(self) -> None:
        raise Conflict(f"host {self.host} has no power driver: Corral cannot put it in standby or wake it "
                       "(corral host add … --power command|wol|ipmi)")

    def standby(self) -> None:
        self._refuse()

    def wake(self) -> None:
        self._refuse()


DRIVERS: dict[str, type[CommandDriver] | type[WolDriver] | type[IpmiDriver] | type[NoDriver]] = {
    "command": CommandDriver, "wol": WolDriver, "ipmi": IpmiDriver, "none": NoDriver}


def driver_for(host: str, spec: PowerSpec) -> PowerDriver:
    return DRIVERS[spec.driver](host, spec)
