"""API models of the reports: trends (tidy rows and totals) and the CIT study report."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field

SHARES_NOTE = (
    "Figures are shares of reported incidents, not prevalence: CIT stories are not a probability "
    "sample of customers or encounters, so a share says how often a kind of incident appears "
    "among the stories told, not how often it happens."
)


class ChangeFromPrevious(BaseModel):
    """This period's share minus the previous period's, with a pooled two-proportion z-test."""

    previous_period: date
    diff: float | None = None
    z: float | None = None
    p_value: float | None = None
    reason: str | None = Field(None, description="why a field is null (suppressed, no base)")


class TrendRow(BaseModel):
    """One code in one period, valence and group: a tidy row."""

    period: date = Field(description="first day of the period (weeks start on Monday)")
    code: str
    level: Literal["code", "rollup", "bitner_group", "pair"] = Field(
        "code",
        description="rollup: a parent code with its descendants (stories carrying any of them, "
        "each once); bitner_group: the stories carrying any code of that Bitner group (the "
        "category table; only with codebook_version_id); pair: `a&b`, the stories carrying "
        "both (co-occurrence)",
    )
    valence: str
    survey_id: int | None = Field(None, description="only when grouped by survey")
    touchpoint: str | None = Field(None, description="only when grouped by touchpoint")
    channel: str | None = Field(None, description="only when grouped by channel")
    segment: str | None = Field(None, description="only when grouped by segment")
    count: int | None = Field(description="confirmed stories of the cell carrying the code")
    base: int | None = Field(description="confirmed stories of the cell: the share's denominator")
    share: float | None = Field(description="count / base")
    ci_low: float | None = Field(description="Wilson 95% interval of the share, low end")
    ci_high: float | None = Field(description="Wilson 95% interval of the share, high end")
    suppressed: bool = Field(description="count (or base) hidden by small-cell suppression")
    change_from_previous: ChangeFromPrevious | None = Field(
        None, description="null in the first period of the report"
    )


class StoryCounts(BaseModel):
    stories: int | None = Field(description="stories reported (any status)")
    confirmed: int | None = Field(description="stories with final codes (status coded)")
    excluded: int | None = Field(description="stories excluded by the inclusion criteria")
    confirmed_share: float | None = Field(
        description="confirmed / (stories - excluded): how final the cell's figures are"
    )
    suppressed: bool


class CellTotals(StoryCounts):
    """Story counts of one period, valence and group (the bases of that cell's shares)."""

    period: date
    valence: str
    survey_id: int | None = None
    touchpoint: str | None = None
    channel: str | None = None
    segment: str | None = None


class PeriodTotals(StoryCounts):
    """Story counts of one period over every group, in total and per valence."""

    period: date
    valences: dict[str, StoryCounts]


class TrendsQueryRead(BaseModel):
    period: str
    group_by: list[str]
    survey_id: int | None
    date_from: date | None = Field(description="first day covered (snapped to its period)")
    date_to: date | None = Field(description="last day covered (snapped to its period)")
    codebook_version_id: int | None
    min_cell: int
    suppression: bool = Field(
        True, description="false: the team's own unsuppressed figures (admins and researchers)"
    )


class TrendsReport(BaseModel):
    note: str = SHARES_NOTE
    definitions: dict[str, str]
    query: TrendsQueryRead
    codes: list[str]
    rollups: dict[str, list[str]] = Field(
        default_factory=dict, description="parent code -> the codes its roll-up rows cover"
    )
    periods: list[PeriodTotals]
    totals: list[CellTotals]
    rows: list[TrendRow]


class ReportSurvey(BaseModel):
    id: int
    title: str
    slug: str
    status: str


class StudyReport(BaseModel):
    """The CIT reporting checklist (Gremler 2004) filled from a survey's data; see `items`."""

    model_config = {"extra": "allow"}

    note: str
    survey: dict[str, Any]
    checklist: list[dict[str, Any]]
