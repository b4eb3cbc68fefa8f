"""The planner (pure): traces + host kind + cap -> a placement on few hosts, never over the cap."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from corral.core.capacity import DEFAULT_CAP, Capacity, Demand, HostState, place
from corral.planning import packing as pk
from corral.planning.catalog import HostKind, load_catalog
from corral.planning.cost import CostComparison, CostParams, compare_costs, side_cost
from corral.planning.errors import InfeasibleError, PlanningError
from corral.planning.model import TraceSet
from corral.planning.names import DEFAULT_BEFORE_KIND

Progress = Callable[[str, float], None]  # (stage, fraction done)


@dataclass(frozen=True)
class Unplaceable:
    server: str
    reason: str


@dataclass(frozen=True)
class Validation:
    """A plan replayed against other traces of (mostly) the same servers."""

    label: str
    steps: int
    servers_matched: int
    servers_missing: tuple[str, ...]  # in the plan, absent from the other traces
    servers_new: tuple[str, ...]  # in the other traces, not in the plan (not counted)
    host_steps: int
    over_cap_host_steps: int
    over_100_host_steps: int
    hosts_ever_over_cap: int
    hosts_ever_over_100: int
    max_utilization: float  # of any host, any resource, any step (fraction of host capacity)
    mean_excess_over_cap: float  # mean of (utilization - cap) over the host-steps above the cap
    per_host_over_cap: tuple[int, ...]

    @property
    def over_cap_fraction(self) -> float:
        return self.over_cap_host_steps / self.host_steps if self.host_steps else 0.0

    @property
    def over_100_fraction(self) -> float:
        return self.over_100_host_steps / self.host_steps if self.host_steps else 0.0


@dataclass(frozen=True)
class KindOption:
    """One host kind, every server packed on it the same quick way: what it would take and cost."""

    kind: str
    hosts: int
    placed: int  # servers that fit an empty host of this kind
    unplaceable: int
    lower_bound: int
    binding: tuple[str, ...]  # the resource(s) whose own bound is the highest: what limits the count
    cost_per_year: float  # CostParams' yearly total (energy, amortization, upkeep, admin, rack)
    purchase: float  # hosts x price
    energy_kwh_year: float
    cheapest: bool = False  # the lowest cost per year among the kinds that hold every server


@dataclass(frozen=True)
class KindComparison:
    """Which hosts to buy: every kind of a catalog, packed by the same method."""

    options: tuple[KindOption, ...]
    method: str
    servers: int
    time_s: float

    @property
    def cheapest(self) -> KindOption | None:
        return next((o for o in self.options if o.cheapest), None)


@dataclass(frozen=True)
class Plan:
    traces: TraceSet
    host_kind: HostKind
    cap: float
    percentile: float | None
    resources: tuple[str, ...]
    assignment: npt.NDArray[np.int64]  # host index per server, -1 = unplaceable
    unplaceable: tuple[Unplaceable, ...]
    lower_bound: int
    bound_details: dict[str, int]
    first_fit_hosts: int
    peak_ffd_hosts: int
    method: str
    optimal: bool
    elapsed_s: float
    costs: CostComparison
    validation: Validation | None = None
    notes: tuple[str, ...] = field(default=())
    kinds: KindComparison | None = None

    @property
    def hosts(self) -> list[list[int]]:
        return pk.assignment_to_hosts(self.assignment)

    @property
    def n_hosts(self) -> int:
        return len(self.hosts)

    @property
    def gap(self) -> float | None:
        """hosts / lower bound - 1 (None when the bound is 0)."""
        return self.n_hosts / self.lower_bound - 1.0 if self.lower_bound else None


def allowed_over_steps(percentile: float | None, steps: int) -> int:
    """Steps per resource a host may spend above the cap: floor((100 - P) % of the steps)."""
    if percentile is None:
        return 0
    return math.floor((100.0 - percentile) / 100.0 * steps + 1e-9)


def normalized_demand(
    traces: TraceSet, kind: HostKind, cap: float, resources: Sequence[str]
) -> npt.NDArray[np.float64]:
    """(servers, resources, steps): demand / (cap x host capacity)."""
    out = np.empty((traces.n_servers, len(resources), traces.n_steps))
    for j, r in enumerate(resources):
        c = kind.capacity(r)
        if c <= 0:
            raise PlanningError(f"host kind {kind.name} has no {r} capacity")
        out[:, j, :] = traces.demand[r] / (cap * c)
    return out


MIN_CAP = 0.01
MAX_TIME_BUDGET_S = 86_400.0


def check_cap(cap: float, percentile: float | None) -> None:
    """Raise on a cap outside [0.01, 1] or a percentile outside (0, 100]."""
    if isinstance(cap, bool) or not isinstance(cap, float | int) or not math.isfinite(cap) or not MIN_CAP <= cap <= 1:
        raise InfeasibleError(f"impossible cap {cap}: it must be in [{MIN_CAP}, 1], e.g. 0.85")
    if percentile is not None and (
        isinstance(percentile, bool)
        or not isinstance(percentile, float | int)
        or not (math.isfinite(percentile) and 0.0 < percentile <= 100.0)
    ):
        raise PlanningError(f"percentile {percentile} must be in (0, 100]")


def check_time_budget(seconds: float) -> None:
    """Raise unless the search budget is a number of seconds in [0, 86400]."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, float | int)
        or not (math.isfinite(seconds) and 0 <= seconds <= MAX_TIME_BUDGET_S)
    ):
        raise PlanningError(f"time budget {seconds} s: it must be from 0 to {MAX_TIME_BUDGET_S:.0f} seconds")


