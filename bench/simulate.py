"""Benchmark of the dynamic-consolidation simulator on the five PlanetLab days (prints figures).

    .venv/bin/python bench/simulate.py [--days 20110303,...] [--realistic] [--cv] [--bitbrains]

For each day and policy: the simulated day's run time and peak memory (resident set, sampled
every 5 ms while it runs). Then the side-by-side table: CloudSim 4.0's figures (tabled in
../shared/data/README.md), Corral's reproduction of each policy with its deviation, and Corral's
own policy with the three "at once" comparisons marked (energy below LR-MMT-1.2's, SLAV below the
lowest of the four, migrations below the fewest of the four) and the stretch goal (energy within
1.25 x the day's floor with at most a quarter of CloudSim's fewest migrations).

``--realistic`` also runs every policy in the realistic model; ``--cv`` runs the leave-one-day-out
cross-validation that chose Corral's tunables; ``--mixed N`` checks that Corral's policy still beats
the four on N unseen synthetic days (guests drawn from all five days, each shifted in time);
``--bitbrains`` runs the Bitbrains week on larger hosts in both models. Archives are unpacked into
temporary folders by the simulator itself.
"""

from __future__ import annotations

import argparse
import itertools
import re
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from corral.consolidation.policies import make_policy
from corral.simulation.engine import Simulation, SimulationResult
from corral.simulation.fleet import build_fleet
from corral.simulation.workload import Workload, load_workload, workload_from_arrays

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DAYS = ("20110303", "20110306", "20110309", "20110322", "20110325")
FOUR = ("THR-MMT-0.8", "IQR-MMT-1.5", "MAD-MMT-2.5", "LR-MMT-1.2")
TOL = {"energy": 0.03, "migrations": 0.10, "slatah": 0.10}


def reference() -> tuple[dict[tuple[str, str], dict[str, float]], dict[str, float]]:
    text = (DATA / "README.md").read_text(encoding="utf-8")
    row = re.compile(r"^\| (\d{8}) \| ([A-Z]+-[A-Z]+-[\d.]+) \| ([\d.]+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| "
                     r"([\d.]+) \| (\d+) \|$")
    ref: dict[tuple[str, str], dict[str, float]] = {}
    for line in text.splitlines():
        m = row.match(line.strip())
        if m:
            d, p, e, mig, sl, pdm, slav, sh = m.groups()
            ref[(d, p)] = {"energy": float(e), "migrations": float(mig), "slatah": float(sl), "pdm": float(pdm),
                           "slav": float(slav), "shutdowns": float(sh)}
    floors = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (\d{8}) \| ([\d.]+) \|$", text, re.M)}
    return ref, floors


