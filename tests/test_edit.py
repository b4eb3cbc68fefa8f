"""Autostart, `corral set` (live and for the next boot), tags and bulk actions, against the real libvirt daemon
and real tiny guests (TCG here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.core.capacity import footprint
from corral.core.domxml import parse_domain_xml
from corral.core.errors import AdmissionRefused, Conflict, InvalidInput
from corral.core.resources import Change, read_resources
from corral.core.spec import GuestSpec
from corral.services.context import Corral

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))


def name(label: str) -> str:
    return f"ct-{label}-{uuid.uuid4().hex[:6]}"


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          check=True).stdout


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORRAL_BIN, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "250"}, timeout=600)


def dominfo(guest: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in virsh("dominfo", guest).splitlines())
            if k.strip()}


def console_run(corral: Corral, guest: str, command: str, marker: str, timeout: float = 20) -> str:
    with corral.guests.open_console(guest) as console:
        console.send(b"\n")
        time.sleep(0.3)
        console.send(command.encode() + b"\n")
        return console.expect(marker.encode(), timeout).decode(errors="replace")


def mem_total_kib(corral: Corral, guest: str) -> int:
    """MemTotal in the guest's /proc/meminfo, read through its serial console."""
    out = console_run(corral, guest, "echo MT=$(awk '/MemTotal/ {print $2}' /proc/meminfo)=E$((1+1))", "=E2")
    found = re.findall(r"MT=(\d+)=E2", out)
    assert found, out
    return int(found[-1])