def _check_request(traces: TraceSet, cap: float, percentile: float | None, resources: Sequence[str]) -> None:
    check_cap(cap, percentile)
    if not resources:
        raise PlanningError("no resource to plan on")
    missing = [r for r in resources if r not in traces.demand]
    if missing:
        raise PlanningError(f"the traces carry no {', '.join(missing)} data (they have: {', '.join(traces.resources)})")
    if len(set(resources)) != len(resources):
        raise PlanningError("a resource is listed twice")


def why_unplaceable(traces: TraceSet, server: int, kind: HostKind, cap: float, resources: Sequence[str],
                    k: int, percentile: float | None) -> str:
    """Why a server fits no empty host of `kind`, in the words of the one capacity model: its peaks
    (with a percentile: the value it may exceed on only k steps) against the capped capacities, and with
    a percentile its peaks against the host's whole capacity, which is never to be exceeded."""
    peaks = {r: float(traces.demand[r][server].max()) for r in resources}
    tests = [("peak", peaks, 1.0, "100 %")] if k else []
    kept = {r: float(np.sort(traces.demand[r][server])[-min(k + 1, traces.n_steps)]) for r in resources} \
        if k else peaks
    tests.append((f"{percentile}th percentile" if k else "peak", kept, cap, f"{cap:.0%}"))
    reasons: list[str] = []
    for what, needs, share, share_text in tests:
        host = HostState(kind.name, tuple(Capacity(r, r, share * kind.capacity(r)) for r in resources))
        result = place(host, Demand(traces.names[server], needs))
        if isinstance(result, tuple):
            reasons = [f"{v.resource} {what} {human(v.would_use, v.resource)} exceeds {share_text} of a "
                       f"{kind.name} host ({human(v.limit, v.resource)})" for v in result]
            break
    return "; ".join(reasons) or f"it fits no empty {kind.name} host at the cap"


