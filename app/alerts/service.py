"""Alert rules and their evaluation.

The worker calls `fold_and_evaluate` each round: it notes which surveys and days the pending
report deltas touch, folds them (app.reports.rollups.fold), and evaluates the enabled rules of
those surveys over the periods touched (at most `alert_max_periods` recent ones), in a savepoint
so that a failing rule never undoes the fold. Figures are the trends report's: the same rollup
GROUP BYs (app.reports.rollups), narrowed to the rule's code, valence and group, and the same
two-proportion test (app.reports.intervals). A rule fires at most once per period (unique
constraint, INSERT ... ON CONFLICT DO NOTHING). When a rule fires, the trends report itself with
the configured `min_cell` (primary and secondary suppression) says whether the cell is hidden:
an alert on a hidden cell carries its figures for admins only."""

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
from app.reports.intervals import two_proportion_test
from app.reports.schemas import TrendRow
from app.reports.trends import TrendsQuery, trends_report
from app.webhooks import events as webhooks

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
        payload: dict[str, Any] = {
            "alert_id": alert_id,
            "rule_id": rule.id,
            "survey_id": rule.survey_id,
            "code": rule.code,
            "valence": rule.valence,
            "group_field": rule.group_field,
            "group_value": rule.group_value,
            "period": rule.period,
            "period_start": firing.period_start.isoformat(),
            "reason": firing.reason,
            "suppressed": firing.suppressed,
        }
        if not firing.suppressed:
            # A subscriber is not necessarily an admin: a hidden cell's figures stay out.
            payload |= {
                "count": firing.count,
                "base": firing.base,
                "share": firing.share,
                "previous_count": firing.previous_count,
                "previous_base": firing.previous_base,
                "previous_share": firing.previous_share,
                "p_value": firing.p_value,
            }
        webhooks.publish(session, webhooks.ALERT_FIRED, payload, survey_id=rule.survey_id)
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


@dataclass(frozen=True)
class Cell:
    """One code in one period (and group): confirmed stories carrying it, and all confirmed."""

    count: int
    base: int


def _judge(rule: AlertRule, cell: Cell, previous: Cell | None) -> tuple[str, float | None] | None:
    """(reason, p-value) when the rule holds for this period, else None."""
    count, base = cell.count, cell.base
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
    if previous is None or previous.base < rule.min_base or base < rule.min_base:
        return None
    test = two_proportion_test(count, base, previous.count, previous.base)
    if test.p_value is None or test.diff is None or test.p_value > rule.level:
        return None
    if rule.trigger == "rise" and test.diff > 0:
        return "rise", test.p_value
    if rule.trigger == "fall" and test.diff < 0:
        return "fall", test.p_value
    if rule.trigger == "change" and test.diff != 0:
        return ("rise" if test.diff > 0 else "fall"), test.p_value
    return None


def _cells(session: Session, rule: AlertRule, first_day: date, last_day: date) -> dict[date, Cell]:
    """The rule's cells per period: the trends report's sums over the rollups and pending deltas
    (app.reports.rollups: the same sources and period truncation), narrowed to the rule's
    survey, code, valence and group before grouping, so that an index range is read."""
    dialect = session.get_bind().dialect.name
    period: rollups.Period = rule.period  # type: ignore[assignment]
    group_by: tuple[rollups.GroupField, ...] = (
        (rule.group_field,) if rule.group_field else ()  # type: ignore[assignment]
    )
    story_table, code_table = rollups.tables(group_by)
    stories = rollups.story_source(story_table).c
    codes = rollups.code_source(code_table).c

    def narrowed(source: Any) -> list[Any]:
        where = [
            source.survey_id == rule.survey_id,
            source.day >= first_day,
            source.day <= last_day,
            source.valence == rule.valence,
        ]
        if group_by:
            column = rollups.GROUP_COLUMNS[group_by[0]]
            where.append(getattr(source, column) == rule.group_value)
        return where

    code_period = rollups.period_expression(dialect, codes.day, period)
    story_period = rollups.period_expression(dialect, stories.day, period)
    counts = {
        rollups.as_date(p): int(n or 0)
        for p, n in session.execute(
            select(code_period, func.sum(codes.n))
            .where(*narrowed(codes), codes.code == rule.code)
            .group_by(code_period)
        )
    }
    return {
        rollups.as_date(p): Cell(counts.get(rollups.as_date(p), 0), int(n or 0))
        for p, n in session.execute(
            select(story_period, func.sum(stories.confirmed))
            .where(*narrowed(stories))
            .group_by(story_period)
        )
    }


def evaluate(session: Session, settings: Settings, touched: Touched) -> int:
    """Evaluate the enabled rules of the touched surveys; returns how many alerts fired."""
    if not touched:
        return 0
    rules = session.scalars(
        select(AlertRule)
        .where(AlertRule.enabled.is_(True), AlertRule.survey_id.in_(list(touched)))
        .order_by(AlertRule.id)
    ).all()
    published: dict[TrendsQuery, dict[tuple[Any, ...], TrendRow]] = {}

    def published_rows(rule: AlertRule, query: TrendsQuery) -> dict[tuple[Any, ...], TrendRow]:
        # The report as the dashboard publishes it (primary and secondary suppression), built
        # only when a rule would fire, once per survey, period, grouping and range.
        if query not in published:
            published[query] = {
                (
                    r.period,
                    r.code,
                    r.valence,
                    getattr(r, rule.group_field) if rule.group_field else None,
                ): r
                for r in trends_report(session, query, min_cell=settings.min_cell).rows
            }
        return published[query]

    fired = 0
    for rule in rules:
        period: rollups.Period = rule.period  # type: ignore[assignment]
        first, last = touched[rule.survey_id]
        periods = _periods(first, last, period, settings.alert_max_periods)
        first_day = rollups.previous_period(periods[0], period)
        last_day = date.fromordinal(rollups.next_period(periods[-1], period).toordinal() - 1)
        cells = _cells(session, rule, first_day, last_day)
        for start in periods:
            cell = cells.get(start)
            if cell is None:
                continue
            before = rollups.previous_period(start, period)
            previous = cells.get(before)
            verdict = _judge(rule, cell, previous)
            if verdict is None:
                continue
            query = TrendsQuery(
                period=period,
                group_by=(rule.group_field,) if rule.group_field else (),  # type: ignore[arg-type]
                survey_id=rule.survey_id,
                date_from=first_day,
                date_to=periods[-1],
            )
            shown = published_rows(rule, query)
            row = shown.get((start, rule.code, rule.valence, rule.group_value))
            row_before = shown.get((before, rule.code, rule.valence, rule.group_value))
            suppressed = row is None or row.suppressed
            if previous is not None:
                suppressed = suppressed or row_before is None or row_before.suppressed
            firing = Firing(
                period_start=start,
                reason=verdict[0],
                count=cell.count,
                base=cell.base,
                share=cell.count / cell.base if cell.base else None,
                previous_count=previous.count if previous else None,
                previous_base=previous.base if previous else None,
                previous_share=previous.count / previous.base
                if previous and previous.base
                else None,
                p_value=verdict[1],
                suppressed=suppressed,
            )
            if record_fired(session, rule, firing) is not None:
                fired += 1
    return fired
