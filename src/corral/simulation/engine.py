"""The simulator: replay a workload on a fleet under a policy, with CloudSim 4.0's accounting.

``Simulation(workload, fleet, model).run(policy)`` places the guests (the policy's ``place``),
then every scheduling interval updates every host (energy, SLA accounting, CloudSim's removal
of guests whose demand is 0), asks the policy for decisions on the resulting ``ClusterState`` and
carries out its migrations, whose completions are events of their own. The compiled kernels in
``kernels.py`` do the accounting; this module only sequences them and builds the policies' view.

Models (docs/simulation.md, "The two models"):

- ``cloudsim``: CloudSim 4.0's PowerDatacenter, quirks included (updates at 300.1, 600.1, ... s;
  guests ask for their full MIPS while created at time 0; the first interval draws no energy;
  a guest whose demand drops to 0 is destroyed; a migration costs its destination 10 % of the
  guest's CPU and counts as an SLA violation of that host while it runs).
- ``realistic``: memory is a hard limit at every placement, the destination reserves the whole
  guest during a migration, each migration pauses the guest for ``downtime_s`` (counted as lost
  demand), a host in standby takes ``wake_s`` to wake, hosts draw power from time 0 and while
  on, guests never vanish, ``lrr`` is the robust regression, and a host whose guests' disk or
  network demand exceeds its throughput counts as overloaded (Bitbrains' four resources).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from corral.consolidation.detectors import HISTORY_LENGTH
from corral.consolidation.policies import Policy
from corral.consolidation.state import ClusterState, Histories, Migrate
from corral.simulation import kernels as K
from corral.simulation.errors import SimulationError, UnplaceableError
from corral.simulation.fleet import Fleet
from corral.simulation.workload import Workload

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Model = Literal["cloudsim", "realistic"]
MODELS: tuple[str, ...] = ("cloudsim", "realistic")
CLOUDSIM_OFFSET_S = 0.1  # guests are created at 0, their cloudlets submitted at 0.1: updates at k x 300 + 0.1


@dataclass(frozen=True)
class RealisticParams:
    """Assumptions of the realistic model (docs/simulation.md)."""

    downtime_s: float = 0.3  # QEMU's default maximum downtime of a live migration's last copy
    wake_s: float = 60.0  # a host in standby (suspend to RAM) until it runs guests again


@dataclass(frozen=True)
class StepSeries:
    """Per scheduling interval, after the policy's decisions: for the report."""

    time_s: FloatArray
    active_hosts: IntArray
    power_w: FloatArray
    short_hosts: IntArray  # hosts whose guests asked for more than they got (SLATAH's "at 100 %")
    migrations: IntArray


@dataclass(frozen=True)
class SimulationResult:
    policy: str
    model: str
    energy_kwh: float
    slatah: float  # fraction
    pdm: float  # fraction
    migrations: int
    host_shutdowns: int
    mean_active_hosts: float
    run_time_s: float
    vms: int
    hosts: int
    simulated_s: float
    vms_gone: int  # CloudSim model: guests destroyed when their demand dropped to 0
    overall_sla: float  # all unserved demand / demand
    wakes: int = 0
    served_mips_s: float = 0.0  # sum over guests and intervals of the MIPS surely served (min of both ends)
    floor_kwh: float = 0.0  # served_mips_s at the best watts per MIPS of the fleet: no policy can use less
    series: StepSeries | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def slav(self) -> float:
        return self.slatah * self.pdm

    @property
    def esv(self) -> float:
        return self.energy_kwh * self.slav

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "policy": self.policy,
            "model": self.model,
            "energy_kwh": self.energy_kwh,
            "slatah": self.slatah,
            "pdm": self.pdm,
            "slav": self.slav,
            "esv": self.esv,
            "migrations": self.migrations,
            "host_shutdowns": self.host_shutdowns,
            "mean_active_hosts": self.mean_active_hosts,
            "run_time_s": self.run_time_s,
            "vms": self.vms,
            "hosts": self.hosts,
            "simulated_s": self.simulated_s,
            "vms_gone": self.vms_gone,
            "overall_sla": self.overall_sla,
            "wakes": self.wakes,
            "floor_kwh": self.floor_kwh,
            "notes": list(self.notes),
        }
        if self.series is not None:
            s = self.series
            out["series"] = {
                "time_s": s.time_s.tolist(),
                "active_hosts": s.active_hosts.tolist(),
                "power_w": s.power_w.tolist(),
                "short_hosts": s.short_hosts.tolist(),
                "migrations": s.migrations.tolist(),
            }
        return out


