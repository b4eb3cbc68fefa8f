"""Benchmark of the consolidation planner on the real traces (prints figures, no assertions).

    .venv/bin/python bench/plan.py [--budget 5] [--days 20110303,...] [--skip-10k]

For each PlanetLab day (ML110 G5 hosts, cap 85 %, CPU only) and for the Bitbrains week (CPU,
memory, disk and network): hosts used, lower bound, ratio, the peak-FFD baseline and the plain
time-series first fit measured in the same run, planning time, and an independent check that no
host goes over the cap at any step. Then the out-of-sample overload for 20110322 -> 20110325, and
10,000 servers resampled from PlanetLab VMs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from corral.planning import (
    TraceSet,
    load_catalog,
    load_traces,
    make_traceset,
    plan_consolidation,
    validate_plan,
)
from corral.planning.planner import Plan, Validation

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the project
DAYS = ("20110303", "20110306", "20110309", "20110322", "20110325")


def steps_over_cap(plan: Plan) -> int:
    """Independent check: host-steps above the cap, summing raw demand per host."""
    bad = 0
    for members in plan.hosts:
        for r in plan.resources:
            load = plan.traces.demand[r][members].sum(axis=0)
            bad += int((load > plan.cap * plan.host_kind.capacity(r) * (1 + 1e-9)).sum())
    return bad


def row(label: str, plan: Plan) -> str:
    lb = plan.lower_bound
    return (
        f"{label:<22} {plan.traces.n_servers:>6} {plan.n_hosts:>6} {lb:>5} {plan.n_hosts / lb:>6.3f} "
        f"{plan.first_fit_hosts:>5} {plan.first_fit_hosts / lb:>6.3f} {plan.peak_ffd_hosts:>5} "
        f"{plan.peak_ffd_hosts / lb:>6.3f} {plan.elapsed_s:>7.2f} {steps_over_cap(plan):>5} {len(plan.unplaceable):>5}"
    )


HEADER = (
    f"{'instance':<22} {'vms':>6} {'hosts':>6} {'lb':>5} {'ratio':>6} {'ffd':>5} {'ratio':>6} {'peak':>5} "
    f"{'ratio':>6} {'time s':>7} {'over':>5} {'unpl':>5}"
)


def resample(days: list[TraceSet], n: int, seed: int = 0) -> TraceSet:
    """n synthetic servers: PlanetLab VMs drawn at random from several days, each rolled in time
    by a random offset so no two copies peak together by construction."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate([d.demand["cpu"] for d in days])
    caps = np.concatenate([d.capacity["cpu"] for d in days])
    pick = rng.integers(0, pool.shape[0], n)
    shift = rng.integers(0, pool.shape[1], n)
    cpu = np.stack([np.roll(pool[i], s) for i, s in zip(pick, shift, strict=True)])
    return make_traceset([f"vm{i:05d}" for i in range(n)], {"cpu": cpu}, {"cpu": caps[pick]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=5.0, help="time budget per plan, seconds")
    ap.add_argument("--days", default=",".join(DAYS))
    ap.add_argument("--skip-10k", action="store_true")
    args = ap.parse_args()
    kinds = load_catalog()
    g5 = kinds["ml110-g5"]
    print(f"planner benchmark, time budget {args.budget} s per plan")
    print(
        "columns: hosts (plan), lb (lower bound), ffd (plain time-series first fit), peak (FFD by each server's "
        "peak), over (host-steps above the cap, checked independently), unpl (unplaceable)\n"
    )
    print(HEADER)
    loaded: dict[str, TraceSet] = {}
    for day in args.days.split(","):
        ts = load_traces([DATA / "planetlab" / f"{day}.tar.gz"], "planetlab")
        loaded[day] = ts
        plan = plan_consolidation(ts, g5, 0.85, resources=["cpu"], time_budget_s=args.budget)
        print(row(f"planetlab {day}", plan), flush=True)

    bb = load_traces([DATA / "bitbrains-rnd" / "2013-7-week1-100vms.tar.gz"], "bitbrains")
    for kind in ("dl360-g10", "ml110-g5"):
        plan = plan_consolidation(bb, kinds[kind], 0.85, resources=bb.resources, time_budget_s=args.budget)
        print(row(f"bitbrains {kind}", plan), flush=True)
    print("  bitbrains data notes: " + " | ".join(bb.notes))

    print("\nout of sample: plan on 20110322, replay on 20110325 (G5, CPU)")
    a = loaded.get("20110322") or load_traces([DATA / "planetlab" / "20110322.tar.gz"])
    b = loaded.get("20110325") or load_traces([DATA / "planetlab" / "20110325.tar.gz"])
    print(
        f"{'cap':>5} {'pctl':>5} {'hosts':>6} {'over cap':>9} {'over 100%':>10} {'hosts>cap':>10} "
        f"{'hosts>100':>10} {'worst':>7}"
    )
    for cap, pct in ((0.85, None), (0.75, None), (0.85, 95.0), (0.70, None)):
        plan = validate_plan(plan_consolidation(a, g5, cap, pct, ["cpu"], time_budget_s=args.budget), b, "20110325")
        v = plan.validation
        assert v is not None
        print(
            f"{cap:>5.2f} {pct or '-':>5} {plan.n_hosts:>6} {100 * v.over_cap_fraction:>8.2f}% "
            f"{100 * v.over_100_fraction:>9.3f}% {v.hosts_ever_over_cap:>10} {v.hosts_ever_over_100:>10} "
            f"{100 * v.max_utilization:>6.1f}%"
        )
        last: Validation = v
    print(f"  ({last.servers_matched} VMs in both days, {len(last.servers_missing)} only on 20110322, "
          f"{len(last.servers_new)} only on 20110325 and ignored)")  # fmt: skip

    if not args.skip_10k:
        print("\n10,000 servers resampled from PlanetLab VMs (G5, cap 85 %, CPU)")
        big = resample(list(loaded.values()), 10_000)
        print(HEADER)
        for budget in (0.0, args.budget):
            t = time.perf_counter()
            plan = plan_consolidation(big, g5, 0.85, resources=["cpu"], time_budget_s=budget)
            wall = time.perf_counter() - t
            print(row(f"10k budget {budget:g} s", plan) + f"   wall {wall:.2f} s", flush=True)


if __name__ == "__main__":
    main()
