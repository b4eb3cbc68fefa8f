"""A real Debian 12 server (issue 14, items 1-3): `corral image build debian` from Debian's package
registry, a guest created with an SSH key whose first boot cloud-init configures from Corral's NoCloud
seed, and the QEMU guest agent: `start --wait` waits for it, `info` shows the OS and addresses it
reports, `corral exec` runs commands through it, `shutdown` asks it.

Everything is checked through the agent: no network traffic to the guest is needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.adapters.seed import read_seed
from corral.services.context import Corral
from corral.services.images import DEBIAN, ImageRecord
from tests.api.conftest import Api, credentials, live_api  # noqa: F401 (fixtures, for this module)
from tests.conftest import require

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]
CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


@pytest.fixture(scope="module")
def debian(corral_session: Corral) -> ImageRecord:
    """The Debian image, built once (kept in the test image cache between runs, rebuilt when its recipe
    changes)."""
    require(shutil.which("mmdebstrap") is not None, "mmdebstrap (scripts/setup installs it)")
    return corral_session.images.build_debian()


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@corral-test", "-f",
                    str(tmp_path / "id")], check=True)
    public = tmp_path / "id.pub"
    return public, public.read_text().strip()


@pytest.fixture
def server(corral: Corral, debian: ImageRecord, key: tuple[Path, str]) -> Iterator[str]:
    """A Debian guest made through the CLI with a key and a user of its own, started and waited for."""
    name = f"ct-deb-{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    result = subprocess.run([CORRAL_BIN, "create", name, "--image", DEBIAN, "--memory", "768",
                             "--ssh-key", str(key[0]), "--user", "admin", "--start", "--wait", "--wait-timeout", "600"],
                            capture_output=True, text=True, check=False, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    print(f"created and up (agent answering) in {time.monotonic() - began:.0f} s")
    yield name
    if corral.libvirt.exists(name):
        corral.guests.delete(name)


def agent_out(corral: Corral, name: str, *argv: str) -> str:
    result = corral.guests.exec(name, list(argv), timeout_s=60)
    assert result.exit_code == 0, (argv, result.stderr)
    return result.stdout.decode()


def test_the_debian_image_is_a_real_server(debian: ImageRecord) -> None:
    assert debian.kind == "disk" and debian.format == "qcow2" and debian.kernel and debian.initrd
    assert Path(debian.path or "").is_file() and "root=LABEL=corral-root" in (debian.cmdline or "")
    assert debian.kernel_version and debian.kernel_version.endswith("-cloud-amd64")


def test_a_server_made_with_a_key_is_configured_at_first_boot(corral: Corral, server: str,
                                                              key: tuple[Path, str],
                                                              request: pytest.FixtureRequest) -> None:
    info = corral.guests.info(server)
    assert info.state == "running" and info.agent
    assert info.os_name is not None and "Debian" in info.os_name
    # The seed is the guest's own volume in the pool, a read-only disk.
    seed = corral.settings.disks_dir / f"guest-{server}-seed.iso"
    assert {"path": str(seed), "format": "raw", "device": "disk", "target": "vdb"} in info.disks
    assert b"local-hostname" in read_seed(seed)["meta-data"]
    # Inside, through the agent: the hostname is the guest's name, the user has the key.
    assert agent_out(corral, server, "/bin/hostname").strip() == server
    assert agent_out(corral, server, "/bin/cat", "/home/admin/.ssh/authorized_keys").strip() == key[1]
    assert "sudo" in agent_out(corral, server, "/usr/bin/id", "admin")
    # Its address: from the DHCP lease and the agent, shown by info.
    deadline = time.monotonic() + 120
    addresses: list[str] = []
    while time.monotonic() < deadline and not addresses:
        addresses = [a.address for nic in corral.guests.info(server).nics for a in nic.addresses
                     if a.family == "ipv4" and not a.address.startswith("127.")]
        time.sleep(2)
    assert addresses, corral.guests.info(server).nics
    assert addresses[0] in agent_out(corral, server, "/sbin/ip", "-4", "-o", "addr")
    # The same through the REST API.
    api: Api = request.getfixturevalue("live_api")
    answer = api.client.post(f"/api/domains/{server}/exec", headers=api.bearer,
                                  json={"command": ["/bin/sh", "-c", "hostname; exit 4"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"exit_code": 4, "stdout": f"{server}\n", "stderr": ""}
    # corral exec: output and exit status, as a shell sees them.
    result = subprocess.run([CORRAL_BIN, "exec", server, "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
                            capture_output=True, text=True, check=False, env=os.environ.copy())
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_shutdown_asks_the_guest_agent(corral: Corral, server: str) -> None:
    # With logind told to ignore the power key, the ACPI button does nothing in this guest: only the agent
    # can shut it down.
    agent_out(corral, server, "/bin/sh", "-c", "mkdir -p /etc/systemd/logind.conf.d && printf "
              "'[Login]\\nHandlePowerKey=ignore\\n' > /etc/systemd/logind.conf.d/corral-test.conf && "
              "systemctl restart systemd-logind")
    corral.libvirt.shutdown(server)  # the ACPI button: ignored
    assert not corral.libvirt.wait_state(server, {"shut-off"}, 15)
    assert corral.guests.shutdown(server, timeout_s=120).state == "shut-off"
    # Deleting it deletes its disk and its seed.
    corral.guests.delete(server)
    assert not list(corral.settings.disks_dir.glob(f"guest-{server}-*"))
