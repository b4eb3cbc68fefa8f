"""`corral disk` and `corral nic` against the real libvirt daemon: hot-plugged into a running tiny guest and
seen inside it (its serial console is a root shell), in the definition of a shut-off one, and gone with it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.core.domxml import domain_disks, parse_domain_xml
from corral.core.errors import Conflict, InvalidInput, NotFound
from corral.core.nics import parse_interfaces
from corral.core.spec import GuestSpec
from corral.services.context import Corral
from corral.services.storage import GIB

from .test_guests import console_run

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]
CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


def name(label: str) -> str:
    return f"ct-{label}-{uuid.uuid4().hex[:6]}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORRAL_BIN, *args], capture_output=True, text=True, check=False, env=os.environ.copy())


def in_guest(corral: Corral, guest: str, command: str) -> str:
    """What `command` prints in the guest, between two markers (so the echo of the command is not read)."""
    tag = uuid.uuid4().hex[:6]
    out = console_run(corral, guest, f"echo B-{tag}-$((1+1)); {command}; echo E-{tag}-$((2+2))", f"E-{tag}-4")
    return out.split(f"B-{tag}-2", 1)[-1].split(f"E-{tag}-4", 1)[0].replace("\r", "").strip()


def sectors(corral: Corral, guest: str, device: str) -> str:
    return in_guest(corral, guest, f"cat /sys/block/{device}/size 2>/dev/null || echo none")


def owned(corral: Corral, guest: str) -> tuple[Path, ...]:
    meta = parse_domain_xml(corral.libvirt.xml(guest, inactive=True)).meta
    assert meta is not None
    return meta.owned_files


def volumes(corral: Corral) -> list[str]:
    return corral.libvirt.volumes(corral.settings.pool_name)


@pytest.fixture(scope="module")
def running(corral_session: Corral) -> Iterator[tuple[Corral, str]]:
    guest = name("dev")
    corral_session.guests.create(GuestSpec(guest, "tiny", memory_mib=160), start=True, wait=True)
    yield corral_session, guest
    if corral_session.libvirt.exists(guest):
        corral_session.guests.delete(guest)


def test_a_disk_is_hot_plugged_grown_and_removed_in_the_running_guest(running: tuple[Corral, str]) -> None:
    corral, guest = running
    assert sectors(corral, guest, "vdb") == "none"
    added = corral.devices.add_disk(guest, 0.05)
    assert (added.device, added.action, added.live) == ("vdb", "added", True)
    path = Path(added.path or "")
    assert path.name == f"guest-{guest}-disk1.qcow2" and path.name in volumes(corral)
    assert path in owned(corral, guest)  # the definition's metadata
    live_meta = parse_domain_xml(corral.libvirt.xml(guest)).meta  # and the running guest's
    assert live_meta is not None and path in live_meta.owned_files
    assert sectors(corral, guest, "vdb") == str(added.size_bytes // 512)  # type: ignore[operator]

    grown = corral.devices.resize_disk(guest, "vdb", 0.1)
    assert grown.action == "resized" and grown.live
    assert sectors(corral, guest, "vdb") == str(grown.size_bytes // 512)  # type: ignore[operator]

    with pytest.raises(InvalidInput, match="cannot shrink"):
        corral.devices.resize_disk(guest, "vdb", 0.05)
    assert sectors(corral, guest, "vdb") == str(grown.size_bytes // 512)  # type: ignore[operator]

    removed = corral.devices.remove_disk(guest, "vdb")
    assert removed.live and not removed.kept
    assert sectors(corral, guest, "vdb") == "none"
    assert path.name not in volumes(corral) and path not in owned(corral, guest)
    assert [d.target for d in domain_disks(corral.libvirt.xml(guest, inactive=True))] == ["vda"]


def test_a_nic_is_hot_plugged_and_removed_in_the_running_guest(running: tuple[Corral, str]) -> None:
    corral, guest = running
    before = in_guest(corral, guest, "cat /sys/class/net/*/address")
    added = corral.devices.add_nic(guest)
    assert added.live and added.network == corral.host.network(added.host)[0]
    assert added.mac not in before
    assert added.mac in in_guest(corral, guest, "cat /sys/class/net/*/address")
    assert added.mac in [n.mac for n in parse_interfaces(corral.libvirt.xml(guest, inactive=True))]

    removed = corral.devices.remove_nic(guest, added.mac.upper())
    assert removed.live and removed.mac == added.mac
    assert added.mac not in in_guest(corral, guest, "cat /sys/class/net/*/address")
    assert added.mac not in [n.mac for n in parse_interfaces(corral.libvirt.xml(guest, inactive=True))]


def test_bad_requests_are_one_clear_error_and_change_nothing(running: tuple[Corral, str]) -> None:
    corral, guest = running
    xml, vols = corral.libvirt.xml(guest, inactive=True), volumes(corral)
    with pytest.raises(InvalidInput, match="has no network named 'no-such-net'"):
        corral.devices.add_nic(guest, "no-such-net")
    with pytest.raises(InvalidInput, match="out of range"):
        corral.devices.add_disk(guest, 100000)
    with pytest.raises(InvalidInput, match="out of range"):
        corral.devices.add_disk(guest, 0)
    with pytest.raises(InvalidInput, match="boot disk"):
        corral.devices.remove_disk(guest, "vda")
    with pytest.raises(NotFound, match=re.escape("has no disk vdq (its disks: vda)")):
        corral.devices.remove_disk(guest, "vdq")
    with pytest.raises(NotFound, match="no NIC with MAC"):
        corral.devices.remove_nic(guest, "52:54:00:00:00:01")
    with pytest.raises(InvalidInput, match="cannot shrink"):
        corral.devices.resize_disk(guest, "vda", 0.01)
    with pytest.raises(NotFound, match="no domain named"):
        corral.devices.add_disk(name("none"), 1)
    added = corral.devices.add_disk(guest, 0.02)  # a paused guest gets a disk, but cannot release one
    corral.guests.pause(guest)
    try:
        with pytest.raises(Conflict, match="is paused: it cannot release disk vdb"):
            corral.devices.remove_disk(guest, "vdb")
    finally:
        corral.guests.resume(guest)
    assert Path(added.path or "") in owned(corral, guest)
    corral.devices.remove_disk(guest, "vdb")
    after = corral.libvirt.xml(guest, inactive=True)  # the same but for where libvirt declares the namespace
    assert parse_domain_xml(after) == parse_domain_xml(xml) and volumes(corral) == vols
    xml = after
    failed = cli("nic", "add", guest, "--network", "no-such-net")
    assert failed.returncode != 0 and failed.stderr.startswith("corral: error: host ")
    failed = cli("disk", "resize", guest, "vda", "--size", "0.01")
    assert failed.returncode != 0 and "cannot shrink" in failed.stderr
    assert corral.libvirt.xml(guest, inactive=True) == xml and volumes(corral) == vols


def test_a_shut_off_guest_gets_its_disk_in_its_definition_and_sees_it_at_boot(corral: Corral) -> None:
    guest = name("devoff")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=160))
    added = cli("disk", "add", guest, "--size", "0.05")
    assert added.returncode == 0, added.stderr
    assert re.search(rf"{guest}: disk vdb added .* in its definition", added.stdout)
    assert corral.libvirt.block_capacity(guest, "vdb") >= 0.05 * GIB
    grown = cli("disk", "resize", guest, "vdb", "--size", "0.1")  # the volume, with the guest off
    assert grown.returncode == 0, grown.stderr
    assert corral.libvirt.block_capacity(guest, "vdb") >= 0.1 * GIB
    nic = corral.devices.add_nic(guest)
    assert not nic.live
    corral.guests.start(guest, wait=True)
    assert sectors(corral, guest, "vdb") == str(corral.libvirt.block_capacity(guest, "vdb") // 512)
    assert nic.mac in in_guest(corral, guest, "cat /sys/class/net/*/address")
    corral.guests.poweroff(guest)
    kept = cli("disk", "remove", guest, "vdb", "--keep")
    assert kept.returncode == 0 and "its file is kept" in kept.stdout
    volume = f"guest-{guest}-disk1.qcow2"
    assert volume in volumes(corral) and all(p.name != volume for p in owned(corral, guest))
    # The kept volume is never taken over: the next disk is disk2.
    again = corral.devices.add_disk(guest, 0.02)
    assert again.device == "vdb" and Path(again.path or "").name == f"guest-{guest}-disk2.qcow2"
    corral.devices.remove_nic(guest, nic.mac)
    corral.guests.delete(guest)
    assert f"guest-{guest}-disk2.qcow2" not in volumes(corral)  # owned: deleted with the guest
    assert volume in volumes(corral)  # removed with --keep: no longer the guest's
    corral.libvirt.delete_volume(corral.settings.pool_name, volume)


def test_delete_removes_added_disks_unless_keep_disks(corral: Corral) -> None:
    gone, kept = name("devdel"), name("devkeep")
    for guest in (gone, kept):
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=160))
        corral.devices.add_disk(guest, 0.02)
    assert cli("delete", gone).returncode == 0
    assert not [v for v in volumes(corral) if v.startswith(f"guest-{gone}-")]
    result = cli("delete", kept, "--keep-disks")
    assert result.returncode == 0 and f"guest-{kept}-disk1.qcow2" in "".join(result.stdout.split())  # wrapped
    left = [v for v in volumes(corral) if v.startswith(f"guest-{kept}-")]
    assert left == [f"guest-{kept}-disk0.qcow2", f"guest-{kept}-disk1.qcow2"]
    for volume in left:
        corral.libvirt.delete_volume(corral.settings.pool_name, volume)


def test_a_guest_corral_did_not_make_gets_no_disk(corral: Corral) -> None:
    guest = name("foreign")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=160))
    xml = corral.libvirt.xml(guest, inactive=True)
    root = ET.fromstring(xml)
    root.remove(root.find("metadata"))  # type: ignore[arg-type]
    corral.libvirt.define(ET.tostring(root, encoding="unicode"))
    try:
        with pytest.raises(Conflict, match="not made by Corral"):
            corral.devices.add_disk(guest, 0.02)
    finally:
        corral.libvirt.define(xml)
