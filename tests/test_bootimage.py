"""The tiny image's pure parts (corral.core.bootimage) on hand-built bytes: no kernel package, no tools
(``cpio`` is used to read an archive back when it is installed)."""

from __future__ import annotations

import ast
import bz2
import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from corral.core import bootimage as bi
from corral.core.errors import InvalidInput

PT_LOAD, PT_INTERP, PT_NOTE = 1, 3, 4
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# --------------------------------------------------------------------------- hand-built ELF files


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"
    return (struct.pack("<III", len(name), len(desc), ntype) + name + b"\0" * (-len(name) % 4)
            + desc + b"\0" * (-len(desc) % 4))


def _elf(*, pvh: bool, interp: bool = False, machine: int = 0x3E, size: int = 4096) -> bytes:
    """An x86-64 executable's headers: a PT_LOAD, optionally a PT_INTERP, and a PT_NOTE holding a GNU
    build-id note and (if *pvh*) Xen's PHYS32_ENTRY note after it."""
    notes = _note(b"GNU", 3, bytes(range(20)))
    if pvh:
        notes += _note(b"Xen", 18, struct.pack("<I", 0x1000000))
    phdrs: list[tuple[int, int, int]] = [(PT_LOAD, 0, size)]
    if interp:
        phdrs.append((PT_INTERP, 0, 0))
    phdrs.append((PT_NOTE, 0, len(notes)))  # the offset is filled in below
    note_off = 64 + 56 * len(phdrs)
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 2, machine, 1, 0x1000000,
                         64, 0, 0, 64, 56, len(phdrs), 64, 0, 0)
    table = b"".join(struct.pack("<IIQQQQQQ", p_type, 5, note_off if p_type == PT_NOTE else off, 0, 0,
                                 filesz, filesz, 8) for p_type, off, filesz in phdrs)
    body = header + table + notes
    return body + bytes((i * 7) & 0xFF for i in range(size - len(body)))  # some code-like filler


def _module(modinfo: bytes) -> bytes:
    """A relocatable ELF with sections: null, .text, .modinfo, .shstrtab (section headers at the end)."""
    shstrtab = b"\0.text\0.modinfo\0.shstrtab\0"
    text = b"\x90" * 16
    text_off = 64
    modinfo_off = text_off + len(text)
    shstr_off = modinfo_off + len(modinfo)
    shoff = shstr_off + len(shstrtab) + (-(shstr_off + len(shstrtab)) % 8)

    def shdr(name: bytes, sh_type: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", shstrtab.index(name + b"\0") if name else 0, sh_type, 0, 0, off, size,
                           0, 0, 1, 0)

    sections = [shdr(b"", 0, 0, 0), shdr(b".text", 1, text_off, len(text)),
                shdr(b".modinfo", 1, modinfo_off, len(modinfo)), shdr(b".shstrtab", 3, shstr_off, len(shstrtab))]
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 1, 0x3E, 1, 0, 0, shoff, 0,
                         64, 0, 0, 64, len(sections), 3)
    body = header + text + modinfo + shstrtab
    return body + b"\0" * (shoff - len(body)) + b"".join(sections)


def _bzimage(payload: bytes, *, with_header: bool = True, before: bytes = b"") -> bytes:
    """A bzImage's shape: a real-mode setup of (setup_sects + 1) sectors with the boot protocol header,
    then the protected-mode part holding the compressed payload at `payload_offset` and some trailer."""
    setup_sects = 3
    setup = bytearray(b"\xeb" * ((setup_sects + 1) * 512))  # filler that is no magic
    pm = b"\xcc" * 200 + before  # decompressor code, then maybe a decoy
    if with_header:
        setup[0x1F1] = setup_sects
        setup[0x202:0x206] = b"HdrS"
        struct.pack_into("<H", setup, 0x206, 0x020F)
        struct.pack_into("<II", setup, 0x248, len(pm), len(payload))
    return bytes(setup) + pm + payload + struct.pack("<I", 123456) + b"\xcc" * 64


# --------------------------------------------------------------------------- ELF notes, static ELF


def test_pvh_note_is_found_behind_other_notes() -> None:
    assert bi.has_pvh_note(_elf(pvh=True))
    assert not bi.has_pvh_note(_elf(pvh=False))
    assert not bi.has_pvh_note(_elf(pvh=True, machine=0xB7))  # aarch64: not for this machine
    assert not bi.has_pvh_note(b"")
    assert not bi.has_pvh_note(b"\x7fELF\x01\x01" + b"\0" * 100)  # 32-bit


def test_pvh_check_survives_headers_pointing_past_the_end() -> None:
    elf = bytearray(_elf(pvh=True))
    struct.pack_into("<Q", elf, 32, 1 << 40)  # e_phoff far away
    assert not bi.has_pvh_note(bytes(elf))
    assert not bi.has_pvh_note(_elf(pvh=True)[:100])  # program headers cut off


