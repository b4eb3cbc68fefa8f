"""Tags in Corral's metadata, and what `corral set` works out, without libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from corral.core.domxml import (
    CORRAL_NS,
    CorralMeta,
    DiskPlan,
    DomainPlan,
    build_domain_xml,
    clone_domain_xml,
    meta_with_tags,
    parse_domain_xml,
    read_meta,
)
from corral.core.errors import InvalidInput
from corral.core.resources import Change, Resources, live_now, next_boot, read_resources
from corral.core.spec import LoadSpec
from corral.core.tags import check_tag, check_tags


def _plan() -> DomainPlan:
    return DomainPlan(name="web", uuid="0b9e5f5e-0000-4000-8000-000000000001", domain_type="qemu",
                      emulator="/usr/bin/qemu-system-x86_64", vcpus=2, memory_mib=256, image="tiny",
                      load=LoadSpec(cpu_pct=15), disks=(DiskPlan(Path("/d/web/disk0.qcow2"), "qcow2"),),
                      console_log=Path("/d/web/console.log"))


def _with_element(xml: str, element: str) -> str:
    """The domain XML with its `<corral:guest>` replaced by `element`, as libvirt's setMetadata does."""
    root = ET.fromstring(xml)
    metadata = root.find("metadata")
    assert metadata is not None
    old = metadata.find(f"{{{CORRAL_NS}}}guest")
    assert old is not None
    metadata.remove(old)
    new = ET.fromstring(element)
    for el in new.iter():
        assert not el.tag.startswith("{"), "libvirt takes the element without its namespace"
        el.tag = f"{{{CORRAL_NS}}}{el.tag}"
    metadata.append(new)
    return ET.tostring(root, encoding="unicode")


@pytest.mark.parametrize("tag", ["web", "prod", "a", "db-1", "eu.west_2", "0", "x" * 32])
def test_good_tags(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "Prod", "two words", "<b>", "a&b", "-web", ".web", "_web", "x" * 33,
                                 "web\n", "caf\u00e9", "a/b", '"q"'])
def test_bad_tags_are_one_clear_error(tag: str) -> None:
    with pytest.raises(InvalidInput, match="invalid tag"):
        check_tag(tag)


def test_check_tags_keeps_order_and_drops_duplicates() -> None:
    assert check_tags(["web", "prod", "web"]) == ("web", "prod")
    with pytest.raises(InvalidInput, match="invalid tag 'bad tag'"):
        check_tags(["web", "bad tag"])
    with pytest.raises(InvalidInput, match="at most"):
        check_tags([f"t{i}" for i in range(40)])


def test_a_new_guest_has_no_tags_and_tags_round_trip_through_the_xml() -> None:
    xml = build_domain_xml(_plan())
    meta = parse_domain_xml(xml).meta
    assert meta is not None and meta.tags == ()
    element = meta_with_tags(xml, ("web", "prod"))
    assert element is not None
    tagged = _with_element(xml, element)
    facts = parse_domain_xml(tagged)
    assert facts.meta is not None and facts.meta.tags == ("web", "prod")
    # Everything else Corral keeps is untouched.
    assert facts.meta == CorralMeta(**{**meta.__dict__, "tags": ("web", "prod")})
    assert tagged.count(f"{{{CORRAL_NS}}}tag") == 0 and "<corral:tag>web</corral:tag>" in tagged
    # Replacing and clearing.
    element = meta_with_tags(tagged, ("db",))
    assert element is not None
    again = parse_domain_xml(_with_element(tagged, element)).meta
    assert again is not None and again.tags == ("db",)
    element = meta_with_tags(tagged, ())
    assert element is not None and "tag>" not in element
    cleared = parse_domain_xml(_with_element(tagged, element)).meta
    assert cleared is not None and cleared.tags == ()


