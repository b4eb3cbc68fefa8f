"""Properties that hold for any policy, any workload, either model (hypothesis):

- the energy is never below the floor of the demand actually served: every MIPS*s a guest
  surely got (the smaller of its allocations at both ends of each interval) at the best watts
  per MIPS of the fleet (a host's power at load u is at least u x its power at full load);
- every running guest is on exactly one host at every step (a migrating guest runs on its
  source until the migration ends), and a destroyed one on none.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from corral.consolidation.policies import make_policy
from corral.consolidation.state import ClusterState, Migrate
from corral.planning.catalog import HostKind, load_catalog
from corral.simulation.engine import Simulation
from corral.simulation.errors import UnplaceableError
from corral.simulation.fleet import build_fleet
from corral.simulation.workload import workload_from_arrays

# a host exactly one guest's size whose power grows linearly from 0 W: the floor is tight on it
TIGHT = HostKind(name="tight", cores=1, core_mhz=2500.0, speed=1.0, mem_bytes=4 * 2**30, disk_bps=1e8, net_bps=125e6,
                 power_w=tuple(10.0 * i for i in range(11)), price=0.0, upkeep_per_year=0.0)
CATALOG = {**load_catalog(), "tight": TIGHT}
POLICIES = ("corral", "corral:z=0.5,target=1,margin=0,dwell=0,migration_wh=0", "thr-mmt-0.8", "thr-mu-0.5",
            "iqr-mmt-1.5", "mad-mc-2.5", "lr-mmt-1.2", "lrr-rs-1.2", "lr-mu-0.9")


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, list[str], str, str]:
    n = draw(st.integers(1, 8))
    steps = draw(st.integers(2, 14))
    level = st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.3, 0.5, 0.8, 0.95, 1.0, 1.0, 1.0])
    u = np.array(draw(st.lists(st.lists(level, min_size=steps, max_size=steps), min_size=n, max_size=n)))
    mips = np.array(draw(st.lists(st.sampled_from([500.0, 1000.0, 2000.0, 2500.0]), min_size=n, max_size=n)))
    ram = np.array(draw(st.lists(st.sampled_from([613.0, 870.0, 1740.0]), min_size=n, max_size=n)))
    m = draw(st.integers(1, 5))
    kinds = draw(st.sampled_from([["ml110-g4", "ml110-g5"], ["ml110-g5"], ["ml110-g4"], ["dl360-g10"], ["tight"],
                                  ["tight", "ml110-g5"]]))
    return u, mips, ram, m, kinds, draw(st.sampled_from(POLICIES)), draw(st.sampled_from(["cloudsim", "realistic"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_energy_never_below_the_served_floor_and_guests_on_one_host(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, int, list[str], str, str],
) -> None:
    u, mips, ram, m, kinds, policy, model = case
    w = workload_from_arrays([f"v{i}" for i in range(u.shape[0])], u, mips, ram)
    sim = Simulation(w, build_fleet(m, kinds, CATALOG), model)

    def hook(state: ClusterState, moves: list[Migrate]) -> None:
        running = np.zeros(state.n_vms, dtype=np.int64)
        for h in range(state.n_hosts):
            for k in range(state.count[h]):
                if not state.incoming[h, k]:
                    running[state.members[h, k]] += 1
        alive = state.vm_host >= 0
        assert np.all(running[alive] == 1), running
        assert np.all(running[~alive] == 0), running
        for mv in moves:
            assert (0 <= mv.target < state.n_hosts and mv.target != mv.source) or mv.kind == "underload"

    try:
        r = sim.run(make_policy(policy, realistic=model == "realistic"), hook=hook)
    except UnplaceableError:
        assume(False)
        return
    assert r.energy_kwh >= r.floor_kwh * (1 - 1e-9) - 1e-12
    assert r.energy_kwh >= 0 and 0 <= r.slatah <= 1 and 0 <= r.pdm <= 1
