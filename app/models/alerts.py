"""Alert rules on the trends of a survey's codes, and the alerts they fired (one per period)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

ALERT_MEASURES = ("share", "count")
# rise / fall / change: the two-proportion test against the previous period (share only);
# above / below: the period's value against a fixed threshold.
ALERT_TRIGGERS = ("rise", "fall", "change", "above", "below")
ALERT_GROUP_FIELDS = ("touchpoint", "channel", "segment")
ALERT_PERIODS = ("week", "month", "quarter")


class AlertRule(Base):
    __tablename__ = "alert_rules"
    __table_args__ = (
        CheckConstraint("measure IN ('share', 'count')", name="measure"),
        CheckConstraint("trigger IN ('rise', 'fall', 'change', 'above', 'below')", name="trigger"),
        CheckConstraint("period IN ('week', 'month', 'quarter')", name="period"),
        CheckConstraint("valence IN ('satisfying', 'dissatisfying')", name="valence"),
        CheckConstraint(
            "group_field IS NULL OR group_field IN ('touchpoint', 'channel', 'segment')",
            name="group_field",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(100))
    valence: Mapped[str] = mapped_column(String(16), default="dissatisfying")
    group_field: Mapped[str | None] = mapped_column(String(16))
    group_value: Mapped[str | None] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(8), default="month")
    measure: Mapped[str] = mapped_column(String(8), default="share")
    trigger: Mapped[str] = mapped_column(String(8), default="rise")
    level: Mapped[float] = mapped_column(Float, default=0.05)
    min_base: Mapped[int] = mapped_column(default=30)
    threshold: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """A rule that fired for one period. The figures are the unsuppressed ones; `suppressed`
    says that the trends report hides this cell (or the previous period's), and then only
    admins read them (app.alerts.service.to_read)."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("rule_id", "period_start", name="uq_alerts_rule_period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"), index=True)
    period_start: Mapped[date]
    fired_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reason: Mapped[str] = mapped_column(String(8))
    count: Mapped[int]
    base: Mapped[int]
    share: Mapped[float | None] = mapped_column(Float)
    previous_count: Mapped[int | None]
    previous_base: Mapped[int | None]
    previous_share: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    suppressed: Mapped[bool] = mapped_column(default=False)
