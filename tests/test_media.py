"""Removable media: `corral media eject` takes the ISO out of a guest's CD drive, running or not, and a
guest installed from an ISO boots from its disk once the disk is bootable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from corral.core.errors import InvalidInput
from corral.core.spec import GuestSpec
from corral.services.context import Corral

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]
CORRAL_BIN = str(Path(sys.executable).with_name("corral"))
# A boot sector that writes DISK-BOOTED to the first serial port and halts: what an installer leaves.
BOOT_SECTOR = (bytes.fromhex("31C08ED8BAF803BE157CAC84C07403EEEBF8F4EBFD") + b"DISK-BOOTED\r\n\0").ljust(510, b"\0") \
    + b"\x55\xaa"


def name(label: str) -> str:
    return f"ct-{label}-{uuid.uuid4().hex[:6]}"


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          check=True).stdout


def fake_iso(corral: Corral, label: str) -> Path:
    """A data CD (ISO 9660's signature, nothing bootable) in a folder images may come from."""
    folder = corral.settings.data_dir / "isos"
    folder.mkdir(exist_ok=True)
    path = folder / f"{label}-{uuid.uuid4().hex[:6]}.iso"
    data = bytearray(64 * 2048)
    data[0x8001:0x8006] = b"CD001"
    path.write_bytes(bytes(data))
    return path


def cd_sources(domain: str, *, inactive: bool) -> list[str]:
    """The CD drives' media as `virsh domblklist` shows them ('-' for an empty drive)."""
    args = ["domblklist", domain, "--details"] + (["--inactive"] if inactive else [])
    rows = [line.split() for line in virsh(*args).splitlines()[2:] if line.strip()]
    return [row[3] for row in rows if row[1] == "cdrom"]


def test_media_eject_takes_the_iso_out_of_a_running_guest_and_its_definition(corral: Corral) -> None:
    guest = name("eject")
    iso = fake_iso(corral, "install")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128, iso=iso), start=True)
    assert cd_sources(guest, inactive=False) == [str(iso)]
    with pytest.raises(InvalidInput, match="no CD drive sdz"):
        corral.guests.media_eject(guest, "sdz")
    result = subprocess.run([CORRAL_BIN, "media", "eject", guest], capture_output=True, text=True, check=False,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert f"ejected {iso}" in result.stdout
    assert cd_sources(guest, inactive=False) == ["-"] and cd_sources(guest, inactive=True) == ["-"]
    info = corral.guests.info(guest)
    assert info.state == "running" and all(d["device"] != "cdrom" for d in info.disks)
    result = subprocess.run([CORRAL_BIN, "media", "eject", guest], capture_output=True, text=True, check=False,
                            env=os.environ.copy())
    assert result.returncode != 0 and result.stderr.startswith("corral: error:") and "no media" in result.stderr
    corral.guests.delete(guest)
    assert iso.exists()  # the ISO was the user's: never Corral's to delete


def test_a_guest_installed_from_an_iso_boots_from_its_disk(corral: Corral) -> None:
    guest = name("installed")
    iso = fake_iso(corral, "installer")
    image = f"ct-iso-{uuid.uuid4().hex[:6]}"
    corral.images.import_image(image, iso)
    try:
        corral.guests.create(GuestSpec(guest, image, memory_mib=128, disk_gib=1))
        boot = virsh("dumpxml", guest, "--inactive")
        assert boot.index("<boot dev='hd'/>") < boot.index("<boot dev='cdrom'/>")  # the disk first, then the CD
        disk = Path(next(d["path"] for d in corral.guests.info(guest).disks if d["device"] == "disk"))
        # "The install": the disk gets a boot sector (the ISO stays in the drive).
        boot_sector = corral.settings.data_dir / f"{guest}.mbr"
        boot_sector.write_bytes(BOOT_SECTOR)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {boot_sector} 0 512", str(disk)],
                       capture_output=True, check=True)
        corral.guests.start(guest)
        log = Path(corral.guests.info(guest).console_log or "")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"DISK-BOOTED" not in (log.read_bytes() if log.exists() else b""):
            time.sleep(0.5)
        assert b"DISK-BOOTED" in log.read_bytes()
        assert cd_sources(guest, inactive=False) == [str(iso)]
    finally:
        if corral.libvirt.exists(guest):
            corral.guests.delete(guest)
        corral.images.remove(image, [])
