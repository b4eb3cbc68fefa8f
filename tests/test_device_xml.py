"""The device XML of `corral disk` and `corral nic`, and the checks before anything changes (pure: no daemon)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from corral.core.domxml import (
    DiskPlan,
    DomainPlan,
    build_domain_xml,
    disk_device_xml,
    disk_target_name,
    domain_disks,
    domain_nic_xml,
    meta_with_owned_files,
    next_disk_target,
    nic_device_xml,
    parse_domain_xml,
)
from corral.core.errors import InvalidInput
from corral.core.spec import LoadSpec
from corral.services.devices import check_device, check_mac, new_mac, size_bytes
from corral.services.storage import GIB


def plan(disks: tuple[DiskPlan, ...]) -> DomainPlan:
    return DomainPlan(name="web", uuid="00000000-0000-0000-0000-000000000001", domain_type="qemu",
                      emulator="/usr/bin/qemu-system-x86_64", vcpus=1, memory_mib=128, image="tiny",
                      load=LoadSpec(cpu_pct=10), disks=disks, console_log=Path("/data/guests/web/console.log"),
                      network="corral")


DISK0 = DiskPlan(Path("/data/disks/guest-web-disk0.qcow2"), "qcow2")
CD = DiskPlan(Path("/images/install.iso"), "raw", "cdrom", owned=False)


def test_target_names_follow_linux() -> None:
    assert [disk_target_name(i) for i in (0, 1, 25, 26, 27, 701)] == ["vda", "vdb", "vdz", "vdaa", "vdab", "vdzz"]
    with pytest.raises(ValueError):
        disk_target_name(-1)


def test_the_next_target_skips_every_used_one_in_either_definition() -> None:
    config = build_domain_xml(plan((DISK0, CD)))
    assert next_disk_target(config) == "vdb"  # the CD drive is sda: not in the way
    live = config.replace("</devices>", disk_device_xml(Path("/x/b.qcow2"), "vdb") + "</devices>")
    assert next_disk_target(config, live) == "vdc"
    gap = config.replace("</devices>", disk_device_xml(Path("/x/c.qcow2"), "vdc") + "</devices>")
    assert next_disk_target(gap) == "vdb"


def test_disk_device_xml_is_a_virtio_qcow2_file_disk_read_back_as_such() -> None:
    text = disk_device_xml(Path("/pool/guest-web-disk1.qcow2"), "vdb")
    el = ET.fromstring(text)
    assert el.tag == "disk" and el.get("type") == "file" and el.get("device") == "disk"
    assert el.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert el.find("target").attrib == {"dev": "vdb", "bus": "virtio"}  # type: ignore[union-attr]
    found = domain_disks(build_domain_xml(plan((DISK0,))).replace("</devices>", text + "</devices>"))
    assert [(d.target, d.device, d.path, d.format) for d in found] == [
        ("vda", "disk", DISK0.path, "qcow2"), ("vdb", "disk", Path("/pool/guest-web-disk1.qcow2"), "qcow2")]
    assert ET.fromstring(found[1].xml).find("target").get("dev") == "vdb"  # type: ignore[union-attr]


def test_a_path_never_breaks_out_of_its_attribute() -> None:
    evil = Path("/pool/a'\"><b>.qcow2")
    assert ET.fromstring(disk_device_xml(evil, "vdb")).find("source").get("file") == str(evil)  # type: ignore[union-attr]


def test_nic_device_xml_on_a_network_and_user_mode() -> None:
    nic = ET.fromstring(nic_device_xml("52:54:00:aa:bb:cc", "corral"))
    assert nic.get("type") == "network" and nic.find("source").get("network") == "corral"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == "52:54:00:aa:bb:cc"  # type: ignore[union-attr]
    assert nic.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    user = ET.fromstring(nic_device_xml("52:54:00:aa:bb:cd", None))
    assert user.get("type") == "user" and user.find("source") is None


def test_domain_nic_xml_finds_a_nic_by_mac_in_any_case() -> None:
    xml = build_domain_xml(plan((DISK0,))).replace(
        "</devices>", nic_device_xml("52:54:00:aa:bb:cc", "corral") + "</devices>")
    found = domain_nic_xml(xml, "52:54:00:AA:BB:CC")
    assert found is not None and 'address="52:54:00:aa:bb:cc"' in found
    assert domain_nic_xml(xml, "52:54:00:00:00:01") is None


def test_the_metadata_element_changes_only_the_owned_files_and_has_no_prefixes() -> None:
    xml = build_domain_xml(plan((DISK0,)))
    added = Path("/data/disks/guest-web-disk1.qcow2")
    element = meta_with_owned_files(xml, (DISK0.path, added))
    assert "corral:" not in element and "xmlns" not in element  # libvirt adds its namespace itself
    # Put back where libvirt puts it, it reads as the same metadata with one more owned file.
    ns = "https://corral.dev/xmlns/guest/1"
    root = ET.fromstring(xml)
    metadata = root.find("metadata")
    assert metadata is not None
    metadata.clear()
    guest = ET.fromstring(element)
    for el in guest.iter():
        el.tag = f"{{{ns}}}{el.tag}"
    metadata.append(guest)
    before, after = parse_domain_xml(xml).meta, parse_domain_xml(ET.tostring(root, encoding="unicode")).meta
    assert before is not None and after is not None
    assert after.owned_files == (DISK0.path, added)
    assert (after.image, after.load, after.console_log, after.storage) == (
        before.image, before.load, before.console_log, before.storage)
    assert parse_domain_xml(xml).meta == before  # the input is not changed
    dropped = ET.fromstring(meta_with_owned_files(xml, ()))
    assert dropped.findall("owned-file") == [] and dropped.findtext("image") == "tiny"


def test_a_domain_without_corral_metadata_has_no_owned_files_to_change() -> None:
    with pytest.raises(InvalidInput, match="not made by Corral"):
        meta_with_owned_files("<domain><name>x</name><devices/></domain>", ())


def test_sizes_in_range_round_up_to_sectors_and_the_rest_are_refused() -> None:
    assert size_bytes(1) == GIB
    assert size_bytes(0.05) % 512 == 0 and 0 <= size_bytes(0.05) - 0.05 * GIB < 512
    for bad in (0, -1, 0.001, 16 * 1024 + 1, float("nan"), float("inf"), True):
        with pytest.raises(InvalidInput, match="disk size"):
            size_bytes(bad)


def test_devices_and_macs_are_checked() -> None:
    assert check_device("vdb") == "vdb"
    for bad in ("vdb;", "../x", "", "VDB", "vd"):
        with pytest.raises(InvalidInput, match="invalid disk"):
            check_device(bad)
    assert check_mac(" 52:54:00:AA:bb:CC ") == "52:54:00:aa:bb:cc"
    for bad in ("52:54:00:aa:bb", "52-54-00-aa-bb-cc", "zz:54:00:aa:bb:cc", ""):
        with pytest.raises(InvalidInput, match="invalid MAC"):
            check_mac(bad)
    used = {new_mac(set()) for _ in range(20)}
    mac = new_mac(used)
    assert mac not in used and mac.startswith("52:54:00:") and check_mac(mac) == mac
