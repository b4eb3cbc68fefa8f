"""The live balancer's pure core: the same policy as the simulator, its decisions named and screened."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from corral.consolidation.live import BalancerRules, LiveGuest, LiveHost, build_state, empty_hosts, plan_round
from corral.consolidation.policies import decide, parse_policy
from corral.consolidation.state import Migrate
from corral.core.capacity import CapacityLimits
from corral.planning.catalog import load_catalog

POWER = tuple(load_catalog()["ml110-g5"].power_w)
LIMITS = CapacityLimits()
FREE = BalancerRules(max_migrations=100, cooldown_s=0.0, min_gain_w=0.0)
NOW = 1_000_000.0


def hosts(n: int, *, power: bool = True, standby: tuple[str, ...] = ()) -> list[LiveHost]:
    return [LiveHost(f"h{i}", 2, 2600.0, 8192, f"h{i}" not in standby, f"h{i}" in standby, power, POWER)
            for i in range(1, n + 1)]


def guest(name: str, host: str, level: float, *, steps: int = 12, last_move: float = -math.inf) -> LiveGuest:
    return LiveGuest(name, host, 1, 256, tuple([level] * steps), last_move_s=last_move)


def apply(hs: list[LiveHost], gs: list[LiveGuest], r: object) -> tuple[list[LiveHost], list[LiveGuest]]:
    from corral.consolidation.live import Round

    assert isinstance(r, Round)
    moved = {m.guest: m.dest for m in r.moves}
    off = {s.host for s in r.standbys}
    on = {w.host for w in r.wakes}
    new_hosts = [LiveHost(h.name, h.cores, h.mhz, h.memory_mib, (h.up or h.name in on) and h.name not in off,
                          (h.standby or h.name in off) and h.name not in on, h.can_power, h.power_w) for h in hs]
    return new_hosts, [LiveGuest(g.name, moved.get(g.name, g.host), g.vcpus, g.memory_mib, g.history) for g in gs]


def test_the_live_round_makes_the_policys_own_decisions() -> None:
    """One core: with permissive rules, the moves are exactly the policy's Migrate decisions on the state
    built from the live cluster (nothing re-decided beside it)."""
    hs = hosts(4)
    gs = [guest("a", "h1", 0.2), guest("b", "h2", 0.1), guest("c", "h3", 0.3), guest("d", "h4", 0.05)]
    state, histories = build_state(hs, gs, LIMITS, NOW, 300.0)
    policy = [(d.vm, d.source, d.target) for d in decide(state, histories, parse_policy("corral"))
              if isinstance(d, Migrate)]
    live = plan_round(hs, gs, LIMITS, FREE, NOW, 300.0)
    names = [h.name for h in hs]
    assert [(m.guest, m.source, m.dest) for m in live.moves] == [
        (gs[v].name, names[s], names[t]) for v, s, t in policy]
    assert live.moves and all("host h" in m.reason for m in live.moves)  # numbers became names


def test_rounds_pack_the_sprawl_onto_one_host_and_put_the_rest_in_standby() -> None:
    hs = hosts(5)
    gs = [guest(n, f"h{i}", level) for i, (n, level) in enumerate(
        [("web", 0.15), ("mail", 0.12), ("files", 0.10), ("db", 0.18), ("ldap", 0.08)], 1)]
    rules = BalancerRules(max_migrations=2, cooldown_s=0.0)
    for _ in range(5):
        r = plan_round(hs, gs, LIMITS, rules, NOW, 300.0, {g.host: 1 for g in gs})
        if r.empty:
            break
        assert len(r.moves) <= 2
        hs, gs = apply(hs, gs, r)
    assert len({g.host for g in gs}) == 1
    assert sum(1 for h in hs if h.standby) == 4
    assert r.empty and "no moves" in r.summary


def test_an_overloaded_host_is_relieved_waking_a_host_in_standby() -> None:
    hs = hosts(3, standby=("h2", "h3"))
    gs = [guest("hot", "h1", 0.95), guest("warm", "h1", 0.9)]
    r = plan_round(hs, gs, LIMITS, BalancerRules(), NOW, 300.0)
    assert [m.kind for m in r.moves] == ["overload"] and r.moves[0].source == "h1"
    assert [w.host for w in r.wakes] == [r.moves[0].dest]  # woken first, for the move that needs it
    assert "forecast" in r.moves[0].expected
    # Without a power driver, a host in standby cannot be woken: the round says so.
    stuck = plan_round(hosts(3, power=False, standby=("h2", "h3")), gs, LIMITS, BalancerRules(), NOW, 300.0)
    assert not stuck.moves and any("no power driver" in x.why for x in stuck.refused)


def test_safety_rules_refuse_and_say_why() -> None:
    hs = hosts(3)
    gs = [guest("a", "h1", 0.2), guest("b", "h2", 0.2, last_move=NOW - 60), guest("c", "h3", 0.2)]
    r = plan_round(hs, gs, LIMITS, BalancerRules(max_migrations=1, cooldown_s=600.0), NOW, 300.0)
    assert len(r.moves) <= 1
    whys = " | ".join(x.why for x in r.refused)
    assert "cool-down" in whys or "at most 1 migration" in whys
    assert all(m.guest != "b" or m.kind == "overload" for m in r.moves)
    big_gain = plan_round(hs, gs, LIMITS, BalancerRules(min_gain_w=10_000.0, cooldown_s=0.0), NOW, 300.0)
    assert not big_gain.moves and "minimum gain" in big_gain.summary
    # The destination's admission guard: memory it does not have refuses the move.
    tight = [LiveHost(h.name, h.cores, h.mhz, 1024 + 300, h.up, h.standby, h.can_power, h.power_w) for h in hs]
    squeezed = plan_round(tight, gs, LIMITS, FREE, NOW, 300.0)
    assert not squeezed.moves


def test_a_quiet_round_says_why_it_did_nothing() -> None:
    hs = hosts(2)
    gs = [guest("a", "h1", 0.9), guest("b", "h2", 0.9)]  # 1.8 cores: not on one 2-core host under 85 %
    r = plan_round(hs, gs, LIMITS, BalancerRules(), NOW, 300.0)
    assert r.empty and r.summary.startswith("no moves") and "%" in r.summary
    empty = [*hosts(2), LiveHost("h9", 2, 2600.0, 8192, True, False, False, POWER)]
    standbys, refused = empty_hosts(empty, gs, {"h1": 1, "h2": 1}, BalancerRules())
    assert standbys == [] and [r.what for r in refused] == ["standby h9"] and "no power driver" in refused[0].why
    assert plan_round([], [], LIMITS, BalancerRules(), NOW, 300.0).summary.startswith("nothing to balance")


@pytest.mark.parametrize("policy", ["thr-mmt-0.8", "lr-mmt-1.2", "corral"])
def test_any_policy_of_the_simulator_can_balance_live(policy: str) -> None:
    hs = hosts(3)
    gs = [guest("a", "h1", 0.95, steps=12), guest("b", "h1", 0.95), guest("c", "h2", 0.05)]
    r = plan_round(hs, gs, LIMITS, BalancerRules(policy=policy, cooldown_s=0.0), NOW, 300.0)
    assert r.summary


def test_no_move_the_destinations_admission_guard_would_refuse() -> None:
    """The guard counts each guest's declared (or assumed) CPU, as the migration will ask it: three guests
    declaring 40 % of a vCPU do not go onto a host whose cap leaves 0.85 cores, however quiet they measure."""
    hs = hosts(3)
    gs = [LiveGuest(n, f"h{i}", 1, 256, tuple([0.02] * 12), declared_cpu_pct=40.0)
          for i, n in enumerate(("a", "b", "c"), 1)]
    limits = CapacityLimits(cap=0.425)  # 0.85 of a 2-core host's cores
    r = plan_round(hs, gs, limits, FREE, NOW, 300.0)
    after: dict[str, int] = {}
    where = {g.name: g.host for g in gs} | {m.guest: m.dest for m in r.moves}
    for host in where.values():
        after[host] = after.get(host, 0) + 1
    assert max(after.values()) <= 2  # two fit (0.8 cores), three do not (1.2)
    assert r.moves  # the quiet cluster is still packed as far as the guard allows
    assert any("admission guard" in x.why for x in r.refused) or len(r.moves) == 1


def test_the_cooldown_counts_from_the_last_move_done_or_failed(tmp_path: Path) -> None:
    from corral.adapters.auditlog import AuditLog

    log = AuditLog(tmp_path / "balancer.sqlite")
    round_id = log.start_round("automatic")
    log.record(round_id, "move", "packing", "done in 2.1 s, downtime 80 ms", guest="a", source="h1", dest="h2")
    log.record(round_id, "move", "packing", "failed: h3 is full", guest="b", source="h1", dest="h3")
    log.record(round_id, "move", "packing", "recommended", guest="c", source="h1", dest="h3")
    assert set(log.last_moves()) == {"a", "b"}


def test_an_overload_whose_load_just_stepped_up_is_relieved_though_the_step_widens_its_forecast() -> None:
    """Every host is up and busy, so none can be woken; two guests on h3 have just stepped from 2 % to 45 %
    of a core. The step sits in their spread for a whole window, so no host keeps its *upper* forecast
    under the cap with one of them; still h3 is over its cap now, and h1 takes one with its expected load
    well under the cap and a smaller risk than h3's: the move is made rather than waiting out the window."""
    limits = CapacityLimits(cap=0.3)  # 0.6 of a core on these two-core hosts
    stepped = tuple([0.02] * 20 + [0.45] * 4)
    quiet = tuple([0.02] * 24)
    hs = hosts(3)
    def g(name: str, host: str, history: tuple[float, ...], declared: float) -> LiveGuest:
        return LiveGuest(name, host, 1, 128, history, declared_cpu_pct=declared)  # as their load traces declare

    gs = [g("cold1", "h1", quiet, 2), g("cold2", "h1", quiet, 2), g("hot2", "h2", tuple([0.40] * 24), 27),
          g("cold3", "h2", quiet, 2), g("hot1", "h3", stepped, 27), g("hot3", "h3", stepped, 27)]
    r = plan_round(hs, gs, limits, BalancerRules(cooldown_s=0.0), NOW, 300.0, {"h1": 2, "h2": 2, "h3": 2})
    assert [(m.source, m.dest, m.kind) for m in r.moves] == [("h3", "h1", "overload")], r.summary
    assert r.moves[0].guest in {"hot1", "hot3"}
    # Where the relief would only move the overload elsewhere, nothing moves.
    crowded = [g(x.name, x.host, tuple([0.40] * 24) if x.host == "h1" else x.history, 27) for x in gs]
    assert not plan_round(hs, crowded, limits, BalancerRules(cooldown_s=0.0), NOW, 300.0).moves