def until(check: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(1)
    return check()


def autostart_memory(corral: Corral, but: str) -> int:
    """The memory the admission guard counts for the local host's other autostart guests (any test's)."""
    lv = corral.libvirt
    total = 0
    for row in lv.rows():
        if row.name != but and lv.autostart(row.name):
            facts = parse_domain_xml(lv.xml(row.name, inactive=True))
            total += footprint(row.name, facts.vcpus, facts.memory_mib, None, corral.settings.limits).memory_mib
    return total


@pytest.mark.libvirt
def test_autostart_is_libvirts_and_checked_with_the_other_autostart_guests(
        corral: Corral, override: Callable[..., None]) -> None:
    guest = name("auto")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    assert dominfo(guest)["Autostart"] == "disable"
    result = cli("autostart", guest, "on")
    assert result.returncode == 0, result.stderr
    assert "autostart on" in result.stdout
    assert dominfo(guest)["Autostart"] == "enable"
    assert json.loads(cli("info", guest, "--json").stdout)["autostart"] is True
    row = next(r for r in json.loads(cli("list", "--json").stdout) if r["name"] == guest)
    assert row["autostart"] is True
    table = cli("list").stdout
    assert re.search(rf"^ *{guest} .* yes +- *$", table, re.M), table
    assert re.search(r"^ *Domain-0 .* - +- *$", table, re.M), table
    result = cli("autostart", guest, "off")
    assert result.returncode == 0 and dominfo(guest)["Autostart"] == "disable"
    bad = cli("autostart", guest, "maybe")
    assert bad.returncode == 2 and "say on or off" in bad.stderr and dominfo(guest)["Autostart"] == "disable"

    # The guard, as if every autostart guest of the host started together: room for all of them but this
    # guest's last MiB is refused; exactly enough room is admitted. Figures from the host as it is now.
    total = corral.host.facts().memory_mib
    others = autostart_memory(corral, guest)
    lenient = {"vcpu_overcommit": 1000.0, "cap": 1.0, "assumed_guest_utilization": 0.0, "memory_overcommit": 1.0}
    override(limits={**lenient, "memory_reserve_mib": total - (others + 128 - 1)})
    with pytest.raises(AdmissionRefused, match=rf"{guest} cannot start with its host .*memory"):
        corral.edit.set_autostart(guest, True)
    assert dominfo(guest)["Autostart"] == "disable"
    override(limits={**lenient, "memory_reserve_mib": total - (others + 128)})
    assert corral.edit.set_autostart(guest, True).autostart
    assert dominfo(guest)["Autostart"] == "enable"
    corral.edit.set_autostart(guest, False)


@pytest.mark.libvirt
@pytest.mark.guest
def test_set_memory_live_and_for_the_next_boot(corral: Corral) -> None:
    guest = name("mem")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=160))
    # For the next boot: a maximum above its memory, so that a live raise is possible once it runs.
    result = cli("set", guest, "--max-memory", "256")
    assert result.returncode == 0, result.stderr
    info = dominfo(guest)
    assert info["Max memory"] == "262144 KiB" and info["Used memory"] == "163840 KiB"
    corral.guests.start(guest, wait=True)
    before = mem_total_kib(corral, guest)

    # Live: the balloon gives the guest 64 MiB more, within its maximum; the definition says so too.
    result = cli("set", guest, "--memory", "224", "--live")
    assert result.returncode == 0, result.stderr
    assert "now 1 vCPUs (max 1), 224 MiB (max 256)" in result.stdout
    assert until(lambda: "actual 229376" in virsh("dommemstat", guest))
    assert until(lambda: dominfo(guest)["Used memory"] == "229376 KiB"), dominfo(guest)
    assert read_resources(virsh("dumpxml", "--inactive", guest)).memory_mib == 224
    assert until(lambda: mem_total_kib(corral, guest) >= before + 60 * 1024), (before, mem_total_kib(corral, guest))

    # Refused changes change nothing: beyond the running maximum, more than the host has, out of range.
    config = virsh("dumpxml", "--inactive", guest)
    with pytest.raises(InvalidInput, match="at most 256 MiB while it runs"):
        corral.edit.set_resources(guest, Change(memory_mib=512), live=True)
    with pytest.raises(AdmissionRefused, match="memory"):
        corral.edit.set_resources(guest, Change(memory_mib=1024 * 1024))
    result = cli("set", guest, "--vcpus", "65")
    assert result.returncode == 2 and "vcpus=65 must be between 1 and 64" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli("set", guest, "--memory", "128", "--max-memory", "96")
    assert result.returncode == 2 and "below the 128 MiB" in result.stderr
    assert virsh("dumpxml", "--inactive", guest) == config
    assert "actual 229376" in virsh("dommemstat", guest)

    # Down again, live only within the guest, and for the next boot.
    corral.edit.set_resources(guest, Change(memory_mib=160), live=True)
    assert until(lambda: "actual 163840" in virsh("dommemstat", guest))
    assert until(lambda: mem_total_kib(corral, guest) <= before + 4 * 1024)
    assert read_resources(virsh("dumpxml", "--inactive", guest)).memory_mib == 160

    # Without --live on a running guest: the definition only (the running guest keeps its balloon).
    corral.edit.set_resources(guest, Change(memory_mib=192))
    assert read_resources(virsh("dumpxml", "--inactive", guest)).memory_mib == 192
    time.sleep(2)
    assert "actual 163840" in virsh("dommemstat", guest)
    # --live on a shut-off guest is refused.
    corral.guests.poweroff(guest)
    with pytest.raises(Conflict, match="--live changes a running guest"):
        corral.edit.set_resources(guest, Change(memory_mib=128), live=True)


