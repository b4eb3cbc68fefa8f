"""Consolidation plans: make one from traces, keep it in the plan library, read it back, render it
(the HTML report, and the server -> host table as CSV).

The CLI (`corral plan`, `corral report`), the REST API (`/api/plans`) and the demo all go
through this service. The library is `<data_dir>/plans/<name>.json`.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.config import Settings
from corral.core.capacity import DEFAULT_CAP
from corral.core.errors import CorralError, InvalidInput, NotFound
from corral.core.validate import check_name
from corral.planning.names import DEFAULT_BEFORE_KIND, DEFAULT_HOST_KIND

if TYPE_CHECKING:
    from corral.planning.catalog import HostKind
    from corral.planning.cost import CostParams
    from corral.planning.model import TraceSet
    from corral.planning.planner import Plan

Update = Callable[[str, int, int, str | None], None]  # (stage, done, total, detail)


@dataclass(frozen=True)
class PlanRequest:
    traces: Sequence[Path] = ()
    host_kind: str = DEFAULT_HOST_KIND
    cap: float = DEFAULT_CAP
    percentile: float | None = None
    resources: Sequence[str] | None = None
    fmt: str = "auto"
    time_budget_s: float = 5.0
    validate_on: Sequence[Path] = field(default_factory=tuple)
    catalog: Path | None = None
    costs: Path | None = None
    before_kind: str = DEFAULT_BEFORE_KIND


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan
    data: dict[str, Any]  # plan.json
    unplaceable_hint: str | None  # for the first unplaceable server: the kinds it would fit on


class PlanService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def folder(self) -> Path:
        return self.settings.data_dir / "plans"

    def make(self, request: PlanRequest, update: Update | None = None) -> PlanOutcome:
        """Read the traces, plan, validate on other traces when asked; nothing is written. The
        request is checked (host kinds, cap, costs) before any trace is read."""
        from corral.planning.importers import load_traces

        step = update or (lambda _stage, _done, _total, _detail: None)
        resolved = _resolve(request)
        traces = load_traces(list(request.traces), request.fmt,
                             progress=lambda done, total: step("reading traces", done, total, None))
        return self._plan(traces, request, resolved, step)

    def plan(self, traces: TraceSet, request: PlanRequest, update: Update | None = None) -> PlanOutcome:
        """Plan traces already in memory (request.traces is not read)."""
        step = update or (lambda _stage, _done, _total, _detail: None)
        return self._plan(traces, request, _resolve(request), step)

    def _plan(self, traces: TraceSet, request: PlanRequest, resolved: _Resolved, step: Update) -> PlanOutcome:
        from corral.planning.importers import load_traces
        from corral.planning.planner import kinds_that_fit, plan_consolidation, validate_plan
        from corral.planning.serialize import plan_to_json

        resources = list(request.resources) if request.resources is not None else None
        plan = plan_consolidation(
            traces, resolved.kind, request.cap, request.percentile, resources, request.time_budget_s,
            before_kind=resolved.before, cost_params=resolved.costs, catalog=resolved.kinds,
            progress=lambda stage, fraction: step("planning", int(100 * fraction), 100, stage),
        )
        if request.validate_on:
            other = load_traces(list(request.validate_on), request.fmt,
                                progress=lambda done, total: step("reading validation traces", done, total, None))
            plan = validate_plan(plan, other, ", ".join(p.name for p in request.validate_on))
        data = plan_to_json(plan)
        hint = None
        if data["unplaceable"]:
            first = data["unplaceable"][0]["server"]
            fit = kinds_that_fit(traces, first, list(resolved.kinds.values()), request.cap, request.percentile,
                                 plan.resources)
            hint = f"it would fit on: {', '.join(fit)}" if fit else "no kind in the catalog can hold it"
        return PlanOutcome(plan, data, hint)

    # --- the library -------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        stem = name[:-5] if name.endswith(".json") else name
        check_name(stem, "plan name")
        return self.folder / f"{stem}.json"

    def library_path(self, name: str) -> Path:
        """Where plan ``name`` is kept (InvalidInput for a name that cannot be one): check it before planning."""
        return self._path(name)

    def save(self, name: str, data: dict[str, Any]) -> Path:
        from corral.planning.serialize import write_plan_json

        path = self._path(name)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CorralError(f"plan library {self.folder}: cannot create it: {exc.strerror or exc}") from None
        write_plan_json(data, path)
        return path

    def names(self) -> list[dict[str, Any]]:
        """The plans kept in the library (files that vanish or cannot be examined are left out)."""
        result = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                st = path.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            result.append({"name": path.stem, "size_bytes": st.st_size, "modified": st.st_mtime})
        return result

    def read(self, name: str) -> dict[str, Any]:
        """A plan of the library, checked against the schema: a damaged or malformed file is one
        clear CorralError (the server's fault, not the caller's), never an unexpected exception."""
        path = self._path(name)
        if not path.is_file():
            raise NotFound(f"no plan named {path.stem!r}")
        try:
            return read_file(path)
        except InvalidInput as exc:
            raise CorralError(f"plan {path.stem!r} cannot be read: {exc.message}") from None

    def report_html(self, name: str) -> str:
        from corral.planning.report import render_html

        return render_html(self.read(name))

    def assignment_csv(self, name: str) -> str:
        """The plan's server -> host table as CSV (corral.planning.serialize.assignment_csv)."""
        from corral.planning.serialize import assignment_csv

        return assignment_csv(self.read(name))


@dataclass(frozen=True)
class _Resolved:
    kinds: dict[str, HostKind]
    kind: HostKind
    before: HostKind
    costs: CostParams


def _resolve(request: PlanRequest) -> _Resolved:
    from corral.planning.catalog import get_kind, load_catalog
    from corral.planning.cost import CostParams, parse_cost_params
    from corral.planning.errors import CatalogError
    from corral.planning.limits import MAX_SETTINGS_BYTES, read_small_text
    from corral.planning.planner import check_cap, check_time_budget

    check_cap(request.cap, request.percentile)
    check_time_budget(request.time_budget_s)
    kinds = load_catalog(request.catalog)
    kind = get_kind(kinds, request.host_kind)
    before = get_kind(kinds, request.before_kind)
    costs = CostParams()
    if request.costs is not None:
        text = read_small_text(request.costs, "costs file", MAX_SETTINGS_BYTES, CatalogError)
        costs = parse_cost_params(text, str(request.costs))
    return _Resolved(kinds, kind, before, costs)


def read_file(path: Path) -> dict[str, Any]:
    """A plan.json anywhere (corral report FILE), checked against the schema; anything else is one
    InvalidInput (a PlanFormatError) whose message names the file and the field."""
    from corral.planning.serialize import read_plan_json

    return read_plan_json(path)
