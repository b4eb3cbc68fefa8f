"""Hardening of the guest life cycle against hostile files and faults (issue 9), on the real libvirt
daemon and real QEMU guests: a guest never changes a file it was given, imports come only from allowed
folders, `--wait` never destroys a slow guest, deletion stays in the guest's folder, consoles are not
stolen, waits are bounded, and states are told truly."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from corral.adapters.locks import HostLock
from corral.config import Settings
from corral.core.errors import BackendError, Busy, Conflict, GuestTimeout, InvalidInput, NotFound
from corral.core.spec import GuestSpec, LoadSpec
from corral.services import guests as guests_module
from corral.services.context import Corral, open_corral
from corral.services.images import ImageRecord
from tests.conftest import require
from tests.test_guests import CORRAL_BIN, cli, name, virsh

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]


def owner(path: Path) -> tuple[str, str, str]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.filemode(st.st_mode)


def hostile_owned(path: Path) -> tuple[str, str, str]:
    """Give `path` to nobody:shadow, mode 640 (what libvirt's DAC driver used to change to root:root)."""
    os.chown(path, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("shadow").gr_gid)
    path.chmod(0o640)
    return owner(path)


@pytest.fixture
def images_here(override: Callable[..., None], tmp_path: Path) -> Path:
    """tmp_path as an allowed image folder for this test."""
    folder = tmp_path / "images"
    folder.mkdir()
    folder.chmod(0o755)
    tmp_path.chmod(0o755)
    override(image_dirs=(folder,))
    return folder


def test_a_guest_never_changes_a_file_it_was_given(corral: Corral, images_here: Path) -> None:
    base = images_here / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), "64M"], check=True)
    iso = images_here / "install.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 4090)
    # A kernel-booted image whose kernel and initrd are owned by somebody else too.
    tiny = corral.images.get("tiny")
    kernel_folder = corral.settings.images_dir / f"ct-kimg-{os.getpid()}"
    kernel_folder.mkdir(exist_ok=True)
    shutil.copy(tiny.kernel or "", kernel_folder / "vmlinux")
    shutil.copy(tiny.initrd or "", kernel_folder / "initrd.img")
    kernel_image = kernel_folder.name
    corral.images._save(ImageRecord(**{**tiny.as_dict(), "name": kernel_image, "kernel": "vmlinux",
                                       "initrd": "initrd.img"}))
    given = [base, iso, kernel_folder / "vmlinux", kernel_folder / "initrd.img"]
    before = {path: hostile_owned(path) for path in given}
    disk_image, iso_image = f"ct-base-{os.getpid()}", f"ct-iso-{os.getpid()}"
    try:
        corral.images.import_image(disk_image, base)
        corral.images.import_image(iso_image, iso)
        from_disk, from_kernel = name("given"), name("kgiven")
        corral.guests.create(GuestSpec(from_disk, disk_image, memory_mib=128, iso=iso), start=True)
        corral.guests.create(GuestSpec(from_kernel, kernel_image, memory_mib=128), start=True, wait=True)
        corral.guests.snapshot_create(from_kernel, "snap")
        assert {path: owner(path) for path in given} == before  # while they run, too
        corral.guests.poweroff(from_disk)
        corral.guests.start(from_disk)
        assert {path: owner(path) for path in given} == before
        # The guest's own overlay is Corral's, given to QEMU's user.
        overlay = Path(corral.guests.info(from_disk).disks[0]["path"])
        assert overlay.stat().st_uid == corral.libvirt.qemu_identity()[0]
        clone = name("clone")
        corral.guests.poweroff(from_disk)
        corral.guests.clone(from_disk, clone)
        corral.guests.start(clone)
        for guest in (from_disk, from_kernel, clone):
            corral.guests.delete(guest)
        assert {path: owner(path) for path in given} == before
    finally:
        for image in (disk_image, iso_image, kernel_image):
            if corral.images.exists(image):
                corral.images.remove(image, [])


