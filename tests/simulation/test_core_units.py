"""Power model, the host's CPU scheduler, the selection policies and the placement filters, on
hand-made numbers with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from corral.consolidation.cloudsim import place_initial
from corral.consolidation.detectors import THR
from corral.consolidation.hostmodel import allocate_host
from corral.consolidation.placement import core_fits, cpu_fits, find_host, memory_fits, power_increase
from corral.consolidation.power import clamp_utilization, energy_ws, power_at
from corral.consolidation.selection import MC, MMT, MU, RS, seed_rng, select_vm

G4 = np.array([86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117], dtype=np.float64)
G5 = np.array([93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135], dtype=np.float64)


# ---------------------------------------------------------------- power
def test_power_on_the_grid_and_between() -> None:
    assert power_at(G5, 0.0) == 93.7
    assert power_at(G5, 1.0) == 135.0
    assert power_at(G4, 0.5) == pytest.approx(102.0)
    assert power_at(G5, 0.25) == pytest.approx(101 + 0.5 * 4)
    assert power_at(G5, 0.376) == pytest.approx(105 + 0.76 * 5)
    assert power_at(G5, 1.2) == 135.0  # clamped


def test_energy_is_zero_for_a_host_off_at_the_start() -> None:
    assert energy_ws(G5, 0.0, 0.5, 300.0) == 0.0
    assert energy_ws(G5, 0.5, 0.5, 300.0) == pytest.approx(116 * 300)
    assert energy_ws(G5, 1.0, 0.0, 10.0) == pytest.approx((135 + 93.7) / 2 * 10)
    assert clamp_utilization(1.005) == 1.0
    assert clamp_utilization(1.02) == 1.02


# ---------------------------------------------------------------- host scheduler
def _host(vms: list[int], incoming: list[bool] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = np.array([len(vms)], dtype=np.int64)
    members = np.array([[*vms, 0]], dtype=np.int64)
    inc = np.array([(incoming or [False] * len(vms)) + [False]], dtype=np.bool_)
    return count, members, inc


def test_allocation_without_oversubscription_caps_at_one_core() -> None:
    count, members, inc = _host([0, 1])
    req = np.array([2500.0, 1000.0])
    out = np.zeros(3)
    avail, over = allocate_host(0, count, members, inc, req, np.zeros(2, dtype=np.bool_), np.ones(2), 3720.0,
                                1860.0, out)
    assert not over
    assert out[:2].tolist() == [1860.0, 1000.0]  # a 1-vCPU guest gets at most one 1860-MIPS core
    assert avail == pytest.approx(3720 - 2860)


def test_oversubscription_scales_everyone_and_rounds_down() -> None:
    count, members, inc = _host([0, 1, 2])
    req = np.array([2000.0, 2000.0, 2000.0])
    out = np.zeros(4)
    avail, over = allocate_host(0, count, members, inc, req, np.zeros(3, dtype=np.bool_), np.ones(3), 5320.0,
                                2660.0, out)
    assert over and avail == 0.0
    assert out[:3].tolist() == [1773.0, 1773.0, 1773.0]  # floor(2000 * 5320 / 6000)


def test_migration_shares() -> None:
    # guest 0 migrates out (90 %), guest 1 migrates in (10 % of its demand on this host)
    count, members, inc = _host([0, 1], [False, True])
    req = np.array([1000.0, 2000.0])
    out = np.zeros(3)
    avail, _ = allocate_host(0, count, members, inc, req, np.array([True, True]), np.ones(2), 5320.0, 2660.0, out)
    assert out[:2].tolist() == pytest.approx([900.0, 200.0])
    assert avail == pytest.approx(5320 - 1000 - 200)


# ---------------------------------------------------------------- selection
def _sel(sel: int, ram: list[float], req: list[float], mips: list[float] | None = None,
         in_mig: list[bool] | None = None, hist: np.ndarray | None = None) -> int:
    n = len(ram)
    count = np.array([n], dtype=np.int64)
    members = np.array([list(range(n))], dtype=np.int64)
    h = hist if hist is not None else np.zeros((n, 30))
    hl = np.full(n, 30 if hist is not None else 0, dtype=np.int64)
    return int(select_vm(0, sel, count, members, np.array(in_mig or [False] * n), np.array(req),
                         np.array(mips or [1000.0] * n), np.array(ram), h, hl))


def test_mmt_takes_the_least_memory_first_in_list_on_ties() -> None:
    assert _sel(MMT, [1740, 613, 870, 613], [100, 100, 100, 100]) == 1
    assert _sel(MMT, [1740, 613, 870], [100, 100, 100], in_mig=[False, True, False]) == 2
    assert _sel(MMT, [613], [100], in_mig=[True]) == -1


def test_mu_takes_the_least_utilized() -> None:
    # utilization = demand / size: 0.5, 0.2, 0.3
    assert _sel(MU, [613, 613, 613], [1000, 100, 600], mips=[2000, 500, 2000]) == 1


def test_rs_takes_a_movable_guest_reproducibly() -> None:
    picks = set()
    for s in range(20):
        seed_rng(s)
        picks.add(_sel(RS, [613, 613, 613], [1, 1, 1], in_mig=[False, True, False]))
    assert picks == {0, 2}


def test_mc_takes_the_guest_the_others_explain_and_falls_back_to_mmt() -> None:
    rng = np.random.default_rng(1)
    hist = np.zeros((4, 30))
    hist[1] = rng.random(30)
    hist[2] = rng.random(30)
    hist[3] = rng.random(30)
    hist[0] = 0.5 * hist[1] + 0.5 * hist[2] + 0.01 * rng.random(30)  # almost explained by guests 1 and 2
    assert _sel(MC, [1740, 1740, 1740, 613], [1, 1, 1, 1], hist=hist) in (0, 1, 2)
    # exactly collinear histories: the regression is singular, CloudSim's QR throws, MC falls back to MMT
    hist[0] = 0.5 * hist[1] + 0.5 * hist[2]
    assert _sel(MC, [1740, 1740, 1740, 613], [1, 1, 1, 1], hist=hist) == 3
    # too little history for 4 guests: the fallback MMT (least memory: guest 3)
    short = np.zeros((4, 30))
    short[:, :2] = rng.random((4, 2))
    count = np.array([4], dtype=np.int64)
    members = np.array([[0, 1, 2, 3]], dtype=np.int64)
    got = select_vm(0, MC, count, members, np.zeros(4, dtype=np.bool_), np.ones(4), np.ones(4),
                    np.array([1740.0, 1740, 1740, 613]), short, np.full(4, 2, dtype=np.int64))
    assert got == 3


# ---------------------------------------------------------------- placement
def test_filters_and_weigher() -> None:
    assert core_fits(2660.0, 2500.0) and not core_fits(1860.0, 2500.0)
    assert cpu_fits(1000.0, 1000.0) and not cpu_fits(999.0, 1000.0)
    assert memory_fits(3000.0, 4096.0, 870.0) and not memory_fits(3500.0, 4096.0, 870.0)
    assert power_increase(G5, 0.0, 1330.0, 5320.0, 93.7) == pytest.approx(power_at(G5, 0.25) - 93.7)


def test_find_host_least_power_increase_with_exclusions_and_overload_check() -> None:
    # hosts: 0 G4 empty, 1 G5 empty, 2 G5 at 4000 MIPS, 3 G5 empty (excluded)
    cap = np.array([3720.0, 5320.0, 5320.0, 5320.0])
    core = np.array([1860.0, 2660.0, 2660.0, 2660.0])
    curve = np.stack([G4, G5, G5, G5])
    count = np.array([0, 0, 1, 0], dtype=np.int64)
    members = np.zeros((4, 2), dtype=np.int64)
    members[2, 0] = 1
    req = np.array([1000.0, 4000.0])
    util = np.array([0.0, 0.0, 4000.0, 0.0])
    p_now = np.array([power_at(curve[h], util[h] / cap[h]) for h in range(4)])
    avail = cap - util
    args = (np.zeros((2, 30)), np.zeros(2, dtype=np.int64), np.ones(2), cap, core, curve, p_now, np.full(4, 62.5),
            300.0, util, avail, np.zeros(4), np.full(4, 4096.0), False, np.zeros(30))
    excluded = np.array([False, False, False, True])
    # host 2: P(5000/5320) - P(4000/5320) = 6.72 W < G5 empty: P(1000/5320) - P(0) = 6.82 W < G4 empty 8.94 W
    h = find_host(0, excluded, THR, 1.0, 0.7, False, count, members, req, np.ones(2), np.full(2, 870.0), *args)
    assert h == 2
    # THR 0.8 flags host 2 with the guest added (5000 / 5320 > 0.8): the empty G5 wins
    h = find_host(0, excluded, THR, 0.8, 0.7, False, count, members, req, np.ones(2), np.full(2, 870.0), *args)
    assert h == 1
    excluded[1] = True
    h = find_host(0, excluded, THR, 0.8, 0.7, False, count, members, req, np.ones(2), np.full(2, 870.0), *args)
    assert h == 0
    # ties go to the lowest host id (two empty G5s)
    excluded[:] = [False, False, True, False]
    h = find_host(0, excluded, THR, 1.0, 0.7, False, count, members, req, np.ones(2), np.full(2, 870.0), *args)
    assert h == 1


def test_initial_placement_asks_full_mips_memory_and_bandwidth() -> None:
    cap = np.array([3720.0, 5320.0])
    core = np.array([1860.0, 2660.0])
    curve = np.stack([G4, G5])
    out = np.zeros(3, dtype=np.int64)
    # a 2500-MIPS guest cannot run on a 1860-MIPS core: only the G5; the third does not fit anywhere
    failed = place_initial(THR, 0.8, 0.7, cap, core, curve, np.full(2, 4096.0), np.full(2, 1e6),
                           np.array([2500.0, 2500.0, 2500.0]), np.array([870.0, 870.0, 870.0]),
                           np.full(3, 1e5), np.ones(3), out)
    assert out.tolist() == [1, 1, -1] and failed == 1
