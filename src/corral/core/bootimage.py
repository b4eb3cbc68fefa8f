"""The built-in guest image's byte-level parts, pure: bytes in, bytes (or values) out.

What the tiny image is made of, without apt, dpkg-deb, gcc, busybox, files or the clock (those
stay in ``corral.adapters.tiny_image``): the compression formats a kernel or module comes in, the
uncompressed PVH-bootable ``vmlinux`` inside an x86 bzImage, a kernel module's ``.modinfo``,
the static-ELF check for busybox, the newc cpio writer of the initramfs, and the guest's kernel
command line and readiness-line contract.

Bad input raises :class:`~corral.core.errors.InvalidInput` (or gives None / False where that is
the function's answer); nothing else escapes.

Kernel command-line contract (:func:`load_cmdline`)::

    <base_cmdline> corral.name=NAME corral.cpu=PCT corral.disk=KBPS corral.net=KBPS
                   corral.trace=HEX corral.step_ms=MS

``corral.trace`` replays a load trace instead of ``corral.cpu``: two hex digits a step (``00``-``64``,
the percent of each vCPU kept busy), each step lasting ``corral.step_ms`` milliseconds, from the
start again at its end. The whole line stays within x86's 2048-byte command line
(:data:`~corral.core.domxml.MAX_CMDLINE_BYTES`), so a trace has at most
:data:`~corral.core.spec.MAX_TRACE_STEPS` steps.

When the guest is up it prints one line on the serial console (ttyS0)::

    CORRAL-READY name=<hostname> ip=<IPv4 of eth0 or none>
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Sequence

from corral.core.domxml import decode_trace, encode_trace, parse_tiny_cmdline, tiny_cmdline
from corral.core.errors import InvalidInput
from corral.core.spec import TRACE_STEP_MS, LoadSpec

__all__ = [
    "BASE_CMDLINE",
    "COMPRESSION_MAGICS",
    "MAX_LOAD_RATE",
    "READY_PREFIX",
    "READY_RE",
    "Cpio",
    "Decompressor",
    "decode_trace",
    "decompress",
    "decompress_module",
    "encode_trace",
    "extract_vmlinux",
    "has_pvh_note",
    "is_static_elf",
    "load_cmdline",
    "modinfo",
    "module_depends",
    "module_name",
    "parse_ready_line",
    "parse_tiny_cmdline",
]

#: A decompressor for a format the standard library lacks (zstd): compressed bytes in, the
#: decompressed stream out; raises ``InvalidInput`` when the bytes are not such a stream.
Decompressor = Callable[[bytes], bytes]

# --------------------------------------------------------------------------- guest contract

#: Base kernel command line for machine ``pc`` (libvirt or plain QEMU).
BASE_CMDLINE = "console=ttyS0,115200 panic=-1 quiet"

READY_PREFIX = "CORRAL-READY"
#: Matches a complete readiness line only (the line end is required, so a line
#: still arriving on the console does not match with a truncated address).
READY_RE = re.compile(r"CORRAL-READY name=(?P<name>[A-Za-z0-9-]+) ip=(?P<ip>[0-9.]+|none)\r?\n")

MAX_LOAD_RATE = 10 * 1024 * 1024  # KiB/s, same bound as corral-load.c
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def load_cmdline(base_cmdline: str, name: str, cpu_pct: int = 0, disk_kbps: int = 0, net_kbps: int = 0,
                 trace: Sequence[int] = (), step_ms: int = TRACE_STEP_MS) -> str:
    """Full kernel command line for a tiny guest called *name* running the given load.

    ``cpu_pct`` is 0..100 % of every vCPU, ``disk_kbps`` KiB/s of raw I/O on
    /dev/vda (reads and writes together), ``net_kbps`` KiB/s of UDP payload sent
    to 10.0.2.2:9.  0 turns a load off.  ``trace`` (whole percents, one per step of
    ``step_ms``) replaces ``cpu_pct``.  Raises ``InvalidInput`` on bad input.
    """
    if not isinstance(name, str) or not _HOSTNAME_RE.match(name):
        raise InvalidInput(f"bad guest name {name!r}: use letters, digits and '-' (at most 63)")
    for what, value, top in (
        ("cpu_pct", cpu_pct, 100),
        ("disk_kbps", disk_kbps, MAX_LOAD_RATE),
        ("net_kbps", net_kbps, MAX_LOAD_RATE),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise InvalidInput(f"{what} must be an integer in 0..{top}, got {value!r}")
    # One formatter of the contract: the same one that writes guests' domain XML.
    return tiny_cmdline(base_cmdline, name, LoadSpec(cpu_pct, disk_kbps, net_kbps, tuple(trace), step_ms))


def parse_ready_line(text: str) -> tuple[str, str | None] | None:
    """Find the readiness line in console output: ``(name, ip or None)``, or None."""
    m = READY_RE.search(text)
    if m is None:
        return None
    ip = m.group("ip")
    return m.group("name"), (None if ip == "none" else ip)


# --------------------------------------------------------------------------- compression

#: Magic bytes of the formats a Linux kernel payload (or module) may be compressed with.
COMPRESSION_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
)


def decompress(data: bytes, kind: str, zstd: Decompressor | None = None) -> bytes:
    """The first stream of *kind* at the start of *data*, decompressed (trailing bytes are ignored).

    ``zstd`` decompresses zstd streams, which the standard library cannot; without it a zstd
    stream is refused.  Raises ``InvalidInput`` for an unknown kind or bytes that are no such stream.
    """
    try:
        if kind == "xz":
            return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data)
        if kind == "lzma":
            return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data)
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(data)
    except (lzma.LZMAError, zlib.error, OSError, ValueError, EOFError) as exc:
        raise InvalidInput(f"not a valid {kind} stream: {exc}") from exc
    if kind == "zstd":
        if zstd is None:
            raise InvalidInput("zstd stream and no zstd decompressor")
        return zstd(data)
    raise InvalidInput(f"unsupported compression {kind!r}")


# --------------------------------------------------------------------------- ELF, bzImage

_PT_INTERP = 3
_PT_NOTE = 4
_EM_X86_64 = 0x3E
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def _is_elf64_le(data: bytes) -> bool:
    return len(data) >= 64 and data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1


def has_pvh_note(elf: bytes) -> bool:
    """True for an x86-64 ELF with a Xen PHYS32_ENTRY (PVH) note, which QEMU boots directly."""
    if not _is_elf64_le(elf):
        return False
    try:
        (e_machine,) = struct.unpack_from("<H", elf, 18)
        if e_machine != _EM_X86_64:
            return False
        (e_phoff,) = struct.unpack_from("<Q", elf, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 54)
        for i in range(e_phnum):
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", elf, e_phoff + i * e_phentsize)
            if p_type != _PT_NOTE:
                continue
            pos, end = p_offset, min(p_offset + p_filesz, len(elf))
            while pos + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
                name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
                if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                    return True
                pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    except struct.error:  # headers pointing past the end: not a bootable ELF
        return False
    return False


def is_static_elf(data: bytes) -> bool:
    """True for a 64-bit ELF without a program interpreter (statically linked); *data* may be just
    the file's head, as long as it holds the program headers."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    try:
        (e_phoff,) = struct.unpack_from("<Q", data, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
        types = {struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)}
    except struct.error:
        return False
    return _PT_INTERP not in types


