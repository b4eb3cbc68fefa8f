"""Validation of everything a user names: domain, image and snapshot names, and file paths."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from corral.core.errors import InvalidInput

# Same shape for domains, images and snapshots: safe in file names, libvirt names, URLs and XML.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RESERVED_NAMES = frozenset({"Domain-0", "domain-0", "dom0"})


def check_name(value: str, what: str = "name") -> str:
    """Return `value` when it is a valid name, else raise InvalidInput naming the problem."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} is empty")
    if not _NAME.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"invalid {what} {value!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and no '..'"
        )
    return value


def check_domain_name(value: str) -> str:
    check_name(value, "domain name")
    if value in RESERVED_NAMES:
        raise InvalidInput(f"domain name {value!r} is reserved for the host itself")
    return value


def check_path(value: str | Path, what: str = "path", *, base: Path | None = None) -> Path:
    """A file path without '..' components, made absolute against `base` (a relative path with no
    base is refused). Syntax only: whether the file exists is for the caller to check."""
    text = str(value)
    if not text or "\x00" in text:
        raise InvalidInput(f"{what} is empty or contains a NUL byte")
    path = Path(text)
    if ".." in path.parts:
        raise InvalidInput(f"{what} {text!r} must not contain '..'")
    if not path.is_absolute():
        if base is None or not base.is_absolute():
            raise InvalidInput(f"{what} {text!r} must be an absolute path")
        path = base / path
    return path


def parse_listen(text: str, example: str = "127.0.0.1:9177") -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (loopback)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"listen address {text!r}: expected HOST:PORT, e.g. {example}")
    host = host.strip("[]") or "127.0.0.1"
    if any(ch.isspace() for ch in host) or "/" in host:
        raise InvalidInput(f"listen address {text!r}: {host!r} is not a host name or address")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not) or localhost."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
