"""A guest's specification: what the user asks for, validated before anything is made."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.core.errors import InvalidInput
from corral.core.validate import check_domain_name, check_name, check_path

MAX_VCPUS = 64
MIN_MEMORY_MIB = 64
MAX_MEMORY_MIB = 1024 * 1024
MIN_DISK_GIB = 0.01  # about 10 MiB: anything smaller is a typo, not a disk
MAX_DISK_GIB = 16 * 1024


@dataclass(frozen=True)
class LoadSpec:
    """A synthetic workload the built-in image runs, so a guest can stand in for a measured server."""

    cpu_pct: float = 0.0  # percent of each vCPU kept busy
    disk_kbps: int = 0  # KiB/s read+written on the guest's disk
    net_kbps: int = 0  # KiB/s sent from the guest's NIC

    @property
    def is_idle(self) -> bool:
        return self.cpu_pct == 0 and self.disk_kbps == 0 and self.net_kbps == 0

    @property
    def declared_cpu_pct(self) -> float | None:
        """The CPU load this guest declares, or None: the capacity model then assumes one."""
        return self.cpu_pct if self.cpu_pct > 0 else None

    def as_text(self) -> str:
        return f"cpu={self.cpu_pct:g},disk={self.disk_kbps},net={self.net_kbps}"


def parse_load(text: str) -> LoadSpec:
    """Parse `cpu=PCT,disk=KBPS,net=KBPS` (any subset, in any order)."""
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("cpu", "disk", "net"):
            raise InvalidInput(f"invalid load item {item!r}: expected cpu=PCT, disk=KBPS or net=KBPS")
        if key in values:
            raise InvalidInput(f"load item {key!r} given twice")
        try:
            values[key] = float(raw)
        except ValueError:
            raise InvalidInput(f"load {key}={raw!r} is not a number") from None
    return load_from_mapping(values)


def load_from_mapping(data: Mapping[str, Any]) -> LoadSpec:
    unknown = set(data) - {"cpu", "disk", "net"}
    if unknown:
        raise InvalidInput(f"unknown load field(s): {', '.join(sorted(unknown))}")
    cpu = _number(data.get("cpu", 0), "load cpu")
    disk = _number(data.get("disk", 0), "load disk")
    net = _number(data.get("net", 0), "load net")
    if not 0 <= cpu <= 100 or cpu != int(cpu):
        raise InvalidInput(f"load cpu={cpu:g} must be a whole percent between 0 and 100 (of each vCPU)")
    for key, value in (("disk", disk), ("net", net)):
        if not 0 <= value <= 1_000_000:
            raise InvalidInput(f"load {key}={value:g} must be between 0 and 1000000 KiB/s")
    return LoadSpec(cpu_pct=cpu, disk_kbps=int(disk), net_kbps=int(net))


@dataclass(frozen=True)
class GuestSpec:
    """What `corral create` is asked to make. Sizes are validated; the image is a registered name."""

    name: str
    image: str
    vcpus: int = 1
    memory_mib: int = 256
    disk_gib: float | None = None  # None: the image's own size (or none for the tiny image)
    iso: Path | None = None
    load: LoadSpec = field(default_factory=LoadSpec)

    def __post_init__(self) -> None:
        check_domain_name(self.name)
        check_name(self.image, "image name")
        for what, value in (("vcpus", self.vcpus), ("memory", self.memory_mib)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{what} must be a whole number, not {value!r}")
        if self.disk_gib is not None and (isinstance(self.disk_gib, bool)
                                          or not isinstance(self.disk_gib, int | float)):
            raise InvalidInput(f"disk must be a number of GiB, not {self.disk_gib!r}")
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise InvalidInput(f"vcpus={self.vcpus} must be between 1 and {MAX_VCPUS}")
        if not MIN_MEMORY_MIB <= self.memory_mib <= MAX_MEMORY_MIB:
            raise InvalidInput(
                f"memory={self.memory_mib} MiB must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}"
            )
        if self.disk_gib is not None and not MIN_DISK_GIB <= self.disk_gib <= MAX_DISK_GIB:
            raise InvalidInput(f"disk={self.disk_gib:g} GiB must be between {MIN_DISK_GIB:g} and {MAX_DISK_GIB}")


_SPEC_FIELDS = {"name", "image", "vcpus", "memory", "disk", "iso", "load"}


def spec_from_mapping(data: Mapping[str, Any], *, base_dir: Path | None = None) -> GuestSpec:
    """Build a spec from the fields of a TOML file (or a JSON body): the same names as the CLI options."""
    unknown = set(data) - _SPEC_FIELDS
    if unknown:
        raise InvalidInput(f"unknown spec field(s): {', '.join(sorted(unknown))}")
    for required in ("name", "image"):
        if not isinstance(data.get(required), str):
            raise InvalidInput(f"spec field {required!r} is missing or not a string")
    raw_load = data.get("load", {})
    if isinstance(raw_load, str):
        load = parse_load(raw_load)
    elif isinstance(raw_load, Mapping):
        load = load_from_mapping(raw_load)
    else:
        raise InvalidInput("spec field 'load' must be a table or a 'cpu=..,disk=..,net=..' string")
    iso = data.get("iso")
    iso_path = None
    if iso is not None:
        if not isinstance(iso, str):
            raise InvalidInput("spec field 'iso' must be a path string")
        iso_path = check_path(iso, "iso", base=base_dir)  # relative to the spec file (or the CLI's folder)
    disk = data.get("disk")
    return GuestSpec(
        name=data["name"],
        image=data["image"],
        vcpus=int(_number(data.get("vcpus", 1), "vcpus", integer=True)),
        memory_mib=int(_number(data.get("memory", 256), "memory", integer=True)),
        disk_gib=None if disk is None else _number(disk, "disk"),
        iso=iso_path,
        load=load,
    )


def spec_from_toml(text: str, source: str, base_dir: Path | None) -> GuestSpec:
    """A spec from the text of a TOML file (`source` names it in errors; relative paths in it are
    relative to `base_dir`, the file's folder)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"spec file {source!r} is not valid TOML: {exc}") from None
    return spec_from_mapping(data, base_dir=base_dir)


def _number(value: Any, what: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{what} must be a number, not {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{what} must be a finite number, not {str(value)[:40]!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidInput(f"{what} must be a finite number")
    if integer and number != int(number):
        raise InvalidInput(f"{what} must be a whole number, not {value!r}")
    return number
