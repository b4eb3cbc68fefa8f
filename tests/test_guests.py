"""Guest life cycle against the real libvirt daemon and real QEMU guests (TCG here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.core.errors import AdmissionRefused, BackendError, Conflict, GuestTimeout, InvalidInput, NotFound
from corral.core.spec import GuestSpec, LoadSpec
from corral.services.context import Corral
from corral.services.images import ImageRecord

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]
CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


def name(label: str) -> str:
    return f"ct-{label}-{uuid.uuid4().hex[:6]}"


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          check=True).stdout


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORRAL_BIN, *args], capture_output=True, text=True, check=False, env=os.environ.copy())


def console_run(corral: Corral, guest: str, command: str, marker: str, timeout: float = 20) -> str:
    with corral.guests.open_console(guest) as console:
        console.send(b"\n")
        time.sleep(0.3)
        console.send(command.encode() + b"\n")
        return console.expect(marker.encode(), timeout).decode(errors="replace")


def test_full_life_cycle(corral: Corral) -> None:
    guest = name("life")
    info = corral.guests.create(GuestSpec(guest, "tiny", memory_mib=160), start=True, wait=True)
    assert info.state == "running" and info.id is not None
    assert info.managed_by_corral and info.image == "tiny"
    assert guest in virsh("list", "--name")  # an ordinary libvirt domain

    # The serial console is a real shell.
    out = console_run(corral, guest, "echo hello-$((6*7))", "hello-42")
    assert "hello-42" in out

    assert corral.guests.pause(guest).state == "paused"
    assert "paused" in virsh("domstate", guest)
    with pytest.raises(Conflict, match="already paused"):
        corral.guests.pause(guest)
    assert corral.guests.resume(guest).state == "running"

    # A snapshot of the running guest (memory included) and a revert that really goes back.
    corral.guests.snapshot_create(guest, "clean")
    assert [s.name for s in corral.guests.snapshot_list(guest)] == ["clean"]
    console_run(corral, guest, "touch /tmp/after-snapshot && echo made-$((1+1))", "made-2")
    corral.guests.snapshot_revert(guest, "clean")
    out = console_run(corral, guest, "test -e /tmp/after-snapshot && echo STILL-$((5+5)) || echo GONE-$((2+2))",
                      "GONE-4")
    assert "STILL-10" not in out
    with pytest.raises(Conflict, match="already has a snapshot"):
        corral.guests.snapshot_create(guest, "clean")
    corral.guests.snapshot_delete(guest, "clean")
    assert corral.guests.snapshot_list(guest) == []

    # Reboot: the guest comes up a second time in the same QEMU.
    log = Path(info.console_log or "")
    boots = log.read_bytes().count(b"CORRAL-READY")
    corral.guests.reboot(guest)
    deadline = time.monotonic() + 60
    while log.read_bytes().count(b"CORRAL-READY") <= boots:
        assert time.monotonic() < deadline, "guest did not come back after reboot"
        time.sleep(0.2)

    # Clean shutdown through the ACPI power button.
    assert corral.guests.shutdown(guest, timeout_s=60).state == "shut-off"
    with pytest.raises(Conflict, match="shut-off"):
        corral.guests.shutdown(guest)

    # Start again, then power off at once.
    corral.guests.start(guest, wait=True)
    assert corral.guests.poweroff(guest).state == "shut-off"

    guest_dir = corral.settings.guests_dir / guest
    assert guest_dir.is_dir()
    corral.guests.delete(guest)
    assert not guest_dir.exists()
    assert guest not in virsh("list", "--all", "--name")


def test_clone_boots_as_its_own_guest(corral: Corral) -> None:
    source, copy = name("src"), name("copy")
    corral.guests.create(GuestSpec(source, "tiny", memory_mib=128))
    with pytest.raises(InvalidInput):
        corral.guests.clone(source, "bad name")
    cloned = corral.guests.clone(source, copy)
    assert cloned.state == "shut-off" and cloned.managed_by_corral
    src_disks = {d["path"] for d in corral.guests.info(source).disks}
    copy_disks = {d["path"] for d in cloned.disks}
    assert src_disks.isdisjoint(copy_disks)
    corral.guests.start(copy, wait=True)
    log = Path(corral.guests.info(copy).console_log or "").read_text(errors="replace")
    assert f"CORRAL-READY name={copy}" in log
    with pytest.raises(Conflict, match="shut it down first"):
        corral.guests.clone(copy, name("again"))
    corral.guests.delete(copy)
    corral.guests.delete(source)
    assert not (corral.settings.guests_dir / copy).exists()


def test_admission_guard_refuses_before_making_anything(corral: Corral, override: Callable[..., None]) -> None:
    guest = name("huge")
    with pytest.raises(AdmissionRefused, match=r"memory.*over"):
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=1024 * 1024))
    assert not corral.libvirt.exists(guest)
    assert not (corral.settings.guests_dir / guest).exists()

    # Beside a running guest, a second one that would push the expected CPU past the cap.
    override(limits={"cap": 0.2})  # 2 cores x 0.2 = 0.4 cores of expected demand
    first, second = name("a"), name("b")
    corral.guests.create(GuestSpec(first, "tiny", memory_mib=128, load=LoadSpec(cpu_pct=30)), start=True)
    corral.guests.create(GuestSpec(second, "tiny", memory_mib=128, load=LoadSpec(cpu_pct=30)))
    with pytest.raises(AdmissionRefused, match=r"expected CPU demand .* over"):
        corral.guests.start(second)
    assert corral.libvirt.state(second) == "shut-off"

    # The CLI, with the same limit in its config file, says it in one line and exits non-zero.
    config = Path(os.environ["CORRAL_CONFIG"])
    config.write_text("[capacity]\ncap = 0.2\n")
    try:
        result = cli("start", second)
    finally:
        config.unlink()
    assert result.returncode == 1
    assert "does not fit" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_input_leaves_nothing_behind(corral: Corral, tmp_path: Path, override: Callable[..., None]) -> None:
    guest = name("bad")
    with pytest.raises(NotFound, match="no image named 'nope'"):
        corral.guests.create(GuestSpec(guest, "nope"))
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    with pytest.raises(Conflict, match="already exists"):
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    assert corral.libvirt.exists(guest)  # the first one is untouched

    # A guest that fails to start is removed with everything that was made for it.
    broken = name("broken")
    image = corral.images.get("tiny")
    bad_record = ImageRecord(**{**image.as_dict(), "name": "ct-broken-kernel",
                                "kernel": str(tmp_path / "no-such-vmlinux")})
    corral.images._save(bad_record)
    try:
        with pytest.raises(BackendError):
            corral.guests.create(GuestSpec(broken, "ct-broken-kernel", memory_mib=128), start=True)
    finally:
        corral.images.remove("ct-broken-kernel", [])
    assert not corral.libvirt.exists(broken)
    assert not (corral.settings.guests_dir / broken).exists()

    # A guest that does not come up in time: a clear timeout, and nothing half-made.
    slow = name("slow")
    override(boot_timeout_s=0.3)
    with pytest.raises(GuestTimeout, match=r"did not come up within 0\.3 s"):
        corral.guests.create(GuestSpec(slow, "tiny", memory_mib=128), start=True, wait=True)
    assert not corral.libvirt.exists(slow)
    assert not (corral.settings.guests_dir / slow).exists()

    # Through the CLI: one line on stderr, exit 2 for bad input, and nothing made.
    result = cli("create", "a'b<c>", "--image", "tiny")
    assert result.returncode == 2 and "invalid domain name" in result.stderr
    result = cli("create", name("iso"), "--image", "tiny", "--iso", "../../etc/passwd")
    assert result.returncode == 2 and "'..'" in result.stderr


def test_virsh_and_corral_see_the_same_domains(corral: Corral, tmp_path: Path) -> None:
    ours = name("ours")
    corral.guests.create(GuestSpec(ours, "tiny", memory_mib=128))
    theirs = name("virsh")
    xml = tmp_path / "d.xml"
    xml.write_text(f"<domain type='qemu'><name>{theirs}</name><memory unit='MiB'>64</memory>"
                   "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")
    virsh("define", str(xml))
    listed = json.loads(cli("list", "--json").stdout)
    assert listed[0]["name"] == "Domain-0" and listed[0]["id"] == 0
    names = [row["name"] for row in listed]
    assert ours in names and theirs in names
    assert ours in virsh("list", "--all", "--name")
    assert corral.guests.info(theirs).managed_by_corral is False
    corral.guests.delete(theirs)
    assert theirs not in virsh("list", "--all", "--name")


def test_libvirt_down_is_one_clear_line() -> None:
    env = {**os.environ, "CORRAL_LIBVIRT_URI": "qemu+unix:///system?socket=/nonexistent/sock"}
    result = subprocess.run([CORRAL_BIN, "list"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    assert "cannot connect to libvirt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
