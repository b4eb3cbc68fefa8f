"""The trace-driven simulator of dynamic consolidation, with CloudSim 4.0's accounting
(see docs/simulation.md)."""

from corral.simulation.engine import MODELS, RealisticParams, Simulation, SimulationResult, StepSeries
from corral.simulation.errors import SimulationError, UnplaceableError
from corral.simulation.fleet import Fleet, build_fleet
from corral.simulation.workload import Workload, load_workload, workload_from_arrays

__all__ = [
    "MODELS",
    "Fleet",
    "RealisticParams",
    "Simulation",
    "SimulationError",
    "SimulationResult",
    "StepSeries",
    "UnplaceableError",
    "Workload",
    "build_fleet",
    "load_workload",
    "workload_from_arrays",
]


def warm_up() -> None:
    """Compile the simulator's and the policies' Numba kernels into their on-disk cache (scripts/setup
    runs this once, so the first `corral simulate` does not spend half a minute compiling): a small
    synthetic day through every detector and Corral's policy, in both models."""
    import numpy as np

    from corral.consolidation.policies import make_policy

    rng = np.random.default_rng(0)
    workload = workload_from_arrays([f"vm{i}" for i in range(12)], rng.uniform(0.0, 0.9, (12, 24)), 1000.0, 870.0)
    fleet = build_fleet(6)
    for model in MODELS:
        simulation = Simulation(workload, fleet, model)
        for policy in ("thr-mmt-0.8", "iqr-mc-1.5", "mad-rs-2.5", "lr-mu-1.2", "lrr-mmt-1.2", "corral"):
            simulation.run(make_policy(policy, realistic=model == "realistic"), keep_series=False)