def test_static_elf_check() -> None:
    assert bi.is_static_elf(_elf(pvh=False))
    assert not bi.is_static_elf(_elf(pvh=False, interp=True))
    assert not bi.is_static_elf(b"#!/bin/sh\n" + b"\0" * 100)
    assert not bi.is_static_elf(_elf(pvh=False)[:80])  # the head read was too short for the headers


# --------------------------------------------------------------------------- compression, bzImage


def _compress(kind: str, data: bytes) -> bytes:
    return {
        "xz": lambda: lzma.compress(data, format=lzma.FORMAT_XZ),
        "lzma": lambda: lzma.compress(data, format=lzma.FORMAT_ALONE),
        "gzip": lambda: gzip.compress(data, mtime=0),
        "bzip2": lambda: bz2.compress(data),
    }[kind]()


@pytest.mark.parametrize("kind", ["xz", "lzma", "gzip", "bzip2"])
def test_decompress_each_kind_and_its_magic(kind: str) -> None:
    data = b"corral " * 1000
    packed = _compress(kind, data)
    magic = next(m for m, k in bi.COMPRESSION_MAGICS if k == kind)
    assert packed.startswith(magic)
    assert bi.decompress(packed + b"trailing bytes", kind) == data
    with pytest.raises(InvalidInput, match=f"not a valid {kind} stream"):
        bi.decompress(magic + b"\x00garbage" * 10, kind)


def test_decompress_refuses_unknown_kinds_and_zstd_without_a_decompressor() -> None:
    with pytest.raises(InvalidInput, match="unsupported compression 'lz4'"):
        bi.decompress(b"\x02\x21\x4c\x18", "lz4")
    with pytest.raises(InvalidInput, match="no zstd decompressor"):
        bi.decompress(ZSTD_MAGIC + b"x", "zstd")
    assert bi.decompress(ZSTD_MAGIC + b"x", "zstd", lambda d: d[4:]) == b"x"


@pytest.mark.parametrize("kind", ["xz", "gzip", "lzma", "bzip2"])
def test_extract_vmlinux_follows_the_boot_protocol_header(kind: str) -> None:
    vmlinux = _elf(pvh=True, size=64 * 1024)
    assert bi.extract_vmlinux(_bzimage(_compress(kind, vmlinux))) == vmlinux


@pytest.mark.parametrize("kind", ["xz", "gzip"])
def test_extract_vmlinux_finds_a_payload_by_its_magic_past_a_decoy(kind: str) -> None:
    """No boot protocol header: the payload is found by scanning; a compressed ELF without the PVH note
    (which QEMU could not boot directly) earlier in the image is passed over."""
    vmlinux = _elf(pvh=True, size=32 * 1024)
    decoy = _compress(kind, _elf(pvh=False, size=32 * 1024))
    blob = _bzimage(_compress(kind, vmlinux), with_header=False, before=decoy)
    assert blob.index(decoy) < blob.index(_compress(kind, vmlinux))
    assert bi.extract_vmlinux(blob) == vmlinux


def test_extract_vmlinux_without_a_bootable_elf_is_none() -> None:
    assert bi.extract_vmlinux(b"") is None
    assert bi.extract_vmlinux(b"\xfd7zXZ\x00" + b"junk" * 100) is None
    assert bi.extract_vmlinux(_bzimage(_compress("xz", _elf(pvh=False)))) is None
    assert bi.extract_vmlinux(_bzimage(_compress("gzip", b"not an elf at all" * 50))) is None


def test_extract_vmlinux_uses_the_zstd_decompressor_it_is_given() -> None:
    vmlinux = _elf(pvh=True)

    def fake_zstd(data: bytes) -> bytes:  # "decompresses" by dropping the magic
        if not data.startswith(ZSTD_MAGIC):
            raise InvalidInput("not a zstd stream")
        return data[4:]

    blob = _bzimage(ZSTD_MAGIC + vmlinux)
    assert bi.extract_vmlinux(blob) is None  # no decompressor: that payload is skipped
    got = bi.extract_vmlinux(blob, fake_zstd)
    assert got is not None and got.startswith(vmlinux)


# --------------------------------------------------------------------------- kernel modules


MODINFO = (b"license=GPL\0description=Virtio network driver\0alias=virtio:d00000001v*\0alias=net-pf-1\0"
           b"depends=virtio,virtio-ring,\0retpoline=Y\0intree=Y\0name=virtio_net\0vermagic=6.1.0 SMP\0\0\0")


