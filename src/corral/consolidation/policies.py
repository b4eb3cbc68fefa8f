"""Policy names, their parameters, and the one entry point every balancer calls: ``decide``.

Names follow the paper: ``DETECTOR-SELECTION-PARAMETER`` (``thr-mmt-0.8``, ``iqr-mmt-1.5``,
``mad-mmt-2.5``, ``lr-mmt-1.2``, ``lrr-mmt-1.2``; detectors thr, iqr, mad, lr, lrr; selections
mmt, mc, rs, mu), case-insensitive, and ``corral`` for Corral's own policy (the default).

A policy is an object with two pure methods over plain data:

- ``place(state)`` -> ``Place`` decisions for the guests not on any host yet (time 0);
- ``decide(state, histories)`` -> ``Migrate`` / ``SwitchOff`` / ``SwitchOn`` decisions, in the
  order they are to be carried out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Protocol

from corral.consolidation.errors import PolicyError
from corral.consolidation.state import ClusterState, Decision, Histories, Place

DETECTORS = ("thr", "iqr", "mad", "lr", "lrr")
SELECTIONS = ("mmt", "mc", "rs", "mu")
DEFAULT_POLICY = "corral"
_NAME = re.compile(r"^([a-z]+)-([a-z]+)-(.+)$")


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy name. ``options`` holds Corral's tunables (``corral:key=value,...``)."""

    name: str
    detector: str = ""
    selection: str = ""
    parameter: float = math.nan
    options: dict[str, float] = field(default_factory=dict)

    @property
    def is_corral(self) -> bool:
        return self.detector == ""


def parse_policy(text: str) -> PolicySpec:
    """``thr-mmt-0.8`` -> PolicySpec; raises PolicyError with the reason on one line."""
    raw = text.strip().lower()
    if raw == "corral" or raw.startswith("corral:"):
        return PolicySpec(name="corral", options=_corral_options(raw, text))
    m = _NAME.match(raw)
    if not m:
        raise PolicyError(
            f"unknown policy {text!r}: use corral or DETECTOR-SELECTION-PARAMETER "
            f"(detectors {', '.join(DETECTORS)}; selections {', '.join(SELECTIONS)}), e.g. lr-mmt-1.2"
        )
    det, sel, par = m.groups()
    if det not in DETECTORS:
        raise PolicyError(f"unknown policy {text!r}: unknown detector {det!r} (known: {', '.join(DETECTORS)})")
    if sel not in SELECTIONS:
        raise PolicyError(f"unknown policy {text!r}: unknown VM selection {sel!r} (known: {', '.join(SELECTIONS)})")
    try:
        value = float(par)
    except ValueError:
        raise PolicyError(f"bad parameter in {text!r}: {par!r} is not a number") from None
    if not math.isfinite(value):
        raise PolicyError(f"bad parameter in {text!r}: {par!r} is not a finite number")
    if det == "thr" and not 0.0 < value <= 1.0:
        raise PolicyError(f"bad parameter in {text!r}: the THR utilization threshold must be in (0, 1], got {value:g}")
    if det in ("iqr", "mad") and value < 0.0:
        raise PolicyError(f"bad parameter in {text!r}: the {det.upper()} safety parameter must be >= 0, got {value:g}")
    if det in ("lr", "lrr") and value <= 0.0:
        raise PolicyError(f"bad parameter in {text!r}: the {det.upper()} safety parameter must be > 0, got {value:g}")
    return PolicySpec(name=f"{det.upper()}-{sel.upper()}-{par}", detector=det, selection=sel, parameter=value)


def _corral_options(raw: str, text: str) -> dict[str, float]:
    from corral.consolidation.corral import DEFAULTS

    if raw == "corral":
        return {}
    out: dict[str, float] = {}
    for item in raw.split(":", 1)[1].split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in DEFAULTS:
            raise PolicyError(f"bad option {item.strip()!r} in {text!r} (known: {', '.join(sorted(DEFAULTS))})")
        try:
            out[key] = float(val)
        except ValueError:
            raise PolicyError(f"bad option {item.strip()!r} in {text!r}: not a number") from None
        if not math.isfinite(out[key]) or out[key] < 0:
            raise PolicyError(f"bad option {item.strip()!r} in {text!r}: must be a finite number >= 0")
    return out


class Policy(Protocol):
    """What the simulator and the live balancer call."""

    spec: PolicySpec

    def place(self, state: ClusterState) -> list[Place]: ...

    def decide(self, state: ClusterState, histories: Histories) -> list[Decision]: ...


def make_policy(spec: PolicySpec | str, *, realistic: bool = False, seed: int = 0) -> Policy:
    """The policy object for ``spec``. ``realistic``: memory is enforced at placement and ``lrr``
    is the robust regression (CloudSim 4.0 runs ``lr`` for it)."""
    if isinstance(spec, str):
        spec = parse_policy(spec)
    if spec.is_corral:
        from corral.consolidation.corral import CorralPolicy

        return CorralPolicy(spec, realistic=realistic)
    from corral.consolidation.heuristics import CloudSimPolicy

    return CloudSimPolicy(spec, realistic=realistic, seed=seed)


def decide(state: ClusterState, histories: Histories, params: PolicySpec | str) -> list[Decision]:
    """One balancing round of the policy ``params`` on ``state``: the decisions, in order."""
    return make_policy(params).decide(state, histories)

