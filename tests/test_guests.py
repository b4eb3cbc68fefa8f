"""Guest life cycle against the real libvirt daemon and real QEMU guests (TCG here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="module")
def life(corral_session: Corral) -> Iterator[tuple[Corral, str]]:
    """One running tiny guest for the life-cycle tests below, each of which leaves it running (the
    last one deletes it): one failure does not hide the others' results."""
    guest = name("life")
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=160), start=True, wait=True)
    yield corral_session, guest
    if corral_session.libvirt.exists(guest):
        corral_session.guests.delete(guest)


def _running(corral: Corral, guest: str) -> None:
    """Put the shared guest back to running, whatever an earlier test left."""
    state = corral.libvirt.state(guest)
    if state == "paused":
        corral.guests.resume(guest)
    elif state != "running":
        corral.guests.start(guest, wait=True)


def test_a_created_guest_is_an_ordinary_running_domain(life: tuple[Corral, str]) -> None:
    corral, guest = life
    info = corral.guests.info(guest)
    assert info.state == "running" and info.id is not None
    assert info.managed_by_corral and info.image == "tiny"
    assert guest in virsh("list", "--name")  # an ordinary libvirt domain


def test_the_serial_console_is_a_real_shell(life: tuple[Corral, str]) -> None:
    corral, guest = life
    _running(corral, guest)
    assert "hello-42" in console_run(corral, guest, "echo hello-$((6*7))", "hello-42")


def test_pause_and_resume(life: tuple[Corral, str]) -> None:
    corral, guest = life
    _running(corral, guest)
    assert corral.guests.pause(guest).state == "paused"
    assert "paused" in virsh("domstate", guest)
    with pytest.raises(Conflict, match="already paused"):
        corral.guests.pause(guest)
    assert corral.guests.resume(guest).state == "running"


def test_a_snapshot_of_a_running_guest_really_goes_back(life: tuple[Corral, str]) -> None:
    corral, guest = life
    _running(corral, guest)
    corral.guests.snapshot_create(guest, "clean")
    try:
        assert [s.name for s in corral.guests.snapshot_list(guest)] == ["clean"]
        console_run(corral, guest, "touch /tmp/after-snapshot && echo made-$((1+1))", "made-2")
        corral.guests.snapshot_revert(guest, "clean")
        out = console_run(corral, guest, "test -e /tmp/after-snapshot && echo STILL-$((5+5)) || echo GONE-$((2+2))",
                          "GONE-4")
        assert "STILL-10" not in out
        with pytest.raises(Conflict, match="already has a snapshot"):
            corral.guests.snapshot_create(guest, "clean")
    finally:
        corral.guests.snapshot_delete(guest, "clean")
    assert corral.guests.snapshot_list(guest) == []


def test_reboot_comes_up_again_in_the_same_qemu(life: tuple[Corral, str]) -> None:
    corral, guest = life
    _running(corral, guest)
    log = Path(corral.guests.info(guest).console_log or "")
    boots = log.read_bytes().count(b"CORRAL-READY")
    corral.guests.reboot(guest)
    deadline = time.monotonic() + 60
    while log.read_bytes().count(b"CORRAL-READY") <= boots:
        assert time.monotonic() < deadline, "guest did not come back after reboot"
        time.sleep(0.2)


def test_shutdown_start_poweroff_and_delete(life: tuple[Corral, str]) -> None:
    corral, guest = life
    _running(corral, guest)
    corral.guests.wait_ready(guest, 60)  # after a reboot: up again, able to see the power button
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

    # A guest that fails to start is removed with everything that was made for it, and the error says
    # where its console log was kept.
    broken = name("broken")
    image = corral.images.get("tiny")
    folder = corral.settings.images_dir / "ct-broken-kernel"
    folder.mkdir(exist_ok=True)
    (folder / "vmlinux").write_bytes(b"not a kernel" * 100)
    (folder / "initrd.img").write_bytes(Path(image.initrd or "").read_bytes())
    bad_record = ImageRecord(**{**image.as_dict(), "name": "ct-broken-kernel", "kernel": "vmlinux",
                                "initrd": "initrd.img"})
    corral.images._save(bad_record)
    try:
        with pytest.raises(BackendError):
            corral.guests.create(GuestSpec(broken, "ct-broken-kernel", memory_mib=128), start=True)
    finally:
        corral.images.remove("ct-broken-kernel", [])
    assert not corral.libvirt.exists(broken)
    assert not (corral.settings.guests_dir / broken).exists()

    # A guest that is slow to signal readiness is whole: `--wait` says so and keeps it, running.
    slow = name("slow")
    override(boot_timeout_s=0.3)
    with pytest.raises(GuestTimeout, match=r"gave no readiness signal .* within 0\.3 s.*kept"):
        corral.guests.create(GuestSpec(slow, "tiny", memory_mib=128), start=True, wait=True)
    assert corral.libvirt.state(slow) == "running"
    assert (corral.settings.disks_dir / f"guest-{slow}-disk0.qcow2").exists()
    corral.guests.delete(slow)

    # Through the CLI: one line on stderr, exit 2 for bad input, and nothing made.
    result = cli("create", "a'b<c>", "--image", "tiny")
    assert result.returncode == 2 and "invalid domain name" in result.stderr
    result = cli("create", name("iso"), "--image", "tiny", "--iso", "../../etc/passwd")
    assert result.returncode == 2 and "'..'" in result.stderr
    missing = name("noiso")
    result = cli("create", missing, "--image", "tiny", "--iso", "/nonexistent/install.iso")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not corral.libvirt.exists(missing) and not (corral.settings.guests_dir / missing).exists()


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


