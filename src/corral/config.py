"""Settings: where Corral keeps its data, which libvirt to talk to, the host's capacity limits.

Read from a TOML file (`$CORRAL_CONFIG`, else /etc/corral/config.toml for root,
~/.config/corral/config.toml otherwise), with environment overrides for the data folder
(`$CORRAL_DATA_DIR`), the libvirt URI (`$CORRAL_LIBVIRT_URI`) and the storage pool
(`$CORRAL_STORAGE_POOL`). Every key is optional:

    data_dir = "/var/lib/corral"
    libvirt_uri = "qemu:///system"
    accelerator = "auto"          # auto | kvm | tcg
    boot_timeout_s = 60           # how long `--wait` waits for a guest's readiness signal (1-3600)
    image_dirs = ["/srv/images"]  # folders images and ISOs may be imported from (besides the defaults)
    network = "corral"            # libvirt network for guests' NICs ("" : QEMU user-mode NICs)
    network_cidr = "192.168.123.0/24"
    network_mode = "nat"          # nat | isolated
    storage_pool = "corral"       # libvirt pool of guests' disks (default: corral; corral-<hash> for another data_dir)

    [monitor]
    interval_s = 5                # sampling interval
    raw_retention_s = 86400       # raw samples kept a day
    rollup_retention_s = 2592000  # 5-minute min/avg/max kept 30 days
    bucket_s = 300

    [api]                         # corral serve's requests
    max_body_bytes = 1048576      # a larger request body gets 413, on every route
    body_timeout_s = 30           # a request body not received within this gets 408

    [capacity]
    cap = 0.85                    # utilization cap for the expected CPU demand of running guests
    vcpu_overcommit = 4.0         # vCPUs per host core
    memory_reserve_mib = 1024     # kept for the host itself
    memory_overcommit = 1.0       # 1.0: no overcommit
    assumed_guest_utilization = 0.25  # for guests that declare no load
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from corral.core.capacity import CapacityLimits
from corral.core.errors import InvalidInput
from corral.core.hosts import LOCAL_HOST, HostSpec, check_uri
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
class ApiSettings:
    """Bounds on the requests `corral serve` accepts."""

    max_body_bytes: int = 1024 * 1024
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        size, timeout = self.max_body_bytes, self.body_timeout_s
        if isinstance(size, bool) or not isinstance(size, int) or not 1024 <= size <= 1024**3:
            raise ValueError("max_body_bytes must be a whole number of bytes between 1024 and 1073741824")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout <= 3600:
            raise ValueError("body_timeout_s must be a number of seconds between 1 and 3600")


BALANCER_MODES = ("off", "recommend", "automatic")


@dataclass(frozen=True)
class BalancerSettings:
    """The balancer that keeps the cluster consolidated (`corral balance`, and inside `corral serve`)."""

    mode: str = "recommend"  # off | recommend (moves shown, applied by a click) | automatic
    interval_s: float = 300.0  # a round every interval
    policy: str = "corral"  # the consolidation policy (corral simulate's names)
    max_migrations: int = 2  # per round, one at a time
    cooldown_s: float = 1800.0  # a moved guest is left alone this long unless its host overloads
    min_gain_w: float = 1.0  # an emptying move must save at least this much power
    standby: bool = True  # put emptied hosts in standby (those with a power driver)
    power_kind: str = "ml110-g5"  # the host kind whose power curve stands for a host's (the catalog)

    def __post_init__(self) -> None:
        if self.mode not in BALANCER_MODES:
            raise ValueError(f"mode must be one of {', '.join(BALANCER_MODES)}")
        for name, value, low, high in (("interval_s", self.interval_s, 1, 86400),
                                       ("max_migrations", self.max_migrations, 1, 64),
                                       ("cooldown_s", self.cooldown_s, 0, 7 * 86400),
                                       ("min_gain_w", self.min_gain_w, 0, 10000)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{name} must be a number between {low} and {high}")
        if not isinstance(self.standby, bool):
            raise ValueError("standby must be true or false")


DEFAULT_IMAGE_DIR = Path("/var/lib/libvirt/images")
DEFAULT_DATA_DIR = Path("/var/lib/corral")  # as root; a user's is in their home
MAX_BOOT_TIMEOUT_S = 3600.0


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
    api: ApiSettings = ApiSettings()
    balancer: BalancerSettings = BalancerSettings()
    # Folders images and ISOs may come from (symlinks resolved). Always includes the data folder.
    image_dirs: tuple[Path, ...] = (DEFAULT_IMAGE_DIR,)
    # The libvirt storage pool that holds guests' disks (`virsh vol-list corral`). Unset: `corral` for the
    # default data folder, and a name of its own for any other, so that two data folders (two test
    # sessions, two configurations) never claim one pool on one daemon.
    storage_pool: str | None = None

    @property
    def hosts(self) -> tuple[HostSpec, ...]:
        """The hosts Corral manages from its configuration: the local one (`libvirt_uri`)."""
        return (HostSpec(LOCAL_HOST, self.libvirt_uri, storage="shared", accelerator=self.accelerator),)

    @property
    def allowed_image_dirs(self) -> tuple[Path, ...]:
        """Where images and ISOs may be imported from: Corral's data folder (and its images folder, which
        may be a link to elsewhere) and `image_dirs`."""
        return (self.data_dir, self.images_dir, *self.image_dirs)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def guests_dir(self) -> Path:
        return self.data_dir / "guests"

    @property
    def disks_dir(self) -> Path:
        """Guests' disks on hosts that share the data folder: the target of the storage pool."""
        return self.data_dir / "disks"

    @property
    def pool_name(self) -> str:
        if self.storage_pool:
            return self.storage_pool
        if self.data_dir == DEFAULT_DATA_DIR:
            return "corral"
        return "corral-" + hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:8]

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
             "api", "network_mode", "monitor", "image_dirs", "balancer", "storage_pool"}
    if unknown := set(data) - known:
        raise InvalidInput(f"config file {config_path}: unknown key(s) {', '.join(sorted(unknown))}")
    default_data = DEFAULT_DATA_DIR if os.geteuid() == 0 else Path.home() / ".local/share/corral"
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
    api_table = data.get("api", {})
    api_names = {f.name for f in fields(ApiSettings)}
    if not isinstance(api_table, dict) or set(api_table) - api_names:
        raise InvalidInput(f"config file {config_path}: [api] accepts {', '.join(sorted(api_names))}")
    try:
        api = ApiSettings(**api_table)
    except ValueError as exc:
        raise InvalidInput(f"config file {config_path}: [api] {exc}") from None
    balancer_table = data.get("balancer", {})
    balancer_names = {f.name for f in fields(BalancerSettings)}
    if not isinstance(balancer_table, dict) or set(balancer_table) - balancer_names:
        raise InvalidInput(f"config file {config_path}: [balancer] accepts {', '.join(sorted(balancer_names))}")
    try:
        balancer = BalancerSettings(**balancer_table)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"config file {config_path}: [balancer] {exc}") from None
    network = str(os.environ.get("CORRAL_NETWORK", data.get("network", "corral")))
    if network:
        check_name(network, "network name")
    boot_timeout = data.get("boot_timeout_s", 60)
    if isinstance(boot_timeout, bool) or not isinstance(boot_timeout, int | float) \
            or not 1 <= boot_timeout <= MAX_BOOT_TIMEOUT_S:
        raise InvalidInput(f"config file {config_path}: boot_timeout_s must be a number of seconds "
                           f"between 1 and {MAX_BOOT_TIMEOUT_S:g}, not {boot_timeout!r}")
    image_dirs = _image_dirs(data.get("image_dirs", [str(DEFAULT_IMAGE_DIR)]), config_path)
    pool = os.environ.get("CORRAL_STORAGE_POOL") or data.get("storage_pool")
    if pool is not None:
        if not isinstance(pool, str):
            raise InvalidInput(f"config file {config_path}: storage_pool must be a name")
        check_name(pool, "storage pool name")
    return Settings(
        data_dir=data_dir.absolute(),
        libvirt_uri=check_uri(os.environ.get("CORRAL_LIBVIRT_URI") or str(data.get("libvirt_uri", "qemu:///system"))),
        accelerator=os.environ.get("CORRAL_ACCELERATOR") or accelerator,
        boot_timeout_s=float(boot_timeout),
        limits=limits,
        network=network,
        network_cidr=str(data.get("network_cidr", "192.168.123.0/24")),
        network_mode=str(data.get("network_mode", "nat")),
        config_path=config_path if config_path.is_file() else None,
        monitor=monitor,
        api=api,
        balancer=balancer,
        image_dirs=image_dirs,
        storage_pool=pool or None,
    )


def _image_dirs(value: Any, config_path: Path) -> tuple[Path, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or len(value) > 64:
        raise InvalidInput(f"config file {config_path}: image_dirs must be a list of absolute folder paths")
    folders = []
    for text in value:
        folder = Path(text)
        if not folder.is_absolute() or ".." in folder.parts or "\x00" in text:
            raise InvalidInput(f"config file {config_path}: image_dirs entry {text!r} must be an absolute path "
                               "without '..'")
        if folder == Path("/") or folder.parts[1:2] in (("proc",), ("sys",), ("dev",)):
            raise InvalidInput(f"config file {config_path}: image_dirs entry {text!r} would allow system files")
        folders.append(folder)
    return tuple(folders)
