"""Host kinds: what a consolidation host can hold, what it draws and what it costs."""

from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.planning.errors import CatalogError
from corral.planning.limits import MAX_SETTINGS_BYTES, read_small_text

GB = 1024**3
MB_S = 1_000_000  # disk/network throughput in the catalog is in MB/s (decimal)

#: Built-in catalog. ML110 G4/G5 are CloudSim's hosts (Beloglazov & Buyya 2012: SPECpower curves,
#: 2 cores x 1860/2660 MIPS, 4 GB, 1 Gbit/s). Disk throughput, prices and upkeep are stated
#: assumptions (2011/2025 list-price order of magnitude), to be overridden with your own figures.
BUILTIN_CATALOG_TOML = """
[kinds.ml110-g4]
description = "HP ProLiant ML110 G4 (Xeon 3040, 2 x 1860 MHz), CloudSim's host type 0"
cores = 2
core_mhz = 1860
speed = 1.0
mem_gb = 4
disk_mb_s = 100
net_mb_s = 125
power_w = [86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]
price = 1000
upkeep_per_year = 100
rack_units = 1

[kinds.ml110-g5]
description = "HP ProLiant ML110 G5 (Xeon 3075, 2 x 2660 MHz), CloudSim's host type 1"
cores = 2
core_mhz = 2660
speed = 1.0
mem_gb = 4
disk_mb_s = 100
net_mb_s = 125
power_w = [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135]
price = 1200
upkeep_per_year = 120
rack_units = 1

[kinds.legacy-1u]
description = "A typical small 2010s 1U server (4 x 2400 MHz, 16 GB), the default machine 'before'"
cores = 4
core_mhz = 2400
speed = 1.0
mem_gb = 16
disk_mb_s = 150
net_mb_s = 125
power_w = [60, 70, 78, 85, 92, 99, 106, 113, 120, 128, 135]
price = 1500
upkeep_per_year = 150
rack_units = 1

[kinds.dl360-g10]
description = "2-socket 1U server (2 x 16 cores x 2600 MHz, 384 GB, NVMe, 10 GbE)"
cores = 32
core_mhz = 2600
speed = 1.0
mem_gb = 384
disk_mb_s = 2000
net_mb_s = 1250
power_w = [110, 150, 180, 205, 230, 255, 280, 305, 330, 355, 380]
price = 9000
upkeep_per_year = 600
rack_units = 1

[kinds.epyc-1s]
description = "1-socket 1U server (64 cores x 2450 MHz, 512 GB, NVMe, 25 GbE)"
cores = 64
core_mhz = 2450
speed = 1.25
mem_gb = 512
disk_mb_s = 4000
net_mb_s = 3125
power_w = [120, 165, 200, 230, 260, 290, 320, 350, 380, 410, 440]
price = 14000
upkeep_per_year = 900
rack_units = 1
"""


@dataclass(frozen=True)
class HostKind:
    """A kind of host. Capacities in the units of corral.planning.model (cpu: MHz-equivalents)."""

    name: str
    cores: int
    core_mhz: float
    speed: float
    mem_bytes: float
    disk_bps: float
    net_bps: float
    power_w: tuple[float, ...]  # 11 points: watts at 0, 10, ..., 100 % CPU load
    price: float
    upkeep_per_year: float
    rack_units: float = 1.0
    description: str = ""

    @property
    def cpu_mhz(self) -> float:
        return self.cores * self.core_mhz * self.speed

    def capacity(self, resource: str) -> float:
        return {"cpu": self.cpu_mhz, "mem": self.mem_bytes, "disk": self.disk_bps, "net": self.net_bps}[resource]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "cores": self.cores,
            "core_mhz": self.core_mhz,
            "speed": self.speed,
            "mem_gb": self.mem_bytes / GB,
            "disk_mb_s": self.disk_bps / MB_S,
            "net_mb_s": self.net_bps / MB_S,
            "power_w": list(self.power_w),
            "price": self.price,
            "upkeep_per_year": self.upkeep_per_year,
            "rack_units": self.rack_units,
        }