def plan_consolidation(
    traces: TraceSet,
    host_kind: HostKind,
    cap: float = DEFAULT_CAP,
    percentile: float | None = None,
    resources: Sequence[str] | None = None,
    time_budget_s: float = 5.0,
    *,
    before_kind: HostKind | None = None,
    cost_params: CostParams | None = None,
    catalog: Mapping[str, HostKind] | None = None,
    exact_max_servers: int = 30,
    group_size: int = 20_000,
    seed: int = 0,
    progress: Progress | None = None,
) -> Plan:
    """Place every server on hosts of ``host_kind`` so that, for every resource and every step (or
    all but floor((100-P) % of steps) per resource, and never above the host's 100 %, when
    ``percentile`` P is given), each host's summed demand stays <= ``cap`` of its capacity, using
    as few hosts as the search finds within ``time_budget_s``.

    Method: best-fit decreasing over the time series; then, up to ``exact_max_servers`` servers
    (strict mode), CP-SAT (proves the optimum when it can); otherwise drop-a-host-and-repair by
    tabu search on the overflow (moves and swaps). Servers too big for an empty host are reported
    in ``unplaceable``, never dropped silently. See docs/planning.md.

    The plan also compares the kinds of ``catalog`` (default: the built-in catalog; ``{}``: none)
    and ``host_kind`` with ``compare_kinds`` (``Plan.kinds``), outside the time budget.
    """
    t0 = time.perf_counter()
    check_time_budget(time_budget_s)
    deadline = t0 + time_budget_s
    res = tuple(resources) if resources is not None else traces.resources
    _check_request(traces, cap, percentile, res)
    k = allowed_over_steps(percentile, traces.n_steps)
    lim = pk.Limits(k=k, hard=(1.0 / cap) if percentile is not None else 1.0)
    D = normalized_demand(traces, host_kind, cap, res)
    say = progress or (lambda stage, frac: None)
    if lim.k == 0 and not _exact_fits(D, exact_max_servers) and time_budget_s > 0:
        from corral.planning import kernels

        say("compiling the search", 0.0)  # seconds the first time, then loaded from Numba's cache
        kernels.warm_up()
        deadline = time.perf_counter() + max(0.0, time_budget_s)  # compiling is not search time

    bad = pk.unplaceable_mask(D, lim)
    unplaceable = [Unplaceable(traces.names[i], why_unplaceable(traces, i, host_kind, cap, res, k, percentile))
                   for i in np.flatnonzero(bad).tolist()]
    ok_idx = np.flatnonzero(~bad)
    Dp = D[ok_idx]
    say("first fit", 0.0)
    n_ok = int(ok_idx.size)
    peak_hosts = int(pk.peak_ffd(Dp, lim).max()) + 1 if n_ok else 0
    lb, details = pk.lower_bound(Dp, lim) if n_ok else (0, {})
    lb = max(lb, 1) if n_ok else 0  # idle servers still need a host
    details = {_label(key, res): v for key, v in details.items()}
    groups = (_groups(Dp, group_size) if n_ok > 2 * group_size else [np.arange(n_ok)]) if n_ok else []
    assign_p = np.full(n_ok, -1, dtype=np.int64)
    ffd_hosts, offset, methods, proven_all = 0, 0, set(), True
    start = time.perf_counter()
    for g, idx in enumerate(groups):
        # each group gets its share of what is left of the budget
        group_deadline = start + (deadline - start) * (g + 1) / len(groups)

        def tick(hosts: int, g: int = g) -> None:
            done = (time.perf_counter() - start) / max(deadline - start, 1e-9)
            say(f"search, {hosts} hosts" if len(groups) == 1 else f"search, group {g + 1}", min(1.0, done))

        sub, ffd_g, method_g, proven_g = _search(Dp[idx], lim, group_deadline, exact_max_servers, seed, tick)
        assign_p[idx] = sub + offset
        offset += int(sub.max()) + 1
        ffd_hosts += ffd_g
        methods.add(method_g)
        proven_all = proven_all and proven_g
        say("search", (g + 1) / len(groups))
    method = " / ".join(sorted(methods)) if methods else "nothing to place"
    if len(groups) > 1:
        method += f" (in {len(groups)} groups of ~{group_size} servers)"
    n_hosts = int(assign_p.max()) + 1 if n_ok else 0
    optimal = n_hosts == lb or (len(groups) == 1 and proven_all and n_ok > 0)
    say("done", 1.0)
    if ok_idx.size and not pk.check_assignment(Dp, assign_p, lim):  # defensive: never a wrong plan
        raise PlanningError("internal error: the search produced a plan over the cap")
    assignment = np.full(traces.n_servers, -1, dtype=np.int64)
    assignment[ok_idx] = pk.compact(assign_p) if ok_idx.size else assign_p
    before_kind = before_kind or load_catalog()[DEFAULT_BEFORE_KIND]
    costs = compare_costs(
        before_kind,
        before_utilization(traces)[assignment >= 0],
        host_kind,
        host_utilization(traces, host_kind, assignment, "cpu"),
        cost_params,
    )
    elapsed = time.perf_counter() - t0
    kinds = dict(load_catalog() if catalog is None else catalog)
    comparison = None
    if kinds:
        kinds[host_kind.name] = host_kind  # the planned kind as planned, even if the catalog has another
        say("comparing host kinds", 1.0)
        comparison = compare_kinds(traces, list(kinds.values()), cap, percentile, res, cost_params)
    return Plan(
        traces=traces,
        host_kind=host_kind,
        cap=float(cap),
        percentile=percentile,
        resources=res,
        assignment=assignment,
        unplaceable=tuple(unplaceable),
        lower_bound=lb,
        bound_details=details,
        first_fit_hosts=ffd_hosts,
        peak_ffd_hosts=peak_hosts,
        method=method,
        optimal=optimal,
        elapsed_s=elapsed,
        costs=costs,
        notes=traces.notes,
        kinds=comparison,
    )


