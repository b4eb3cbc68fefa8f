"""Guests' disks are volumes of a libvirt storage pool that libvirt's own tools see (issue 15.6): `virsh
vol-list` shows them, `corral delete` deletes exactly the guest's volumes, `--keep-disks` keeps them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corral.core.errors import Conflict
from corral.core.spec import GuestSpec
from corral.services.context import Corral

pytestmark = [pytest.mark.libvirt]
CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


def name(label: str) -> str:
    return f"ct-{label}-{uuid.uuid4().hex[:6]}"


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          check=True).stdout


def vol_list(pool: str) -> list[str]:
    rows = [line.split() for line in virsh("vol-list", pool).splitlines()[2:] if line.strip()]
    return [row[0] for row in rows]


def test_virsh_vol_list_shows_guests_disks_and_delete_removes_exactly_them(corral: Corral) -> None:
    pool = corral.settings.pool_name
    web, copy = name("web"), name("copy")
    web2 = f"{web}-2"  # its disks' names begin with web's prefix: they are still not web's
    corral.guests.create(GuestSpec(web, "tiny", memory_mib=128))
    corral.guests.create(GuestSpec(web2, "tiny", memory_mib=128))
    try:
        info = corral.guests.info(web)
        disk = Path(info.disks[0]["path"])
        assert disk == corral.settings.disks_dir / f"guest-{web}-disk0.qcow2"
        # The pool is libvirt's, at the data folder's disks/, and virsh sees the disk in it.
        assert f"<path>{corral.settings.disks_dir}</path>" in virsh("pool-dumpxml", pool)
        assert {f"guest-{web}-disk0.qcow2", f"guest-{web2}-disk0.qcow2"} <= set(vol_list(pool))
        assert virsh("vol-path", "--pool", pool, f"guest-{web}-disk0.qcow2").strip() == str(disk)
        # A clone's disks are volumes of the pool too.
        corral.guests.clone(web, copy)
        assert f"guest-{copy}-disk0.qcow2" in vol_list(pool)
        # Deleting a guest deletes its volumes, and no other guest's.
        result = subprocess.run([CORRAL_BIN, "delete", web], capture_output=True, text=True, check=False,
                                env=os.environ.copy())
        assert result.returncode == 0, result.stderr
        listed = vol_list(pool)
        assert f"guest-{web}-disk0.qcow2" not in listed and not disk.exists()
        assert f"guest-{web2}-disk0.qcow2" in listed and f"guest-{copy}-disk0.qcow2" in listed
        # --keep-disks keeps them in the pool, and a new guest of that name does not take them over.
        kept = corral.guests.delete(copy, keep_disks=True)
        assert kept == [str(corral.settings.disks_dir / f"guest-{copy}-disk0.qcow2")]
        assert f"guest-{copy}-disk0.qcow2" in vol_list(pool)
        with pytest.raises(Conflict, match="--keep-disks"):
            corral.guests.create(GuestSpec(copy, "tiny", memory_mib=128))
        assert f"guest-{copy}-disk0.qcow2" in vol_list(pool) and not corral.libvirt.exists(copy)
    finally:
        for guest in (web, web2, copy):
            if corral.libvirt.exists(guest):
                corral.guests.delete(guest)
        virsh("pool-refresh", pool)
        for volume in vol_list(pool):
            if volume == f"guest-{copy}-disk0.qcow2":
                virsh("vol-delete", "--pool", pool, volume)
