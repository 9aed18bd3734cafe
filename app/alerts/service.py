"""Alert rules and their evaluation.

The worker calls `fold_and_evaluate` each round: it notes which surveys and days the pending
report deltas touch, folds them (app.reports.rollups.fold), and evaluates the enabled rules of
those surveys over the periods touched (at most `alert_max_periods` recent ones), in a savepoint
so that a failing rule never undoes the fold. Figures come from the trends report itself
(app.reports.trends.trends_report: the same counts, bases and two-proportion test the dashboard
shows); a rule fires at most once per period (unique constraint, INSERT ... ON CONFLICT DO
NOTHING). Whether the cell is suppressed is decided by a second trends report with the
configured `min_cell` (primary and secondary suppression): an alert on a hidden cell carries
its figures for admins only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import audit
from app.alerts.schemas import AlertRead, AlertRuleCreate, AlertRuleRead
from app.config import Settings
from app.errors import NotFound
from app.models import Alert, AlertRule, ReportCodeDelta, ReportStoryDelta, Survey
from app.models.base import utcnow
from app.pagination import keyset_page
from app.reports import rollups
from app.reports.schemas import TrendRow
from app.reports.trends import TrendsQuery, trends_report

if TYPE_CHECKING:
    from app.auth import Principal

log = logging.getLogger(__name__)

Touched = dict[int, tuple[date, date]]


# --- Rules ----------------------------------------------------------------------------------


def rule_read(rule: AlertRule) -> AlertRuleRead:
    return AlertRuleRead.model_validate(rule, from_attributes=True)


def create_rule(session: Session, data: AlertRuleCreate, actor: Principal | None) -> AlertRule:
    if session.get(Survey, data.survey_id) is None:
        raise NotFound(f"survey {data.survey_id} does not exist")
    rule = AlertRule(**data.model_dump(), created_by=actor.name if actor else audit.CLI_ACTOR)
    session.add(rule)
    session.flush()
    audit.record(
        session, actor, "alert_rule.create", "alert_rule", rule.id, after=data.model_dump()
    )
    return rule


def list_rules(session: Session, survey_id: int | None = None) -> list[AlertRule]:
    query = select(AlertRule).order_by(AlertRule.id)
    if survey_id is not None:
        query = query.where(AlertRule.survey_id == survey_id)
    return list(session.scalars(query))


def set_enabled(
    session: Session, rule_id: int, enabled: bool, actor: Principal | None
) -> AlertRule:
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"alert rule {rule_id} does not exist")
    before = rule.enabled
    rule.enabled = enabled
    session.flush()
    audit.record(
        session,
        actor,
        "alert_rule.update",
        "alert_rule",
        rule.id,
        before={"enabled": before},
        after={"enabled": enabled},
    )
    return rule


def delete_rule(session: Session, rule_id: int, actor: Principal | None) -> None:
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"alert rule {rule_id} does not exist")
    session.delete(rule)
    session.flush()
    audit.record(session, actor, "alert_rule.delete", "alert_rule", rule_id)


# --- Fired alerts ---------------------------------------------------------------------------


def to_read(alert: Alert, rule: AlertRule, *, reveal: bool) -> AlertRead:
    """`reveal`: the reader may see suppressed figures (admins); others get nulls then."""
    hide = alert.suppressed and not reveal
    return AlertRead(
        id=alert.id,
        rule_id=rule.id,
        rule_name=rule.name,
        survey_id=alert.survey_id,
        code=rule.code,
        valence=rule.valence,
        group_field=rule.group_field,
        group_value=rule.group_value,
        period=rule.period,
        period_start=alert.period_start,
        fired_at=alert.fired_at,
        reason=alert.reason,  # type: ignore[arg-type]
        suppressed=alert.suppressed,
        count=None if hide else alert.count,
        base=None if hide else alert.base,
        share=None if hide else alert.share,
        previous_count=None if hide else alert.previous_count,
        previous_base=None if hide else alert.previous_base,
        previous_share=None if hide else alert.previous_share,
        p_value=None if hide else alert.p_value,
    )


def list_alerts(
    session: Session,
    *,
    reveal: bool,
    survey_id: int | None = None,
    rule_id: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[AlertRead], str | None]:
    """Fired alerts, oldest first (keyset pages)."""
    query = select(Alert)
    if survey_id is not None:
        query = query.where(Alert.survey_id == survey_id)
    if rule_id is not None:
        query = query.where(Alert.rule_id == rule_id)
    alerts, next_cursor = keyset_page(session, query, Alert.id, cursor, limit)
    rules = {
        r.id: r
        for r in session.scalars(
            select(AlertRule).where(AlertRule.id.in_({a.rule_id for a in alerts}))
        )
    }
    return [to_read(a, rules[a.rule_id], reveal=reveal) for a in alerts], next_cursor


@dataclass(frozen=True)
class Firing:
    period_start: date
    reason: str
    count: int
    base: int
    share: float | None
    previous_count: int | None
    previous_base: int | None
    previous_share: float | None
    p_value: float | None
    suppressed: bool


def record_fired(session: Session, rule: AlertRule, firing: Firing) -> int | None:
    """Store that `rule` fired for the period; None when it had fired for it already.

    The one place an alert fires: whatever else must happen when one does (webhooks) goes
    here, in the same transaction."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(Alert)
        .values(
            rule_id=rule.id,
            survey_id=rule.survey_id,
            period_start=firing.period_start,
            fired_at=utcnow(),
            reason=firing.reason,
            count=firing.count,
            base=firing.base,
            share=firing.share,
            previous_count=firing.previous_count,
            previous_base=firing.previous_base,
            previous_share=firing.previous_share,
            p_value=firing.p_value,
            suppressed=firing.suppressed,
        )
        .on_conflict_do_nothing(index_elements=["rule_id", "period_start"])
        .returning(Alert.id)
    )
    alert_id = session.scalar(statement)
    if alert_id is not None:
        log.info(
            "alert fired",
            extra={"rule_id": rule.id, "alert_id": alert_id, "reason": firing.reason},
        )
    return alert_id