def test_the_backing_chain_is_checked_again_at_create_and_start(corral: Corral, images_here: Path,
                                                                  tmp_path: Path) -> None:
    secret = tmp_path / "root-only-secret"
    secret.write_bytes(b"secret" * 1000)
    secret.chmod(0o600)
    base = images_here / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    image = f"ct-chain-{os.getpid()}"
    corral.images.import_image(image, base)
    try:
        guest = name("chain")
        corral.guests.create(GuestSpec(guest, image, memory_mib=128))
        # The image is rewritten after its import to read through to a root-only file.
        subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(base)],
                       check=True)
        with pytest.raises(InvalidInput, match="refers to another file"):
            corral.guests.start(guest)
        with pytest.raises(InvalidInput, match="refers to another file"):
            corral.guests.create(GuestSpec(name("chain2"), image, memory_mib=128))
        assert corral.libvirt.state(guest) == "shut-off"
        # The guest's own overlay rewritten to name another base: refused as well.
        subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "", str(base)], check=True)
        overlay = Path(corral.guests.info(guest).disks[0]["path"])
        subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(overlay)],
                       check=True)
        with pytest.raises(InvalidInput, match="refers to another file"):
            corral.guests.start(guest)
        corral.guests.delete(guest)
    finally:
        corral.images.remove(image, [])


def test_imports_only_from_allowed_folders(corral: Corral, images_here: Path, tmp_path: Path) -> None:
    link = images_here / "disk.img"
    link.symlink_to("/dev/null")
    outside = tmp_path / "elsewhere.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(outside), "1M"], check=True)
    escaping = images_here / "escape.raw"
    escaping.symlink_to(outside)
    cases = {"/etc/shadow": "outside the folders", "/proc/self/environ": "system file",
             str(link): "system file", str(outside): "outside the folders", str(escaping): "outside the folders",
             str(images_here): "not a regular file"}
    for path, why in cases.items():
        with pytest.raises(InvalidInput, match=why):
            corral.images.import_image("ct-hostile", path)
        with pytest.raises(InvalidInput, match=why):
            corral.guests.create(GuestSpec(name("iso"), "tiny", memory_mib=128, iso=Path(path)))
    assert not corral.images.exists("ct-hostile")
    # The CLI says it in one line, exit 2 (its config allows only the defaults).
    for path in ("/etc/shadow", "/proc/self/environ"):
        result = cli("image", "import", "ct-hostile", path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        result = cli("create", name("iso"), "--image", "tiny", "--iso", path)
        assert result.returncode == 2 and ("refused" in result.stderr or "outside" in result.stderr)


def test_wait_never_removes_a_whole_guest(corral: Corral, images_here: Path, tmp_path: Path,
                                          override: Callable[..., None]) -> None:
    # An installer ISO prints nothing Corral can read and has no agent: `--wait` waits for it to run.
    iso = images_here / "installer.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 4090)
    image = f"ct-installer-{os.getpid()}"
    corral.images.import_image(image, iso)
    try:
        installer = name("installer")
        override(boot_timeout_s=5)
        info = corral.guests.create(GuestSpec(installer, image, memory_mib=128), start=True, wait=True)
        assert info.state == "running"
        # A disk image with no agent in it: the wait times out, says so, and the guest is kept.
        disk = images_here / "blank.raw"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), "16M"], check=True)
        blank = f"ct-blank-{os.getpid()}"
        corral.images.import_image(blank, disk)
        try:
            agentless = name("agentless")
            override(boot_timeout_s=2)
            with pytest.raises(GuestTimeout, match=r"guest agent.*kept"):
                corral.guests.create(GuestSpec(agentless, blank, memory_mib=128), start=True, wait=True)
            assert corral.libvirt.state(agentless) == "running"
            corral.guests.delete(agentless)
        finally:
            corral.images.remove(blank, [])
        corral.guests.delete(installer)
    finally:
        corral.images.remove(image, [])
    # A guest virsh made: `start --wait` waits for it to run, and says it is up.
    theirs = name("virsh")
    tiny = corral.images.get("tiny")
    xml = tmp_path / "theirs.xml"
    xml.write_text(f"<domain type='qemu'><name>{theirs}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
                   f"<os><type arch='x86_64'>hvm</type><kernel>{tiny.kernel}</kernel><initrd>{tiny.initrd}</initrd>"
                   "<cmdline>console=ttyS0</cmdline></os><devices><serial type='pty'/></devices></domain>")
    virsh("define", str(xml))
    try:
        result = cli("start", theirs, "--wait")
        assert result.returncode == 0 and "running and up" in result.stdout, result.stderr
    finally:
        subprocess.run(["virsh", "destroy", theirs], capture_output=True, check=False)
        virsh("undefine", theirs)


