"""Cost model, before and after consolidation (pure). Every figure is a field of CostParams."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from corral.planning.catalog import HostKind

HOURS_PER_YEAR = 8760.0


@dataclass(frozen=True)
class CostParams:
    """Defaults are stated assumptions (documented in docs/planning.md and shown in the report)."""

    energy_price_per_kwh: float = 0.20  # currency per kWh at the meter
    pue: float = 1.6  # power usage effectiveness: facility energy / IT energy (cooling, losses)
    amortization_years: float = 4.0  # hardware written off over this many years
    admin_per_machine_year: float = 400.0  # administration (patching, monitoring, backups) per machine
    rack_unit_per_year: float = 120.0  # rack space, per rack unit per year
    currency: str = "EUR"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SideCost:
    """Yearly cost of one side (before or after)."""

    machines: int
    kind: str
    mean_power_w: float  # IT power, all machines together
    energy_kwh_year: float  # facility energy (IT x PUE)
    energy: float
    amortization: float
    upkeep: float
    admin: float
    rack: float

    @property
    def total(self) -> float:
        return self.energy + self.amortization + self.upkeep + self.admin + self.rack

    @property
    def operating(self) -> float:
        """Everything but amortization (what consolidation saves every year once paid for)."""
        return self.energy + self.upkeep + self.admin + self.rack

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["total"] = self.total
        d["operating"] = self.operating
        return d


@dataclass(frozen=True)
class CostComparison:
    before: SideCost
    after: SideCost
    capex: float  # purchase of the new hosts
    params: CostParams

    @property
    def savings_per_year(self) -> float:
        return self.before.total - self.after.total

    @property
    def payback_years(self) -> float | None:
        """Purchase of the new hosts divided by the yearly operating savings (None: never)."""
        saved = self.before.operating - self.after.operating
        return self.capex / saved if saved > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "capex": self.capex,
            "savings_per_year": self.savings_per_year,
            "payback_years": self.payback_years,
            "params": self.params.to_json(),
        }


def power_at(kind: HostKind, util: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Watts from the kind's 11-point curve, linear between points; util clipped to [0, 1]."""
    u = np.clip(np.asarray(util, dtype=np.float64), 0.0, 1.0)
    return np.asarray(np.interp(u, np.linspace(0.0, 1.0, 11), np.asarray(kind.power_w)))


def side_cost(kind: HostKind, cpu_util: npt.NDArray[np.float64], params: CostParams) -> SideCost:
    """Cost of machines of ``kind`` whose CPU utilization over time is ``cpu_util`` (machines, steps)."""
    n = int(cpu_util.shape[0])
    mean_w = float(power_at(kind, cpu_util).mean(axis=1).sum()) if n else 0.0
    kwh = mean_w * HOURS_PER_YEAR / 1000.0 * params.pue
    return SideCost(
        machines=n,
        kind=kind.name,
        mean_power_w=mean_w,
        energy_kwh_year=kwh,
        energy=kwh * params.energy_price_per_kwh,
        amortization=n * kind.price / params.amortization_years if params.amortization_years > 0 else 0.0,
        upkeep=n * kind.upkeep_per_year,
        admin=n * params.admin_per_machine_year,
        rack=n * kind.rack_units * params.rack_unit_per_year,
    )


def compare_costs(
    before_kind: HostKind,
    before_util: npt.NDArray[np.float64],
    after_kind: HostKind,
    after_util: npt.NDArray[np.float64],
    params: CostParams | None = None,
) -> CostComparison:
    """Before: one machine of ``before_kind`` per server at its own CPU utilization. After: the
    plan's hosts at theirs. Hosts that hold nothing are switched off and cost nothing."""
    params = params or CostParams()
    before = side_cost(before_kind, before_util, params)
    after = side_cost(after_kind, after_util, params)
    return CostComparison(before=before, after=after, capex=after.machines * after_kind.price, params=params)


#: What each cost setting may hold (inclusive bounds): nonsense is refused, naming the setting.
COST_BOUNDS: dict[str, tuple[float, float]] = {
    "energy_price_per_kwh": (0.0, 1_000.0),
    "pue": (1.0, 10.0),
    "amortization_years": (0.0, 100.0),
    "admin_per_machine_year": (0.0, 1e9),
    "rack_unit_per_year": (0.0, 1e9),
}
MAX_CURRENCY_CHARS = 16


def check_currency(value: object, where: str = "costs") -> str:
    """A currency label: 1-16 printable characters (escaped wherever it is shown)."""
    from corral.planning.errors import CatalogError

    if not isinstance(value, str):
        raise CatalogError(f"{where}: currency must be a string")
    if not value or len(value) > MAX_CURRENCY_CHARS or not value.isprintable():
        raise CatalogError(f"{where}: currency must be 1 to {MAX_CURRENCY_CHARS} printable characters, e.g. \"EUR\"")
    return value


def parse_cost_params(text: str, where: str = "costs") -> CostParams:
    """CostParams from TOML: a ``[costs]`` table with any of CostParams' fields."""
    import tomllib

    from corral.planning.errors import CatalogError

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:
        raise CatalogError(f"{where}: invalid TOML: nested too deeply") from None
    table = data.get("costs", {})
    if not isinstance(table, dict):
        raise CatalogError(f"{where}: [costs] must be a table")
    defaults = CostParams()
    known = set(defaults.to_json())
    unknown = sorted(set(table) - known)
    if unknown:
        shown = ", ".join(repr(k) for k in unknown)[:200].encode("unicode_escape").decode("ascii")
        raise CatalogError(f"{where}: unknown cost setting(s): {shown} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, v in table.items():
        if key == "currency":
            values[key] = check_currency(v, where)
            continue
        lo, hi = COST_BOUNDS[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
            shown_v = repr(v)[:60]
            raise CatalogError(f"{where}: {key} must be a number from {lo:g} to {hi:g}, got {shown_v}")
        values[key] = float(v)
    return CostParams(**values)
