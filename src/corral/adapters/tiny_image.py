"""Build Corral's tiny Linux guest image without internet access.

The image is a Debian kernel (downloaded with ``apt-get download`` and unpacked
with ``dpkg-deb -x`` into a cache, never installed on the host) plus a small
initramfs: static busybox, the virtio/ACPI modules, an ``/init`` script and the
``corral-load`` workload generator (compiled here with ``gcc -static``).

Kernel command-line contract (see :meth:`TinyImage.load_cmdline`)::

    <base_cmdline> corral.name=NAME corral.cpu=PCT corral.disk=KBPS corral.net=KBPS

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

import bz2
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from corral.core.domxml import tiny_cmdline
from corral.core.errors import BackendError
from corral.core.spec import LoadSpec

__all__ = [
    "BASE_CMDLINE",
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

#: Base kernel command line for machine ``pc`` (libvirt or plain QEMU).
BASE_CMDLINE = "console=ttyS0,115200 panic=-1 quiet"

READY_PREFIX = "CORRAL-READY"
#: Matches a complete readiness line only (the line end is required, so a line
#: still arriving on the console does not match with a truncated address).
READY_RE = re.compile(r"CORRAL-READY name=(?P<name>[A-Za-z0-9-]+) ip=(?P<ip>[0-9.]+|none)\r?\n")

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

MAX_LOAD_RATE = 10 * 1024 * 1024  # KiB/s, same bound as corral-load.c
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

MANIFEST = "manifest.json"
INITRD = "initrd.img"


class ImageBuildError(BackendError):
    """The tiny image could not be built; the message says why, on one line."""


def load_cmdline(base_cmdline: str, name: str, cpu_pct: int = 0, disk_kbps: int = 0, net_kbps: int = 0) -> str:
    """Full kernel command line for a tiny guest called *name* running the given load.

    ``cpu_pct`` is 0..100 % of every vCPU, ``disk_kbps`` KiB/s of raw I/O on
    /dev/vda (reads and writes together), ``net_kbps`` KiB/s of UDP payload sent
    to 10.0.2.2:9.  0 turns a load off.  Raises ``ValueError`` on bad input.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"bad guest name {name!r}: use letters, digits and '-' (at most 63)")
    for what, value, top in (
        ("cpu_pct", cpu_pct, 100),
        ("disk_kbps", disk_kbps, MAX_LOAD_RATE),
        ("net_kbps", net_kbps, MAX_LOAD_RATE),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{what} must be an integer in 0..{top}, got {value!r}")
    # One formatter of the contract: the same one that writes guests' domain XML.
    return tiny_cmdline(base_cmdline, name, LoadSpec(cpu_pct, disk_kbps, net_kbps))


def parse_ready_line(text: str) -> tuple[str, str | None] | None:
    """Find the readiness line in console output: ``(name, ip or None)``, or None."""
    m = READY_RE.search(text)
    if m is None:
        return None
    ip = m.group("ip")
    return m.group("name"), (None if ip == "none" else ip)


@dataclass(frozen=True)
class TinyImage:
    kernel: Path
    initrd: Path
    kernel_version: str
    base_cmdline: str

    def load_cmdline(self, name: str, cpu_pct: int = 0, disk_kbps: int = 0, net_kbps: int = 0) -> str:
        return load_cmdline(self.base_cmdline, name, cpu_pct, disk_kbps, net_kbps)


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


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


# --------------------------------------------------------------------------- vmlinux extraction

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
)


def _decompress(data: bytes, kind: str) -> bytes:
    if kind == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data)
    if kind == "lzma":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data)
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    if kind == "bzip2":
        return bz2.BZ2Decompressor().decompress(data)
    if kind == "zstd":
        if shutil.which("zstd") is None:
            raise ValueError("zstd payload and no zstd command")
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True, timeout=120).stdout
    raise ValueError(f"unsupported compression {kind}")


def _has_pvh_note(elf: bytes) -> bool:
    """True for an x86-64 ELF with a Xen PHYS32_ENTRY (PVH) note."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    (e_machine,) = struct.unpack_from("<H", elf, 18)
    if e_machine != 0x3E:
        return False
    (e_phoff,) = struct.unpack_from("<Q", elf, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 54)
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", elf, off)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed, PVH-bootable ELF inside an x86 bzImage, or None."""
    candidates: list[int] = []
    if len(bzimage) > 0x250 and bzimage[0x202:0x206] == b"HdrS":
        (version,) = struct.unpack_from("<H", bzimage, 0x206)
        if version >= 0x208:
            setup_sects = bzimage[0x1F1] or 4
            payload_offset, _payload_length = struct.unpack_from("<II", bzimage, 0x248)
            candidates.append((setup_sects + 1) * 512 + payload_offset)
    for magic, _kind in _MAGICS:
        start = 0
        while (pos := bzimage.find(magic, start)) >= 0 and len(candidates) < 64:
            candidates.append(pos)
            start = pos + 1
    seen: set[int] = set()
    for pos in candidates:
        if pos in seen:
            continue
        seen.add(pos)
        for magic, kind in _MAGICS:
            if not bzimage.startswith(magic, pos):
                continue
            try:
                out = _decompress(bzimage[pos:], kind)
            except (lzma.LZMAError, zlib.error, OSError, ValueError, EOFError, subprocess.SubprocessError):
                continue
            if _has_pvh_note(out):
                return out
    return None