class PeakRss:
    """Samples this process's resident set every 5 ms while active."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.peak = self.proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def warm_up() -> None:
    """Compile (or load from Numba's cache) every kernel outside the timings."""
    rng = np.random.default_rng(0)
    w = workload_from_arrays([f"v{i}" for i in range(6)], rng.random((6, 8)) * 0.6, 1000.0, 613.0)
    for model in ("cloudsim", "realistic"):
        sim = Simulation(w, build_fleet(4), model)
        for p in (*FOUR, "lrr-mc-1.2", "thr-rs-0.8", "mad-mu-2.5", "corral"):
            sim.run(make_policy(p, realistic=model == "realistic"))


def mark(ok: bool) -> str:
    return "yes" if ok else "NO"


def run_days(days: list[str], model: str) -> dict[tuple[str, str], tuple[SimulationResult, float]]:
    out: dict[tuple[str, str], tuple[SimulationResult, float]] = {}
    print(f"\n== run time and peak memory per simulated day ({model} model; 800 hosts, half ML110 G4, half G5)")
    print(f"{'day':<9} {'guests':>6} {'policy':<12} {'run s':>7} {'peak RSS MB':>12}")
    for day in days:
        w = load_workload([DATA / "planetlab" / f"{day}.tar.gz"])
        sim = Simulation(w, build_fleet(), model)
        for p in (*FOUR, "corral"):
            with PeakRss() as mem:
                r = sim.run(make_policy(p, realistic=model == "realistic"))
            out[(day, r.policy)] = (r, mem.peak / 2**20)
            print(f"{day:<9} {w.n_vms:>6} {r.policy:<12} {r.run_time_s:>7.2f} {mem.peak / 2**20:>12.0f}")
    return out


def faithfulness(days: list[str], res: dict[tuple[str, str], tuple[SimulationResult, float]]) -> None:
    ref, _ = reference()
    print("\n== CloudSim 4.0 (README table) vs Corral's reproduction, same day and policy")
    print(f"{'day':<9} {'policy':<12} {'energy kWh':>22} {'migrations':>22} {'SLATAH %':>20} {'PDM %':>13} "
          f"{'shutdowns':>13} {'within':>7}")
    worst = {k: 0.0 for k in TOL}
    for day in days:
        for p in FOUR:
            c = ref[(day, p)]
            r = res[(day, p)][0]
            dev = {"energy": r.energy_kwh / c["energy"] - 1, "migrations": r.migrations / c["migrations"] - 1,
                   "slatah": 100 * r.slatah / c["slatah"] - 1}
            for k, v in dev.items():
                worst[k] = max(worst[k], abs(v))
            ok = all(abs(dev[k]) <= TOL[k] for k in TOL)
            print(f"{day:<9} {p:<12} {c['energy']:>7.2f} {r.energy_kwh:>7.2f} {100 * dev['energy']:>+5.2f}% "
                  f"{c['migrations']:>7.0f} {r.migrations:>7} {100 * dev['migrations']:>+5.2f}% "
                  f"{c['slatah']:>5.2f} {100 * r.slatah:>5.2f} {100 * dev['slatah']:>+5.1f}% "
                  f"{c['pdm']:>5.2f} {100 * r.pdm:>5.2f}  {c['shutdowns']:>5.0f} {r.host_shutdowns:>5}  {mark(ok):>6}")
    print("largest deviation: " + ", ".join(f"{k} {100 * v:.2f} % (tolerance {100 * TOL[k]:.0f} %)"
                                            for k, v in worst.items()))


def corral_table(days: list[str], res: dict[tuple[str, str], tuple[SimulationResult, float]], model: str) -> None:
    _, floors = reference()
    print(f"\n== Corral's policy against the four, same simulator and accounting ({model} model)")
    print(f"{'day':<9} {'energy':>8} {'< LR':>8} {'SLAV e-5':>9} {'< min4':>7} {'migr.':>6} {'< min4':>7} "
          f"{'at once':>8} {'E/floor':>8} {'M/min4':>7} {'stretch':>8}")
    for day in days:
        four = [res[(day, p)][0] for p in FOUR]
        c = res[(day, "corral")][0]
        lr = res[(day, "LR-MMT-1.2")][0]
        e_ok = c.energy_kwh < lr.energy_kwh
        s_ok = c.slav < min(r.slav for r in four)
        m_min = min(r.migrations for r in four)
        m_ok = c.migrations < m_min
        m_ratio = c.migrations / m_min
        if model == "cloudsim":  # the floor is the README's, for the CloudSim model's demand
            e_ratio = c.energy_kwh / floors[day]
            tail = f"{e_ratio:>8.3f} {m_ratio:>7.3f} {mark(e_ratio <= 1.25 and m_ratio <= 0.25):>8}"
        else:
            tail = f"{'-':>8} {m_ratio:>7.3f} {'-':>8}"
        print(f"{day:<9} {c.energy_kwh:>8.2f} {lr.energy_kwh:>5.1f} {mark(e_ok):>2} {1e5 * c.slav:>9.4f} "
              f"{1e5 * min(r.slav for r in four):>4.2f} {mark(s_ok):>2} {c.migrations:>6} {m_min:>5} {mark(m_ok):>2} "
              f"{mark(e_ok and s_ok and m_ok):>8} {tail}")


def cv(days: list[str]) -> None:
    """Leave-one-day-out: for each day, choose the tunables that do best on the other four (the
    worst day's larger stretch ratio, energy / (1.25 floor) or migrations / (min4 / 4), lowest;
    configurations that miss the "at once" goal on a training day are out), score the held-out day."""
    _, floors = reference()
    grid = [f"corral:margin={m},dwell={d},migration_wh={w}"
            for m, d, w in itertools.product((0.05, 0.1, 0.2), (6, 12, 24), (5, 10, 15, 20))]
    works = {d: load_workload([DATA / "planetlab" / f"{d}.tar.gz"]) for d in days}
    four = {d: [Simulation(works[d], build_fleet()).run(make_policy(p), keep_series=False) for p in FOUR]
            for d in days}
    print(f"\n== leave-one-day-out cross-validation of Corral's tunables ({len(grid)} configurations x "
          f"{len(days)} days; z = 2 and target = 1 are fixed service levels)")
    t0 = time.perf_counter()
    score: dict[tuple[str, str], tuple[float, bool, float, float]] = {}
    for d in days:
        sim = Simulation(works[d], build_fleet())
        lr = next(r for r in four[d] if r.policy == "LR-MMT-1.2")
        m_min = min(r.migrations for r in four[d])
        s_min = min(r.slav for r in four[d])
        for g in grid:
            r = sim.run(make_policy(g), keep_series=False)
            ok = r.energy_kwh < lr.energy_kwh and r.slav < s_min and r.migrations < m_min
            e, m = r.energy_kwh / (1.25 * floors[d]), r.migrations / (m_min / 4)
            score[(d, g)] = (max(e, m) + (0 if ok else 10), ok, e, m)
    for held in days:
        train = [d for d in days if d != held]
        best = min(grid, key=lambda g: max(score[(d, g)][0] for d in train))
        _, ok, e, m = score[(held, best)]
        print(f"held out {held}: chose {best[7:]:<36} held-out energy/(1.25 floor) {e:.3f}, "
              f"migrations/(min4/4) {m:.3f}, at once {mark(ok)}, stretch {mark(e <= 1 and m <= 1)}")
    best = min(grid, key=lambda g: max(score[(d, g)][0] for d in days))
    print(f"on all five days: {best[7:]} ({time.perf_counter() - t0:.0f} s)")


def mixed(count: int, seed: int = 7) -> None:
    """Unseen days: 900-1500 guests drawn from the five days, each rolled by a random number of
    intervals, sized by CloudSim's contiguous blocks; the four and Corral on each."""
    ws = [load_workload([DATA / "planetlab" / f"{d}.tar.gz"]) for d in DAYS]
    pool = np.concatenate([w.utilization[:, :-1] for w in ws])
    rng = np.random.default_rng(seed)
    print(f"\n== {count} synthetic days (guests of all five days mixed and shifted in time; seed {seed})")
    for _ in range(count):
        n = int(rng.integers(900, 1500))
        idx = rng.choice(pool.shape[0], n, replace=False)
        u = np.stack([np.roll(pool[i], int(s)) for i, s in zip(idx, rng.integers(0, pool.shape[1], n), strict=True)])
        kind = np.minimum(np.arange(n) // -(-n // 4), 3)
        w = workload_from_arrays([f"v{i}" for i in range(n)], u, np.array([2500.0, 2000.0, 1000.0, 500.0])[kind],
                                 np.array([870.0, 1740.0, 1740.0, 613.0])[kind])
        floor = float((w.demand_mips().sum() * w.step_s) * 135 / 5320 / 3.6e6)
        sim = Simulation(w, build_fleet())
        four = [sim.run(make_policy(p), keep_series=False) for p in FOUR]
        c = sim.run(make_policy("corral"), keep_series=False)
        lr = four[-1]
        m_min = min(r.migrations for r in four)
        ok = c.energy_kwh < lr.energy_kwh and c.slav < min(r.slav for r in four) and c.migrations < m_min
        print(f"{n:>5} guests: energy {c.energy_kwh:6.1f} kWh (LR {lr.energy_kwh:6.1f}; floor {floor:6.1f}, "
              f"x{c.energy_kwh / floor:.3f})  SLAV {1e5 * c.slav:.2f}e-5 (lowest of four "
              f"{1e5 * min(r.slav for r in four):.2f})  migrations {c.migrations} (fewest of four {m_min}, "
              f"x{c.migrations / m_min:.3f})  at once {mark(ok)}")


def bitbrains() -> None:
    path = DATA / "bitbrains-rnd" / "2013-7-week1-100vms.tar.gz"
    w: Workload = load_workload([path])
    print(f"\n== Bitbrains GWA-T-12 Rnd, first week: {w.n_vms} guests, {w.n_steps} intervals, 100 hosts "
          "(epyc-1s, dl360-g10 alternating: the ML110s cannot hold its largest guests)")
    for model in ("cloudsim", "realistic"):
        sim = Simulation(w, build_fleet(100, ["epyc-1s", "dl360-g10"]), model)
        for p in (*FOUR, "corral"):
            r = sim.run(make_policy(p, realistic=model == "realistic"), keep_series=False)
            print(f"{model:<9} {r.policy:<12} energy {r.energy_kwh:8.2f} kWh  SLATAH {100 * r.slatah:5.2f} %  "
                  f"PDM {100 * r.pdm:6.3f} %  SLAV {1e5 * r.slav:7.3f}e-5  migrations {r.migrations:6}  "
                  f"active {r.mean_active_hosts:5.1f}  {r.run_time_s:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", default=",".join(DAYS))
    ap.add_argument("--realistic", action="store_true", help="also run the realistic model")
    ap.add_argument("--cv", action="store_true", help="run the leave-one-day-out cross-validation (~2 min)")
    ap.add_argument("--bitbrains", action="store_true", help="run the Bitbrains week")
    ap.add_argument("--mixed", type=int, default=0, metavar="N", help="N synthetic unseen days")
    args = ap.parse_args()
    days = [d for d in args.days.split(",") if d]
    t0 = time.perf_counter()
    warm_up()
    print(f"kernels compiled or loaded from the cache in {time.perf_counter() - t0:.1f} s "
          f"(process RSS {psutil.Process().memory_info().rss / 2**20:.0f} MB)")
    res = run_days(days, "cloudsim")
    faithfulness(days, res)
    corral_table(days, res, "cloudsim")
    if args.realistic:
        real = run_days(days, "realistic")
        corral_table(days, real, "realistic")
        print("\n== Corral's policy in both models")
        for d in days:
            a, b = res[(d, "corral")][0], real[(d, "corral")][0]
            print(f"{d}: cloudsim {a.energy_kwh:7.2f} kWh, SLAV {1e5 * a.slav:.3f}e-5, {a.migrations} migrations, "
                  f"{a.mean_active_hosts:.1f} hosts | realistic {b.energy_kwh:7.2f} kWh, SLAV {1e5 * b.slav:.4f}e-5, "
                  f"{b.migrations} migrations, {b.mean_active_hosts:.1f} hosts, {b.wakes} wake-ups")
    if args.bitbrains:
        bitbrains()
    if args.mixed:
        mixed(args.mixed)
    if args.cv:
        cv(days)


if __name__ == "__main__":
    main()