def test_cli_console_info_and_forced_shutdown(corral: Corral) -> None:
    guest = name("cli")
    result = cli("create", guest, "--image", "tiny", "--memory", "128", "--load", "cpu=5", "--start", "--wait")
    assert result.returncode == 0, result.stderr
    # Piped input: the console sends it, prints what the guest answers, and leaves.
    console = subprocess.run([CORRAL_BIN, "console", guest], input="\necho cli-$((2*21))\n",
                             capture_output=True, text=True, timeout=60, check=False)
    assert console.returncode == 0 and "cli-42" in console.stdout, console.stdout + console.stderr
    details = json.loads(cli("info", guest, "--json").stdout)
    assert details["state"] == "running" and details["load"] == "cpu=5,disk=0,net=0"
    assert details["vnc"].startswith("127.0.0.1:")
    # A paused guest cannot see the power button.
    corral.guests.pause(guest)
    with pytest.raises(Conflict, match="resume it first, or use --force"):
        corral.guests.shutdown(guest)
    corral.guests.resume(guest)
    # A guest that ignores the power button: --force powers it off after the timeout.
    console_run(corral, guest, "killall acpid; echo killed-$((3+4))", "killed-7")
    with pytest.raises(GuestTimeout, match="use --force"):
        corral.guests.shutdown(guest, timeout_s=2)
    assert corral.libvirt.state(guest) == "running"
    result = cli("shutdown", guest, "--timeout", "1", "--force")
    assert result.returncode == 0 and "shut-off" in result.stdout
    result = cli("delete", guest)
    assert result.returncode == 0 and not corral.libvirt.exists(guest)


def test_imported_images_are_never_written(corral: Corral, tmp_path: Path, override: Callable[..., None]) -> None:
    import hashlib

    override(image_dirs=(tmp_path,))
    base = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), "64M"], check=True)
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    image = f"ct-img-{uuid.uuid4().hex[:6]}"
    iso_name = f"ct-iso-{uuid.uuid4().hex[:6]}"
    iso = tmp_path / "install.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 4090)  # an ISO 9660 volume descriptor
    try:
        assert corral.images.import_image(image, base).kind == "disk"
        assert corral.images.import_image(iso_name, iso).kind == "iso"
        with pytest.raises(Conflict):
            corral.images.import_image(image, base)
        with pytest.raises(InvalidInput, match="does not exist"):
            corral.images.import_image("ct-missing", tmp_path / "missing.qcow2")
        chained = tmp_path / "chained.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(chained)],
                       check=True)
        with pytest.raises(InvalidInput, match="refers to another file"):
            corral.images.import_image("ct-chained", chained)
        guest = name("disk")
        info = corral.guests.create(GuestSpec(guest, image, memory_mib=128, disk_gib=1, iso=iso), start=True)
        overlay = Path(info.disks[0]["path"])
        backing = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                                            capture_output=True, text=True, check=True).stdout)
        assert backing["backing-filename"] == str(base) and backing["virtual-size"] == 1024**3
        assert [d["device"] for d in info.disks] == ["disk", "cdrom"]
        with pytest.raises(InvalidInput, match="--load needs the built-in image"):
            corral.guests.create(GuestSpec(name("x"), image, load=LoadSpec(cpu_pct=10)))
        time.sleep(1)
        corral.guests.delete(guest)
        assert not overlay.exists()
        assert hashlib.sha256(base.read_bytes()).hexdigest() == digest
        assert iso.exists() and base.exists()
        listed = json.loads(cli("image", "list", "--json").stdout)
        assert {image, iso_name} <= {r["name"] for r in listed}
    finally:
        for record in (image, iso_name):
            if corral.images.exists(record):
                corral.images.remove(record, [])
    assert base.exists()  # removing the record never removes the user's file


def test_host_reports_engine_and_capacity(corral: Corral) -> None:
    from corral.adapters.accel import probe_kvm

    works, why = probe_kvm()
    report = json.loads(cli("host", "--json").stdout)
    assert report["engine"] == ("kvm" if works else "tcg")
    assert report["engine_reason"]
    if Path("/sys/module/kvm_pvm").exists():  # this project's build machines: PVM, so TCG
        assert not works and "kvm_pvm" in why
    assert report["capacity"]["vcpus"]["limit"] == report["cores"] * report["limits"]["vcpu_overcommit"]
    assert report["limits"]["cap"] == 0.85
