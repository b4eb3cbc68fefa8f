"""Benchmark of the live balancer's decisions on a large cluster (prints figures).

    .venv/bin/python bench/balance.py [--day 20110303] [--guests 1000] [--hosts 100] [--intervals 288]

The balancer's round is `consolidation.live.plan_round`: the live cluster's hosts and guests (each
guest's history of measured CPU) in, the policy's decisions, named and screened, out. Here it runs on
1,000 guests on 100 hosts whose CPU follows a real PlanetLab day, one round per 5-minute interval of
the day, the moves of each round applied before the next (as a balancer whose migrations finish
within the interval). Printed:

- the decision time per round (median, 95th percentile, worst) against the goal of 1 s;
- the migrations the balancer made, against those the simulator (`corral simulate`'s engine, the same
  policy core, realistic model) predicts for the same guests, traces, hosts and starting placement;
- the host-intervals where a host's measured load was over its cap, for both.

Guests are one vCPU at the host's core speed (the live balancer's own sizing), with the day's RAM
sizes; hosts are `legacy-1u` (4 cores at 2.4 GHz) with 32 GiB; both sides get the same capacities (the
cap, the memory the admission guard leaves to guests).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

import numpy as np

from corral.consolidation.live import BalancerRules, LiveGuest, LiveHost, Round, plan_round
from corral.consolidation.policies import make_policy
from corral.consolidation.state import ClusterState, Migrate
from corral.core.capacity import CapacityLimits
from corral.planning.catalog import load_catalog
from corral.simulation.engine import Simulation
from corral.simulation.fleet import build_fleet
from corral.simulation.workload import load_workload, workload_from_arrays

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KIND = "legacy-1u"
STEP_S = 300.0
GOAL_S = 1.0
HOST_MEMORY_MIB = 32768  # the catalog's 16 GiB leaves a day's 1,000 guests (1.1 TB) no room on 100 hosts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--day", default="20110303")
    ap.add_argument("--guests", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--policy", default="corral", help="the policy and its options, as in corral simulate")
    ap.add_argument("--intervals", type=int, default=0, help="rounds to run (0: the whole day)")
    args = ap.parse_args()

    day = load_workload([DATA / "planetlab" / f"{args.day}.tar.gz"])
    n = min(args.guests, day.n_vms)
    trace = np.clip(day.utilization[:n, :-1], 0.0, 1.0)
    steps = trace.shape[1] if args.intervals <= 0 else min(args.intervals, trace.shape[1])
    ram = day.ram_mb[:n]
    limits = CapacityLimits()
    kind = load_catalog()[KIND]
    memory_mib = HOST_MEMORY_MIB
    names = [f"g{i}" for i in range(n)]

    # The simulator: the same guests (one vCPU at the host's core speed), hosts with the live balancer's
    # capacities (the cap x CPU; the memory the admission guard leaves to guests), the same policy core.
    fleet = build_fleet(args.hosts, (KIND,))
    fleet = dataclasses.replace(
        fleet, capacity=fleet.capacity * limits.cap,
        memory_mb=np.full(args.hosts, (memory_mib - limits.memory_reserve_mib) * limits.memory_overcommit))
    workload = workload_from_arrays(names, trace[:, :steps], kind.core_mhz, ram, step_s=STEP_S)
    sim = Simulation(workload, fleet, "realistic")
    start: list[np.ndarray] = []
    sim_overloads = 0
    sim_busy: list[int] = []

    def watch(state: ClusterState, moves: list[Migrate]) -> None:
        nonlocal sim_overloads
        if not start:
            start.append(state.vm_host.copy())
        placed = state.vm_host >= 0
        asked = np.bincount(state.vm_host[placed], weights=state.vm_demand[placed], minlength=len(state.capacity))
        sim_overloads += int(np.sum(asked > state.capacity + 1e-9))
        sim_busy.append(int(np.sum(state.count > 0)))

    make_policy(args.policy, realistic=True)  # compile (or load) the kernels outside the timings
    t0 = time.perf_counter()
    result = sim.run(make_policy(args.policy, realistic=True), hook=watch, keep_series=False)
    sim_s = time.perf_counter() - t0

    # The live balancer, from the simulator's own starting placement.
    hosts = [LiveHost(f"host{i}", kind.cores, kind.core_mhz, memory_mib, True, False, True, tuple(kind.power_w))
             for i in range(args.hosts)]
    where = [f"host{int(h)}" for h in start[0]]
    last_move = [-math.inf] * n
    rules = BalancerRules(args.policy, max_migrations=n, cooldown_s=0.0, min_gain_w=0.0)  # the policy's own pace
    times: list[float] = []
    busy: list[int] = []
    moves = wakes = standbys = overloads = 0
    cap_mhz = kind.cores * kind.core_mhz * limits.cap
    for k in range(1, steps):
        now = k * STEP_S
        lo = max(0, k - 48)
        guests = [LiveGuest(names[v], where[v], 1, int(ram[v]), tuple(trace[v, lo:k]), last_move_s=last_move[v])
                  for v in range(n)]
        t0 = time.perf_counter()
        plan: Round = plan_round(hosts, guests, limits, rules, now, STEP_S)
        times.append(time.perf_counter() - t0)
        on = {w.host for w in plan.wakes}
        off = {s.host for s in plan.standbys}
        hosts = [dataclasses.replace(h, up=(h.up or h.name in on) and h.name not in off,
                                     standby=(h.standby or h.name in off) and h.name not in on) for h in hosts]
        index = {g: v for v, g in enumerate(names)}
        for m in plan.moves:
            where[index[m.guest]] = m.dest
            last_move[index[m.guest]] = now
        moves += len(plan.moves)
        wakes += len(plan.wakes)
        standbys += len(plan.standbys)
        load: dict[str, float] = {}
        for v in range(n):
            load[where[v]] = load.get(where[v], 0.0) + trace[v, k] * kind.core_mhz
        overloads += sum(1 for used in load.values() if used > cap_mhz + 1e-9)
        busy.append(len(load))

    print(f"== the live balancer's round on {n} guests and {args.hosts} hosts ({KIND}), PlanetLab {args.day}, "
          f"{len(times)} rounds, policy {args.policy}")
    median, worst = statistics.median(times), max(times)
    p95 = sorted(times)[max(0, math.ceil(0.95 * len(times)) - 1)]
    print(f"decision time per round: median {median:.3f} s, p95 {p95:.3f} s, worst {worst:.3f} s "
          f"(goal <= {GOAL_S:g} s: {'yes' if worst <= GOAL_S else 'NO'})")
    print(f"{'':<24} {'migrations':>10} {'busy hosts: mean':>17} {'at end':>7} {'host-intervals over the cap':>28}")
    print(f"{'live balancer (rounds)':<24} {moves:>10} {statistics.mean(busy):>17.1f} {busy[-1]:>7} {overloads:>28}")
    print(f"{'simulator (same core)':<24} {result.migrations:>10} {statistics.mean(sim_busy):>17.1f} "
          f"{sim_busy[-1]:>7} {sim_overloads:>28}")
    ratio = moves / result.migrations if result.migrations else float("nan")
    print(f"live / simulator migrations: {ratio:.2f}  (simulated day in {sim_s:.2f} s; "
          f"balancer: {wakes} wakes, {standbys} standbys)")


if __name__ == "__main__":
    main()