def _groups(D: npt.NDArray[np.float64], size: int) -> list[npt.NDArray[np.int64]]:
    """Split servers into groups of about ``size`` with similar mixes (dealt round-robin in order
    of size), planned one by one: the search cost grows with servers x hosts, and big instances
    lose little by being split."""
    n = D.shape[0]
    count = max(1, round(n / size))
    order = np.argsort(-pk.sizes(D), kind="stable")
    return [np.sort(order[g::count]) for g in range(count)]


#: CP-SAT's model has up to servers x hosts x (resources x steps) terms, built in Python before its
#: time limit starts: beyond this many (e.g. 20 servers over 100,000 steps) the search is used instead.
EXACT_MAX_TERMS = 2_000_000


def _exact_fits(D: npt.NDArray[np.float64], exact_max_servers: int) -> bool:
    n, R, T = (int(x) for x in D.shape)
    return n <= exact_max_servers and n * n * R * T <= EXACT_MAX_TERMS


def _search(
    D: npt.NDArray[np.float64],
    lim: pk.Limits,
    deadline: float,
    exact_max_servers: int,
    seed: int,
    tick: Callable[[int], None] | None = None,
) -> tuple[npt.NDArray[np.int64], int, str, bool]:
    """Plan one group: (assignment, first-fit hosts, method, proven optimal)."""
    ffd = pk.first_fit_decreasing(D, lim)
    ffd_hosts = int(ffd.max()) + 1
    # a second construction that keeps hosts flat; the search starts from the better of the two
    lpf = pk.least_peak_fit(D, lim)
    start, how = (lpf, "least-peak fit") if int(lpf.max()) < int(ffd.max()) else (ffd, "best-fit decreasing")
    start_hosts = int(start.max()) + 1
    lb = max(1, pk.lower_bound(D, lim)[0])  # idle servers still need a host
    if start_hosts == lb:
        return start, ffd_hosts, how, True
    if lim.k == 0 and _exact_fits(D, exact_max_servers):
        sol, proven, _ = pk.exact_cpsat(D, start_hosts, deadline - time.perf_counter())
        if sol is not None and int(sol.max()) + 1 <= start_hosts and pk.check_assignment(D, sol, lim):
            return sol, ffd_hosts, "CP-SAT" + (" (optimal)" if proven else " (time limit)"), proven
        return start, ffd_hosts, f"{how} (CP-SAT found nothing better in time)", False
    cur, method = start, f"{how} + drop-and-repair (tabu search)"
    if lim.k:  # percentile mode: first empty what can be emptied by plain moves
        now = time.perf_counter()
        cur = pk.empty_hosts(D, start, lim, now + 0.2 * max(0.0, deadline - now))
        method = f"{how} + local search + drop-and-repair (tabu search)"
    cur = pk.minimize_hosts(D, cur, lb, deadline, seed=seed, lim=lim, on_progress=tick)
    if pk.check_assignment(D, cur, lim) and int(cur.max()) + 1 <= start_hosts:
        return pk.compact(cur), ffd_hosts, method, int(cur.max()) + 1 == lb
    return start, ffd_hosts, method, False


