"""Dynamic-consolidation policies: a pure core over plain data (see docs/simulation.md).

``decide(state, histories, params)`` is the one entry point: the simulator calls it on its replay
of traces, the live balancer on measured hosts and guests. Policies: the CCPE 2012 heuristics as
CloudSim 4.0 runs them (``thr-mmt-0.8``, ``lr-mmt-1.2``, ...) and Corral's own (``corral``).
"""

from corral.consolidation.policies import DEFAULT_POLICY, Policy, PolicySpec, decide, make_policy, parse_policy
from corral.consolidation.state import ClusterState, Decision, Histories, Migrate, Place, SwitchOff, SwitchOn

__all__ = [
    "DEFAULT_POLICY",
    "ClusterState",
    "Decision",
    "Histories",
    "Migrate",
    "Place",
    "Policy",
    "PolicySpec",
    "SwitchOff",
    "SwitchOn",
    "decide",
    "make_policy",
    "parse_policy",
]
