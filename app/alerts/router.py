"""Alerts API: rules per survey (admins and researchers write them, anyone reads), and the
alerts they fired (`GET /api/v1/alerts`; figures of suppressed cells only for admins)."""

from __future__ import annotations

from fastapi import APIRouter

from app.alerts import service
from app.alerts.schemas import AlertPage, AlertRuleCreate, AlertRuleRead, AlertRuleUpdate
from app.auth import RequireAnyRole, RequireResearcher
from app.db import SessionDep
from app.errors import Forbidden, Invalid, NotFound, problem_responses
from app.pagination import PageSize

router = APIRouter(prefix="/api/v1", tags=["alerts"], responses=problem_responses(Forbidden))


@router.get("/alerts", response_model=AlertPage)
def list_alerts(
    session: SessionDep,
    user: RequireAnyRole,
    size: PageSize,
    survey_id: int | None = None,
    rule_id: int | None = None,
    cursor: str | None = None,
) -> AlertPage:
    """Fired alerts, oldest first. An alert on a cell the trends report suppresses carries
    no figures (null) unless the caller is an admin."""
    items, next_cursor = service.list_alerts(
        session,
        reveal=user.role == "admin",
        survey_id=survey_id,
        rule_id=rule_id,
        cursor=cursor,
        limit=size,
    )
    return AlertPage(items=items, next_cursor=next_cursor)


@router.get("/alert-rules", response_model=list[AlertRuleRead])
def list_rules(
    session: SessionDep, _user: RequireAnyRole, survey_id: int | None = None
) -> list[AlertRuleRead]:
    return [service.rule_read(r) for r in service.list_rules(session, survey_id)]


@router.post(
    "/alert-rules",
    status_code=201,
    response_model=AlertRuleRead,
    responses=problem_responses(NotFound, Invalid),
)
def create_rule(
    data: AlertRuleCreate, session: SessionDep, user: RequireResearcher
) -> AlertRuleRead:
    """A rule is evaluated by the worker whenever the survey's rollups change."""
    return service.rule_read(service.create_rule(session, data, user))


@router.patch(
    "/alert-rules/{rule_id:int}",
    response_model=AlertRuleRead,
    responses=problem_responses(NotFound),
)
def update_rule(
    rule_id: int, data: AlertRuleUpdate, session: SessionDep, user: RequireResearcher
) -> AlertRuleRead:
    return service.rule_read(service.set_enabled(session, rule_id, data.enabled, user))


@router.delete("/alert-rules/{rule_id:int}", status_code=204, responses=problem_responses(NotFound))
def delete_rule(rule_id: int, session: SessionDep, user: RequireResearcher) -> None:
    service.delete_rule(session, rule_id, user)