def human(value: float, resource: str) -> str:
    """A demand or capacity in readable units."""
    if resource == "cpu":
        return f"{value:,.0f} MHz"
    unit = "B" if resource == "mem" else "B/s"
    for prefix in ("", "K", "M", "G", "T"):
        if abs(value) < 1024 or prefix == "T":
            return f"{value:,.1f} {prefix}{unit}"
        value /= 1024
    return f"{value} {unit}"


def _label(key: str, res: Sequence[str]) -> str:
    r, _, what = key.partition("_")
    return f"{res[int(r[1:])]}_{what}"


def before_utilization(traces: TraceSet, resource: str = "cpu") -> npt.NDArray[np.float64]:
    """Each server's utilization of its own capacity for ``resource`` (default CPU), (servers,
    steps), clipped to [0, 1]; zeros when the traces do not carry it."""
    if resource not in traces.demand:
        return np.zeros((traces.n_servers, traces.n_steps))
    cap = traces.capacity[resource][:, None]
    with np.errstate(over="ignore"):  # a capacity of 1e-300 (a data quirk) is simply 100 % busy
        return np.asarray(np.clip(traces.demand[resource] / cap, 0.0, 1.0))


def host_utilization(
    traces: TraceSet, kind: HostKind, assignment: npt.NDArray[np.int64], resource: str
) -> npt.NDArray[np.float64]:
    """(hosts, steps): each host's summed demand / its capacity for ``resource`` (zeros if absent)."""
    m = int(assignment.max()) + 1 if (assignment >= 0).any() else 0
    if resource not in traces.demand or m == 0:
        return np.zeros((m, traces.n_steps))
    loads = pk.host_loads(assignment, traces.demand[resource], m)
    return np.asarray(loads / kind.capacity(resource), dtype=np.float64)


def replay(
    hosts: Sequence[Sequence[str]],
    kind: HostKind,
    cap: float,
    resources: Sequence[str],
    other: TraceSet,
    label: str = "",
) -> Validation:
    """Replay a placement (server names per host) against ``other`` traces: how often and by how
    much hosts go above the cap and above 100 %. Servers absent from ``other`` are listed and
    count as zero demand; servers of ``other`` absent from the plan are listed and ignored."""
    missing_r = [r for r in resources if r not in other.demand]
    if missing_r:
        raise PlanningError(f"the validation traces carry no {', '.join(missing_r)} data")
    index = {n: i for i, n in enumerate(other.names)}
    planned = {s for h in hosts for s in h}
    missing = tuple(sorted(s for s in planned if s not in index))
    new = tuple(sorted(n for n in other.names if n not in planned))
    T = other.n_steps
    util = np.zeros((len(hosts), len(resources), T))
    for h, members in enumerate(hosts):
        idx = [index[s] for s in members if s in index]
        for j, r in enumerate(resources):
            if idx:
                util[h, j] = other.demand[r][idx].sum(axis=0) / kind.capacity(r)
    worst = util.max(axis=1) if len(hosts) else np.zeros((0, T))  # (hosts, steps)
    over_cap = worst > cap + 1e-9
    over_100 = worst > 1.0 + 1e-9
    excess = worst[over_cap] - cap
    return Validation(
        label=label,
        steps=T,
        servers_matched=len(planned) - len(missing),
        servers_missing=missing,
        servers_new=new,
        host_steps=int(worst.size),
        over_cap_host_steps=int(over_cap.sum()),
        over_100_host_steps=int(over_100.sum()),
        hosts_ever_over_cap=int(over_cap.any(axis=1).sum()) if len(hosts) else 0,
        hosts_ever_over_100=int(over_100.any(axis=1).sum()) if len(hosts) else 0,
        max_utilization=float(worst.max()) if worst.size else 0.0,
        mean_excess_over_cap=float(excess.mean()) if excess.size else 0.0,
        per_host_over_cap=tuple(int(x) for x in over_cap.sum(axis=1)),
    )


