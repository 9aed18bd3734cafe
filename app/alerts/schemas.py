"""API models of alert rules and fired alerts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

Trigger = Literal["rise", "fall", "change", "above", "below"]


class AlertRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    survey_id: StrictInt
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    code: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    valence: Literal["satisfying", "dissatisfying"] = "dissatisfying"
    group_field: Literal["touchpoint", "channel", "segment"] | None = Field(
        None, description="Watch one group's cell instead of the whole survey"
    )
    group_value: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    period: Literal["week", "month", "quarter"] = "month"
    measure: Literal["share", "count"] = "share"
    trigger: Trigger = Field(
        "rise",
        description="rise / fall / change: the share against the previous period, pooled "
        "two-proportion z-test at `level` (share only); above / below: the period's share or "
        "count against `threshold`",
    )
    level: float = Field(0.05, gt=0, lt=1, description="significance level of the test")
    min_base: StrictInt = Field(
        30, ge=1, description="fewest confirmed stories in the cell (each period) to judge"
    )
    threshold: float | None = Field(None, ge=0, description="share (0-1) or count")
    enabled: StrictBool = True

    @model_validator(mode="after")
    def _consistent(self) -> AlertRuleCreate:
        if (self.group_field is None) != (self.group_value is None):
            raise ValueError("group_field and group_value go together")
        if self.trigger in ("above", "below"):
            if self.threshold is None:
                raise ValueError("a threshold trigger needs `threshold`")
            if self.measure == "share" and self.threshold > 1:
                raise ValueError("a share threshold is between 0 and 1")
        elif self.measure != "share":
            raise ValueError("rise, fall and change compare shares: use measure share")
        return self


class AlertRuleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool


class AlertRuleRead(BaseModel):
    id: int
    survey_id: int
    name: str
    code: str
    valence: str
    group_field: str | None
    group_value: str | None
    period: str
    measure: str
    trigger: str
    level: float
    min_base: int
    threshold: float | None
    enabled: bool
    created_by: str
    created_at: datetime


class AlertRead(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    survey_id: int
    code: str
    valence: str
    group_field: str | None
    group_value: str | None
    period: str
    period_start: date
    fired_at: datetime
    reason: Trigger = Field(description="what fired: the trigger of the rule that held")
    suppressed: bool = Field(
        description="the trends report hides this cell (small counts): the figures are null "
        "for everyone but admins"
    )
    count: int | None
    base: int | None
    share: float | None
    previous_count: int | None
    previous_base: int | None
    previous_share: float | None
    p_value: float | None


class AlertPage(BaseModel):
    items: list[AlertRead]
    next_cursor: str | None