# --------------------------------------------------------------------------- modules


def _module_name(path: Path) -> str:
    name = path.name
    for suffix in (".ko.xz", ".ko.gz", ".ko.zst", ".ko"):
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("-", "_")
    return name


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    try:
        if path.name.endswith(".xz"):
            return lzma.decompress(data)
        if path.name.endswith(".gz"):
            return gzip.decompress(data)
        if path.name.endswith(".zst"):
            return _decompress(data, "zstd")
    except (lzma.LZMAError, OSError, ValueError, subprocess.SubprocessError) as exc:
        raise ImageBuildError(f"cannot decompress module {path.name}: {exc}") from exc
    return data


def _modinfo(ko: bytes) -> dict[str, list[str]]:
    """Key/values of the ``.modinfo`` section of an x86-64 kernel module."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2:
        raise ValueError("not a 64-bit ELF")
    (e_shoff,) = struct.unpack_from("<Q", ko, 40)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", ko, 58)

    def section(i: int) -> tuple[int, int, int]:
        sh_name, _t, _f, _a, sh_offset, sh_size = struct.unpack_from("<IIQQQQ", ko, e_shoff + i * e_shentsize)
        return sh_name, sh_offset, sh_size

    _, str_off, str_size = section(e_shstrndx)
    names = ko[str_off : str_off + str_size]
    info: dict[str, list[str]] = {}
    for i in range(e_shnum):
        sh_name, off, size = section(i)
        if names[sh_name : names.index(b"\0", sh_name)] != b".modinfo":
            continue
        for entry in ko[off : off + size].split(b"\0"):
            key, sep, value = entry.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, []).append(value)
    return info


def _resolve_modules(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """Wanted modules plus their dependencies, in load (dependency) order."""
    index: dict[str, Path] = {}
    for p in (moddir / "kernel").rglob("*.ko*"):
        index.setdefault(_module_name(p), p)
    builtin: set[str] = set()
    builtin_file = moddir / "modules.builtin"
    if builtin_file.is_file():
        builtin = {_module_name(Path(line.strip())) for line in builtin_file.read_text().splitlines()}

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
            info = _modinfo(data)
        except (ValueError, struct.error) as exc:
            raise ImageBuildError(f"cannot read .modinfo of {path.name}: {exc}") from exc
        for deps in info.get("depends", []):
            for dep in filter(None, deps.split(",")):
                visit(dep.replace("-", "_"))
        visiting.discard(name)
        done.add(name)
        order.append((name, data))

    for name in wanted:
        visit(name)
    return order


# --------------------------------------------------------------------------- busybox, corral-load


def _is_static_elf(data: bytes) -> bool:
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    types = {struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)}
    return 3 not in types  # no PT_INTERP


def _find_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if cand and Path(cand).is_file():
            path = Path(cand).resolve()
            with path.open("rb") as f:
                head = f.read(1 << 16)
            if _is_static_elf(head):
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


# --------------------------------------------------------------------------- cpio (newc)


class _Cpio:
    """Minimal writer of a newc ("070701") cpio archive, all files owned by root."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._mtime = int(time.time())
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nlink = 2 if (mode & 0o170000) == 0o040000 else 1
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,
            0,
            nlink,
            self._mtime,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._buf.write(header + encoded)
        self._buf.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self._buf.write(data)
        self._buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self._entry(d, 0o040000 | (mode if i == len(parts) else 0o755))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name.strip("/"), 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self._buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


def _make_initramfs(data: dict[str, bytes], busybox: Path, modules: list[tuple[str, bytes]], load_bin: bytes) -> bytes:
    cpio = _Cpio()
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
    with contextlib.suppress(OSError):  # the recipe itself: any change rebuilds
        h.update(hashlib.sha256(Path(__file__).read_bytes()).digest())
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

    with _locked(dest.parent / f".{dest.name}.lock"):
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
    with _locked(cache / "tiny-image.lock"):
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
        vmlinux = extract_vmlinux(bz)
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
                "corral.net": "KiB/s UDP payload to 10.0.2.2:9",
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
