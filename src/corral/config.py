"""Settings: where Corral keeps its data, which libvirt to talk to, the host's capacity limits.

Read from a TOML file (`$CORRAL_CONFIG`, else /etc/corral/config.toml for root,
~/.config/corral/config.toml otherwise), with environment overrides for the data folder
(`$CORRAL_DATA_DIR`) and the libvirt URI (`$CORRAL_LIBVIRT_URI`). Every key is optional:

    data_dir = "/var/lib/corral"
    libvirt_uri = "qemu:///system"
    accelerator = "auto"          # auto | kvm | tcg
    boot_timeout_s = 60
    network = "corral"            # libvirt network for guests' NICs ("" : QEMU user-mode NICs)
    network_cidr = "192.168.123.0/24"
    network_mode = "nat"          # nat | isolated

    [monitor]
    interval_s = 5                # sampling interval
    raw_retention_s = 86400       # raw samples kept a day
    rollup_retention_s = 2592000  # 5-minute min/avg/max kept 30 days
    bucket_s = 300

    [capacity]
    cap = 0.85                    # utilization cap for the expected CPU demand of running guests
    vcpu_overcommit = 4.0         # vCPUs per host core
    memory_reserve_mib = 1024     # kept for the host itself
    memory_overcommit = 1.0       # 1.0: no overcommit
    assumed_guest_utilization = 0.25  # for guests that declare no load
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from corral.core.capacity import CapacityLimits
from corral.core.errors import InvalidInput
from corral.core.validate import check_name


@dataclass(frozen=True)
class MonitorSettings:
    interval_s: float = 5.0
    raw_retention_s: float = 86400.0
    rollup_retention_s: float = 30 * 86400.0
    bucket_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0.2 <= self.interval_s <= 3600:
            raise ValueError("interval_s must be between 0.2 and 3600 seconds")
        if not self.bucket_s >= self.interval_s:
            raise ValueError("bucket_s must be at least one interval")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    libvirt_uri: str
    accelerator: str
    boot_timeout_s: float
    limits: CapacityLimits
    network: str
    network_cidr: str
    network_mode: str
    config_path: Path | None
    monitor: MonitorSettings = MonitorSettings()

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def guests_dir(self) -> Path:
        return self.data_dir / "guests"

    @property
    def metrics_path(self) -> Path:
        return self.data_dir / "metrics.sqlite"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def default_config_path() -> Path:
    if env := os.environ.get("CORRAL_CONFIG"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/corral/config.toml")
    return Path.home() / ".config" / "corral" / "config.toml"


def load_settings(path: Path | None = None) -> Settings:
    config_path = path or default_config_path()
    data: dict[str, Any] = {}
    if config_path.is_file():
        try:
            data = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"config file {config_path} is not valid TOML: {exc}") from None
    known = {"data_dir", "libvirt_uri", "accelerator", "boot_timeout_s", "capacity", "network", "network_cidr",
             "network_mode", "monitor"}
    if unknown := set(data) - known:
        raise InvalidInput(f"config file {config_path}: unknown key(s) {', '.join(sorted(unknown))}")
    default_data = Path("/var/lib/corral") if os.geteuid() == 0 else Path.home() / ".local/share/corral"
    data_dir = Path(os.environ.get("CORRAL_DATA_DIR") or data.get("data_dir") or default_data)
    accelerator = str(data.get("accelerator", "auto"))
    if accelerator not in ("auto", "kvm", "tcg"):
        raise InvalidInput(f"config file {config_path}: accelerator must be auto, kvm or tcg")
    capacity = data.get("capacity", {})
    names = {f.name for f in fields(CapacityLimits)}
    if not isinstance(capacity, dict) or set(capacity) - names:
        raise InvalidInput(f"config file {config_path}: [capacity] accepts {', '.join(sorted(names))}")
    try:
        limits = CapacityLimits(**capacity)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"config file {config_path}: [capacity] {exc}") from None
    monitor_table = data.get("monitor", {})
    monitor_names = {f.name for f in fields(MonitorSettings)}
    if not isinstance(monitor_table, dict) or set(monitor_table) - monitor_names:
        raise InvalidInput(f"config file {config_path}: [monitor] accepts {', '.join(sorted(monitor_names))}")
    try:
        monitor = MonitorSettings(**{k: float(v) for k, v in monitor_table.items()})
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"config file {config_path}: [monitor] {exc}") from None
    network = str(os.environ.get("CORRAL_NETWORK", data.get("network", "corral")))
    if network:
        check_name(network, "network name")
    return Settings(
        data_dir=data_dir.absolute(),
        libvirt_uri=os.environ.get("CORRAL_LIBVIRT_URI") or str(data.get("libvirt_uri", "qemu:///system")),
        accelerator=os.environ.get("CORRAL_ACCELERATOR") or accelerator,
        boot_timeout_s=float(data.get("boot_timeout_s", 60)),
        limits=limits,
        network=network,
        network_cidr=str(data.get("network_cidr", "192.168.123.0/24")),
        network_mode=str(data.get("network_mode", "nat")),
        config_path=config_path if config_path.is_file() else None,
        monitor=monitor,
    )
