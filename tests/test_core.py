"""Pure-core tests: validation, specs, the capacity model and domain XML. No libvirt needed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from corral.core.capacity import CapacityLimits, HostFacts, admission_violations, capacity_report, footprint
from corral.core.domxml import (
    CORRAL_NS,
    GUEST_META,
    CorralMeta,
    DiskPlan,
    DomainPlan,
    build_domain_xml,
    clone_domain_xml,
    harden_domain_xml,
    parse_domain_xml,
    snapshot_xml,
    tiny_cmdline,
    write_meta,
)
from corral.core.errors import InvalidInput
from corral.core.spec import GuestSpec, LoadSpec, parse_load, spec_from_mapping, spec_from_toml
from corral.core.validate import check_domain_name, check_name, check_path

IN_CI = os.environ.get("CI") == "true"


@pytest.mark.parametrize("name", ["a'b<c>", "", "-x", "a b", "a/b", "x" * 64, "a..b", "ü", "a\nb", "Domain-0"])
def test_bad_names_are_refused_with_a_clear_message(name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_domain_name(name)
    assert "name" in caught.value.message


@pytest.mark.parametrize("name", ["web", "db-1", "Mail_2", "a.b", "x" * 63])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


def test_paths_with_dotdot_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        check_path("/srv/../etc/x.iso", "iso")
    with pytest.raises(InvalidInput, match="must be an absolute path"):
        check_path("x.iso", "iso")
    with pytest.raises(InvalidInput, match="NUL"):
        check_path("/srv/a\x00b", "iso")
    assert check_path("x.iso", base=Path("/srv/isos")) == Path("/srv/isos/x.iso")
    assert check_path("/srv/x.iso", base=Path("/elsewhere")) == Path("/srv/x.iso")


def test_load_parsing() -> None:
    assert parse_load("cpu=40,disk=100,net=8") == LoadSpec(40, 100, 8)
    assert parse_load("net=5") == LoadSpec(0, 0, 5)
    for bad, why in [("cpu=140", "between 0 and 100"), ("cpu=x", "not a number"), ("gpu=1", "invalid load"),
                     ("cpu=1,cpu=2", "twice"), ("disk=-1", "between")]:
        with pytest.raises(InvalidInput, match=why):
            parse_load(bad)


def test_spec_validation() -> None:
    with pytest.raises(InvalidInput, match="vcpus"):
        GuestSpec("web", "tiny", vcpus=0)
    with pytest.raises(InvalidInput, match="memory"):
        GuestSpec("web", "tiny", memory_mib=10)
    with pytest.raises(InvalidInput, match="disk"):
        GuestSpec("web", "tiny", disk_gib=-1)
    with pytest.raises(InvalidInput, match="unknown spec field"):
        spec_from_mapping({"name": "web", "image": "tiny", "cores": 2})
    with pytest.raises(InvalidInput, match="whole number"):
        spec_from_mapping({"name": "web", "image": "tiny", "vcpus": 1.5})
    with pytest.raises(InvalidInput, match="'image' is missing"):
        spec_from_mapping({"name": "web"})


def test_spec_from_toml_resolves_iso_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "install.iso").write_bytes(b"x")
    text = ('name = "web"\nimage = "tiny"\nvcpus = 2\nmemory = 512\niso = "install.iso"\n'
            '[load]\ncpu = 15\nnet = 64\n')
    spec = spec_from_toml(text, "web.toml", tmp_path)
    assert (spec.name, spec.vcpus, spec.memory_mib, spec.iso) == ("web", 2, 512, tmp_path / "install.iso")
    assert spec.load == LoadSpec(15, 0, 64)
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        spec_from_toml('name = "web"\nimage = "tiny"\niso = "../etc/passwd"\n', "web.toml", tmp_path)
    with pytest.raises(InvalidInput, match="not valid TOML"):
        spec_from_toml('name = "web\n', "web.toml", tmp_path)


HOST = HostFacts(cores=2, memory_mib=8192)
LIMITS = CapacityLimits(cap=0.85, vcpu_overcommit=4, memory_reserve_mib=1024, assumed_guest_utilization=0.25)


def test_admission_accepts_what_fits_and_refuses_each_limit_with_the_excess() -> None:
    running = [footprint(f"g{i}", 1, 1024, 15, LIMITS) for i in range(5)]
    assert admission_violations(HOST, LIMITS, running, footprint("new", 1, 1024, 15, LIMITS)) == []
    memory = admission_violations(HOST, LIMITS, running, footprint("big", 1, 3000, 15, LIMITS))
    assert [v.resource for v in memory] == ["memory"]
    assert memory[0].excess == pytest.approx(5 * 1024 + 3000 - 7168)
    assert "memory" in memory[0].describe() and "over" in memory[0].describe()
    vcpus = admission_violations(HOST, LIMITS, running, footprint("wide", 4, 256, 1, LIMITS))
    assert [v.resource for v in vcpus] == ["vcpus"]
    cpu = admission_violations(HOST, LIMITS, running, footprint("hot", 1, 256, 100, LIMITS))
    assert [v.resource for v in cpu] == ["cpu"]
    assert cpu[0].would_use == pytest.approx(0.75 + 1.0)
    assert cpu[0].limit == pytest.approx(1.7)


def test_a_guest_restarting_is_not_counted_twice() -> None:
    running = [footprint("web", 2, 4096, 50, LIMITS)]
    assert admission_violations(HOST, LIMITS, running, footprint("web", 2, 4096, 50, LIMITS)) == []


def test_undeclared_load_uses_the_assumed_utilization() -> None:
    assert footprint("x", 2, 128, None, LIMITS).cpu_demand_cores == pytest.approx(0.5)
    report = capacity_report(HOST, LIMITS, [footprint("x", 2, 128, None, LIMITS)])
    budgets = {b.resource: b for b in report.budgets}
    assert budgets["cpu"].free == pytest.approx(1.2)
    assert budgets["memory"].limit == 7168


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        CapacityLimits(cap=1.5)
    with pytest.raises(ValueError):
        CapacityLimits(vcpu_overcommit=0)


def _plan(tmp_path: Path, name: str = "web") -> DomainPlan:
    return DomainPlan(
        name=name, uuid="6a2ea3f4-63c5-4a8f-9d1e-3c1f0b3f6a10", domain_type="qemu",
        emulator="/usr/bin/qemu-system-x86_64", vcpus=2, memory_mib=256,
        image="tiny", load=LoadSpec(15, 64, 8),
        disks=(DiskPlan(tmp_path / name / "disk0.qcow2", "qcow2"),
               DiskPlan(tmp_path / "install.iso", "raw", "cdrom", owned=False)),
        console_log=tmp_path / name / "console.log", kernel=tmp_path / "vmlinux", initrd=tmp_path / "initrd.img",
        cmdline=tiny_cmdline("console=ttyS0", name, LoadSpec(15, 64, 8)), readiness="serial",
    )


def test_domain_xml_round_trips_corral_metadata(tmp_path: Path) -> None:
    xml = build_domain_xml(_plan(tmp_path))
    facts = parse_domain_xml(xml)
    assert (facts.name, facts.vcpus, facts.memory_mib) == ("web", 2, 256)
    assert facts.meta is not None
    assert facts.meta.load == LoadSpec(15, 64, 8)
    assert facts.meta.owned_files == (tmp_path / "web" / "disk0.qcow2",)
    assert [d.device for d in facts.disks] == ["disk", "cdrom"]
    assert "corral.name=web corral.cpu=15 corral.disk=64 corral.net=8" in xml


def test_corral_metadata_is_written_as_it_always_was(tmp_path: Path) -> None:
    """Guests defined by earlier versions must keep parsing, and new ones look the same to them."""
    xml = build_domain_xml(DomainPlan(**{**_plan(tmp_path).__dict__, "load": LoadSpec(12.5, 64, 8),
                                         "extra_owned_files": (tmp_path / "web" / "nvram.fd",)}))
    start, end = xml.index("<corral:guest>"), xml.index("</corral:guest>") + len("</corral:guest>")
    assert xml[start:end] == (
        "<corral:guest>\n"
        "      <corral:image>tiny</corral:image>\n"
        "      <corral:readiness>serial</corral:readiness>\n"
        '      <corral:load cpu="12.5" disk="64" net="8" />\n'
        f"      <corral:console-log>{tmp_path}/web/console.log</corral:console-log>\n"
        f"      <corral:owned-file>{tmp_path}/web/disk0.qcow2</corral:owned-file>\n"
        f"      <corral:owned-file>{tmp_path}/web/nvram.fd</corral:owned-file>\n"
        "      <corral:storage>files</corral:storage>\n"
        "    </corral:guest>"
    )
    assert f'<domain xmlns:corral="{CORRAL_NS}" type="qemu">' in xml


def test_a_load_trace_is_written_on_the_load_element(tmp_path: Path) -> None:
    """A trace adds two attributes to `<corral:load>` (older versions read past them, and see cpu=0);
    a guest without one is written as before (above)."""
    load = LoadSpec.from_trace([10, 80, 35], speed=60, disk_kbps=64)
    xml = build_domain_xml(DomainPlan(**{**_plan(tmp_path).__dict__, "load": load,
                                         "cmdline": tiny_cmdline("console=ttyS0", "web", load)}))
    assert '      <corral:load cpu="0" disk="64" net="0" trace="10,80,35" step="5" />\n' in xml
    assert ("<cmdline>console=ttyS0 corral.name=web corral.disk=64 corral.trace=0a5023 corral.step_ms=5000"
            "</cmdline>") in xml
    meta = parse_domain_xml(xml).meta
    assert meta is not None and meta.load == load


#: A value other than the default for every declared field: a field added to CorralMeta without one
#: here fails the test below, so its round trip gets checked.
EVERY_FIELD = {
    "image": "debian-12",
    "readiness": "running",
    "load": LoadSpec(37.5, 640, 12),
    "console_log": Path("/srv/corral/guests/web/console.log"),
    "owned_files": (Path("/srv/corral/guests/web/disk0.qcow2"), Path("/srv/corral/guests/web/vars & <fd>")),
    "storage": "pool",
    "tags": ("web", "prod"),
}


def test_every_declared_metadata_field_round_trips() -> None:
    import xml.etree.ElementTree as ET

    assert [name for name, _spelling, _default in GUEST_META] == list(EVERY_FIELD)
    for name, _spelling, default in GUEST_META:
        assert EVERY_FIELD[name] != default, f"{name}: pick a value that is not the default"
    meta = CorralMeta(**EVERY_FIELD)  # type: ignore[arg-type]
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = "web"
    write_meta(ET.SubElement(dom, "metadata"), meta)
    assert parse_domain_xml(ET.tostring(dom, encoding="unicode")).meta == meta
    # ... and every field alone, the others left out: each reads back, the rest as their defaults
    for name, _spelling, _default in GUEST_META:
        one = CorralMeta(**{name: EVERY_FIELD[name]})  # type: ignore[arg-type]
        dom = ET.Element("domain")
        write_meta(ET.SubElement(dom, "metadata"), one)
        assert parse_domain_xml(ET.tostring(dom, encoding="unicode")).meta == one
    empty = ET.Element("domain")
    ET.SubElement(ET.SubElement(empty, "metadata"), f"{{{CORRAL_NS}}}guest")
    assert parse_domain_xml(ET.tostring(empty, encoding="unicode")).meta == CorralMeta()


def test_unknown_metadata_is_ignored_and_kept_by_a_clone(tmp_path: Path) -> None:
    """A newer Corral's fields (or anyone's) in the metadata: read past, and carried over to a clone."""
    xml = build_domain_xml(_plan(tmp_path))
    expected = parse_domain_xml(xml).meta
    assert expected is not None
    note = f'<corral:guest-note xmlns:corral="{CORRAL_NS}">hi</corral:guest-note>'  # beside, not inside
    xml = (xml.replace("<corral:guest>", '<corral:guest><corral:host since="2">node-2</corral:host>'
                       "<corral:label>web</corral:label><other:x xmlns:other=\"urn:other\">1</other:x>")
              .replace('<corral:load cpu="15"', '<corral:load future="yes" cpu="15"')
              .replace("<metadata>", "<metadata>" + note))
    assert parse_domain_xml(xml).meta == expected
    cloned = clone_domain_xml(xml, "web2", {tmp_path / "web" / "disk0.qcow2": tmp_path / "web2" / "disk0.qcow2"},
                              tmp_path / "web2" / "console.log", "0d5c0c1e-9b7a-4a51-8f26-1f7c5d3c9e21")
    assert '<corral:host since="2">node-2</corral:host>' in cloned and "<corral:label>web</corral:label>" in cloned
    assert 'future="yes"' in cloned and "urn:other" in cloned
    meta = parse_domain_xml(cloned).meta
    assert meta is not None and meta.owned_files == (tmp_path / "web2" / "disk0.qcow2",)
    assert (meta.image, meta.readiness, meta.load) == (expected.image, expected.readiness, expected.load)
    assert "guest-note" in cloned


def test_unreadable_or_empty_metadata_reads_as_the_defaults(tmp_path: Path) -> None:
    xml = build_domain_xml(_plan(tmp_path))
    xml = (xml.replace('cpu="15"', 'cpu="lots"').replace("<corral:readiness>serial</corral:readiness>",
                                                         "<corral:readiness />")
              .replace("<corral:image>tiny</corral:image>", ""))
    meta = parse_domain_xml(xml).meta
    assert meta is not None
    assert (meta.image, meta.readiness, meta.load) == ("", "agent", LoadSpec(0, 64, 8))
    foreign = "<domain><name>x</name><metadata><app xmlns='urn:app'/></metadata></domain>"
    assert parse_domain_xml(foreign).meta is None


def test_hostile_strings_stay_inside_their_element(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    hostile = DomainPlan(**{**plan.__dict__, "cmdline": "a'b<c>&\"</cmdline><evil/>"})
    xml = build_domain_xml(hostile)
    assert "<evil" not in xml
    import xml.etree.ElementTree as ET

    assert ET.fromstring(xml).findtext("os/cmdline") == "a'b<c>&\"</cmdline><evil/>"


def _validate(xml: str, schema: str, tmp_path: Path) -> None:
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        if IN_CI:
            pytest.fail("virt-xml-validate is missing (Debian package libvirt-clients)")
        pytest.skip("virt-xml-validate is not installed")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    result = subprocess.run([tool, str(path), schema], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + result.stdout


def test_generated_xml_passes_virt_xml_validate(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    _validate(build_domain_xml(plan), "domain", tmp_path)
    disk_only = DomainPlan(**{**plan.__dict__, "kernel": None, "initrd": None, "cmdline": None,
                              "domain_type": "kvm", "readiness": "agent"})
    _validate(build_domain_xml(disk_only), "domain", tmp_path)
    _validate(snapshot_xml("before-upgrade", "a snapshot"), "domainsnapshot", tmp_path)


def test_clone_xml_moves_owned_files_and_renames(tmp_path: Path) -> None:
    xml = build_domain_xml(_plan(tmp_path))
    old_disk = tmp_path / "web" / "disk0.qcow2"
    new_disk = tmp_path / "web2" / "disk0.qcow2"
    cloned = clone_domain_xml(xml, "web2", {old_disk: new_disk}, tmp_path / "web2" / "console.log",
                              "0d5c0c1e-9b7a-4a51-8f26-1f7c5d3c9e21")
    facts = parse_domain_xml(cloned)
    assert facts.name == "web2" and facts.uuid == "0d5c0c1e-9b7a-4a51-8f26-1f7c5d3c9e21"
    assert facts.no_relabel
    assert facts.meta is not None and facts.meta.owned_files == (new_disk,)
    assert facts.meta.console_log == tmp_path / "web2" / "console.log"
    assert "corral.name=web2" in cloned and "corral.name=web " not in cloned
    assert tmp_path / "install.iso" in [d.path for d in facts.disks]  # shared, not copied
    _validate(cloned, "domain", tmp_path)


def test_network_xml(tmp_path: Path) -> None:
    from corral.core.domxml import build_network_xml

    xml = build_network_xml("corral", "corralbr0", "192.168.123.0/24", "nat")
    assert "192.168.123.1" in xml and "<forward mode=\"nat\"" in xml
    _validate(xml, "network", tmp_path)
    isolated = build_network_xml("lab", "labbr0", "10.99.0.0/28", "isolated")
    assert "forward" not in isolated
    _validate(isolated, "network", tmp_path)
    for cidr, mode in [("192.168.123.0/30", "nat"), ("192.168.123.1/24", "nat"), ("10.0.0.0/24", "bridge")]:
        with pytest.raises(ValueError):
            build_network_xml("x", "xbr0", cidr, mode)


def test_domain_on_a_network_gets_a_tap(tmp_path: Path) -> None:
    plan = DomainPlan(**{**_plan(tmp_path).__dict__, "network": "corral"})
    xml = build_domain_xml(plan)
    assert '<interface type="network">' in xml and '<source network="corral"' in xml
    _validate(xml, "domain", tmp_path)


def test_guest_xml_relabels_nothing_and_spells_out_the_backing_chain(tmp_path: Path) -> None:
    """libvirt's DAC driver must not chown a base image, ISO, kernel or initrd: the domain says so, and an
    overlay's base is named in the XML with nothing below it (QEMU follows no chain of the file's own)."""
    plan = _plan(tmp_path)
    base = tmp_path / "base.qcow2"
    overlay = DiskPlan(tmp_path / "web" / "disk0.qcow2", "qcow2", backing=base, backing_format="qcow2")
    xml = build_domain_xml(DomainPlan(**{**plan.__dict__, "disks": (overlay, *plan.disks[1:])}))
    facts = parse_domain_xml(xml)
    assert facts.no_relabel and facts.uuid == plan.uuid
    assert facts.disks[0].backing == base and facts.disks[0].backing_format == "qcow2"
    import xml.etree.ElementTree as ET

    store = ET.fromstring(xml).find("devices/disk/backingStore")
    assert store is not None and store.find("backingStore") is not None and len(store.find("backingStore") or []) == 0
    _validate(xml, "domain", tmp_path)


def test_harden_brings_an_older_definition_up_to_date(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(build_domain_xml(_plan(tmp_path)))
    for seclabel in root.findall("seclabel"):
        root.remove(seclabel)
    old = ET.tostring(root, encoding="unicode")
    assert not parse_domain_xml(old).no_relabel
    disk0 = tmp_path / "web" / "disk0.qcow2"
    hardened = harden_domain_xml(old, {disk0: (tmp_path / "base.raw", "raw")})
    assert hardened is not None
    facts = parse_domain_xml(hardened)
    assert facts.no_relabel and facts.disks[0].backing == tmp_path / "base.raw"
    assert harden_domain_xml(hardened, {disk0: (tmp_path / "base.raw", "raw")}) is None  # nothing left to do
    _validate(hardened, "domain", tmp_path)


def test_specs_refuse_nonsense_sizes_and_types() -> None:
    for bad in ({"disk": 1e-20}, {"disk": True}, {"vcpus": True}, {"memory": 256.5}, {"vcpus": "2x"},
                {"memory": 10**400}, {"load": {"cpu": 10**400}}):
        with pytest.raises(InvalidInput):
            spec_from_mapping({"name": "web", "image": "tiny", **bad})
    with pytest.raises(InvalidInput, match="whole number"):
        GuestSpec("web", "tiny", vcpus=True)


def test_place_is_one_answer_with_failures_as_values() -> None:
    from corral.core.capacity import Capacity, Demand, HostState, place

    host = HostState("h1", (Capacity("cpu", "cores", 2.0), Capacity("memory", "MiB", 1000.0)))
    after = place(host, Demand("a", {"cpu": 1.5, "memory": 400}))
    assert isinstance(after, HostState) and after.used("cpu") == 1.5 and host.guests == ()  # a new value
    again = place(after, Demand("a", {"cpu": 1.8, "memory": 400}))  # the same guest, resized: replaced
    assert isinstance(again, HostState) and again.used("cpu") == pytest.approx(1.8)
    refused = place(after, Demand("b", {"cpu": 1.0, "memory": 700}))
    assert isinstance(refused, tuple) and {v.resource for v in refused} == {"cpu", "memory"}
    assert {v.resource: v.excess for v in refused} == pytest.approx({"cpu": 0.5, "memory": 100.0})
    assert "would use 2.50 of 2 cores, 0.50 cores over" in refused[0].describe()
    # The admission guard is that model with its own capacities.
    from corral.core.capacity import admission_state

    state = admission_state("h", HOST, LIMITS, [footprint("g", 1, 512, 50, LIMITS)])
    assert [b.resource for b in state.budgets()] == ["vcpus", "memory", "cpu"]
    assert state.used("cpu") == pytest.approx(0.5)
