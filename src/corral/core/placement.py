"""Placement of a guest on one of several hosts: small filters and weighers in registries (pure).

Each filter looks at one candidate host and says why it cannot take the guest (or None: it can);
each weigher scores a host that passed every filter, higher is better. `choose()` runs them and
keeps the whole story, so `--explain` can say which filter removed which host and how the rest
weighed. Nova's scheduler is the model: one-method filters and weighers, weights normalized, but the
reasons kept for the user rather than only in a debug log.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from corral.core.capacity import Demand, HostState, place
from corral.core.errors import InvalidInput


@dataclass(frozen=True)
class Candidate:
    """A host as placement sees it."""

    name: str
    reachable: bool
    maintenance: bool = False
    standby: bool = False
    capacity: HostState | None = None  # None when it could not be read
    has_image: bool = True
    why_no_image: str = ""
    reachable_by_peers: bool = True  # other hosts can migrate guests into it


Filter = Callable[[Candidate, Demand], str | None]
Weigher = Callable[[Candidate, Demand], float]


def _reachable(host: Candidate, _guest: Demand) -> str | None:
    return None if host.reachable else "libvirt there does not answer"


def _not_in_maintenance(host: Candidate, _guest: Demand) -> str | None:
    return "in maintenance" if host.maintenance else None


def _not_in_standby(host: Candidate, _guest: Demand) -> str | None:
    return "in standby (wake it first: corral host wake)" if host.standby else None


def _admission(host: Candidate, guest: Demand) -> str | None:
    if host.capacity is None:
        return "its capacity could not be read"
    result = place(host.capacity, guest)
    return "; ".join(v.describe() for v in result) if isinstance(result, tuple) else None


def _image(host: Candidate, _guest: Demand) -> str | None:
    return None if host.has_image else (host.why_no_image or "the guest's image cannot be had there")


def _peers_reach(host: Candidate, _guest: Demand) -> str | None:
    return None if host.reachable_by_peers else "other hosts cannot reach it by its URI (no host name in it)"


FILTERS: dict[str, Filter] = {
    "reachable": _reachable,
    "not-in-maintenance": _not_in_maintenance,
    "not-in-standby": _not_in_standby,
    "admission": _admission,
    "image": _image,
    "reachable-by-peers": _peers_reach,
}
NEW_GUEST_FILTERS = ("reachable", "not-in-maintenance", "not-in-standby", "admission", "image")
MIGRATION_FILTERS = (*NEW_GUEST_FILTERS, "reachable-by-peers")


def _load_after(host: Candidate, guest: Demand, resource: str = "cpu") -> float:
    """The share of a resource's capacity the host would use with the guest on it (0..1)."""
    assert host.capacity is not None
    limit = next((c.limit for c in host.capacity.capacity if c.resource == resource), 0.0)
    if limit <= 0:
        return 0.0
    return (host.capacity.used(resource) + guest.needs.get(resource, 0.0)) / limit


def _pack(host: Candidate, guest: Demand) -> float:
    """Fill the busiest host that still fits: the point is to use few hosts."""
    return max(_load_after(host, guest, "cpu"), _load_after(host, guest, "memory"))


def _spread(host: Candidate, guest: Demand) -> float:
    """The least loaded host: headroom everywhere, more hosts on."""
    return -_pack(host, guest)


WEIGHERS: dict[str, Weigher] = {"pack": _pack, "spread": _spread}
DEFAULT_WEIGHER = "pack"


@dataclass(frozen=True)
class Placement:
    chosen: str | None
    removed: Mapping[str, tuple[str, str]]  # host -> (filter, why)
    weights: Mapping[str, float] = field(default_factory=dict)  # hosts that passed every filter
    weigher: str = DEFAULT_WEIGHER

    def explain(self) -> list[str]:
        lines = [f"{host}: removed by {name}: {why}" for host, (name, why) in self.removed.items()]
        lines += [f"{host}: {self.weigher} weight {weight:.3f}" + (" <- chosen" if host == self.chosen else "")
                  for host, weight in sorted(self.weights.items(), key=lambda kv: -kv[1])]
        return lines

    def refusal(self, guest: str) -> str:
        reasons = "; ".join(f"{host}: {why}" for host, (_name, why) in self.removed.items())
        return f"no host can take {guest}: {reasons}" if reasons else f"no host can take {guest}: no hosts"


def check_weigher(name: str) -> str:
    if name not in WEIGHERS:
        raise InvalidInput(f"unknown weigher {name!r}: use one of {', '.join(WEIGHERS)}")
    return name


def choose(candidates: Sequence[Candidate], guest: Demand, weigher: str = DEFAULT_WEIGHER,
           filters: Sequence[str] = NEW_GUEST_FILTERS) -> Placement:
    """Run the filters in order on every candidate (the first that removes a host gives its reason),
    then weigh those left; the best weight wins, ties to the first registered host."""
    weigh = WEIGHERS[check_weigher(weigher)]
    removed: dict[str, tuple[str, str]] = {}
    weights: dict[str, float] = {}
    for host in candidates:
        for name in filters:
            why = FILTERS[name](host, guest)
            if why is not None:
                removed[host.name] = (name, why)
                break
        else:
            weights[host.name] = weigh(host, guest)
    chosen = max(weights, key=lambda h: (weights[h], -list(weights).index(h))) if weights else None
    return Placement(chosen, removed, weights, weigher)


@dataclass(frozen=True)
class MovePlan:
    """Where each of several guests goes (an evacuation), decided together before anything moves."""

    moves: Mapping[str, str]  # guest -> host
    unplaced: Mapping[str, str]  # guest -> why no host can take it


def plan_moves(candidates: Sequence[Candidate], guests: Sequence[Demand], weigher: str = "spread",
               eligible: Mapping[str, Collection[str]] | None = None) -> MovePlan:
    """Place guests one after the other, biggest first, each on the candidates as the earlier ones left
    them (a host's capacity is updated after every guest placed on it), so that together they never
    overload a host and are spread by placement rather than piled onto one. `eligible` limits a guest
    to some hosts (a shut-off guest cannot reach a host that does not share its storage)."""
    hosts = {c.name: c for c in candidates}
    order = sorted(guests, key=lambda g: (-g.needs.get("memory", 0.0), -g.needs.get("cpu", 0.0), g.name))
    moves: dict[str, str] = {}
    unplaced: dict[str, str] = {}
    for guest in order:
        allowed = None if eligible is None else eligible.get(guest.name)
        pool = [h for h in hosts.values() if allowed is None or h.name in allowed]
        placement = choose(pool, guest, weigher, MIGRATION_FILTERS)
        if placement.chosen is None:
            unplaced[guest.name] = "; ".join(f"{h}: {why}" for h, (_f, why) in placement.removed.items()) or "no hosts"
            continue
        chosen = hosts[placement.chosen]
        assert chosen.capacity is not None  # it passed the admission filter
        after = place(chosen.capacity, guest)
        assert isinstance(after, HostState)
        hosts[chosen.name] = replace(chosen, capacity=after)
        moves[guest.name] = chosen.name
    return MovePlan(moves, unplaced)