def test_modinfo_of_a_hand_built_module() -> None:
    ko = _module(MODINFO)
    info = bi.modinfo(ko)
    assert info["name"] == ["virtio_net"]
    assert info["alias"] == ["virtio:d00000001v*", "net-pf-1"]  # a key may repeat
    assert info["vermagic"] == ["6.1.0 SMP"]
    assert bi.module_depends(ko) == ["virtio", "virtio_ring"]
    assert bi.module_depends(_module(b"license=GPL\0depends=\0")) == []
    assert bi.modinfo(_module(b"")) == {}


def test_modinfo_refuses_what_is_no_module() -> None:
    with pytest.raises(InvalidInput, match="not a 64-bit"):
        bi.modinfo(b"MZ" + b"\0" * 100)
    ko = _module(MODINFO)
    with pytest.raises(InvalidInput, match="truncated"):
        bi.modinfo(ko[:-100])  # section headers cut off
    bad_index = bytearray(ko)
    struct.pack_into("<H", bad_index, 62, 40)  # e_shstrndx past the section count
    with pytest.raises(InvalidInput, match="no section name table"):
        bi.modinfo(bytes(bad_index))


@pytest.mark.parametrize(("path", "name"), [
    ("virtio_net.ko", "virtio_net"),
    ("virtio-pci.ko.xz", "virtio_pci"),
    ("kernel/drivers/block/virtio_blk.ko.gz", "virtio_blk"),
    ("kernel/drivers/char/hw_random/virtio-rng.ko.zst", "virtio_rng"),
    ("README", "README"),
])
def test_module_names_are_normalised(path: str, name: str) -> None:
    assert bi.module_name(path) == name


def test_modules_are_decompressed_by_their_suffix() -> None:
    ko = _module(MODINFO)
    assert bi.decompress_module("a.ko", ko) == ko
    assert bi.decompress_module("a.ko.xz", lzma.compress(ko)) == ko
    assert bi.decompress_module("a.ko.gz", gzip.compress(ko)) == ko
    assert bi.decompress_module("a.ko.zst", ZSTD_MAGIC + ko, lambda d: d[4:]) == ko
    with pytest.raises(InvalidInput, match=r"cannot decompress module a\.ko\.xz"):
        bi.decompress_module("a.ko.xz", ko)
    with pytest.raises(InvalidInput, match=r"cannot decompress module a\.ko\.zst"):
        bi.decompress_module("a.ko.zst", ZSTD_MAGIC + ko)


# --------------------------------------------------------------------------- cpio


def _read_newc(data: bytes) -> list[tuple[str, int, int, bytes, tuple[int, int]]]:
    """Entries of a newc archive (name, mode, mtime, data, rdev), checking magic, padding and trailer."""
    entries: list[tuple[str, int, int, bytes, tuple[int, int]]] = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"no newc magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        _ino, mode, uid, gid, _nlink, mtime, filesize, _dmaj, _dmin, rmaj, rmin, namesize, check = fields
        assert (uid, gid, check) == (0, 0, 0)
        name_end = pos + 110 + namesize
        assert data[name_end - 1] == 0, "name not NUL-terminated"
        name = data[pos + 110 : name_end - 1].decode()
        pad = -name_end % 4
        assert data[name_end : name_end + pad] == b"\0" * pad, "header padding is not zeros"
        body = name_end + pad
        content = data[body : body + filesize]
        pad = -(body + filesize) % 4
        assert data[body + filesize : body + filesize + pad] == b"\0" * pad, "data padding is not zeros"
        pos = body + filesize + pad
        entries.append((name, mode, mtime, content, (rmaj, rmin)))
        if name == "TRAILER!!!":
            break
    assert len(data) % 512 == 0 and data[pos:] == b"\0" * (len(data) - pos)
    return entries


def _archive() -> bytes:
    cpio = bi.Cpio(mtime=1_700_000_000)
    cpio.dir("dev")
    cpio.chardev("dev/console", 5, 1)
    cpio.dir("tmp", 0o1777)
    cpio.file("init", b"#!/bin/sh\necho hi\n", 0o755)  # 18 bytes: padded
    cpio.file("etc/udhcpc/default.script", b"x", 0o755)  # parents made on the way
    cpio.symlink("bin/sh", "/bin/busybox")
    cpio.file("etc/hostname", b"corral\n")
    return cpio.finish()


EXPECTED = [
    ("dev", 0o040755, b""),
    ("dev/console", 0o020600, b""),
    ("tmp", 0o041777, b""),
    ("init", 0o100755, b"#!/bin/sh\necho hi\n"),
    ("etc", 0o040755, b""),
    ("etc/udhcpc", 0o040755, b""),
    ("etc/udhcpc/default.script", 0o100755, b"x"),
    ("bin", 0o040755, b""),
    ("bin/sh", 0o120777, b"/bin/busybox"),
    ("etc/hostname", 0o100644, b"corral\n"),
]