def test_delete_stays_in_the_guests_own_folder(corral: Corral, tmp_path: Path) -> None:
    guest = name("canary")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    canary, log_canary = tmp_path / "canary.qcow2", tmp_path / "canary.log"
    canary.write_text("precious")
    log_canary.write_text("precious too")
    xml = corral.libvirt.xml(guest, inactive=True)
    meta_end = xml.index("</corral:guest>")
    forged = (xml[:meta_end] + f"<corral:owned-file>{canary}</corral:owned-file>" + xml[meta_end:])
    forged = forged.replace(str(corral.settings.guests_dir / guest / "console.log") + "</corral:console-log>",
                            f"{log_canary}</corral:console-log>")
    corral.libvirt.define(forged)
    with pytest.raises(InvalidInput, match="outside its folder"):
        corral.guests.clone(guest, name("clone"))
    kept = corral.guests.delete(guest)
    assert canary.read_text() == "precious" and log_canary.read_text() == "precious too"
    assert str(canary) in kept
    assert not (corral.settings.guests_dir / guest).exists()


def test_an_unfinished_create_is_cleared_by_delete(corral: Corral) -> None:
    guest = name("orphan")
    folder = corral.settings.guests_dir / guest
    folder.mkdir(parents=True)
    disks = corral.settings.disks_dir
    disks.mkdir(parents=True, exist_ok=True)
    # What a create that died while making its disk leaves: its folder with the marker and the note of
    # the disk it was making, and the half-made disk in the pool's folder. Another guest's disk whose
    # name it shares a prefix with is not its own, even when the note names it.
    (disks / f"guest-{guest}-disk0.qcow2").write_bytes(b"half made")
    (disks / f"guest-{guest}-2-disk0.qcow2").write_bytes(b"another guest's")
    (folder / ".disks").write_text(json.dumps({"host": "local", "volumes": [
        f"guest-{guest}-disk0.qcow2", f"guest-{guest}-2-disk0.qcow2"]}))
    (folder / ".creating").write_text(json.dumps({"pid": 1, "name": guest}))
    with pytest.raises(Conflict, match=rf"did not finish.*corral delete {guest}"):
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    result = cli("delete", guest)
    assert result.returncode == 0, result.stderr
    assert not folder.exists() and not (disks / f"guest-{guest}-disk0.qcow2").exists()
    assert (disks / f"guest-{guest}-2-disk0.qcow2").read_bytes() == b"another guest's"
    (disks / f"guest-{guest}-2-disk0.qcow2").unlink()
    with pytest.raises(NotFound):
        corral.guests.delete(guest)
    # A disk kept by `delete --keep-disks` is never taken over by a new guest of that name.
    (disks / f"guest-{guest}-disk0.qcow2").write_bytes(b"kept on purpose")
    with pytest.raises(Conflict, match="--keep-disks"):
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    assert (disks / f"guest-{guest}-disk0.qcow2").read_bytes() == b"kept on purpose"
    assert not folder.exists()
    (disks / f"guest-{guest}-disk0.qcow2").unlink()
    # A folder of kept disks is not an unfinished create: it is not removed, and create says why.
    folder.mkdir()
    (folder / "disk0.qcow2").write_bytes(b"kept on purpose")
    with pytest.raises(Conflict, match="--keep-disks"):
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    with pytest.raises(NotFound):
        corral.guests.delete(guest)
    assert (folder / "disk0.qcow2").exists()
    shutil.rmtree(folder)


def test_the_admission_lock_is_waited_for_a_bounded_time(corral: Corral, monkeypatch: pytest.MonkeyPatch) -> None:
    guest = name("locked")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    monkeypatch.setattr(guests_module, "ADMISSION_WAIT_S", 1.0)
    holder = HostLock(corral.settings.data_dir / "locks" / "admission-local.lock")  # another process holds it
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.held():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        held.wait(5)
        began = time.monotonic()
        with pytest.raises(Busy, match="admission lock"):
            corral.guests.start(guest)
        assert time.monotonic() - began < 5
        assert Busy.status == 503
        # A request whose client gave up while it waited starts nothing.
    finally:
        release.set()
        thread.join()
    with pytest.raises(Conflict, match="abandoned"):
        corral.guests.start(guest, still_wanted=lambda: False)
    assert corral.libvirt.state(guest) == "shut-off"