#: What a kind's fields may hold: (smallest, largest, whether 0 is allowed). Bounds keep every
#: capacity positive and every figure far from overflowing once multiplied over many hosts.
KIND_FIELDS: dict[str, tuple[float, float, bool]] = {
    "cores": (1, 100_000, False),
    "core_mhz": (1, 1_000_000, False),
    "speed": (0.001, 1_000, False),
    "mem_gb": (0.001, 1_000_000, False),
    "disk_mb_s": (0.001, 1_000_000_000, True),
    "net_mb_s": (0.001, 1_000_000_000, True),
    "price": (0, 1e12, True),
    "upkeep_per_year": (0, 1e12, True),
    "rack_units": (0, 1_000, True),
}
KIND_KEYS = frozenset(KIND_FIELDS) | {"power_w", "description"}
MAX_WATTS = 1_000_000.0
MAX_DESCRIPTION_CHARS = 1_000
_KIND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_kind_name(name: object, where: str = "catalog") -> str:
    if not isinstance(name, str) or not _KIND_NAME.fullmatch(name):
        shown = repr(name)[:80].encode("unicode_escape").decode("ascii")
        raise CatalogError(
            f"{where}: invalid kind name {shown}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def host_kind_from_json(name: str, d: Mapping[str, Any], where: str = "catalog") -> HostKind:
    """Build a HostKind from a TOML/JSON table (the keys of BUILTIN_CATALOG_TOML)."""
    check_kind_name(name, where)
    unknown = sorted(str(k) for k in d if k not in KIND_KEYS)
    if unknown:
        raise CatalogError(
            f"{where}: kind {name!r}: unknown setting(s) {', '.join(repr(k) for k in unknown)[:200]} "
            f"(known: {', '.join(sorted(KIND_KEYS))})"
        )

    def num(key: str, default: float | None = None) -> float:
        v = d.get(key, default)
        if not _is_number(v):
            raise CatalogError(f"{where}: kind {name!r}: {key} must be a number, got {_short(v)}")
        assert isinstance(v, int | float)
        lo, hi, zero_ok = KIND_FIELDS[key]
        if not math.isfinite(v) or not (lo <= v <= hi or (zero_ok and v == 0)):
            low = f"0 or {lo:g}" if zero_ok and lo > 0 else f"{lo:g}"
            raise CatalogError(f"{where}: kind {name!r}: {key} must be from {low} to {hi:g}, got {v}")
        return float(v)

    cores = num("cores")
    if not cores.is_integer():
        raise CatalogError(f"{where}: kind {name!r}: cores must be a whole number, got {cores:g}")
    power = d.get("power_w")
    if not isinstance(power, list) or len(power) != 11 or not all(_is_number(x) for x in power):
        raise CatalogError(f"{where}: kind {name!r}: power_w must be 11 numbers (watts at 0, 10, ..., 100 %)")
    if not all(math.isfinite(x) and 0 <= x <= MAX_WATTS for x in power):
        raise CatalogError(f"{where}: kind {name!r}: power_w must be finite watts from 0 to {MAX_WATTS:g}")
    if any(b < a for a, b in itertools.pairwise(power)):
        raise CatalogError(f"{where}: kind {name!r}: power_w must be non-negative and non-decreasing")
    description = d.get("description", "")
    if not isinstance(description, str):
        raise CatalogError(f"{where}: kind {name!r}: description must be a string, got {_short(description)}")
    if len(description) > MAX_DESCRIPTION_CHARS or not description.isprintable():
        raise CatalogError(
            f"{where}: kind {name!r}: description must be at most {MAX_DESCRIPTION_CHARS} printable characters"
        )
    return HostKind(
        name=name,
        cores=int(cores),
        core_mhz=num("core_mhz"),
        speed=num("speed", 1.0),
        mem_bytes=num("mem_gb") * GB,
        disk_bps=num("disk_mb_s") * MB_S,
        net_bps=num("net_mb_s") * MB_S,
        power_w=tuple(float(x) for x in power),
        price=num("price", 0.0),
        upkeep_per_year=num("upkeep_per_year", 0.0),
        rack_units=num("rack_units", 1.0),
        description=description,
    )


def _short(v: object) -> str:
    text = repr(v)
    return (text[:60] + "...") if len(text) > 60 else text


def parse_catalog(text: str, where: str = "catalog") -> dict[str, HostKind]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:
        raise CatalogError(f"{where}: invalid TOML: nested too deeply") from None
    kinds = data.get("kinds")
    if not isinstance(kinds, dict) or not kinds:
        raise CatalogError(f"{where}: no [kinds.NAME] tables")
    out = {}
    for name, table in kinds.items():
        if not isinstance(table, dict):
            raise CatalogError(f"{where}: kinds.{check_kind_name(name, where)} is not a table")
        out[name] = host_kind_from_json(name, table, where)
    return out


def load_catalog(path: str | Path | None = None) -> dict[str, HostKind]:
    """The built-in kinds, overridden/extended by the kinds of the TOML file at ``path``."""
    kinds = parse_catalog(BUILTIN_CATALOG_TOML, "built-in catalog")
    if path is not None:
        p = Path(path)
        text = read_small_text(p, "catalog", MAX_SETTINGS_BYTES, CatalogError)
        kinds.update(parse_catalog(text, str(p)))
    return kinds


def catalog_to_toml(kinds: Mapping[str, HostKind]) -> str:
    """The kinds as a catalog TOML file (the format ``load_catalog`` reads), e.g. to start your own."""

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else repr(float(x))

    parts = []
    for k in kinds.values():
        j = k.to_json()
        parts.append(
            f"[kinds.{k.name}]\n"
            f"description = {json.dumps(k.description)}\n"
            f"cores = {k.cores}\ncore_mhz = {num(k.core_mhz)}\nspeed = {num(k.speed)}\n"
            f"mem_gb = {num(j['mem_gb'])}\ndisk_mb_s = {num(j['disk_mb_s'])}\nnet_mb_s = {num(j['net_mb_s'])}\n"
            f"power_w = [{', '.join(num(w) for w in k.power_w)}]\n"
            f"price = {num(k.price)}\nupkeep_per_year = {num(k.upkeep_per_year)}\nrack_units = {num(k.rack_units)}\n"
        )
    return "\n".join(parts)


def get_kind(kinds: Mapping[str, HostKind], name: str) -> HostKind:
    try:
        return kinds[name]
    except KeyError:
        raise CatalogError(f"unknown host kind {name!r} (known: {', '.join(sorted(kinds))})") from None
