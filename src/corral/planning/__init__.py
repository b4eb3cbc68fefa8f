"""Consolidation planning: measured traces in, a placement on the fewest hosts out (docs/planning.md).

Exports load on first use (PEP 562), so `import corral.planning.formats` (the collector) and
`corral.planning.names` (the CLI at start-up) do not pull in numpy and the solver.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "COLLECT_COLUMNS": "corral.planning.formats",
    "CatalogError": "corral.planning.errors",
    "CollectSample": "corral.planning.formats",
    "CostComparison": "corral.planning.cost",
    "CostParams": "corral.planning.cost",
    "EmptyInputError": "corral.planning.errors",
    "HostKind": "corral.planning.catalog",
    "InfeasibleError": "corral.planning.errors",
    "InputLimits": "corral.planning.limits",
    "Plan": "corral.planning.planner",
    "PlanFormatError": "corral.planning.errors",
    "PlanetLabSizes": "corral.planning.importers",
    "PlanningError": "corral.planning.errors",
    "RESOURCES": "corral.planning.model",
    "ServerTrace": "corral.planning.model",
    "TraceFormatError": "corral.planning.errors",
    "TraceSet": "corral.planning.model",
    "Validation": "corral.planning.planner",
    "align": "corral.planning.model",
    "collect_header": "corral.planning.formats",
    "compare_costs": "corral.planning.cost",
    "demo_traceset": "corral.planning.demo",
    "format_collect_row": "corral.planning.formats",
    "get_kind": "corral.planning.catalog",
    "kinds_that_fit": "corral.planning.planner",
    "load_catalog": "corral.planning.catalog",
    "load_traces": "corral.planning.importers",
    "make_traceset": "corral.planning.model",
    "plan_consolidation": "corral.planning.planner",
    "plan_to_json": "corral.planning.serialize",
    "read_plan_json": "corral.planning.serialize",
    "render_html": "corral.planning.report",
    "replay": "corral.planning.planner",
    "summary_lines": "corral.planning.report",
    "validate_plan": "corral.planning.planner",
    "write_html_report": "corral.planning.report",
    "write_plan_json": "corral.planning.serialize",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.planning' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "COLLECT_COLUMNS",
    "RESOURCES",
    "CatalogError",
    "CollectSample",
    "CostComparison",
    "CostParams",
    "EmptyInputError",
    "HostKind",
    "InfeasibleError",
    "InputLimits",
    "Plan",
    "PlanFormatError",
    "PlanetLabSizes",
    "PlanningError",
    "ServerTrace",
    "TraceFormatError",
    "TraceSet",
    "Validation",
    "align",
    "collect_header",
    "compare_costs",
    "demo_traceset",
    "format_collect_row",
    "get_kind",
    "kinds_that_fit",
    "load_catalog",
    "load_traces",
    "make_traceset",
    "plan_consolidation",
    "plan_to_json",
    "read_plan_json",
    "render_html",
    "replay",
    "summary_lines",
    "validate_plan",
    "write_html_report",
    "write_plan_json",
]