def kinds_that_fit(
    traces: TraceSet,
    server: str,
    kinds: Sequence[HostKind],
    cap: float,
    percentile: float | None,
    resources: Sequence[str],
) -> list[str]:
    """Names of the host kinds on which ``server`` alone would respect the cap."""
    i = traces.names.index(server)
    one = traces.subset([traces.names[i]])
    k = allowed_over_steps(percentile, traces.n_steps)
    lim = pk.Limits(k=k, hard=(1.0 / cap) if percentile is not None else 1.0)
    out = []
    for kind in kinds:
        if all(kind.capacity(r) > 0 for r in resources):
            D = normalized_demand(one, kind, cap, resources)
            if pk.host_ok(D[0], lim):
                out.append(kind.name)
    return out


def bounds_by_resource(by: Mapping[str, float], resources: Sequence[str]) -> dict[str, int]:
    """Per resource, the highest of its lower bounds (``lower_bound.by`` keys are ``RESOURCE_WHAT``):
    the hosts that resource alone needs, whatever the others."""
    out: dict[str, int] = {}
    for key, v in by.items():
        r, sep, _ = key.partition("_")
        if sep and r in resources:
            out[r] = max(out.get(r, 0), int(v))
    return {r: out[r] for r in resources if r in out}


def binding_resources(by_resource: Mapping[str, int], need: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """The resource(s) that bound the host count: the highest per-resource bound, ties broken by
    ``need`` (the busiest step's summed demand, in capped hosts) when given. Empty when no resource
    needs more than one host (one host holds everything: nothing binds)."""
    if not by_resource:
        return ()
    top = max(by_resource.values())
    if top <= 1:
        return ()
    tied = [r for r, v in by_resource.items() if v == top]
    if need and len(tied) > 1:
        most = max(need.get(r, 0.0) for r in tied)
        tied = [r for r in tied if need.get(r, 0.0) >= most - 1e-9]
    return tuple(tied)


def peak_need(traces: TraceSet, kind: HostKind, cap: float, resources: Sequence[str],
              servers: npt.NDArray[np.bool_] | None = None) -> dict[str, float]:
    """Per resource, the servers' summed demand at its busiest step, in hosts of ``kind`` at the cap:
    the fractional figure behind the resource's ``total`` bound."""
    out = {}
    for r in resources:
        dem = traces.demand[r] if servers is None else traces.demand[r][servers]
        c = cap * kind.capacity(r)
        total = float(dem.sum(axis=0).max()) if dem.size else 0.0
        out[r] = total / c if c > 0 else (math.inf if total > 0 else 0.0)
    return out


#: The comparison of host kinds packs about this many servers at a time (its cost grows with servers x
#: hosts: 10,000 servers on small hosts take 7 s in one piece, 2 s in five), but only where each group
#: still needs COMPARE_GROUP_HOSTS hosts or more (big hosts pack fast whole, and lose most by splitting).
COMPARE_GROUP = 2_000
COMPARE_GROUP_HOSTS = 50


def _normalized_or_inf(
    traces: TraceSet, kind: HostKind, cap: float, resources: Sequence[str]
) -> npt.NDArray[np.float64]:
    """normalized_demand, where a kind without some resource (capacity 0) cannot hold any demand of it."""
    out = np.empty((traces.n_servers, len(resources), traces.n_steps))
    for j, r in enumerate(resources):
        c = cap * kind.capacity(r)
        out[:, j, :] = traces.demand[r] / c if c > 0 else np.where(traces.demand[r] > 0, np.inf, 0.0)
    return out


def compare_kinds(
    traces: TraceSet,
    kinds: Sequence[HostKind],
    cap: float = DEFAULT_CAP,
    percentile: float | None = None,
    resources: Sequence[str] | None = None,
    cost_params: CostParams | None = None,
    *,
    group_size: int = COMPARE_GROUP,
) -> KindComparison:
    """Which kind of host to buy (pure): every server packed on each kind by the same quick method,
    best-fit decreasing over the time series under the same rule as the plan (cap, percentile), in
    groups of about ``group_size`` servers where each group still needs 50 hosts or more. Per kind:
    the hosts, the lower bound and the resource that binds, the servers too big for it, and the
    yearly cost of CostParams (its hosts at their CPU utilization over time). ``cheapest`` marks the
    lowest cost per year among the kinds that hold every server (none when no kind does). Kinds of
    the same name are compared once (the first)."""
    t0 = time.perf_counter()
    res = tuple(resources) if resources is not None else traces.resources
    _check_request(traces, cap, percentile, res)
    k = allowed_over_steps(percentile, traces.n_steps)
    lim = pk.Limits(k=k, hard=(1.0 / cap) if percentile is not None else 1.0)
    params = cost_params or CostParams()
    size = max(1, int(group_size))
    grouped = False
    options: list[KindOption] = []
    seen: set[str] = set()
    for kind in kinds:
        if kind.name in seen:
            continue
        seen.add(kind.name)
        with np.errstate(divide="ignore", invalid="ignore"):
            D = _normalized_or_inf(traces, kind, cap, res)
        bad = pk.unplaceable_mask(D, lim)
        ok = np.flatnonzero(~bad)
        Dp = D[ok]
        lb, details = pk.lower_bound(Dp, lim) if ok.size else (0, {})
        lb = max(lb, 1) if ok.size else 0
        assign = np.full(ok.size, -1, dtype=np.int64)
        hosts = 0
        if ok.size:
            # split only where each group still fills many hosts: a group's last host is partly empty
            count = max(1, min(round(ok.size / size), lb // COMPARE_GROUP_HOSTS))
            groups = _groups(Dp, math.ceil(ok.size / count)) if count > 1 else [np.arange(ok.size)]
            grouped = grouped or len(groups) > 1
            for idx in groups:
                sub = pk.first_fit_decreasing(Dp[idx], lim)
                assign[idx] = sub + hosts
                hosts += int(sub.max()) + 1
        by = bounds_by_resource({_label(key, res): v for key, v in details.items()}, res)
        full = np.full(traces.n_servers, -1, dtype=np.int64)
        full[ok] = assign
        side = side_cost(kind, host_utilization(traces, kind, full, "cpu"), params)
        need = peak_need(traces, kind, cap, res, ~bad) if ok.size else None
        options.append(KindOption(
            kind=kind.name, hosts=hosts, placed=int(ok.size), unplaceable=int(bad.sum()), lower_bound=lb,
            binding=binding_resources(by, need), cost_per_year=side.total, purchase=hosts * kind.price,
            energy_kwh_year=side.energy_kwh_year,
        ))  # fmt: skip
    whole = [o for o in options if o.unplaceable == 0]
    if whole:
        best = min(whole, key=lambda o: (o.cost_per_year, o.hosts, o.kind))
        options = [replace(o, cheapest=True) if o is best else o for o in options]
    method = "best-fit decreasing over the time series"
    if grouped:
        method += f", in groups of ~{size:,} servers on kinds that need {2 * COMPARE_GROUP_HOSTS}+ hosts"
    return KindComparison(tuple(options), method, traces.n_servers, time.perf_counter() - t0)


def validate_plan(plan: Plan, other: TraceSet, label: str = "") -> Plan:
    """The plan with its out-of-sample replay against ``other`` attached."""
    hosts = [[plan.traces.names[i] for i in h] for h in plan.hosts]
    v = replay(hosts, plan.host_kind, plan.cap, plan.resources, other, label)
    return replace(plan, validation=v)
