"""The CCPE 2012 heuristics (THR/IQR/MAD/LR/LRR x MMT/MC/RS/MU) as a policy object.

Thin: it hands the state's arrays to the compiled CloudSim round (``cloudsim.optimize_allocation``)
and turns its output into decisions with a human-readable reason.
"""

from __future__ import annotations

import numpy as np

from corral.consolidation.cloudsim import REASON_OVERLOAD, optimize_allocation, place_initial
from corral.consolidation.detectors import DETECTOR_CODES, FALLBACK_THRESHOLD, LR, LRR
from corral.consolidation.policies import PolicySpec
from corral.consolidation.selection import SELECTION_CODES
from corral.consolidation.state import ClusterState, Decision, Histories, Migrate, Place, SwitchOff


class CloudSimPolicy:
    """A paper heuristic with CloudSim 4.0's semantics; in the CloudSim model ``lrr`` is ``lr``
    (CloudSim 4.0's runner builds the LR policy for it), in the realistic model it is the robust fit."""

    def __init__(self, spec: PolicySpec, *, realistic: bool = False, seed: int = 0) -> None:
        self.spec = spec
        kind = DETECTOR_CODES[spec.detector]
        if kind == LRR and not realistic:
            kind = LR
        self.kind = kind
        self.robust = realistic
        self.selection = SELECTION_CODES[spec.selection]
        self.param = spec.parameter
        self.seed = seed

    def place(self, state: ClusterState) -> list[Place]:
        """Time 0: every guest, in order, asking for its demand, memory and bandwidth now."""
        out = np.full(state.n_vms, -1, dtype=np.int64)
        vm_bw = state.vm_bw_kbit if state.vm_bw_kbit.size else np.zeros(state.n_vms)
        host_bw = state.host_bw_kbit if state.host_bw_kbit.size else np.full(state.n_hosts, np.inf)
        place_initial(
            self.kind, self.param, FALLBACK_THRESHOLD, state.capacity, state.core_mips, state.power_curve,
            state.memory_mb, host_bw, state.vm_demand, state.vm_ram_mb, vm_bw, state.vm_cores, out,
        )
        return [
            Place(int(v), int(h), "power-aware best fit" if h >= 0 else "no host has the free CPU, memory or network")
            for v, h in enumerate(out)
        ]

    def decide(self, state: ClusterState, histories: Histories) -> list[Decision]:
        n = state.n_vms
        cap = 4 * n + 16
        out_vm = np.empty(cap, dtype=np.int64)
        out_src = np.empty(cap, dtype=np.int64)
        out_dst = np.empty(cap, dtype=np.int64)
        out_reason = np.empty(cap, dtype=np.int64)
        out_load = np.empty(cap)
        k = optimize_allocation(
            self.kind, self.param, FALLBACK_THRESHOLD, self.selection, self.robust,
            self.seed + round(state.time_s / state.step_s),
            state.capacity, state.core_mips, state.power_curve, state.utilization, state.migration_mbps,
            state.memory_mb, state.enforce_memory, state.count, state.members, state.incoming,
            state.vm_demand, state.vm_mips, state.vm_ram_mb, state.vm_in_migration, state.vm_cores,
            histories.recent, histories.recent_len, state.step_s,
            out_vm, out_src, out_dst, out_reason, out_load,
        )
        name = self.spec.name
        det = self.spec.detector.upper()
        sel = self.spec.selection.upper()
        decisions: list[Decision] = []
        evacuated: list[int] = []
        for j in range(k):
            v, src, dst = int(out_vm[j]), int(out_src[j]), int(out_dst[j])
            load = float(out_load[j])
            if out_reason[j] == REASON_OVERLOAD:
                decisions.append(Migrate(
                    v, src, dst, f"{name}: host {src} overloaded by {det} at {load:.0%} CPU; {sel} picked this guest; "
                    f"host {dst} adds least power", "overload"))
            else:
                if not evacuated or evacuated[-1] != src:
                    evacuated.append(src)
                decisions.append(Migrate(
                    v, src, dst, f"{name}: host {src} under-utilized ({load:.0%} CPU), all its guests fit elsewhere; "
                    f"host {dst} adds least power", "underload"))
        decisions.extend(SwitchOff(h, f"{name}: host {h} evacuated") for h in evacuated)
        return decisions
