"""The consolidation policy on a live cluster (pure): measured hosts and guests in, the policy's
`ClusterState` and `Histories` built from them, its decisions named and screened for safety out.

The policy is the one the simulator runs (`policies.decide`); this module only translates between
the live cluster's plain data and the policy's arrays, and adds the rules a live balancer needs on
top (at most N migrations a round, a cool-down per guest, the destination's admission guard and its
forecast after the move, a minimum gain). The balancer service (services/balancer.py) reads the
cluster and the monitoring history, calls `plan_round`, and carries out what it returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from corral.consolidation.policies import decide, parse_policy
from corral.consolidation.state import ClusterState, Histories, Migrate, SwitchOff, SwitchOn
from corral.core.capacity import CapacityLimits, HostFacts, HostState, admission_capacity, footprint, place

MIGRATION_MBPS = 62.5  # MB/s a live migration gets: half of a 1 Gbit/s link, as CloudSim counts it
HISTORY_INTERVALS = 48  # intervals of each guest's history the policy sees


@dataclass(frozen=True)
class LiveHost:
    """A host as the balancer sees it."""

    name: str
    cores: int
    mhz: float
    memory_mib: int
    up: bool  # reachable and not in standby
    standby: bool
    can_power: bool  # has a power driver: can be put in standby and woken
    power_w: tuple[float, ...]  # 11 points: watts at 0, 10, ..., 100 % CPU
    awake_since_s: float = -math.inf


@dataclass(frozen=True)
class LiveGuest:
    """A running guest as the balancer sees it."""

    name: str
    host: str
    vcpus: int
    memory_mib: int
    history: tuple[float, ...]  # CPU utilization of its own vCPUs (0..1) per past interval, oldest first
    declared_cpu_pct: float | None = None
    last_move_s: float = -math.inf


@dataclass(frozen=True)
class BalancerRules:
    policy: str = "corral"
    max_migrations: int = 2  # per round
    cooldown_s: float = 1800.0  # a guest that moved is left alone this long, unless its host overloads
    min_gain_w: float = 1.0  # an emptying move must save at least this much power
    standby: bool = True  # put hosts that were emptied in standby


@dataclass(frozen=True)
class Move:
    guest: str
    source: str
    dest: str
    kind: str  # overload | underload | rebalance
    reason: str
    expected: str  # what the move should bring about (the destination's forecast, the power saved)


@dataclass(frozen=True)
class Wake:
    host: str
    reason: str


@dataclass(frozen=True)
class Standby:
    host: str
    reason: str


@dataclass(frozen=True)
class Refused:
    what: str  # the decision as the policy made it, named
    why: str


@dataclass(frozen=True)
class Round:
    """One balancing round: what to do, in order, and what the policy proposed that was refused."""

    wakes: tuple[Wake, ...]
    moves: tuple[Move, ...]
    standbys: tuple[Standby, ...]
    refused: tuple[Refused, ...] = ()
    summary: str = ""
    forecast_pct: Mapping[str, float] = field(default_factory=dict)  # each up host's upper forecast, % of cap

    @property
    def empty(self) -> bool:
        return not (self.wakes or self.moves or self.standbys)


def build_state(hosts: Sequence[LiveHost], guests: Sequence[LiveGuest], limits: CapacityLimits, now_s: float,
                step_s: float) -> tuple[ClusterState, Histories]:
    """The policy's view of the live cluster. CPU in MHz-equivalents (a host: cores x MHz; a guest: its
    vCPUs x its host's core MHz), memory what the admission guard allows guests; a host in standby has
    no guests and counts as off, as an empty host does in the policy."""
    m, n = len(hosts), len(guests)
    index = {h.name: i for i, h in enumerate(hosts)}
    core = np.array([h.mhz for h in hosts], dtype=np.float64)
    capacity = np.array([h.cores * h.mhz * limits.cap for h in hosts], dtype=np.float64)
    memory = np.array([max(0.0, (h.memory_mib - limits.memory_reserve_mib) * limits.memory_overcommit)
                       for h in hosts], dtype=np.float64)
    width = max(n, 1)
    count = np.zeros(m, dtype=np.int64)
    members = np.zeros((m, width), dtype=np.int64)
    vm_host = np.full(n, -1, dtype=np.int64)
    vm_mips = np.zeros(n)
    vm_demand = np.zeros(n)
    full = np.zeros((n, HISTORY_INTERVALS))
    full_len = np.zeros(n, dtype=np.int64)
    for v, guest in enumerate(guests):
        h = index[guest.host]
        vm_host[v] = h
        members[h, count[h]] = v
        count[h] += 1
        vm_mips[v] = guest.vcpus * core[h]
        history = guest.history[-HISTORY_INTERVALS:]
        full[v, :len(history)] = history
        full_len[v] = len(history)
        level = history[-1] if history else (guest.declared_cpu_pct or 25.0) / 100
        vm_demand[v] = level * vm_mips[v]
    used = np.zeros(m)
    np.add.at(used, vm_host, vm_demand)
    recent = np.zeros((n, 10))
    recent_len = np.minimum(full_len, 10)
    for v in range(n):
        k = int(full_len[v])
        recent[v, :min(k, 10)] = full[v, max(0, k - 10):k][::-1]
    state = ClusterState(
        time_s=now_s, step_s=step_s, host_names=tuple(h.name for h in hosts), capacity=capacity, core_mips=core,
        power_curve=np.array([h.power_w for h in hosts], dtype=np.float64), memory_mb=memory,
        migration_mbps=np.full(m, MIGRATION_MBPS), utilization=np.divide(used, capacity, out=np.zeros(m),
                                                                         where=capacity > 0),
        count=count, members=members, incoming=np.zeros((m, width), dtype=np.bool_),
        vm_names=tuple(g.name for g in guests), vm_mips=vm_mips, vm_ram_mb=np.array([g.memory_mib for g in guests],
                                                                                    dtype=np.float64),
        vm_demand=vm_demand, vm_host=vm_host, vm_in_migration=np.zeros(n, dtype=np.bool_),
        vm_cores=np.array([g.vcpus for g in guests], dtype=np.float64),
        vm_last_move_s=np.array([g.last_move_s for g in guests], dtype=np.float64),
        awake_since_s=np.array([h.awake_since_s for h in hosts], dtype=np.float64),
        enforce_memory=True,
    )
    return state, Histories(recent, recent_len, full, full_len)


def _named(text: str, hosts: Sequence[str], guests: Sequence[str]) -> str:
    """The policy's reason with names for its host and guest numbers, and its capacities called caps
    (the live state's capacity is the host's cap x its CPU)."""
    text = re.sub(r"\bhost (\d+)", lambda m: f"host {hosts[int(m.group(1))]}", text)
    text = re.sub(r"\bguest (\d+)", lambda m: f"guest {guests[int(m.group(1))]}", text)
    text = re.sub(r"forecast under (\d+%)", r"forecast under \1 of its cap", text)
    text = text.replace("forecast over capacity", "forecast over its cap").replace("of its capacity", "of its cap")
    return text.removeprefix("corral: ")


def plan_round(hosts: Sequence[LiveHost], guests: Sequence[LiveGuest], limits: CapacityLimits, rules: BalancerRules,
               now_s: float, step_s: float, defined: Mapping[str, int] | None = None) -> Round:
    """One round: the policy's decisions on the live cluster, named, screened and summed up in words.
    `defined`: how many guests (running or not) each host holds: a host with shut-off guests on it is
    not put in standby."""
    defined = defined or {}
    up = [h for h in hosts if h.up or h.standby]  # unreachable hosts are left out of the round
    known = {h.name for h in up}
    on_them = [g for g in guests if g.host in known]
    if not up or not on_them:
        return Round((), (), (), summary="nothing to balance: no running guest on a host that answers")
    if len(up) < 2:
        return Round((), (), (), summary=f"nothing to balance: {up[0].name} is the only host")
    # The forecaster's compiled kernels load here, not at import: a server with one host never needs them.
    from corral.consolidation.corral import DEFAULTS, forecast

    state, histories = build_state(up, on_them, limits, now_s, step_s)
    spec = parse_policy(rules.policy)
    decisions = decide(state, histories, spec)
    names, gnames = state.host_names, state.vm_names
    params = {**DEFAULTS, **spec.options} if spec.is_corral else DEFAULTS
    mean, var = forecast(state, histories)
    by_name = {h.name: h for h in up}

    # Everything is screened on running totals: each accepted move changes what the next one sees.
    load = {h: float(mean[state.vm_host == i].sum()) for i, h in enumerate(names)}
    spread = {h: float(var[state.vm_host == i].sum()) for i, h in enumerate(names)}
    # The destination's admission guard, as the migration will ask it (declared or assumed CPU included):
    # a move it would refuse is not proposed, round after round.
    demand = {g.name: footprint(g.name, g.vcpus, g.memory_mib, g.declared_cpu_pct, limits).demand for g in on_them}
    admission = {h.name: HostState(h.name, admission_capacity(HostFacts(h.cores, h.memory_mib), limits),
                                   tuple(demand[g.name] for g in on_them if g.host == h.name)) for h in up}
    wakes: list[Wake] = []
    moves: list[Move] = []
    standbys: list[Standby] = []
    refused: list[Refused] = []
    woken = {h.name for h in up if h.up}

    def source_peak(host: str) -> float:
        i = names.index(host)
        return (load[host] + params["z"] * math.sqrt(max(spread[host], 0.0))) / float(state.capacity[i])

    for decision in decisions:
        if isinstance(decision, SwitchOn):
            continue  # a wake is added below, for a move that needs it
        if isinstance(decision, SwitchOff):
            host = names[decision.host]
            still = [g for g in on_them if g.host == host and g.name not in {m.guest for m in moves}]
            resting = defined.get(host, 0) - sum(1 for g in on_them if g.host == host)
            if still:
                refused.append(Refused(f"standby {host}", f"{', '.join(g.name for g in still)} would still be there"))
            elif resting > 0:
                refused.append(Refused(f"standby {host}", f"{resting} shut-off guest(s) are defined there"))
            elif not rules.standby:
                refused.append(Refused(f"standby {host}", "standby is off in the balancer's rules"))
            elif not by_name[host].can_power:
                refused.append(Refused(f"standby {host}", f"{host} has no power driver: it stays on, empty "
                                                          "(corral host add … --power command|wol|ipmi)"))
            else:
                standbys.append(Standby(host, _named(decision.reason, names, gnames)))
            continue
        assert isinstance(decision, Migrate)
        guest = on_them[decision.vm]
        source, dest = names[decision.source], names[decision.target]
        what = f"{guest.name}: {source} -> {dest}"
        if len(moves) >= rules.max_migrations:
            refused.append(Refused(what, f"at most {rules.max_migrations} migration(s) a round"))
            continue
        if decision.kind != "overload" and now_s - guest.last_move_s < rules.cooldown_s:
            refused.append(Refused(what, f"{guest.name} moved {now_s - guest.last_move_s:.0f} s ago (cool-down "
                                         f"{rules.cooldown_s:.0f} s)"))
            continue
        gain = decision.expected_gain_w
        if decision.kind == "underload" and not (math.isnan(gain) or gain >= rules.min_gain_w):
            refused.append(Refused(what, f"saves {gain:.1f} W, under the minimum gain of {rules.min_gain_w:g} W"))
            continue
        v = decision.vm
        after_mu, after_var = load[dest] + float(mean[v]), spread[dest] + float(var[v])
        cap = float(state.capacity[decision.target])
        upper = after_mu + params["z"] * math.sqrt(max(after_var, 0.0))
        # Relief may trade a certain overload for a smaller risk (the policy's last resort): its expected
        # load must fit, and its upper forecast stay below the source's now.
        relief_ok = (decision.kind == "overload" and after_mu <= params["target"] * cap + 1e-9
                     and upper / cap < source_peak(source) - 1e-9)
        if upper > params["target"] * cap + 1e-9 and not relief_ok:
            refused.append(Refused(what, f"{dest}'s forecast after the move would be {upper / cap:.0%} of its cap"))
            continue
        placed = place(admission[dest], demand[guest.name])
        if isinstance(placed, tuple):
            refused.append(Refused(what, f"{dest}'s admission guard: " + "; ".join(p.describe() for p in placed)))
            continue
        if dest not in woken:
            if not by_name[dest].can_power:
                refused.append(Refused(what, f"{dest} is in standby and has no power driver to wake it"))
                continue
            wakes.append(Wake(dest, f"{dest} wakes: no running host has room for {guest.name}"))
            woken.add(dest)
        admission[dest] = placed
        admission[source] = admission[source].without(guest.name)
        load[dest], spread[dest] = after_mu, after_var
        load[source] -= float(mean[v])
        spread[source] -= float(var[v])
        expected = f"{dest} forecast {upper / cap:.0%} of its cap after the move"
        if decision.kind == "underload" and not math.isnan(gain):
            expected += f"; about {gain:.1f} W saved"
        moves.append(Move(guest.name, source, dest, decision.kind, _named(decision.reason, names, gnames), expected))
    forecast_pct = {h: 100.0 * (load[h] + params["z"] * math.sqrt(max(spread[h], 0.0))) / float(state.capacity[i])
                    for i, h in enumerate(names) if by_name[h].up and state.capacity[i] > 0}
    result = Round(tuple(wakes), tuple(moves), tuple(standbys), tuple(refused), forecast_pct=forecast_pct)
    return Round(result.wakes, result.moves, result.standbys, result.refused, _summary(result, up, on_them),
                 forecast_pct)


def _summary(round_: Round, hosts: Sequence[LiveHost], guests: Sequence[LiveGuest]) -> str:
    """What the round does, or why it does nothing, in one line."""
    if not round_.empty:
        parts = []
        if round_.wakes:
            parts.append(f"wake {', '.join(w.host for w in round_.wakes)}")
        if round_.moves:
            parts.append(f"{len(round_.moves)} migration(s)")
        if round_.standbys:
            parts.append(f"standby {', '.join(s.host for s in round_.standbys)}")
        return "; ".join(parts)
    if round_.refused:
        return "no moves: " + "; ".join(f"{r.what}: {r.why}" for r in round_.refused[:3])
    busy = [h for h in hosts if h.up and any(g.host == h.name for g in guests)]
    worst = max(round_.forecast_pct.values(), default=0.0)
    return (f"no moves: no host is forecast over its cap (highest {worst:.0f} %), and none of the {len(busy)} "
            "busy host(s) can be emptied onto the others within their caps")


def empty_hosts(hosts: Sequence[LiveHost], guests: Sequence[LiveGuest], defined: Mapping[str, int],
                rules: BalancerRules) -> tuple[list[Standby], list[Refused]]:
    """Hosts up with no guest defined on them at all: candidates for standby (the policy counts an empty
    host as off; the live balancer makes it so)."""
    if not rules.standby:
        return [], []
    busy = {g.host for g in guests}
    standbys, refused = [], []
    for host in hosts:
        if not host.up or host.name in busy or defined.get(host.name, 0) > 0:
            continue
        if host.can_power:
            standbys.append(Standby(host.name, f"{host.name} holds no guest: standby saves its idle power"))
        else:
            refused.append(Refused(f"standby {host.name}", f"{host.name} is empty but has no power driver"))
    return standbys, refused
