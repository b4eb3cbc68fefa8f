"""A guest's specification: what the user asks for, validated before anything is made."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
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


#: A load trace's step as recorded (PlanetLab: one CPU percent every 5 minutes), replayed at speed 1.
TRACE_STEP_MS = 300_000
#: `--speed` replays a trace this many times faster at most (a 5-minute step in 83 ms).
MAX_SPEED = 3600
MIN_TRACE_STEP_MS = round(TRACE_STEP_MS / MAX_SPEED)
#: Steps a trace may have: three days of 5-minute steps. The guest gets the trace on its kernel command
#: line, two characters a step, and x86's holds 2048 bytes (domxml.MAX_CMDLINE_BYTES): this many steps fit
#: beside the longest name and rates, with room to spare for the image's own words.
MAX_TRACE_STEPS = 864


@dataclass(frozen=True)
class LoadSpec:
    """A synthetic workload the built-in image runs, so a guest can stand in for a measured server.

    With a `trace` (one CPU percent per step, the PlanetLab layout) the CPU load follows it, one step
    every `step_ms` and from the start again at its end, instead of the fixed `cpu_pct`."""

    cpu_pct: float = 0.0  # percent of each vCPU kept busy
    disk_kbps: int = 0  # KiB/s read+written on the guest's disk
    net_kbps: int = 0  # KiB/s sent from the guest's NIC
    trace: tuple[int, ...] = ()  # percent of each vCPU kept busy, step by step (replaces cpu_pct)
    step_ms: int = TRACE_STEP_MS  # how long each step of the trace lasts in the guest

    def __post_init__(self) -> None:
        if not self.trace:  # no trace, no step: equal loads compare equal
            object.__setattr__(self, "step_ms", TRACE_STEP_MS)
            return
        if not isinstance(self.trace, tuple):
            raise InvalidInput(f"a load trace is a tuple of percents, not {type(self.trace).__name__}")
        if len(self.trace) > MAX_TRACE_STEPS:
            raise InvalidInput(f"a load trace has at most {MAX_TRACE_STEPS} steps (three days of 5-minute "
                               "steps: the guest gets it on its kernel command line)")
        for pct in self.trace:
            if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
                raise InvalidInput(f"a load trace's step {pct!r} must be a whole percent between 0 and 100")
        if self.cpu_pct:
            raise InvalidInput("a load trace replaces cpu=: give the trace or cpu=, not both")
        if (isinstance(self.step_ms, bool) or not isinstance(self.step_ms, int)
                or not MIN_TRACE_STEP_MS <= self.step_ms <= TRACE_STEP_MS):
            raise InvalidInput(f"a load trace's step of {self.step_ms!r} ms must be between {MIN_TRACE_STEP_MS} "
                               f"and {TRACE_STEP_MS} ms (--speed 1 to {MAX_SPEED})")

    @classmethod
    def from_trace(cls, percents: Sequence[float], speed: float = 1, *, disk_kbps: int = 0,
                   net_kbps: int = 0) -> LoadSpec:
        """A load replaying `percents` (CPU percent of each vCPU, one per 5-minute step, rounded to
        whole percents) `speed` times faster."""
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 1 <= speed <= MAX_SPEED:
            raise InvalidInput(f"speed={speed!r} must be between 1 and {MAX_SPEED} (times faster than the trace)")
        if not percents:
            raise InvalidInput("a load trace needs at least one step")
        if len(percents) > MAX_TRACE_STEPS:
            raise InvalidInput(f"the load trace has {len(percents):,} steps; at most {MAX_TRACE_STEPS} fit on "
                               "the guest's kernel command line (three days of 5-minute steps)")
        steps = []
        for at, value in enumerate(percents, 1):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
                raise InvalidInput(f"load trace step {at}: {value!r} is not a CPU percent between 0 and 100")
            steps.append(int(value + 0.5))  # half up (round() would make 12.5 and 13.5 both even)
        return cls(0.0, disk_kbps, net_kbps, tuple(steps), round(TRACE_STEP_MS / speed))

    @property
    def speed(self) -> float:
        """How many times faster than recorded (5-minute steps) the trace is replayed."""
        return TRACE_STEP_MS / self.step_ms

    @property
    def is_idle(self) -> bool:
        return self.cpu_pct == 0 and self.disk_kbps == 0 and self.net_kbps == 0 and not self.trace

    @property
    def declared_cpu_pct(self) -> float | None:
        """The CPU load this guest declares, or None: the capacity model then assumes one. A trace
        declares its mean: the admission guard counts expected average use, as for cpu=; its peaks are
        the balancer's business, which forecasts each guest from its measured history."""
        if self.trace:
            return sum(self.trace) / len(self.trace)
        return self.cpu_pct if self.cpu_pct > 0 else None

    def as_text(self) -> str:
        if not self.trace:
            return f"cpu={self.cpu_pct:g},disk={self.disk_kbps},net={self.net_kbps}"
        mean = sum(self.trace) / len(self.trace)
        return (f"trace={len(self.trace)}x{self.step_ms / 1000:g}s (mean {mean:.3g}, peak {max(self.trace)}),"
                f"disk={self.disk_kbps},net={self.net_kbps}")


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
    # First boot (cloud-init, for disk images): the user to make (None: the image's default user), the
    # SSH public keys they get, and their password as a crypt(3) hash (None: password login off).
    user: str | None = None
    ssh_keys: tuple[str, ...] = ()
    password_hash: str | None = None

    def __post_init__(self) -> None:
        from corral.core.cloudinit import FirstBoot

        check_domain_name(self.name)
        FirstBoot(self.name, "check", self.user, tuple(self.ssh_keys), self.password_hash)  # raises on bad input
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