def test_cpio_newc_names_modes_padding_and_mtime() -> None:
    entries = _read_newc(_archive())
    assert [(n, m, d) for n, m, _t, d, _r in entries] == [*EXPECTED, ("TRAILER!!!", 0, b"")]
    assert {t for n, _m, t, _d, _r in entries if n != "TRAILER!!!"} == {1_700_000_000}
    assert dict((n, r) for n, _m, _t, _d, r in entries)["dev/console"] == (5, 1)
    assert bi.Cpio().finish() == _archive_of_nothing()


def _archive_of_nothing() -> bytes:
    header = b"070701" + b"".join(b"%08X" % f for f in (1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0))
    data = header + b"TRAILER!!!\0"
    return data + b"\0" * (512 - len(data))


def test_cpio_reads_back_with_the_cpio_tool() -> None:
    tool = shutil.which("cpio")
    if tool is None:
        pytest.skip("cpio is not installed")
    listing = subprocess.run([tool, "-itv", "--quiet"], input=_archive(), capture_output=True, check=True).stdout
    modes: dict[str, str] = {}
    for line in listing.decode().splitlines():
        name = line.split(" -> ")[0].split()[-1]
        modes[name] = line.split()[0]
    assert list(modes) == [n for n, _m, _d in EXPECTED]
    assert modes["dev/console"] == "crw-------"
    assert modes["tmp"] == "drwxrwxrwt"
    assert modes["init"] == "-rwxr-xr-x" and modes["etc/hostname"] == "-rw-r--r--"
    assert modes["bin/sh"] == "lrwxrwxrwx" and "bin/sh -> /bin/busybox" in listing.decode()


@pytest.mark.parametrize("name", ["", "/", "a/../b", "./x", "a//b", "nul\0byte"])
def test_cpio_refuses_bad_paths(name: str) -> None:
    with pytest.raises(InvalidInput):
        bi.Cpio().file(name, b"")


def test_cpio_refuses_a_bad_mtime_and_writes_after_the_end() -> None:
    for mtime in (-1, 1 << 32, True):
        with pytest.raises(InvalidInput, match="mtime"):
            bi.Cpio(mtime=mtime)
    cpio = bi.Cpio()
    cpio.finish()
    with pytest.raises(InvalidInput, match="finished"):
        cpio.file("late", b"")


# --------------------------------------------------------------------------- the guest's contract


def test_load_cmdline_contract() -> None:
    line = bi.load_cmdline(bi.BASE_CMDLINE, "web-1", cpu_pct=40, disk_kbps=512, net_kbps=64)
    assert line == f"{bi.BASE_CMDLINE} corral.name=web-1 corral.cpu=40 corral.disk=512 corral.net=64"
    assert bi.load_cmdline("console=ttyS0", "a") == "console=ttyS0 corral.name=a"


@pytest.mark.parametrize("name", ["bad name", "x" * 64, "-x", "x-", "a_b", "a.b", "", "ü"])
def test_load_cmdline_refuses_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="bad guest name"):
        bi.load_cmdline(bi.BASE_CMDLINE, name)


@pytest.mark.parametrize(("field", "value"), [
    ("cpu_pct", 101), ("cpu_pct", -1), ("cpu_pct", 50.5), ("cpu_pct", True),
    ("disk_kbps", -5), ("disk_kbps", bi.MAX_LOAD_RATE + 1), ("net_kbps", "64"), ("net_kbps", None),
])
def test_load_cmdline_refuses_bad_rates(field: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=f"{field} must be an integer"):
        bi.load_cmdline(bi.BASE_CMDLINE, "ok", **{field: value})  # type: ignore[arg-type]


def test_parse_ready_line() -> None:
    assert bi.parse_ready_line("t1:/# \r\nCORRAL-READY name=vm-3 ip=10.0.2.15\r\n") == ("vm-3", "10.0.2.15")
    assert bi.parse_ready_line("CORRAL-READY name=vm ip=none\n") == ("vm", None)
    assert bi.parse_ready_line("booting...") is None
    assert bi.parse_ready_line("CORRAL-READY name=vm ip=10.0.2.") is None  # line still arriving
    assert bi.READY_RE.pattern.startswith(bi.READY_PREFIX)


def test_the_module_is_pure() -> None:
    """No subprocess, file system or clock: the adapter does those and passes what it got in."""
    tree = ast.parse(Path(bi.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    impure = {"os", "subprocess", "shutil", "tempfile", "time", "datetime", "fcntl", "pathlib", "io", "socket"}
    assert {m.split(".")[0] for m in imported}.isdisjoint(impure), imported
    assert all(m.startswith("corral.core.") for m in imported if m.startswith("corral")), imported