# --- Evaluation -----------------------------------------------------------------------------


def touched_by_deltas(session: Session) -> Touched:
    """Per survey, the first and last day that the pending report deltas change."""
    parts = [
        select(t.survey_id, func.min(t.day).label("first"), func.max(t.day).label("last")).group_by(
            t.survey_id
        )
        for t in (ReportStoryDelta, ReportCodeDelta)
    ]
    return _merge(session.execute(union_all(*parts)).all())


def _merge(rows: Any) -> Touched:
    touched: Touched = {}
    for survey_id, first, last in rows:
        first, last = rollups.as_date(first), rollups.as_date(last)
        if survey_id in touched:
            a, b = touched[survey_id]
            first, last = min(a, first), max(b, last)
        touched[int(survey_id)] = (first, last)
    return touched


def _folded_on_postgres(session: Session) -> Touched:
    """What the fold just took on PostgreSQL: it moves the deltas it takes into temporary
    tables that live until the commit (app.reports.rollups.fold); a delta committed between a
    SELECT before the fold and its DELETE would be missed otherwise."""
    found: list[Any] = []
    for table in ("fold_report_story_deltas", "fold_report_code_deltas"):
        if session.scalar(text(f"SELECT to_regclass('pg_temp.{table}')")) is None:
            continue
        found += session.execute(
            text(f"SELECT survey_id, min(day), max(day) FROM pg_temp.{table} GROUP BY survey_id")
        ).all()
    return _merge(found)


def fold_and_evaluate(session: Session, settings: Settings) -> tuple[int, int]:
    """Fold the report deltas and evaluate the rules of the surveys they touched; returns
    (deltas folded, alerts fired). In the caller's transaction."""
    postgres = session.get_bind().dialect.name == "postgresql"
    # On SQLite the transaction holds the write lock: what this sees is what the fold takes.
    touched = {} if postgres else touched_by_deltas(session)
    folded = rollups.fold(session)
    if not folded:
        return 0, 0
    if postgres:
        touched = _folded_on_postgres(session)
    try:
        with session.begin_nested():
            fired = evaluate(session, settings, touched)
    except Exception as error:  # a broken rule must not undo the fold or stop the worker
        log.error("alert evaluation failed", extra={"error": type(error).__name__})
        fired = 0
    return folded, fired


