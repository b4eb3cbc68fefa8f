"""The balancer: its mode, this round's recommendations (and applying them), the decision timeline."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from corral.api.errors import ERRORS
from corral.api.routes import ApiContext
from corral.consolidation.live import Move, Refused, Round, Standby, Wake


class ModeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["off", "recommend", "automatic"] = Field(
        description="off; recommend (moves shown, applied by POST /api/balancer/apply); automatic")


class WakeRow(BaseModel):
    host: str
    reason: str


class MoveRow(BaseModel):
    guest: str
    source: str
    dest: str
    kind: str = Field(description="overload | underload | rebalance")
    reason: str
    expected: str


class StandbyRow(BaseModel):
    host: str
    reason: str


class RefusedRow(BaseModel):
    what: str
    why: str


class Recommendations(BaseModel):
    """What the policy would do now, screened by the balancer's rules; refusals say why."""

    mode: str
    summary: str
    wakes: list[WakeRow]
    moves: list[MoveRow]
    standbys: list[StandbyRow]
    refused: list[RefusedRow]
    forecast_pct: dict[str, float] = Field(description="each host's upper forecast, % of its cap")


class Outcome(BaseModel):
    what: str
    outcome: str


class Applied(Recommendations):
    round: int
    outcomes: list[Outcome]
    duration_s: float


class Status(BaseModel):
    mode: str
    interval_s: float
    policy: str
    max_migrations: int
    cooldown_s: float
    min_gain_w: float
    standby: bool
    last_round: str | None = Field(description="the last round's summary, if any")


class TimelineEntry(BaseModel):
    round: int
    time: float
    kind: str = Field(description="round | wake | move | standby | refused")
    guest: str | None
    source: str | None
    dest: str | None
    reason: str
    expected: str
    outcome: str
    duration_s: float | None


def _rows(plan: Round) -> dict[str, Any]:
    def row(item: Wake | Move | Standby | Refused) -> dict[str, Any]:
        return dict(item.__dict__)

    return {"summary": plan.summary, "wakes": [row(w) for w in plan.wakes], "moves": [row(m) for m in plan.moves],
            "standbys": [row(s) for s in plan.standbys], "refused": [row(r) for r in plan.refused],
            "forecast_pct": {h: round(v, 1) for h, v in plan.forecast_pct.items()}}


def router(ctx: ApiContext) -> APIRouter:
    corral = ctx.corral
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/balancer", tags=["balancer"], response_model=Status)
    def status() -> dict[str, Any]:
        """The balancer's mode and rules, and what its last round concluded."""
        b = corral.settings.balancer
        last = next((e for e in corral.balancer.timeline(50) if e.kind == "round"), None)
        return {"mode": corral.balancer.mode, "interval_s": b.interval_s, "policy": b.policy,
                "max_migrations": b.max_migrations, "cooldown_s": b.cooldown_s, "min_gain_w": b.min_gain_w,
                "standby": b.standby, "last_round": last.reason if last else None}

    @api.put("/balancer/mode", tags=["balancer"], response_model=Status)
    def set_mode(body: ModeBody) -> dict[str, Any]:
        """Switch the mode at run time (kept in the data folder, over the configuration's)."""
        corral.balancer.set_mode(body.mode)
        return status()

    @api.get("/balancer/plan", tags=["balancer"], response_model=Recommendations)
    async def plan() -> dict[str, Any]:
        """What the policy would do now (nothing is done)."""
        result = await asyncio.to_thread(corral.balancer.plan)
        return {"mode": corral.balancer.mode, **_rows(result)}

    @api.post("/balancer/apply", tags=["balancer"], response_model=Applied)
    async def apply() -> dict[str, Any]:
        """Carry out one round now, whatever the mode (409 while another balancer holds the cluster)."""
        report = await asyncio.to_thread(corral.balancer.round, apply=True)
        return {"mode": report.mode, "round": report.round, **_rows(report.plan),
                "outcomes": [{"what": w, "outcome": o} for w, o in report.outcomes], "duration_s": report.duration_s}

    @api.get("/balancer/log", tags=["balancer"], response_model=list[TimelineEntry])
    def log(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
        """Rounds and decisions, newest first: what, why, what was expected, what happened, how long."""
        return [e.as_dict() for e in corral.balancer.timeline(limit)]

    return api