StepHook = Callable[[ClusterState, list[Migrate]], None]


class Simulation:
    """One workload on one fleet in one model; ``run`` may be called for several policies."""

    def __init__(
        self, workload: Workload, fleet: Fleet, model: str = "cloudsim", realistic: RealisticParams | None = None
    ) -> None:
        if model not in MODELS:
            raise SimulationError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
        if workload.n_vms == 0:
            raise SimulationError("no guests to simulate")
        self.workload = workload
        self.fleet = fleet
        self.model = model
        self.params = realistic or RealisticParams()
        self.best_w_per_mips = float((fleet.power_curve[:, 10] / fleet.capacity).min())
        fastest = float(fleet.core_mips.max())
        if workload.vcpus is not None:
            self.vm_cores = np.asarray(workload.vcpus, dtype=np.float64)
        else:
            self.vm_cores = np.maximum(1.0, np.ceil(workload.mips / fastest - 1e-9))

    # ------------------------------------------------------------------ state arrays
    def _arrays(self) -> tuple[tuple[object, ...], tuple[object, ...], FloatArray, FloatArray]:
        w, f = self.workload, self.fleet
        n, m = w.n_vms, f.n_hosts
        realistic = self.model == "realistic"
        width = n
        H = (
            f.capacity, f.core_mips, f.power_curve, f.memory_mb, f.migration_mbps,
            np.zeros(m, dtype=np.int64), np.zeros((m, width), dtype=np.int64), np.zeros((m, width), dtype=np.bool_),
            np.zeros(m), np.zeros(m), np.full(m, -1.0), np.zeros(m), np.zeros(m), np.zeros(m, dtype=np.bool_),
            np.ones(m, dtype=np.bool_), np.zeros(m), np.zeros(width), np.zeros(m, dtype=np.bool_),
            f.disk_bps, f.net_bps, np.full(m, -np.inf),
        )
        extra_disk = w.extra.get("disk") if realistic else None
        extra_net = w.extra.get("net") if realistic else None
        V = (
            w.mips, w.ram_mb, w.utilization, np.zeros(n), np.full(n, -1.0), np.full(n, -1, dtype=np.int64),
            np.zeros(n, dtype=np.bool_), np.zeros((n, HISTORY_LENGTH)), np.zeros(n, dtype=np.int64),
            np.full(n, -1.0 if realistic else 0.0), np.full(n, -1.0), np.zeros(n), np.zeros(n),
            np.zeros(n, dtype=np.bool_), np.zeros((n, w.n_steps + 1)), np.zeros(n, dtype=np.int64), np.full(n, -1.0),
            self.vm_cores,
            np.ascontiguousarray(extra_disk) if extra_disk is not None else np.zeros((n, 0)),
            np.ascontiguousarray(extra_net) if extra_net is not None else np.zeros((n, 0)),
            np.full(n, -np.inf),
        )
        P = np.zeros(K.N_PARAMS)
        P[K.P_STEP] = w.step_s
        P[K.P_OFFSET] = 0.0 if realistic else CLOUDSIM_OFFSET_S
        P[K.P_REALISTIC] = 1.0 if realistic else 0.0
        P[K.P_DOWNTIME] = self.params.downtime_s
        P[K.P_WAKE] = self.params.wake_s
        P[K.P_IN_SHARE] = 1.0 if realistic else 0.1
        ACC = np.zeros(K.N_ACC)
        ACC[K.A_FIRST_T] = -1.0
        return H, V, P, ACC

    def _others(self, t: float) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
        """Realistic model: each guest's disk and network demand now and the hosts' throughput."""
        w, f = self.workload, self.fleet
        names = tuple(r for r in ("disk", "net") if r in w.extra) if self.model == "realistic" else ()
        if not names:
            return (), np.zeros((w.n_vms, 0)), np.zeros((f.n_hosts, 0))
        k = min(int(t // w.step_s), w.n_steps - 1)
        vm = np.stack([w.extra[r][:, k] for r in names], axis=1)
        host = np.stack([f.disk_bps if r == "disk" else f.net_bps for r in names], axis=1)
        return names, vm, host

    def _state(self, t: float, H: tuple[object, ...], V: tuple[object, ...], demand: FloatArray) -> ClusterState:
        w, f = self.workload, self.fleet
        other_names, vm_other, host_other = self._others(t)
        util_mips: FloatArray = H[K.H_UTIL]  # type: ignore[assignment]
        u = util_mips / f.capacity
        u = np.where((u > 1.0) & (u < 1.01), 1.0, u)
        return ClusterState(
            time_s=t,
            step_s=w.step_s,
            host_names=f.names,
            capacity=f.capacity,
            core_mips=f.core_mips,
            power_curve=f.power_curve,
            memory_mb=f.memory_mb,
            migration_mbps=f.migration_mbps,
            utilization=u,
            count=H[K.H_COUNT],  # type: ignore[arg-type]
            members=H[K.H_MEMBERS],  # type: ignore[arg-type]
            incoming=H[K.H_INCOMING],  # type: ignore[arg-type]
            vm_names=w.names,
            vm_mips=w.mips,
            vm_ram_mb=w.ram_mb,
            vm_demand=demand,
            vm_host=V[K.V_HOST],  # type: ignore[arg-type]
            vm_in_migration=V[K.V_IN_MIG],  # type: ignore[arg-type]
            vm_cores=self.vm_cores,
            host_bw_kbit=f.bw_kbit,
            vm_bw_kbit=w.bw_kbit,
            vm_last_move_s=V[K.V_LAST_MOVE],  # type: ignore[arg-type]
            awake_since_s=H[K.H_AWAKE_SINCE],  # type: ignore[arg-type]
            enforce_memory=self.model == "realistic",
            other_names=other_names,
            vm_other=vm_other,
            host_other=host_other,
        )

    # ------------------------------------------------------------------ run
    def run(self, policy: Policy, *, hook: StepHook | None = None, keep_series: bool = True) -> SimulationResult:
        """Simulate the whole workload under ``policy``. ``hook`` sees every state and the
        migrations decided on it (tests)."""
        w, f = self.workload, self.fleet
        n, m = w.n_vms, f.n_hosts
        realistic = self.model == "realistic"
        started = time.perf_counter()
        H, V, P, ACC = self._arrays()
        count: IntArray = H[K.H_COUNT]  # type: ignore[assignment]
        members: IntArray = H[K.H_MEMBERS]  # type: ignore[assignment]
        vm_host: IntArray = V[K.V_HOST]  # type: ignore[assignment]
        req: FloatArray = V[K.V_REQ]  # type: ignore[assignment]
        # time 0: CloudSim's guests ask for their full MIPS while being created
        demand0 = w.utilization[:, 0] * w.mips if realistic else w.mips.copy()
        placements = policy.place(self._state(0.0, H, V, demand0))
        where = np.full(n, -1, dtype=np.int64)
        for p in placements:
            if 0 <= p.vm < n:
                where[p.vm] = p.host
        bad = np.flatnonzero((where < 0) | (where >= m))
        if bad.size:
            names = tuple(w.names[i] for i in bad)
            listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise UnplaceableError(
                f"{bad.size} of {n} guest(s) fit on no host at the start: {listed} (e.g. {names[0]}: "
                f"{w.mips[bad[0]]:g} MIPS, {w.ram_mb[bad[0]]:g} MB) - not dropped; add hosts or larger kinds",
                names,
            )
        if len({p.vm for p in placements}) != len(placements):
            raise SimulationError(f"policy {policy.spec.name} placed a guest twice")
        for p in placements:  # in the policy's order (CloudSim: guest order)
            h = p.host
            members[h, count[h]] = p.vm
            count[h] += 1
            vm_host[p.vm] = h
        if realistic:
            req[:] = demand0
        cap_pend = 8 * n + 64
        pend_t = np.zeros(cap_pend)
        pend_vm = np.zeros(cap_pend, dtype=np.int64)
        pend_dst = np.zeros(cap_pend, dtype=np.int64)
        n_pend = 0
        step = w.step_s
        end = w.duration_s
        t = 0.0 if realistic else CLOUDSIM_OFFSET_S + step
        if realistic:
            K.datacenter_update(0.0, H, V, P, ACC, True)
            t = step
        histories = Histories(recent=V[K.V_HIST], recent_len=V[K.V_HIST_LEN], full=V[K.V_FULL],  # type: ignore[arg-type]
                              full_len=V[K.V_FULL_LEN])  # type: ignore[arg-type]
        times: list[float] = []
        snap = np.zeros(3)
        s_active: list[int] = []
        s_power: list[float] = []
        s_short: list[int] = []
        s_mig: list[int] = []
        while t < end:
            n_pend = K.complete_migrations(t, H, V, P, ACC, pend_t, pend_vm, pend_dst, n_pend)
            K.datacenter_update(t, H, V, P, ACC, realistic)
            state = self._state(t, H, V, req)
            decisions = policy.decide(state, histories)
            moves = [d for d in decisions if isinstance(d, Migrate)]
            if hook is not None:
                hook(state, moves)
            k = len(moves)
            if k:
                vms = np.fromiter((d.vm for d in moves), dtype=np.int64, count=k)
                dst = np.fromiter((d.target for d in moves), dtype=np.int64, count=k)
                if vms.min() < 0 or vms.max() >= n or dst.min() < 0 or dst.max() >= m:
                    raise SimulationError(f"policy {policy.spec.name} returned a migration out of range")
                if np.any(vm_host[vms] < 0) or np.any(vm_host[vms] == dst):
                    raise SimulationError(
                        f"policy {policy.spec.name} migrated a guest that is gone, or to the host it is on"
                    )
                if n_pend + k > pend_t.shape[0]:
                    grow = max(2 * pend_t.shape[0], n_pend + k)
                    pend_t = np.resize(pend_t, grow)
                    pend_vm = np.resize(pend_vm, grow)
                    pend_dst = np.resize(pend_dst, grow)
                n_pend = K.start_migrations(t, vms, dst, k, H, V, P, ACC, pend_t, pend_vm, pend_dst, n_pend)
            if keep_series:
                K.snapshot(t, H, snap)
                times.append(t)
                s_active.append(int(snap[0]))
                s_power.append(float(snap[1]))
                s_short.append(int(snap[2]))
                s_mig.append(k)
            t = t + step
        n_pend = K.complete_migrations(end, H, V, P, ACC, pend_t, pend_vm, pend_dst, n_pend)
        K.finish(H, V, ACC)
        elapsed = time.perf_counter() - started
        active_t = ACC[K.A_ACTIVE_T]
        req_int = ACC[K.A_REQ_INT]
        span = max(ACC[K.A_LAST_T] - ACC[K.A_FIRST_T], 1e-9)
        series = None
        if keep_series:
            series = StepSeries(
                time_s=np.array(times), active_hosts=np.array(s_active, dtype=np.int64), power_w=np.array(s_power),
                short_hosts=np.array(s_short, dtype=np.int64), migrations=np.array(s_mig, dtype=np.int64),
            )
        return SimulationResult(
            policy=policy.spec.name,
            model=self.model,
            energy_kwh=float(ACC[K.A_ENERGY] / 3.6e6),
            slatah=float(ACC[K.A_VIOL_T] / active_t) if active_t > 0 else 0.0,
            pdm=float(ACC[K.A_MIG_LOSS] / req_int) if req_int > 0 else 0.0,
            migrations=int(ACC[K.A_MIGRATIONS]),
            host_shutdowns=int(ACC[K.A_SHUTDOWNS]),
            mean_active_hosts=float(active_t / span),
            run_time_s=elapsed,
            vms=n,
            hosts=m,
            simulated_s=float(end),
            vms_gone=int(ACC[K.A_GONE]),
            overall_sla=float((req_int - ACC[K.A_ALLOC_INT]) / req_int) if req_int > 0 else 0.0,
            wakes=int(ACC[K.A_WAKES]),
            served_mips_s=float(ACC[K.A_SERVED_FLOOR]),
            floor_kwh=float(ACC[K.A_SERVED_FLOOR] * self.best_w_per_mips / 3.6e6),
            series=series,
            notes=w.notes,
        )
