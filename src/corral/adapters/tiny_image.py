"""Build Corral's tiny Linux guest image without internet access.

The image is a Debian kernel (downloaded with ``apt-get download`` and unpacked
with ``dpkg-deb -x`` into a cache, never installed on the host) plus a small
initramfs: static busybox, the virtio/ACPI modules, an ``/init`` script and the
``corral-load`` workload generator (compiled here with ``gcc -static``).

This module is the image's edge: apt, dpkg-deb, gcc, busybox, the zstd command,
files, locks and the cache.  The byte-level parts (vmlinux extraction, ``.modinfo``,
the cpio writer) and the guest's contract (kernel command line, readiness line)
are pure, in :mod:`corral.core.bootimage`, and re-exported here.  Every failure
is an :class:`ImageBuildError`.

Kernel command-line contract (see :func:`corral.core.bootimage.load_cmdline`)::

    <base_cmdline> corral.name=NAME corral.cpu=PCT corral.disk=KBPS corral.net=KBPS
                   corral.trace=HEX corral.step_ms=MS

When the guest is up it prints one line on the serial console (ttyS0)::

    CORRAL-READY name=<hostname> ip=<IPv4 of eth0 or none>

An ACPI power-button press (libvirt ``shutdown()``, QMP ``system_powerdown``)
makes the guest sync and power off at once.

What the guest expects from the virtual machine (machine ``pc``, TCG or KVM):
direct kernel boot (``-kernel``/``<kernel>``, ``-initrd``, ``-append``), ACPI
on (libvirt ``<features><acpi/></features>``), a 16550 serial port as ttyS0
(the console and a login-free root shell), optionally a virtio disk
(/dev/vda, used only by the disk load), a virtio NIC (eth0, DHCP), a virtio
balloon and virtio-serial.  ``corral.disk`` reads and writes back the same
blocks in the first 32 MiB of /dev/vda, so the disk content is unchanged.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from corral.adapters.files import locked
from corral.core import bootimage
from corral.core.bootimage import (
    BASE_CMDLINE,
    MAX_LOAD_RATE,
    READY_PREFIX,
    READY_RE,
    Cpio,
    Decompressor,
    decompress_module,
    extract_vmlinux,
    is_static_elf,
    load_cmdline,
    module_depends,
    module_name,
    parse_ready_line,
)
from corral.core.errors import BackendError, InvalidInput
from corral.core.spec import TRACE_STEP_MS

__all__ = [
    "BASE_CMDLINE",
    "MAX_LOAD_RATE",
    "READY_PREFIX",
    "READY_RE",
    "ImageBuildError",
    "TinyImage",
    "build_tiny_image",
    "extract_vmlinux",
    "load_cmdline",
    "parse_ready_line",
]

Progress = Callable[[str, float], None]

#: Bump when the image layout or the build recipe changes: forces a rebuild.
FORMAT_VERSION = 1

KERNEL_PACKAGE_RE = re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64$")

#: Modules wanted in the initramfs; their dependencies are added automatically.
WANTED_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_balloon",
    "virtio_console",
    "virtio_rng",
    "button",
    "evdev",
)

MANIFEST = "manifest.json"
INITRD = "initrd.img"


class ImageBuildError(BackendError):
    """The tiny image could not be built; the message says why, on one line."""


@dataclass(frozen=True)
class TinyImage:
    kernel: Path
    initrd: Path
    kernel_version: str
    base_cmdline: str

    def load_cmdline(self, name: str, cpu_pct: int = 0, disk_kbps: int = 0, net_kbps: int = 0,
                     trace: Sequence[int] = (), step_ms: int = TRACE_STEP_MS) -> str:
        return load_cmdline(self.base_cmdline, name, cpu_pct, disk_kbps, net_kbps, trace, step_ms)


# --------------------------------------------------------------------------- helpers


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{what}: {cmd[0]} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith(("E:", "error", "dpkg-deb: error"))] or lines
        detail = errs[0] if errs else f"exit status {proc.returncode}"
        raise ImageBuildError(f"{what}: {detail}")
    return proc.stdout


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _data_files() -> dict[str, bytes]:
    root = resources.files("corral") / "data" / "tiny"
    names = ("init", "udhcpc.script", "power-button", "profile", "corral-load.c")
    try:
        return {n: (root / n).read_bytes() for n in names}
    except OSError as exc:
        raise ImageBuildError(f"package data missing: {exc}") from exc


# --------------------------------------------------------------------------- kernel package


def _newest_kernel_package() -> str | None:
    try:
        out = subprocess.run(
            ["apt-cache", "pkgnames", "linux-image-6.1.0-"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    best: tuple[int, str] | None = None
    for line in out.split():
        m = KERNEL_PACKAGE_RE.match(line.strip())
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), line.strip())
    return best[1] if best else None


def _cached_trees(cache: Path) -> list[Path]:
    trees = cache / "unpacked"
    if not trees.is_dir():
        return []
    found = [p for p in trees.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def abi(p: Path) -> int:
        m = re.match(r"linux-image-6\.1\.0-(\d+)-amd64_", p.name)
        return int(m.group(1)) if m else -1

    return sorted((p for p in found if abi(p) >= 0), key=abi)


def _fetch_kernel_tree(cache: Path, progress: Progress) -> Path:
    """Download (or reuse) the newest kernel package and return its unpacked tree."""
    progress("find kernel package", 0.02)
    pkg = _newest_kernel_package()
    if pkg is None:
        cached = _cached_trees(cache)
        if cached:
            return cached[-1]
        progress("apt-get update", 0.03)
        with contextlib.suppress(ImageBuildError):
            _run(["apt-get", "update"], "apt-get update", timeout=600)
        pkg = _newest_kernel_package()
        if pkg is None:
            raise ImageBuildError("no linux-image-6.1.0-*-amd64 package known to apt; run apt-get update")

    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    existing = sorted(debs.glob(f"{pkg}_*.deb"), key=lambda p: p.stat().st_mtime)
    if existing:
        deb = existing[-1]
    else:
        progress(f"download {pkg}", 0.05)
        with tempfile.TemporaryDirectory(dir=debs, prefix=".dl-") as tmp:
            _run(["apt-get", "download", pkg], f"apt-get download {pkg}", cwd=Path(tmp), timeout=900)
            got = list(Path(tmp).glob(f"{pkg}_*.deb"))
            if not got:
                raise ImageBuildError(f"apt-get download {pkg}: no .deb file appeared")
            deb = debs / got[0].name
            os.replace(got[0], deb)

    tree = cache / "unpacked" / deb.name.removesuffix(".deb")
    if not (tree / "boot").is_dir():
        progress("unpack kernel package", 0.25)
        tree.parent.mkdir(parents=True, exist_ok=True)
        tmp_tree = Path(tempfile.mkdtemp(dir=tree.parent, prefix=".unpack-"))
        try:
            _run(["dpkg-deb", "-x", str(deb), str(tmp_tree)], f"dpkg-deb -x {deb.name}")
            if tree.exists():
                shutil.rmtree(tree)
            os.replace(tmp_tree, tree)
        finally:
            if tmp_tree.exists():
                shutil.rmtree(tmp_tree, ignore_errors=True)
    return tree


def _kernel_version(tree: Path) -> str:
    mods = tree / "lib" / "modules"
    versions = sorted(p.name for p in mods.iterdir() if p.is_dir()) if mods.is_dir() else []
    if len(versions) != 1:
        raise ImageBuildError(f"unexpected kernel package layout in {tree}: modules for {versions}")
    return versions[0]


# --------------------------------------------------------------------------- modules


def _zstd(data: bytes) -> bytes:
    """Decompress a zstd stream with the ``zstd`` command (the standard library has no zstd)."""
    try:
        proc = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise InvalidInput(f"zstd could not run: {exc}") from exc
    if proc.returncode != 0:
        raise InvalidInput(f"zstd: {proc.stderr.decode(errors='replace').strip() or 'not a zstd stream'}")
    return proc.stdout


def _zstd_if_installed() -> Decompressor | None:
    return _zstd if shutil.which("zstd") is not None else None


def _read_module(path: Path) -> bytes:
    try:
        return decompress_module(path.name, path.read_bytes(), _zstd_if_installed())
    except InvalidInput as exc:
        raise ImageBuildError(exc.message) from exc


def _resolve_modules(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """Wanted modules plus their dependencies, in load (dependency) order."""
    index: dict[str, Path] = {}
    for p in (moddir / "kernel").rglob("*.ko*"):
        index.setdefault(module_name(p.name), p)
    builtin: set[str] = set()
    builtin_file = moddir / "modules.builtin"
    if builtin_file.is_file():
        builtin = {module_name(line.strip()) for line in builtin_file.read_text().splitlines()}

    order: list[tuple[str, bytes]] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in builtin:
            return
        if name in visiting:
            raise ImageBuildError(f"module dependency cycle at {name}")
        path = index.get(name)
        if path is None:
            raise ImageBuildError(f"kernel module {name} not found under {moddir}")
        visiting.add(name)
        data = _read_module(path)
        try:
            depends = module_depends(data)
        except InvalidInput as exc:
            raise ImageBuildError(f"cannot read .modinfo of {path.name}: {exc.message}") from exc
        for dep in depends:
            visit(dep)
        visiting.discard(name)
        done.add(name)
        order.append((name, data))

    for name in wanted:
        visit(name)
    return order


# --------------------------------------------------------------------------- busybox, corral-load


def _find_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if cand and Path(cand).is_file():
            path = Path(cand).resolve()
            with path.open("rb") as f:
                head = f.read(1 << 16)
            if is_static_elf(head):
                return path
    raise ImageBuildError("no statically linked busybox found; install busybox-static")


def _busybox_applets(busybox: Path) -> list[str]:
    out = _run([str(busybox), "--list-full"], "busybox --list-full", timeout=30)
    applets = [ln.strip().lstrip("/") for ln in out.splitlines() if ln.strip()]
    if "bin/sh" not in applets:
        raise ImageBuildError(f"{busybox} has no sh applet")
    return applets


def _compile_load(source: bytes, workdir: Path) -> bytes:
    src = workdir / "corral-load.c"
    out = workdir / "corral-load"
    src.write_bytes(source)
    _run(
        ["gcc", "-O2", "-static", "-pthread", "-s", "-o", str(out), str(src)],
        "gcc could not build corral-load (need gcc and libc6-dev)",
        timeout=300,
    )
    return out.read_bytes()


def _make_initramfs(data: dict[str, bytes], busybox: Path, modules: list[tuple[str, bytes]], load_bin: bytes) -> bytes:
    cpio = Cpio(mtime=int(time.time()))
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "run", "root", "etc", "lib/modules", "var/log"):
        cpio.dir(d)
    cpio.dir("dev")
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.dir("tmp", 0o1777)
    cpio.symlink("var/run", "/run")
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in _busybox_applets(busybox):
        if applet == "bin/busybox":
            continue
        cpio.symlink(applet, "/bin/busybox")
    cpio.file("init", data["init"], 0o755)
    cpio.file("usr/bin/corral-load", load_bin, 0o755)
    cpio.file("etc/udhcpc/default.script", data["udhcpc.script"], 0o755)
    cpio.file("etc/acpi/PWRF/00000080", data["power-button"], 0o755)
    cpio.file("etc/profile", data["profile"])
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\ntty:x:5:\n")
    cpio.file("etc/hostname", b"corral\n")
    cpio.file("etc/hosts", b"127.0.0.1 localhost\n")
    for name, ko in modules:
        cpio.file(f"lib/modules/{name}.ko", ko)
    cpio.file("lib/modules/load-order", "".join(f"{n}.ko\n" for n, _ in modules).encode())
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


# --------------------------------------------------------------------------- build


def _fingerprint(data: dict[str, bytes], busybox: Path) -> str:
    h = hashlib.sha256(f"format={FORMAT_VERSION};cmdline={BASE_CMDLINE};".encode())
    h.update(repr(WANTED_MODULES).encode())
    for recipe in (Path(__file__), Path(bootimage.__file__)):  # the recipe itself: any change rebuilds
        with contextlib.suppress(OSError):
            h.update(hashlib.sha256(recipe.read_bytes()).digest())
    for name in sorted(data):
        h.update(name.encode() + b"\0" + hashlib.sha256(data[name]).digest())
    h.update(_sha256(busybox).encode())
    return h.hexdigest()


def _load_existing(dest: Path, fingerprint: str) -> TinyImage | None:
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
        if manifest.get("format") != FORMAT_VERSION or manifest.get("inputs") != fingerprint:
            return None
        kernel = dest / manifest["kernel"]
        initrd = dest / manifest["initrd"]
        for f in (kernel, initrd):
            if _sha256(f) != manifest["sha256"][f.name]:
                return None
        return TinyImage(kernel, initrd, str(manifest["kernel_version"]), str(manifest["base_cmdline"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_tiny_image(
    dest: Path,
    progress: Progress | None = None,
    *,
    force: bool = False,
    cache: Path | None = None,
) -> TinyImage:
    """Build (or reuse) the tiny guest image in *dest*.

    *dest* receives ``vmlinux`` (or ``bzImage`` if extraction fails),
    ``initrd.img`` and ``manifest.json``.  Downloads and the unpacked kernel
    package are cached in *cache* (default ``dest.parent / "cache"``).  An
    existing image whose manifest matches is returned at once unless *force*.
    The image is built in a temporary folder and renamed into place.
    Raises :class:`ImageBuildError` on failure.
    """
    report: Progress = progress or (lambda _step, _frac: None)
    dest = Path(dest).absolute()
    cache = Path(cache).absolute() if cache is not None else dest.parent / "cache"
    try:
        return _build_or_reuse(dest, cache, report, force)
    except InvalidInput as exc:  # the pure core refused something it was given: a build failure here
        raise ImageBuildError(exc.message) from exc
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise ImageBuildError(f"cannot build the tiny image: {where}{exc.strerror or exc}") from exc


def _build_or_reuse(dest: Path, cache: Path, report: Progress, force: bool) -> TinyImage:
    data = _data_files()
    busybox = _find_busybox()
    fingerprint = _fingerprint(data, busybox)
    report("check existing image", 0.0)
    if not force and (image := _load_existing(dest, fingerprint)) is not None:
        report("done", 1.0)
        return image

    try:
        cache.mkdir(parents=True, exist_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageBuildError(f"cannot create {cache} or {dest.parent}: {exc.strerror}") from exc

    if dest.is_symlink() or (dest.exists() and not _replaceable(dest)):
        raise ImageBuildError(f"{dest} exists and is not a tiny image; refusing to replace it")

    with locked(dest.parent / f".{dest.name}.lock"):
        # Another process may have built it while we waited for the lock.
        if not force and (image := _load_existing(dest, fingerprint)) is not None:
            report("done", 1.0)
            return image
        # Leftovers of an interrupted build (we hold the lock: nobody else's).
        for stale in [*dest.parent.glob(f".{dest.name}.tmp-*"), *dest.parent.glob(f".{dest.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        return _build(dest, cache, data, busybox, fingerprint, report)


def _replaceable(dest: Path) -> bool:
    """An existing *dest* may be replaced only if it is empty or a tiny image."""
    return dest.is_dir() and (not any(dest.iterdir()) or (dest / MANIFEST).is_file())


def _build(
    dest: Path, cache: Path, data: dict[str, bytes], busybox: Path, fingerprint: str, report: Progress
) -> TinyImage:
    with locked(cache / "tiny-image.lock"):
        for stale in [*cache.glob("debs/.dl-*"), *cache.glob("unpacked/.unpack-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        tree = _fetch_kernel_tree(cache, report)
    kver = _kernel_version(tree)
    deb_name = tree.name
    bzimage_path = tree / "boot" / f"vmlinuz-{kver}"
    if not bzimage_path.is_file():
        raise ImageBuildError(f"kernel image boot/vmlinuz-{kver} missing in {tree}")

    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        report("extract vmlinux", 0.4)
        bz = bzimage_path.read_bytes()
        vmlinux = extract_vmlinux(bz, _zstd_if_installed())
        if vmlinux is not None:
            kernel_name, kernel_format, kernel_bytes = "vmlinux", "elf-pvh", vmlinux
        else:
            kernel_name, kernel_format, kernel_bytes = "bzImage", "bzImage", bz
        (tmp / kernel_name).write_bytes(kernel_bytes)
        del vmlinux, bz

        report("collect kernel modules", 0.6)
        modules = _resolve_modules(tree / "lib" / "modules" / kver, WANTED_MODULES)

        report("compile corral-load", 0.7)
        load_bin = _compile_load(data["corral-load.c"], tmp)

        report("pack initramfs", 0.85)
        (tmp / INITRD).write_bytes(_make_initramfs(data, busybox, modules, load_bin))
        for leftover in ("corral-load", "corral-load.c"):
            (tmp / leftover).unlink()

        report("write manifest", 0.95)
        manifest = {
            "format": FORMAT_VERSION,
            "kernel": kernel_name,
            "kernel_format": kernel_format,
            "initrd": INITRD,
            "kernel_version": kver,
            "kernel_package": deb_name.split("_")[0],
            "kernel_package_version": deb_name.split("_")[1] if "_" in deb_name else "",
            "sha256": {kernel_name: _sha256(tmp / kernel_name), INITRD: _sha256(tmp / INITRD)},
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "base_cmdline": BASE_CMDLINE,
            "cmdline_params": {
                "corral.name": "hostname: letters, digits, '-'",
                "corral.cpu": "percent of each vCPU busy, 0..100",
                "corral.disk": "KiB/s read+write on /dev/vda (first 32 MiB, O_DIRECT)",
                "corral.net": "KiB/s UDP payload to the gateway (the host), port 9",
                "corral.trace": "a load trace replacing corral.cpu: two hex digits (00-64) a step",
                "corral.step_ms": "how long each step of corral.trace lasts, in ms (default 300000)",
            },
            "ready_line": "CORRAL-READY name=<hostname> ip=<addr or none>",
            "modules": [n for n, _ in modules],
            "busybox": str(busybox),
            "inputs": fingerprint,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)

        report("install image", 0.98)
        old: Path | None = None
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise ImageBuildError(f"cannot write image in {dest.parent}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    report("done", 1.0)
    return TinyImage(dest / kernel_name, dest / INITRD, kver, BASE_CMDLINE)