_SPEC_FIELDS = {"name", "image", "vcpus", "memory", "disk", "iso", "load", "load_trace", "speed", "user", "ssh_keys"}

#: Reads a load trace file (the PlanetLab layout: one CPU percent per line) into its values, or raises
#: InvalidInput with one line saying what is wrong; the shell's is `corral.adapters.traces.read_load_trace`.
TraceReader = Callable[[Path], Sequence[float]]


def spec_from_mapping(data: Mapping[str, Any], *, base_dir: Path | None = None,
                      read_trace: TraceReader | None = None) -> GuestSpec:
    """Build a spec from the fields of a TOML file (or a JSON body): the same names as the CLI options.

    `load_trace` is a list of CPU percents, or the path of a trace file when `read_trace` can read one
    (the CLI and spec files; the REST API takes the list only)."""
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
    load = _with_trace(load, data.get("load_trace"), data.get("speed"), base_dir, read_trace)
    iso = data.get("iso")
    iso_path = None
    if iso is not None:
        if not isinstance(iso, str):
            raise InvalidInput("spec field 'iso' must be a path string")
        iso_path = check_path(iso, "iso", base=base_dir)  # relative to the spec file (or the CLI's folder)
    disk = data.get("disk")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidInput("spec field 'user' must be a user name")
    keys = data.get("ssh_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InvalidInput("spec field 'ssh_keys' must be a list of SSH public key lines")
    return GuestSpec(
        name=data["name"],
        image=data["image"],
        vcpus=int(_number(data.get("vcpus", 1), "vcpus", integer=True)),
        memory_mib=int(_number(data.get("memory", 256), "memory", integer=True)),
        disk_gib=None if disk is None else _number(disk, "disk"),
        iso=iso_path,
        load=load,
        user=user,
        ssh_keys=tuple(keys),
    )


def _with_trace(load: LoadSpec, raw: Any, speed: Any, base_dir: Path | None,
                read_trace: TraceReader | None) -> LoadSpec:
    """`load` replaying the trace `raw` (a list of percents, or a file's path) at `speed`."""
    if raw is None:
        if speed is not None:
            raise InvalidInput("speed goes with a load trace (--load-trace FILE --speed N)")
        return load
    if load.cpu_pct:
        raise InvalidInput("a load trace replaces cpu=: give the trace or cpu=, not both")
    if isinstance(raw, str):
        path = check_path(raw, "load trace", base=base_dir)  # relative to the spec file (or the CLI's folder)
        if read_trace is None:
            raise InvalidInput("load_trace must be a list of CPU percents here (a file is read by corral create)")
        values: Sequence[Any] = read_trace(path)
    elif isinstance(raw, list | tuple):
        if len(raw) > MAX_TRACE_STEPS:  # before looking at each value
            raise InvalidInput(f"the load trace has {len(raw):,} steps; at most {MAX_TRACE_STEPS} fit on the "
                               "guest's kernel command line (three days of 5-minute steps)")
        values = [_number(v, f"load trace step {at}") for at, v in enumerate(raw, 1)]
    else:
        raise InvalidInput("load_trace must be a trace file's path or a list of CPU percents")
    return LoadSpec.from_trace(values, 1 if speed is None else _number(speed, "speed"),
                               disk_kbps=load.disk_kbps, net_kbps=load.net_kbps)


def spec_from_toml(text: str, source: str, base_dir: Path | None,
                   read_trace: TraceReader | None = None) -> GuestSpec:
    """A spec from the text of a TOML file (`source` names it in errors; relative paths in it are
    relative to `base_dir`, the file's folder)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"spec file {source!r} is not valid TOML: {exc}") from None
    return spec_from_mapping(data, base_dir=base_dir, read_trace=read_trace)


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
