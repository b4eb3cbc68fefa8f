"""Shared fixtures. Tests that need libvirt, QEMU or a guest fail (not skip) when CI=true."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from corral.config import Settings, load_settings
from corral.core.capacity import CapacityLimits
from corral.core.errors import CorralError
from corral.services.context import Corral, open_corral

IN_CI = os.environ.get("CI") == "true"
TEST_PREFIX = "ct-"


def require(condition: bool, what: str) -> None:
    """Skip on a developer's machine without `what`; fail under CI, where it must be there."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required under CI=true")
        pytest.skip(f"{what} is not available")


def libvirt_available(uri: str = "qemu:///system") -> bool:
    if shutil.which("virsh") is None:
        return False
    return subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, check=False).returncode == 0


@pytest.fixture
def require_tool() -> Callable[[str], None]:
    """`require_tool("tmux")`: the program must be on PATH (under CI=true, or the test fails)."""
    return lambda program: require(shutil.which(program) is not None, program)


@pytest.fixture(scope="session")
def image_cache() -> Path:
    """Where the tiny image is built once and kept between test runs."""
    path = Path(os.environ.get("CORRAL_TEST_CACHE", "/var/cache/corral-test"))
    (path / "images").mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, image_cache: Path) -> Settings:
    """A data folder for the test session whose images/ is the shared cache; the env points the CLI at it."""
    data = tmp_path_factory.mktemp("corral-data")
    (data / "images").symlink_to(image_cache / "images")
    os.environ["CORRAL_DATA_DIR"] = str(data)
    os.environ["CORRAL_CONFIG"] = str(data / "config.toml")
    return load_settings()


@pytest.fixture(scope="session")
def corral_session(settings: Settings) -> Iterator[Corral]:
    """A Corral wired to the real libvirt daemon, with the tiny image built."""
    require(libvirt_available(settings.libvirt_uri), f"a running libvirt daemon at {settings.libvirt_uri}")
    require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64")
    corral = open_corral(settings)
    remove_test_domains(corral)
    corral.images.build_tiny()  # rebuilt only when its sources changed (an older image ignores new options)
    yield corral
    remove_test_domains(corral)
    remove_test_pools(corral)
    corral.close()


def remove_test_pools(corral: Corral) -> None:
    """Forget this session's storage pool, and pools of earlier sessions whose folder is gone (each data
    folder has a pool of its own: see Settings.pool_name)."""
    with contextlib.suppress(CorralError):
        for pool, path in corral.libvirt.pools():
            ours = Path(path) == corral.settings.disks_dir
            stale = pool.startswith("corral-") and not Path(path).exists()
            if ours or stale:
                corral.libvirt.remove_pool(pool)


# libvirt's test driver on a host of our own (4 cores, 16 GiB, no guests), in this process: no daemon, no QEMU
OFFLINE_URI = f"test://{Path(__file__).resolve().parent / 'data' / 'testnode.xml'}"


@pytest.fixture(scope="session")
def offline_session(settings: Settings) -> Iterator[Corral]:
    """A Corral over libvirt's test driver, for what needs libvirt's API but no daemon and no guest
    (the API, auth, validation). Its host is the one host of its registry; the images are the shared
    cache (the tiny image's record is built if missing: that needs no libvirt either)."""
    from corral.core.hosts import LOCAL_HOST, HostSpec
    from corral.services.registry import HostRegistry

    offline = replace(settings, libvirt_uri=OFFLINE_URI)
    corral = open_corral(offline, HostRegistry((HostSpec(LOCAL_HOST, OFFLINE_URI, storage="shared"),)))
    corral.images.build_tiny()  # rebuilt only when its sources changed (an older image ignores new options)
    yield corral
    remove_test_domains(corral)
    corral.close()


@pytest.fixture
def offline(offline_session: Corral) -> Iterator[Corral]:
    yield offline_session
    remove_test_domains(offline_session)


@pytest.fixture
def corral(corral_session: Corral) -> Iterator[Corral]:
    yield corral_session
    remove_test_domains(corral_session)


def remove_test_domains(corral: Corral) -> None:
    """Delete this session's test guests: named ct-… and kept in this session's data folder, so that two
    pytest sessions (a developer's and a helper's) never delete each other's guests."""
    from corral.core.domxml import parse_domain_xml

    for row in corral.libvirt.rows():
        if not row.name.startswith(TEST_PREFIX):
            continue
        with contextlib.suppress(CorralError):
            meta = parse_domain_xml(corral.libvirt.xml(row.name, inactive=True)).meta
            if meta is None or meta.console_log is None \
                    or not meta.console_log.is_relative_to(corral.settings.data_dir):
                continue
            corral.guests.delete(row.name)


def overriding(corral: Corral) -> Iterator[Callable[..., None]]:
    """Change a Corral's settings (and capacity limits, as `limits={...}`) for one test; changes add up
    over several calls and are undone at the end."""
    original = corral.settings

    def put(new: Settings) -> None:
        corral.settings = corral.guests.settings = corral.host.settings = corral.images.settings = new

    def apply(limits: dict[str, float] | None = None, **changes: object) -> None:
        current = corral.settings
        new = replace(current, **changes)  # type: ignore[arg-type]
        if limits:
            new = replace(new, limits=CapacityLimits(**{**current.limits.__dict__, **limits}))
        put(new)

    yield apply
    put(original)


@pytest.fixture
def override(corral: Corral) -> Iterator[Callable[..., None]]:
    yield from overriding(corral)


SERVE = [str(Path(sys.executable).with_name("corral")), "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _running_serve(data_dir: Path, config: Path, *args: str) -> Iterator[str]:
    """`corral serve` on a free loopback port over `data_dir`: yields its base URL once /api/health
    answers; SIGTERM at the end, which must stop it cleanly."""
    port = free_port()
    env = {**os.environ, "CORRAL_DATA_DIR": str(data_dir), "CORRAL_CONFIG": str(config)}
    proc = subprocess.Popen([*SERVE, "--listen", f"127.0.0.1:{port}", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "corral serve did not answer within 30 s"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean stop
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def running_serve() -> Callable[..., contextlib.AbstractContextManager[str]]:
    """`with running_serve(data_dir, config, *extra_args) as base_url:` a real `corral serve`."""
    return _running_serve