def test_a_second_console_is_refused_unless_forced(corral: Corral) -> None:
    guest = name("console")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128), start=True, wait=True)
    env = os.environ.copy()
    first = subprocess.Popen([CORRAL_BIN, "console", guest], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert first.stderr is not None
        connected = first.stderr.readline()  # the first session holds the console from here on
        assert b"Connected to" in connected, connected
        second = cli("console", guest)
        assert second.returncode == 1 and "another session has the console" in second.stderr
        forced = subprocess.run([CORRAL_BIN, "console", "--force", guest],
                                input="echo forced-$((40+2))\n", capture_output=True, text=True, env=env,
                                timeout=30)
        assert forced.returncode == 0 and "forced-42" in forced.stdout
        _, err = first.communicate(timeout=15)
        assert first.returncode == 1 and b"another session took it over" in err
    finally:
        if first.poll() is None:
            first.kill()


def test_guest_config_nonsense_is_refused(corral: Corral, tmp_path: Path) -> None:
    config = Path(os.environ["CORRAL_CONFIG"])
    for text, why in (('boot_timeout_s = "soon"\n', "boot_timeout_s"), ("boot_timeout_s = -5\n", "boot_timeout_s"),
                      ('image_dirs = ["relative"]\n', "image_dirs"), ('image_dirs = ["/proc"]\n', "image_dirs")):
        config.write_text(text)
        try:
            result = cli("list")
        finally:
            config.unlink()
        assert result.returncode == 2 and why in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = cli("create", name("tiny"), "--image", "tiny", "--disk", "1e-20")
    assert result.returncode == 2 and "disk=" in result.stderr
    damaged = corral.settings.images_dir / f"ct-damaged-{os.getpid()}"
    damaged.mkdir()
    try:
        (damaged / "image.json").write_text("{not json")
        result = cli("create", name("dmg"), "--image", damaged.name)
        assert result.returncode == 1 and "damaged" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert damaged.name not in cli("image", "list").stdout
    finally:
        shutil.rmtree(damaged)


@pytest.fixture
def small_data_dir(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs as a data folder (images linked from the shared cache): a disk that fills up."""
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "images").symlink_to(os.path.realpath(settings.images_dir))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave_bytes: int) -> Path:
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with filler.open("wb") as handle:
        handle.truncate(0)
        remaining = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            try:
                remaining -= handle.write(chunk[:remaining])
            except OSError:
                break
    return filler


def test_a_guest_paused_by_an_io_error_says_so(settings: Settings, small_data_dir: Path) -> None:
    corral = open_corral(replace(settings, data_dir=small_data_dir))
    guest = name("ioerr")
    try:
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128, load=LoadSpec(disk_kbps=4096)),
                             start=True, wait=True)
        filler = fill(small_data_dir, 64 * 1024)
        deadline = time.monotonic() + 60
        while corral.libvirt.pause_reason(guest) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        info = corral.guests.info(guest)
        assert (info.state, info.reason) == ("paused", "I/O error")
        listed = {row.name: row for row in corral.guests.listing()}
        assert listed[guest].shown_state == "paused (I/O error)"
        with pytest.raises(BackendError, match="paused again"):
            corral.guests.resume(guest)
        filler.unlink()
        assert corral.guests.resume(guest).state == "running"
    finally:
        if corral.libvirt.exists(guest):
            corral.guests.delete(guest)
        corral.close()


def test_the_sampler_survives_a_full_disk(settings: Settings, small_data_dir: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    corral = open_corral(replace(settings, data_dir=small_data_dir))
    stop = threading.Event()
    written: list[int] = []
    thread = threading.Thread(target=corral.monitoring.run, kwargs={
        "stop": stop, "interval_s": 0.3, "on_samples": lambda s: written.append(len(s))})
    caplog.set_level("WARNING", logger="corral.sampler")
    thread.start()
    try:
        time.sleep(1.5)
        filler = fill(small_data_dir, 0)
        # Enough rows to need new pages; the sampler must keep going, saying so once.
        deadline = time.monotonic() + 30
        while "cannot write the history" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "cannot write the history" in caplog.text
        assert thread.is_alive()
        before = len(written)
        filler.unlink()
        deadline = time.monotonic() + 30
        while "written again" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "the history is written again" in caplog.text
        assert len(written) > before and thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
        corral.close()


def test_one_sampler_per_store(settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {**os.environ, "CORRAL_DATA_DIR": str(tmp_path)}
    binary = CORRAL_BIN
    caplog.set_level("WARNING", logger="corral.sampler")
    first = subprocess.Popen([binary, "monitor", "--interval", "0.5"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        lock = tmp_path / "metrics.sqlite.sampler.lock"
        deadline = time.monotonic() + 20
        while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run([binary, "monitor", "--interval", "0.5"], env=env, capture_output=True, text=True,
                                timeout=30)
        assert second.returncode == 1 and "another sampler" in second.stderr and str(first.pid) in second.stderr
        # A server's sampler defers: it samples for its live view but writes nothing.
        corral = open_corral(replace(settings, data_dir=tmp_path))
        stop = threading.Event()
        seen: list[int] = []
        thread = threading.Thread(target=corral.monitoring.run,
                                  kwargs={"stop": stop, "interval_s": 0.3, "on_samples": lambda s: seen.append(1)})
        thread.start()
        time.sleep(1.5)
        stop.set()
        thread.join(10)
        corral.close()
        assert seen, "the deferring sampler still samples for its own live figures"
        assert "another sampler" in caplog.text and "live figures only" in caplog.text
    finally:
        first.terminate()
        first.wait(15)


class CuttingProxy:
    """A Unix-socket proxy in front of libvirtd that cuts its first connection after `cut_after` RPC
    messages from the client (libvirt's messages start with their 4-byte big-endian length). Later
    connections pass untouched, as a restarted daemon would answer."""

    def __init__(self, path: Path, cut_after: int | None, target: str = "/run/libvirt/libvirt-sock") -> None:
        import socket

        self.path, self.cut_after, self.target = path, cut_after, target
        self.messages = 0
        self.cut = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.first = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            counting, self.first = self.first, False
            threading.Thread(target=self._pump, args=(client, upstream, counting), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: object, dest: object, counting: bool) -> None:
        import socket

        assert isinstance(source, socket.socket) and isinstance(dest, socket.socket)
        pending = b""
        try:
            while data := source.recv(65536):
                if counting:
                    pending += data
                    while len(pending) >= 4 and len(pending) >= int.from_bytes(pending[:4], "big"):
                        size = int.from_bytes(pending[:4], "big")
                        if self.cut_after is not None and self.messages >= self.cut_after:
                            self.cut.set()
                            raise OSError("cut")
                        dest.sendall(pending[:size])
                        pending = pending[size:]
                        self.messages += 1
                    continue
                dest.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.server.close()


def test_a_create_cut_off_from_libvirt_leaves_a_whole_guest_or_nothing(corral: Corral, settings: Settings,
                                                                        tmp_path: Path) -> None:
    def attempt(cut_after: int | None, label: str) -> tuple[str, int, BaseException | None]:
        socket_path = tmp_path / f"proxy-{label}.sock"
        proxy = CuttingProxy(socket_path, cut_after)
        through = open_corral(replace(corral.settings, libvirt_uri=f"qemu+unix:///system?socket={socket_path}"))
        guest = name(f"cut{label}")
        error: BaseException | None = None
        try:
            through.guests.create(GuestSpec(guest, "tiny", memory_mib=128), start=True)
        except Exception as exc:  # what a user sees: one Corral error
            error = exc
        finally:
            through.close()
            proxy.close()
        return guest, proxy.messages, error

    guest, total, error = attempt(None, "count")
    assert error is None and corral.libvirt.state(guest) == "running"
    corral.guests.delete(guest)
    outcomes = []
    for cut_after in sorted({max(1, total * i // 8) for i in range(1, 8)}):
        guest, _, error = attempt(cut_after, str(cut_after))
        folder = corral.settings.guests_dir / guest
        if corral.libvirt.exists(guest):  # whole: defined, its disk there, no create marker left
            assert (corral.settings.disks_dir / f"guest-{guest}-disk0.qcow2").exists(), (cut_after, error)
            assert not (folder / ".creating").exists(), (cut_after, error)
            outcomes.append("whole")
            corral.guests.delete(guest)
        else:  # nothing: no folder either (or a marker that `corral delete` clears, saying so)
            if folder.exists():
                assert error is not None and "corral delete" in str(error)
                corral.guests.delete(guest)
            assert not folder.exists(), (cut_after, error)
            assert not (corral.settings.disks_dir / f"guest-{guest}-disk0.qcow2").exists(), (cut_after, error)
            outcomes.append("nothing")
        if error is not None:
            assert isinstance(error, BackendError | NotFound | Conflict), repr(error)
    assert "nothing" in outcomes
