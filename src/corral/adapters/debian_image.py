"""Build a genuine Debian 12 server image from Debian's package registry, offline from the internet
but for that registry.

`mmdebstrap` installs Debian into a folder (systemd, openssh-server, qemu-guest-agent, cloud-init,
ifupdown with a DHCP client, Debian's cloud kernel); `mke2fs -d` turns the folder into an ext4
file system without mounting anything (no loop devices, so it works in containers and CI); `qemu-img`
makes it a qcow2 disk. The guest boots that disk with its own kernel and initrd, taken from the
folder's /boot (a kernel + disk pair: direct kernel boot, no boot loader to install):

    root=LABEL=corral-root rw console=ttyS0,115200 console=tty0

cloud-init reads only the NoCloud data source (a `cidata` seed Corral attaches), so a guest without
a seed does not spend minutes probing clouds. SSH host keys and the machine id are removed, so each
guest makes its own at first boot.

This module is the image's edge: subprocesses, files and the cache; every failure is an
ImageBuildError. The build is reused while its recipe (this module's package list and files) is
unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.core.errors import BackendError

Progress = Callable[[str, float], None]

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "initramfs-tools", "openssh-server",
    "qemu-guest-agent", "cloud-init", "ifupdown", "isc-dhcp-client", "netbase", "iproute2", "sudo",
    "ca-certificates", "less",
)
ROOT_LABEL = "corral-root"
CMDLINE = f"root=LABEL={ROOT_LABEL} rw console=tty0 console=ttyS0,115200"
DISK_GIB = 3  # the image's virtual size; a guest's disk may be larger (cloud-init grows the file system)
FILES: dict[str, str] = {
    "etc/fstab": f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n",
    # NoCloud only: Corral's seed, or nothing (then cloud-init gives up at once instead of probing).
    "etc/cloud/cloud.cfg.d/90-corral.cfg": (
        "# written by Corral's image build\n"
        "datasource_list: [ NoCloud, None ]\n"
        "locale: false  # no locales package: keep C.UTF-8\n"
    ),
    "etc/hostname": "debian\n",
    "etc/network/interfaces": "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n",
}
REMOVE = ("etc/machine-id", "var/lib/dbus/machine-id")
BUILD_TIMEOUT_S = 1800.0


class ImageBuildError(BackendError):
    """The Debian image could not be built."""


@dataclass(frozen=True)
class DebianImage:
    disk: Path  # qcow2
    kernel: Path
    initrd: Path
    cmdline: str
    kernel_version: str
    virtual_size: int


def recipe_fingerprint() -> str:
    recipe = {"suite": SUITE, "mirror": MIRROR, "packages": PACKAGES, "files": FILES, "remove": REMOVE,
              "cmdline": CMDLINE, "size": DISK_GIB, "version": 1}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def build_debian_image(dest: Path, progress: Progress | None = None, *, force: bool = False) -> DebianImage:
    """The Debian image in `dest` (a folder of its own), built unless one of the same recipe is there."""
    report = progress or (lambda _msg, _fraction: None)
    fingerprint = recipe_fingerprint()
    if not force:
        existing = _load(dest, fingerprint)
        if existing is not None:
            report("the Debian image is built (cached)", 1.0)
            return existing
    if os.geteuid() != 0:
        # mmdebstrap's unshare mode would leave the files owned by subordinate ids, which mke2fs copies
        raise ImageBuildError("building the Debian image needs root (mmdebstrap installs as root into a folder)")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("mke2fs", "e2fsprogs"), ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"building the Debian image needs {tool} (Debian package {package}; "
                                  "scripts/setup installs it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        image = _build(work, report)
        staged = work / "image"
        built = DebianImage(dest / image.disk.name, dest / image.kernel.name, dest / image.initrd.name,
                            image.cmdline, image.kernel_version, image.virtual_size)
        (staged / "recipe.json").write_text(json.dumps({
            "fingerprint": fingerprint, "disk": image.disk.name, "kernel": image.kernel.name,
            "initrd": image.initrd.name, "kernel_version": image.kernel_version,
            "virtual_size": image.virtual_size}))
        # The folder appears whole: a guest never sees half an image. It is new (the caller names a new
        # folder for a forced rebuild), so no guest's base image is ever replaced under it.
        try:
            staged.rename(dest)  # fails when another build got there first, or a folder of that name exists
        except OSError as exc:
            raise ImageBuildError(f"cannot put the image in {dest}: {exc.strerror} (another build, or a folder "
                                  "that holds no build of this recipe: move it away)") from None
        report("the Debian image is built", 1.0)
        return built
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load(dest: Path, fingerprint: str) -> DebianImage | None:
    try:
        recipe = json.loads((dest / "recipe.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recipe, dict) or recipe.get("fingerprint") != fingerprint:
        return None
    parts = [dest / str(recipe.get(key, "")) for key in ("disk", "kernel", "initrd")]
    if not all(p.is_file() and p.parent == dest for p in parts):
        return None
    return DebianImage(parts[0], parts[1], parts[2], CMDLINE, str(recipe.get("kernel_version", "")),
                       int(recipe.get("virtual_size", 0)))


def _build(work: Path, report: Progress) -> DebianImage:
    root = work / "root"
    staged = work / "image"
    staged.mkdir()
    report(f"installing Debian {SUITE} from {MIRROR} (mmdebstrap)", 0.02)
    _mmdebstrap(root, report)
    report("configuring the image (cloud-init NoCloud, fstab, no host keys)", 0.75)
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for relative in REMOVE:
        path = root / relative
        if path.is_file() or path.is_symlink():
            path.unlink()
    (root / "etc/machine-id").write_text("")  # empty: systemd makes one at first boot
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each guest makes its own at first boot (cloud-init)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError("the installed system has no kernel in /boot")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise ImageBuildError(f"the installed system has no initrd for kernel {version}")
    shutil.copy2(kernels[-1], staged / "vmlinuz")
    shutil.copy2(initrd, staged / "initrd.img")
    report("making the ext4 file system (mke2fs -d)", 0.8)
    raw = work / "disk.raw"
    _run(["mke2fs", "-q", "-t", "ext4", "-L", ROOT_LABEL, "-d", str(root), str(raw), f"{DISK_GIB}G"],
         "make the file system", 600)
    report("converting to qcow2", 0.9)
    disk = staged / "disk.qcow2"
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], "convert the disk", 600)
    raw.unlink()
    for part in (disk, staged / "vmlinuz", staged / "initrd.img"):
        part.chmod(0o644)  # read by QEMU's user; never written (guests get overlays)
    return DebianImage(disk, staged / "vmlinuz", staged / "initrd.img", CMDLINE, version, DISK_GIB * 1024**3)


def _mmdebstrap(root: Path, report: Progress) -> None:
    cmd = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
           f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR]
    steps = {"downloading packages": 0.1, "extracting archives": 0.3, "installing essential packages": 0.4,
             "installing remaining packages": 0.5, "cleaning package lists": 0.7}
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except OSError as exc:
        raise ImageBuildError(f"cannot run mmdebstrap: {exc.strerror}") from None
    tail: list[str] = []
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            line = line.rstrip()
            tail = [*tail[-19:], line]
            for step, fraction in steps.items():
                if step in line:
                    report(f"mmdebstrap: {step}", fraction)
        proc.wait(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise ImageBuildError(f"mmdebstrap did not finish within {BUILD_TIMEOUT_S:.0f} s") from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
    if proc.returncode != 0:
        detail = "\n".join(tail[-8:])
        raise ImageBuildError(f"mmdebstrap failed (exit {proc.returncode}); is {MIRROR} reachable?\n{detail}")


def _run(cmd: list[str], what: str, timeout: float) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        raise ImageBuildError(f"cannot {what}: {(exc.stderr or exc.stdout or '').strip()[-500:]}") from None
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"cannot {what}: it took longer than {timeout:.0f} s") from None
    except OSError as exc:
        raise ImageBuildError(f"cannot {what}: {exc.strerror}") from None
