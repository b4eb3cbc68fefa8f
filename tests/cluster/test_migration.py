"""Live and offline migration between lab hosts, its faults, and its refusals. Whatever fails, the guest
is never lost and never runs twice: it keeps running on the source, and nothing of it is left on the
destination. (Under TCG, QEMU 7.2 can corrupt a guest that dirties memory fast during a live migration;
these guests only burn CPU, which ../shared/notes/virt-host.md measured safe.)"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from corral.core.errors import AdmissionRefused, BackendError, Conflict, InvalidInput, NotFound
from corral.core.spec import GuestSpec, LoadSpec
from corral.services.migration import MigrationAborted
from tests.cluster.conftest import Cluster

pytestmark = [pytest.mark.libvirt, pytest.mark.cluster, pytest.mark.guest]


def _guest(cluster: Cluster, load: LoadSpec) -> Iterator[str]:
    name = cluster.name("mig")
    cluster.corral.guests.create(GuestSpec(name, "tiny", memory_mib=128, load=load), host="lab1", start=True,
                                 wait=True)
    yield name
    if cluster.corral.hosts.owner(name) is not None:
        cluster.corral.guests.delete(name)


@pytest.fixture
def guest(cluster: Cluster) -> Iterator[str]:
    """A tiny guest on lab1 burning 30 % of its vCPU."""
    yield from _guest(cluster, LoadSpec(cpu_pct=30))


@pytest.fixture
def loaded_guest(cluster: Cluster) -> Iterator[str]:
    """A tiny guest on lab1 burning 30 % of its vCPU and reading and writing its disk, gently (16 KiB/s: a
    guest dirtying memory fast can be corrupted by TCG's live migration, see the module's docstring)."""
    yield from _guest(cluster, LoadSpec(cpu_pct=30, disk_kbps=16))


def disk_requests(cluster: Cluster, name: str) -> int:
    """The guest's disk requests so far, read and written, from its host's bulk statistics."""
    owner = cluster.corral.hosts.owner(name)
    assert owner is not None
    for domain, _id, stats in owner.libvirt.all_stats():
        if domain == name:
            count = int(stats.get("block.count", 0))  # type: ignore[call-overload]
            return sum(int(stats.get(f"block.{i}.{kind}.reqs", 0))  # type: ignore[call-overload]
                       for i in range(count) for kind in ("rd", "wr"))
    raise AssertionError(f"{name} is not running on {owner.name}")


def cpu_seconds(cluster: Cluster, name: str) -> float:
    return cluster.corral.guests.info(name).cpu_time_s


def still_working(cluster: Cluster, name: str) -> None:
    """The guest runs where it is: its CPU time rises and its console answers."""
    before = cpu_seconds(cluster, name)
    time.sleep(1.5)
    assert cpu_seconds(cluster, name) > before
    with cluster.corral.guests.open_console(name) as console:
        console.send(b"\n")
        time.sleep(0.3)
        console.send(b"echo alive-$((20+22))\n")
        assert b"alive-42" in console.expect(b"alive-42", 20)


def still_writing(cluster: Cluster, name: str) -> None:
    """Its disk load goes on where it runs now: the disk requests its host counts rise."""
    before = disk_requests(cluster, name)
    deadline = time.monotonic() + 20
    while disk_requests(cluster, name) <= before:
        assert time.monotonic() < deadline, f"{name}'s disk requests stayed at {before}"
        time.sleep(0.5)


def test_live_migration_both_ways(cluster: Cluster, loaded_guest: str) -> None:
    """A loaded guest goes and comes back; on each host its CPU time and disk counters go on rising."""
    guest = loaded_guest
    c = cluster.corral
    result = cluster.cli("migrate", guest, "lab2")
    assert result.returncode == 0, result.stderr
    assert "moved from lab1 to lab2" in result.stdout and "downtime" in result.stdout
    assert c.guests.info(guest).host == "lab2" and not c.hosts.get("lab1").libvirt.exists(guest)
    still_working(cluster, guest)
    still_writing(cluster, guest)
    back = c.migration.migrate(guest, "lab1")
    assert (back.source, back.dest, back.live) == ("lab2", "lab1", True)
    assert back.downtime_ms is not None and back.downtime_ms < 2000 and back.memory_bytes > 0
    assert c.guests.info(guest).host == "lab1" and not c.hosts.get("lab2").libvirt.exists(guest)
    still_working(cluster, guest)
    still_writing(cluster, guest)


def test_offline_migration_moves_the_definition(cluster: Cluster, guest: str) -> None:
    c = cluster.corral
    c.guests.poweroff(guest)
    result = c.migration.migrate(guest, "lab3")
    assert not result.live and c.guests.info(guest).host == "lab3"
    assert c.guests.info(guest).state == "shut-off" and not c.hosts.get("lab1").libvirt.exists(guest)
    c.guests.start(guest, wait=True)
    still_working(cluster, guest)


def _on_source_only(cluster: Cluster, name: str, source: str, dest: str) -> None:
    c = cluster.corral
    assert c.hosts.get(source).libvirt.state(name) == "running"
    assert not c.hosts.get(dest).libvirt.exists(name)


def _while_migrating(cluster: Cluster, name: str, dest: str, act: object) -> BaseException:
    """Start a slow migration (1 MiB/s), call `act()` once it is under way, return what it raised."""
    assert callable(act)
    raised: list[BaseException] = []
    cancel = threading.Event()
    started = threading.Event()

    def run() -> None:
        try:
            cluster.corral.migration.migrate(name, dest, bandwidth_mib_s=1, cancel=cancel,
                                             progress=lambda job: job.memory_total and started.set())
        except BaseException as exc:  # what the caller would see
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(60), "the migration did not start"
    act(cancel)
    thread.join(120)
    assert not thread.is_alive()
    assert raised, "the migration was expected to fail"
    return raised[0]


def test_abort_in_mid_migration_keeps_the_guest_on_the_source(cluster: Cluster, guest: str) -> None:
    error = _while_migrating(cluster, guest, "lab2", lambda cancel: cancel.set())
    assert isinstance(error, MigrationAborted) and "runs on lab1" in error.message
    _on_source_only(cluster, guest, "lab1", "lab2")
    still_working(cluster, guest)


def test_destination_qemu_killed_in_mid_migration(cluster: Cluster, guest: str) -> None:
    pid_file = cluster.lab.get("lab2").root / "run" / "qemu" / f"{guest}.pid"

    def kill_incoming_qemu(_cancel: object) -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)

    error = _while_migrating(cluster, guest, "lab2", kill_incoming_qemu)
    assert isinstance(error, BackendError) and "is on lab1" in error.message
    _on_source_only(cluster, guest, "lab1", "lab2")
    still_working(cluster, guest)


def test_destination_daemon_killed_in_mid_migration(cluster: Cluster, guest: str) -> None:
    try:
        error = _while_migrating(cluster, guest, "lab3", lambda _cancel: cluster.lab.stop("lab3"))
        assert isinstance(error, BackendError) and "is on lab1" in error.message
    finally:
        cluster.lab.start("lab3")
    _on_source_only(cluster, guest, "lab1", "lab3")
    still_working(cluster, guest)


def test_refusals_before_anything_moves(cluster: Cluster, guest: str) -> None:
    c = cluster.corral
    with pytest.raises(InvalidInput, match="already on host lab1"):
        c.migration.check(guest, "lab1")
    with pytest.raises(NotFound, match="no host named"):
        c.migration.check(guest, "nowhere")
    with pytest.raises(NotFound, match="no domain"):
        c.migration.check(cluster.name("ghost"), "lab2")
    with pytest.raises(Conflict, match="--offline moves a shut-off guest"):
        c.migration.check(guest, "lab2", offline=True)
    with pytest.raises(InvalidInput, match="--bandwidth"):
        c.migration.check(guest, "lab2", bandwidth_mib_s=0)
    c.hosts.set_state("lab2", maintenance=True)
    try:
        with pytest.raises(Conflict, match="in maintenance"):
            c.migration.check(guest, "lab2")
    finally:
        c.hosts.set_state("lab2", maintenance=False)
    c.hosts.set_state("lab3", standby=True)
    try:
        with pytest.raises(Conflict, match="in standby"):
            c.migration.check(guest, "lab3")
    finally:
        c.hosts.set_state("lab3", standby=False)
    cluster.lab.stop("lab2")
    try:
        with pytest.raises(BackendError, match="does not answer"):
            c.migration.check(guest, "lab2")
    finally:
        cluster.lab.start("lab2")
    # A destination without room: the admission guard there says so, naming the host.
    original = c.settings
    tight = replace(original, limits=replace(original.limits, memory_reserve_mib=10**7))
    c.settings = c.guests.settings = c.host.settings = tight
    try:
        with pytest.raises(AdmissionRefused, match=r"memory.*on host lab2"):
            c.migration.check(guest, "lab2")
    finally:
        c.settings = c.guests.settings = c.host.settings = original
    # A destination that does not share storage needs --copy-storage (tests/cluster/test_storage.py
    # copies), and an ISO that is not one of Corral's images cannot go along.
    with pytest.raises(Conflict, match="--copy-storage"):
        c.migration.check(guest, "lab4")
    result = cluster.cli("migrate", guest, "lab1")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    _on_source_only(cluster, guest, "lab1", "lab2")
