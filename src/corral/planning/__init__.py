"""Consolidation planning: measured traces in, a placement on the fewest hosts out (docs/planning.md)."""

from corral.planning.catalog import HostKind, get_kind, load_catalog
from corral.planning.cost import CostComparison, CostParams, compare_costs
from corral.planning.demo import demo_traceset
from corral.planning.errors import (
    CatalogError,
    EmptyInputError,
    InfeasibleError,
    PlanFormatError,
    PlanningError,
    TraceFormatError,
)
from corral.planning.formats import COLLECT_COLUMNS, CollectSample, collect_header, format_collect_row
from corral.planning.importers import PlanetLabSizes, load_traces
from corral.planning.model import RESOURCES, ServerTrace, TraceSet, align, make_traceset
from corral.planning.planner import Plan, Validation, kinds_that_fit, plan_consolidation, replay, validate_plan
from corral.planning.report import render_html, summary_lines, write_html_report
from corral.planning.serialize import plan_to_json, read_plan_json, write_plan_json

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
