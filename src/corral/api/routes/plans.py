"""The plan library: plans, and each one's HTML report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from corral.api.errors import ERRORS
from corral.api.models import PlanParam
from corral.api.routes import ApiContext
from corral.api.schemas import PlanDocument, PlanEntry
from corral.planning.report import summary_lines

# The report is static HTML + inline CSS + SVG: nothing in it may run or load anything.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"


class CSVResponse(Response):
    media_type = "text/csv"


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/plans", tags=["plans"], response_model=list[PlanEntry])
    def list_plans() -> list[dict[str, Any]]:
        """The plan library (<data_dir>/plans/): plans kept by `corral plan --save NAME` and the demo."""
        return corral.plans.names()

    @api.get("/plans/{name}", tags=["plans"], response_model=PlanDocument, response_model_exclude_unset=True)
    def get_plan(name: PlanParam) -> dict[str, Any]:
        """The plan JSON as it is kept, plus its summary lines as `summary`."""
        data = corral.plans.read(name)
        return {**data, "summary": summary_lines(data)}

    @api.get("/plans/{name}/report", tags=["plans"], response_class=HTMLResponse)
    def plan_report(name: PlanParam) -> HTMLResponse:
        """The self-contained HTML report of a plan."""
        return HTMLResponse(corral.plans.report_html(name), headers={"Content-Security-Policy": REPORT_CSP})

    @api.get("/plans/{name}/servers.csv", tags=["plans"], response_class=CSVResponse)
    def plan_servers_csv(name: PlanParam) -> CSVResponse:
        """The plan's server -> host table as CSV: `server,host,kind`, each planned resource's peak and
        mean demand and where they come from (`measured`, or what was assumed), `note` (why a server is
        unplaceable). The same file as `corral report plan.json --csv FILE`."""
        stem = name.removesuffix(".json")
        return CSVResponse(corral.plans.assignment_csv(name),
                           headers={"Content-Disposition": f'attachment; filename="{stem}-servers.csv"'})

    return api