def extract_vmlinux(bzimage: bytes, zstd: Decompressor | None = None) -> bytes | None:
    """The uncompressed, PVH-bootable ELF inside an x86 bzImage, or None.

    The payload is looked for where the boot protocol header (2.08+) says it is, then at every
    compression magic (at most 64 places).
    """
    candidates: list[int] = []
    if len(bzimage) > 0x250 and bzimage[0x202:0x206] == b"HdrS":
        (version,) = struct.unpack_from("<H", bzimage, 0x206)
        if version >= 0x208:
            setup_sects = bzimage[0x1F1] or 4
            payload_offset, _payload_length = struct.unpack_from("<II", bzimage, 0x248)
            candidates.append((setup_sects + 1) * 512 + payload_offset)
    for magic, _kind in COMPRESSION_MAGICS:
        start = 0
        while (pos := bzimage.find(magic, start)) >= 0 and len(candidates) < 64:
            candidates.append(pos)
            start = pos + 1
    seen: set[int] = set()
    for pos in candidates:
        if pos in seen:
            continue
        seen.add(pos)
        for magic, kind in COMPRESSION_MAGICS:
            if not bzimage.startswith(magic, pos):
                continue
            try:
                out = decompress(bzimage[pos:], kind, zstd)
            except InvalidInput:
                continue
            if has_pvh_note(out):
                return out
    return None


# --------------------------------------------------------------------------- kernel modules

_MODULE_SUFFIXES: tuple[tuple[str, str | None], ...] = (
    (".ko.xz", "xz"),
    (".ko.gz", "gzip"),
    (".ko.zst", "zstd"),
    (".ko", None),
)


def module_name(path: str) -> str:
    """A module's name from its file name or path: ``kernel/.../virtio-pci.ko.xz`` -> ``virtio_pci``."""
    name = path.rsplit("/", 1)[-1]
    for suffix, _kind in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("-", "_")
    return name