def test_unknown_metadata_elements_stay_and_hand_edited_bad_tags_are_ignored() -> None:
    xml = build_domain_xml(_plan())
    root = ET.fromstring(xml)
    guest = root.find(f"metadata/{{{CORRAL_NS}}}guest")
    assert guest is not None
    ET.SubElement(guest, f"{{{CORRAL_NS}}}future").text = "kept"
    ET.SubElement(guest, f"{{{CORRAL_NS}}}tag").text = "<b>bad</b> tag"
    ET.SubElement(guest, f"{{{CORRAL_NS}}}tag").text = "ok"
    edited = ET.tostring(root, encoding="unicode")
    meta = read_meta(ET.fromstring(edited))
    assert meta is not None and meta.tags == ("ok",)
    element = meta_with_tags(edited, ("ok", "new"))
    assert element is not None and "<future>kept</future>" in element
    assert read_meta(ET.fromstring(_with_element(edited, element))).tags == ("ok", "new")  # type: ignore[union-attr]


def test_a_domain_corral_did_not_make_has_no_metadata_to_tag() -> None:
    assert meta_with_tags("<domain type='kvm'><name>other</name><memory>1024</memory></domain>", ("web",)) is None


def test_a_clone_keeps_its_sources_tags() -> None:
    xml = build_domain_xml(_plan())
    element = meta_with_tags(xml, ("web",))
    assert element is not None
    clone = clone_domain_xml(_with_element(xml, element), "web2", {}, Path("/d/web2/console.log"),
                             "0b9e5f5e-0000-4000-8000-000000000002")
    meta = parse_domain_xml(clone).meta
    assert meta is not None and meta.tags == ("web",)


# --- corral set: figures read and worked out --------------------------------------------------------------
def test_read_resources_reads_current_and_maximum() -> None:
    xml = ("<domain><vcpu placement='static' current='2'>4</vcpu><memory unit='KiB'>524288</memory>"
           "<currentMemory unit='KiB'>262144</currentMemory></domain>")
    assert read_resources(xml) == Resources(vcpus=2, max_vcpus=4, memory_mib=256, max_memory_mib=512)
    built = read_resources(build_domain_xml(_plan()))
    assert built == Resources(2, 2, 256, 256)


def test_next_boot_raises_maxima_with_the_figures_and_lowers_them_only_when_asked() -> None:
    now = Resources(1, 1, 256, 256)
    assert next_boot(now, Change(vcpus=2, memory_mib=512)) == Resources(2, 2, 512, 512)
    assert next_boot(now, Change(memory_mib=128)) == Resources(1, 1, 128, 256)  # the ceiling stays
    assert next_boot(now, Change(max_vcpus=4, max_memory_mib=1024)) == Resources(1, 4, 256, 1024)
    assert next_boot(Resources(1, 4, 256, 1024), Change(max_memory_mib=256)) == Resources(1, 4, 256, 256)
    with pytest.raises(InvalidInput, match="max-memory=200 MiB is below the 256 MiB"):
        next_boot(now, Change(max_memory_mib=200))
    with pytest.raises(InvalidInput, match="max-vcpus=1 is below the 2 vCPUs"):
        next_boot(now, Change(vcpus=2, max_vcpus=1))


def test_a_live_change_stays_within_the_running_maxima() -> None:
    now = Resources(1, 2, 192, 256)
    assert live_now("web", now, Change(memory_mib=256, vcpus=2)) == Resources(2, 2, 256, 256)
    with pytest.raises(InvalidInput, match="at most 256 MiB while it runs"):
        live_now("web", now, Change(memory_mib=512))
    with pytest.raises(InvalidInput, match="at most 2 vCPUs while it runs"):
        live_now("web", now, Change(vcpus=3))


@pytest.mark.parametrize(("change", "message"), [
    (Change(), "nothing to change"),
    (Change(vcpus=0), "vcpus=0 must be between 1 and 64"),
    (Change(vcpus=65), "vcpus=65 must be between"),
    (Change(max_vcpus=100), "max-vcpus=100 must be between"),
    (Change(memory_mib=10), "memory=10 MiB must be between 64"),
    (Change(max_memory_mib=2**40), "max-memory=.* MiB must be between"),
])
def test_out_of_range_figures_are_refused(change: Change, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        change.check()