def _periods(first: date, last: date, period: rollups.Period, most: int) -> list[date]:
    starts = [rollups.period_start(last, period)]
    stop = rollups.period_start(first, period)
    while starts[-1] > stop and len(starts) < most:
        starts.append(rollups.previous_period(starts[-1], period))
    return sorted(starts)


def _judge(
    rule: AlertRule, row: TrendRow, previous: TrendRow | None
) -> tuple[str, float | None] | None:
    """(reason, p-value) when the rule holds for this row, else None."""
    count, base = row.count or 0, row.base or 0
    if base <= 0:
        return None
    if rule.trigger in ("above", "below"):
        if rule.measure == "share":
            if base < rule.min_base:
                return None
            value: float = count / base
        else:
            value = count
        assert rule.threshold is not None
        held = value >= rule.threshold if rule.trigger == "above" else value <= rule.threshold
        return (rule.trigger, None) if held else None
    if previous is None or (previous.base or 0) < rule.min_base or base < rule.min_base:
        return None
    change = row.change_from_previous
    if change is None or change.p_value is None or change.diff is None:
        return None
    if change.p_value > rule.level:
        return None
    if rule.trigger == "rise" and change.diff > 0:
        return "rise", change.p_value
    if rule.trigger == "fall" and change.diff < 0:
        return "fall", change.p_value
    if rule.trigger == "change" and change.diff != 0:
        return ("rise" if change.diff > 0 else "fall"), change.p_value
    return None


def evaluate(session: Session, settings: Settings, touched: Touched) -> int:
    """Evaluate the enabled rules of the touched surveys; returns how many alerts fired."""
    if not touched:
        return 0
    rules = session.scalars(
        select(AlertRule)
        .where(AlertRule.enabled.is_(True), AlertRule.survey_id.in_(list(touched)))
        .order_by(AlertRule.id)
    ).all()
    reports: dict[tuple[Any, ...], dict[tuple[Any, ...], TrendRow]] = {}

    def rows(rule: AlertRule, query: TrendsQuery, min_cell: int) -> dict[tuple[Any, ...], TrendRow]:
        # One report per survey, period, grouping, range and suppression level, shared by the
        # rules that ask the same.
        key = (query, min_cell)
        if key not in reports:
            reports[key] = {
                (
                    r.period,
                    r.code,
                    r.valence,
                    getattr(r, rule.group_field) if rule.group_field else None,
                ): r
                for r in trends_report(session, query, min_cell=min_cell).rows
            }
        return reports[key]

    fired = 0
    for rule in rules:
        period: rollups.Period = rule.period  # type: ignore[assignment]
        first, last = touched[rule.survey_id]
        periods = _periods(first, last, period, settings.alert_max_periods)
        group_by: tuple[rollups.GroupField, ...] = (
            (rule.group_field,) if rule.group_field else ()  # type: ignore[assignment]
        )
        query = TrendsQuery(
            period=period,
            group_by=group_by,
            survey_id=rule.survey_id,
            date_from=rollups.previous_period(periods[0], period),
            date_to=periods[-1],
        )
        # The published figures (suppressed as the dashboard shows them) say what is hidden;
        # the rule is judged on the unsuppressed ones, read only when a cell it needs is hidden.
        published = rows(rule, query, settings.min_cell)
        for start in periods:
            before = rollups.previous_period(start, period)
            cell = (start, rule.code, rule.valence, rule.group_value)
            cell_before = (before, rule.code, rule.valence, rule.group_value)
            shown, shown_before = published.get(cell), published.get(cell_before)
            suppressed = shown is None or shown.suppressed
            suppressed = suppressed or (shown_before is not None and shown_before.suppressed)
            source = rows(rule, query, 1) if suppressed else published
            row, previous = source.get(cell), source.get(cell_before)
            if row is None:
                continue
            verdict = _judge(rule, row, previous)
            if verdict is None:
                continue
            if previous is not None and shown_before is None:
                suppressed = True
            count, base = row.count or 0, row.base or 0
            firing = Firing(
                period_start=start,
                reason=verdict[0],
                count=count,
                base=base,
                share=count / base if base else None,
                previous_count=previous.count if previous else None,
                previous_base=previous.base if previous else None,
                previous_share=previous.share if previous else None,
                p_value=verdict[1],
                suppressed=suppressed,
            )
            if record_fired(session, rule, firing) is not None:
                fired += 1
    return fired