@pytest.mark.libvirt
@pytest.mark.guest
def test_tags_filtered_list_and_a_bulk_shutdown_with_one_failing(corral: Corral) -> None:
    a, b, off = name("tag-a"), name("tag-b"), name("tag-off")
    tag = f"t{uuid.uuid4().hex[:6]}"
    for guest in (a, b):
        corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128), start=True, wait=True)
    corral.guests.create(GuestSpec(off, "tiny", memory_mib=128))
    for guest in (a, b, off):
        result = cli("tag", guest, tag, "web")
        assert result.returncode == 0 and f"{guest}: {tag}, web" in result.stdout, result.stderr
    assert cli("tag", b, "solo").returncode == 0
    assert cli("untag", b, "web").returncode == 0
    assert corral.guests.info(b).tags == [tag, "solo"]
    # In the domain XML (live and the definition), so they survive a restart and travel with a migration.
    assert f"<corral:tag>{tag}</corral:tag>" in virsh("dumpxml", "--inactive", a)
    assert f"<corral:tag>{tag}</corral:tag>" in virsh("dumpxml", a)

    # Bad tags: one clear error, nothing changed.
    for bad in ("bad tag", "<b>x</b>", "Prod"):
        result = cli("tag", a, bad)
        assert result.returncode == 2 and "invalid tag" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert corral.guests.info(a).tags == [tag, "web"]

    listed = json.loads(cli("list", "--tag", tag, "--json").stdout)
    assert sorted(r["name"] for r in listed) == sorted([a, b, off])
    assert [r["name"] for r in json.loads(cli("list", "--tag", "solo", "--json").stdout)] == [b]
    assert tag in cli("list", "--tag", tag).stdout

    # A bulk shutdown: the shut-off one fails, the others are done, and the exit code says so.
    result = cli("shutdown", "--tag", tag, "--timeout", "90")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{a}: shut-off" in result.stdout and f"{b}: shut-off" in result.stdout
    assert off in result.stderr and "shut-off" in result.stderr
    assert f"tag {tag}: 2 of 3 guest(s) done, 1 failed" in result.stdout
    for guest in (a, b):
        assert virsh("domstate", guest).strip() == "shut off"
    # A snapshot of each, shut off now: all succeed.
    result = cli("snapshot", "create", "--tag", tag, "before")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tag {tag}: 3 of 3 guest(s) done" in result.stdout
    assert all(s.name == "before" for g in (a, b, off) for s in corral.guests.snapshot_list(g))
    # Names and --tag together, or neither: refused.
    assert cli("poweroff", a, "--tag", tag).returncode == 2
    assert cli("poweroff").returncode == 2
    assert cli("start", "--tag", "no-such-tag").returncode == 1


@pytest.mark.libvirt
def test_a_domain_corral_did_not_make_cannot_be_tagged(corral: Corral, tmp_path: Path) -> None:
    other = name("virsh")
    xml = tmp_path / "other.xml"
    xml.write_text(f"<domain type='qemu'><name>{other}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
                   "<os><type arch='x86_64'>hvm</type></os></domain>")
    virsh("define", str(xml))
    try:
        with pytest.raises(Conflict, match="not made by Corral"):
            corral.edit.tag(other, ["web"])
        result = cli("tag", other, "web")
        assert result.returncode == 1 and "not made by Corral" in result.stderr
        assert "corral:" not in virsh("dumpxml", other)
    finally:
        virsh("undefine", other)


@pytest.mark.libvirt
@pytest.mark.guest
def test_vcpus_for_the_next_boot_and_hot_plugged_within_the_maximum(
        corral: Corral, override: Callable[..., None]) -> None:
    guest = name("cpu")
    corral.guests.create(GuestSpec(guest, "tiny", memory_mib=128))
    result = cli("set", guest, "--max-vcpus", "2")
    assert result.returncode == 0, result.stderr
    assert virsh("vcpucount", guest, "--config", "--maximum").strip() == "2"
    assert virsh("vcpucount", guest, "--config", "--current").strip() == "1"
    corral.guests.start(guest, wait=True)
    # The guard beside the running guests, whatever else runs now: room for exactly one more vCPU.
    running = sum(f.vcpus for f in corral.host.running_footprints())
    cores = corral.host.facts().cores
    override(limits={"vcpu_overcommit": running / cores, "cap": 1.0, "assumed_guest_utilization": 0.0})
    with pytest.raises(AdmissionRefused, match="vCPUs"):
        corral.edit.set_resources(guest, Change(vcpus=2), live=True)
    assert virsh("vcpucount", guest, "--live", "--active").strip() == "1"
    assert virsh("vcpucount", guest, "--config", "--current").strip() == "1"
    override(limits={"vcpu_overcommit": (running + 1) / cores})
    result = corral.edit.set_resources(guest, Change(vcpus=2), live=True)
    assert result.live is not None and result.live.vcpus == 2 and result.next_boot.vcpus == 2
    assert virsh("vcpucount", guest, "--live", "--active").strip() == "2"
    assert virsh("vcpucount", guest, "--config", "--current").strip() == "2"
    with pytest.raises(InvalidInput, match="at most 2 vCPUs while it runs"):
        corral.edit.set_resources(guest, Change(vcpus=3), live=True)