def decompress_module(filename: str, data: bytes, zstd: Decompressor | None = None) -> bytes:
    """A module file's ELF bytes, decompressed by its suffix (``.ko.xz``, ``.ko.gz``, ``.ko.zst``)."""
    for suffix, kind in _MODULE_SUFFIXES:
        if filename.endswith(suffix):
            if kind is None:
                return data
            try:
                return decompress(data, kind, zstd)
            except InvalidInput as exc:
                raise InvalidInput(f"cannot decompress module {filename}: {exc.message}") from exc
    return data


def modinfo(ko: bytes) -> dict[str, list[str]]:
    """Key/values of the ``.modinfo`` section of an x86-64 kernel module (a key may repeat)."""
    if not _is_elf64_le(ko):
        raise InvalidInput("not a 64-bit little-endian ELF")
    try:
        (e_shoff,) = struct.unpack_from("<Q", ko, 40)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", ko, 58)

        def section(i: int) -> tuple[int, int, int]:
            sh_name, _t, _f, _a, sh_offset, sh_size = struct.unpack_from("<IIQQQQ", ko, e_shoff + i * e_shentsize)
            return sh_name, sh_offset, sh_size

        if e_shstrndx >= e_shnum:
            raise InvalidInput("no section name table")
        _, str_off, str_size = section(e_shstrndx)
        names = ko[str_off : str_off + str_size]
        info: dict[str, list[str]] = {}
        for i in range(e_shnum):
            sh_name, off, size = section(i)
            end = names.find(b"\0", sh_name)
            if names[sh_name : end if end >= 0 else len(names)] != b".modinfo":
                continue
            for entry in ko[off : off + size].split(b"\0"):
                key, sep, value = entry.decode("utf-8", "replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
    except struct.error as exc:
        raise InvalidInput(f"truncated ELF: {exc}") from exc
    return info


def module_depends(ko: bytes) -> list[str]:
    """The (normalised) names of the modules a kernel module depends on, from its ``.modinfo``."""
    return [
        dep.replace("-", "_")
        for deps in modinfo(ko).get("depends", [])
        for dep in deps.split(",")
        if dep
    ]


# --------------------------------------------------------------------------- cpio (newc)

_S_IFMT = 0o170000
_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000
_S_IFCHR = 0o020000


class Cpio:
    """Writer of a newc ("070701") cpio archive, all files owned by root, every entry dated *mtime*
    (seconds since the epoch; the caller owns the clock).  Parent folders are added as needed."""

    def __init__(self, mtime: int = 0) -> None:
        if isinstance(mtime, bool) or not isinstance(mtime, int) or not 0 <= mtime <= 0xFFFFFFFF:
            raise InvalidInput(f"cpio mtime must be an integer in 0..2**32-1, got {mtime!r}")
        self._parts: list[bytes] = []
        self._ino = 1
        self._mtime = mtime
        self._dirs: set[str] = set()
        self._finished = False

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        if self._finished:
            raise InvalidInput("cpio archive already finished")
        if not name or "\0" in name:
            raise InvalidInput(f"bad cpio entry name {name!r}")
        nlink = 2 if (mode & _S_IFMT) == _S_IFDIR else 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts += [
            header,
            encoded,
            b"\0" * (-(len(header) + len(encoded)) % 4),
            data,
            b"\0" * (-len(data) % 4),
        ]

    @staticmethod
    def _clean(name: str) -> str:
        name = name.strip("/")
        if not name or any(part in ("", ".", "..") for part in name.split("/")):
            raise InvalidInput(f"bad cpio path {name!r}")
        return name

    def _parent(self, name: str) -> None:
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])

    def dir(self, name: str, mode: int = 0o755) -> None:
        parts = self._clean(name).split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self._entry(d, _S_IFDIR | (mode if i == len(parts) else 0o755))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = self._clean(name)
        self._parent(name)
        self._entry(name, _S_IFREG | (mode & 0o7777), data)

    def symlink(self, name: str, target: str) -> None:
        name = self._clean(name)
        self._parent(name)
        self._entry(name, _S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """A character device; its folder must have been added before."""
        self._entry(self._clean(name), _S_IFCHR | (mode & 0o7777), rdev=(major, minor))

    def finish(self) -> bytes:
        """The archive: the entries, the trailer, padded to a multiple of 512 bytes."""
        self._entry("TRAILER!!!", 0)
        self._finished = True
        data = b"".join(self._parts)
        return data + b"\0" * (-len(data) % 512)
