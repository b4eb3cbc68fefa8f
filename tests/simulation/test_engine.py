"""The simulator's accounting on small synthetic workloads whose figures can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from corral.consolidation.policies import PolicySpec, make_policy
from corral.consolidation.power import power_at
from corral.consolidation.state import ClusterState, Decision, Histories, Migrate, Place
from corral.simulation.engine import Simulation
from corral.simulation.errors import SimulationError, UnplaceableError
from corral.simulation.fleet import Fleet, build_fleet
from corral.simulation.workload import workload_from_arrays

G5 = np.array([93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135], dtype=np.float64)


class Scripted:
    """A test policy: fixed initial hosts, and migrations at given decision indices."""

    def __init__(self, hosts: list[int], moves: dict[int, list[tuple[int, int]]] | None = None) -> None:
        self.spec = PolicySpec(name="scripted", detector="script")
        self.hosts = hosts
        self.moves = moves or {}
        self.calls = 0

    def place(self, state: ClusterState) -> list[Place]:
        return [Place(v, h, "script") for v, h in enumerate(self.hosts)]

    def decide(self, state: ClusterState, histories: Histories) -> list[Decision]:
        out: list[Decision] = [
            Migrate(v, int(state.vm_host[v]), g, "script") for v, g in self.moves.get(self.calls, [])
        ]
        self.calls += 1
        return out


def g5_fleet(n: int) -> Fleet:
    return build_fleet(n, ["ml110-g5"])


def test_energy_of_one_steady_host() -> None:
    # one guest at 50 % of 2500 MIPS on one G5 for 6 intervals. CloudSim updates at 300.1, ...,
    # 1500.1 (1800.1 is past the end) and the first interval draws nothing (the host's utilization
    # is not known before the first update): 1200 s at P(1250 / 5320).
    w = workload_from_arrays(["a"], [[0.5] * 6], 2500.0, 870.0)
    r = Simulation(w, g5_fleet(1)).run(Scripted([0]))
    assert r.energy_kwh * 3.6e6 == pytest.approx(power_at(G5, 1250 / 5320) * 1200.0)
    assert r.migrations == 0 and r.slatah == 0.0 and r.pdm == 0.0
    assert r.mean_active_hosts == pytest.approx(1.0)
    # the realistic model counts from time 0
    rr = Simulation(w, g5_fleet(1), "realistic").run(Scripted([0]))
    assert rr.energy_kwh * 3.6e6 == pytest.approx(power_at(G5, 1250 / 5320) * 1500.0,
                                                  rel=1e-9)


def test_a_migration_takes_ram_over_half_the_bandwidth_and_costs_10_percent() -> None:
    # guest 0 (870 MB, 1000 MIPS demand) moves from host 0 to host 1 at the first decision (300.1 s):
    # it lasts 870 / 62.5 = 13.92 s; the destination is short of CPU meanwhile (CloudSim gives it 10 %).
    w = workload_from_arrays(["a", "b"], [[0.4] * 4, [0.2] * 4], 2500.0, 870.0)
    r = Simulation(w, g5_fleet(2)).run(Scripted([0, 1], {0: [(0, 1)]}))
    assert r.migrations == 1
    dur = 870 / 62.5
    # updates at 300.1, 600.1, 900.1: PDM is 10 % of 1000 MIPS for 13.92 s over all demand
    # (1000 + 500 MIPS for 600 s)
    assert r.pdm == pytest.approx(0.1 * 1000 * dur / (1500 * 600))
    # SLATAH: host 1 short for 13.92 s; active: host 0 until the migration ends, host 1 throughout
    assert r.slatah == pytest.approx(dur / (600 + dur))
    assert r.host_shutdowns == 1


def test_cloudsim_destroys_a_guest_whose_demand_drops_to_zero() -> None:
    w = workload_from_arrays(["a", "b"], [[0.3, 0.3, 0.0, 0.0, 0.3, 0.3], [0.2] * 6], 1000.0, 613.0)
    r = Simulation(w, g5_fleet(2)).run(Scripted([0, 1]))
    assert r.vms_gone == 1
    rr = Simulation(w, g5_fleet(2), "realistic").run(Scripted([0, 1]))
    assert rr.vms_gone == 0


def test_every_running_guest_is_on_exactly_one_host_at_every_step() -> None:
    rng = np.random.default_rng(3)
    u = rng.random((12, 20)) * 0.6
    w = workload_from_arrays([f"v{i}" for i in range(12)], u, 1000.0, 613.0)
    for pol in ("corral", "thr-mmt-0.8", "lr-mc-1.2", "mad-rs-2.5", "iqr-mu-1.5"):
        seen: list[int] = []

        def hook(state: ClusterState, moves: list[Migrate], seen: list[int] = seen) -> None:
            running = np.zeros(state.n_vms, dtype=np.int64)
            for h in range(state.n_hosts):
                for k in range(state.count[h]):
                    if not state.incoming[h, k]:
                        running[state.members[h, k]] += 1
            alive = state.vm_host >= 0
            assert np.all(running[alive] == 1) and np.all(running[~alive] == 0)
            seen.append(1)

        Simulation(w, build_fleet(6)).run(make_policy(pol), hook=hook)
        assert len(seen) == 19


def test_unplaceable_guests_are_reported_not_dropped() -> None:
    w = workload_from_arrays([f"v{i}" for i in range(5)], [[0.5] * 3] * 5, 2500.0, 1740.0)
    with pytest.raises(UnplaceableError) as err:
        Simulation(w, g5_fleet(1)).run(make_policy("lr-mmt-1.2"))
    assert len(err.value.guests) == 3 and "not dropped" in err.value.message


def test_bad_model_and_empty_workload() -> None:
    w = workload_from_arrays(["a"], [[0.5]], 1000.0, 613.0)
    with pytest.raises(SimulationError):
        Simulation(w, g5_fleet(1), "magic")
    with pytest.raises(SimulationError):
        workload_from_arrays(["a"], [[1.5]], 1000.0, 613.0)


def test_a_policy_cannot_migrate_a_guest_to_where_it_is() -> None:
    w = workload_from_arrays(["a", "b"], [[0.4] * 4, [0.2] * 4], 2500.0, 870.0)
    with pytest.raises(SimulationError, match="to the host it is on"):
        Simulation(w, g5_fleet(2)).run(Scripted([0, 1], {0: [(0, 0)]}))
