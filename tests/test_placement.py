"""Placement across hosts (pure): filters, weighers, explanations, and evacuation plans."""

from __future__ import annotations

import pytest

from corral.adapters.power import magic_packet
from corral.core.capacity import Capacity, Demand, HostState
from corral.core.errors import InvalidInput
from corral.core.placement import Candidate, choose, plan_moves


def host(name: str, cpu_used: float = 0.0, memory_used: float = 0.0, **states: bool) -> Candidate:
    capacity = HostState(name, (Capacity("cpu", "cores", 2.0), Capacity("memory", "MiB", 1000.0)),
                         (Demand("busy", {"cpu": cpu_used, "memory": memory_used}),))
    return Candidate(name, reachable=states.pop("reachable", True), capacity=capacity, **states)


def test_filters_remove_hosts_with_their_reasons_and_pack_prefers_the_busiest() -> None:
    hosts = [host("idle"), host("busy", 1.0, 300), host("off", reachable=False), host("maint", maintenance=True),
             host("sleep", standby=True), host("full", 1.9, 100), Candidate("noimg", True, capacity=host("x").capacity,
                                                                             has_image=False, why_no_image="no share")]
    placement = choose(hosts, Demand("g", {"cpu": 0.5, "memory": 200}))
    assert placement.chosen == "busy"
    assert {h: f for h, (f, _why) in placement.removed.items()} == {
        "off": "reachable", "maint": "not-in-maintenance", "sleep": "not-in-standby", "full": "admission",
        "noimg": "image"}
    assert "cpu" in placement.removed["full"][1] and placement.removed["noimg"][1] == "no share"
    assert choose(hosts, Demand("g", {"cpu": 0.5, "memory": 200}), "spread").chosen == "idle"
    lines = placement.explain()
    assert "off: removed by reachable: libvirt there does not answer" in lines
    assert any(line.startswith("busy: pack weight") and line.endswith("<- chosen") for line in lines)
    nothing = choose(hosts[2:5], Demand("g", {"cpu": 0.5}))
    assert nothing.chosen is None and "off: libvirt there does not answer" in nothing.refusal("g")
    with pytest.raises(InvalidInput, match="unknown weigher"):
        choose(hosts, Demand("g"), "random")


def test_an_evacuation_plan_counts_each_guest_it_places_and_spreads_them() -> None:
    hosts = [host("a"), host("b")]
    guests = [Demand(f"g{i}", {"cpu": 0.6, "memory": 300}) for i in range(6)]
    plan = plan_moves(hosts, guests)
    assert len(plan.moves) == 6 and not plan.unplaced
    per_host = {h: sum(1 for d in plan.moves.values() if d == h) for h in ("a", "b")}
    assert per_host == {"a": 3, "b": 3}  # spread, and 3 x 0.6 = 1.8 cores fit 2 cores per host
    too_many = plan_moves(hosts, [*guests, Demand("g6", {"cpu": 0.6, "memory": 300})])
    assert list(too_many.unplaced) == ["g6"] and "cpu" in too_many.unplaced["g6"]  # never over a host's room


def test_wake_on_lan_packet() -> None:
    packet = magic_packet("52:54:00:12:34:56")
    assert packet[:6] == b"\xff" * 6 and packet[6:12] == bytes.fromhex("525400123456") and len(packet) == 102
    with pytest.raises(InvalidInput):
        magic_packet("not-a-mac")


def test_a_host_others_cannot_reach_takes_no_migrations() -> None:
    from corral.core.hosts import HostSpec

    assert not HostSpec("local", "qemu:///system").reachable_by_peers
    assert HostSpec("h2", "qemu+tcp://10.0.0.2/system").reachable_by_peers
    assert HostSpec("h3", "qemu+unix:///system?socket=/srv/h3/libvirt-sock").reachable_by_peers
    local = Candidate("local", True, capacity=host("x").capacity, reachable_by_peers=False)
    plan = plan_moves([local, host("b")], [Demand("g", {"cpu": 0.1, "memory": 10})])
    assert plan.moves == {"g": "b"}
    assert choose([local], Demand("g", {"cpu": 0.1})).chosen == "local"  # a new guest may go there
