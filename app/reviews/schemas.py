"""API models of the review workflow: codings, the queue, adjudication, assignments, progress,
agreement reports and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from app.incidents.schemas import CodingRead, IncidentRead

CodeKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Note = Annotated[str, StringConstraints(max_length=5000)]
ResearcherName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


SPAN_FIELDS = ("occurred", "circumstances", "what_happened", "outcome")


class SpanChoice(Strict):
    """A passage that justifies a code: character offsets into one answer as the coder reads it
    (the redacted text for researchers; admins the original, or the redacted with
    `?view=redacted`)."""

    field: Literal["occurred", "circumstances", "what_happened", "outcome"]
    start: Annotated[StrictInt, Field(ge=0)]
    end: Annotated[StrictInt, Field(gt=0)]

    @model_validator(mode="after")
    def _ordered(self) -> SpanChoice:
        if self.end <= self.start:
            raise ValueError("a span's end must be after its start")
        return self


class CodeChoice(Strict):
    code: CodeKey
    origin: Literal["suggestion", "manual"] = Field(
        "manual", description="suggestion: accepting a model suggestion; manual: added by hand"
    )
    spans: Annotated[list[SpanChoice], Field(max_length=50)] = Field(
        [], description="Passages that justify the code (optional)"
    )


def _unique(values: list[str], what: str) -> None:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{what} lists {', '.join(duplicates)} more than once")


class _Decision(Strict):
    """Codes, or an exclusion with its reason (a story that fails the inclusion criteria)."""

    exclude: StrictBool = Field(False, description="The story fails the inclusion criteria")
    exclusion_reason: Reason | None = Field(
        None, description='Required when excluding, e.g. "not one discrete episode"'
    )
    note: Note | None = None

    no_code_applies: StrictBool = Field(
        False,
        description="The story is included, but no code of the codebook applies to it "
        "(recorded as a decision; coders who both say so agree)",
    )

    def _check_exclusion(self, has_codes: bool) -> None:
        if self.exclude:
            if has_codes:
                raise ValueError("an excluded story gets no codes")
            if self.no_code_applies:
                raise ValueError("an excluded story is not coded: leave no_code_applies out")
            if not self.exclusion_reason:
                raise ValueError("exclusion_reason is required when excluding a story")
        else:
            if self.exclusion_reason is not None:
                raise ValueError("exclusion_reason is only for excluded stories")
            if has_codes and self.no_code_applies:
                raise ValueError("no_code_applies goes without codes")
            if not has_codes and not self.no_code_applies:
                raise ValueError(
                    "give at least one code, set no_code_applies, or exclude the story with "
                    "a reason"
                )


class CodingUpdate(_Decision):
    """A coder's coding of a story: `codes` (with where each came from) and the suggestions
    they rejected; or `exclude` with an `exclusion_reason`."""

    codes: Annotated[list[CodeChoice], Field(max_length=100)] = []
    rejected_suggestions: Annotated[list[CodeKey], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _consistent(self) -> CodingUpdate:
        keys = [c.code for c in self.codes]
        _unique(keys, "codes")
        _unique(self.rejected_suggestions, "rejected_suggestions")
        overlap = sorted(set(keys) & set(self.rejected_suggestions))
        if overlap:
            raise ValueError(f"codes both given and rejected: {', '.join(overlap)}")
        if self.exclude and self.rejected_suggestions:
            raise ValueError("an excluded story gets no code decisions")
        self._check_exclusion(bool(keys))
        return self


class AdjudicationUpdate(_Decision):
    """An admin's final decision on a story the coders disagreed on."""

    codes: Annotated[list[CodeKey], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _consistent(self) -> AdjudicationUpdate:
        _unique(self.codes, "codes")
        self._check_exclusion(bool(self.codes))
        return self


class MyCoding(CodingRead):
    """The caller's coding, with the state of the story it belongs to."""

    incident_status: str
    incident_version: int
    etag: str = Field(description="The story's ETag for this coder: send it as If-Match")
    notifications: list[NotificationRead] = Field(
        default_factory=list,
        description="Unread notifications about this story (e.g. a proposed code rejected)",
    )


class NextRequest(Strict):
    survey_id: StrictInt | None = Field(None, description="Only stories of this survey")


class ReviewItem(BaseModel):
    """A story handed out by the review queue, held for the caller until `lease_expires_at`."""

    incident: IncidentRead
    lease_expires_at: datetime


class AssignmentCreate(Strict):
    """Either `incident_ids`, or `survey_id` with `count` (its oldest unassigned, uncoded
    stories)."""

    researcher: ResearcherName
    incident_ids: Annotated[list[StrictInt], Field(min_length=1, max_length=10_000)] | None = None
    survey_id: StrictInt | None = None
    count: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> AssignmentCreate:
        by_ids = self.incident_ids is not None
        by_survey = self.survey_id is not None or self.count is not None
        if by_ids == by_survey:
            raise ValueError("give either incident_ids, or survey_id with count")
        if by_survey and (self.survey_id is None or self.count is None):
            raise ValueError("survey_id and count go together")
        return self


class AssignmentResult(BaseModel):
    researcher: str
    assigned: list[int] = Field(description="Stories newly assigned")
    already_assigned: list[int] = Field(description="Stories the researcher had already")


class CoderAgreement(BaseModel):
    double_coded: int = Field(description="Stories the researcher and another coder both coded")
    agreed: int = Field(description="... on which every coder gave the same codes (or excluded)")
    share: float | None = Field(description="agreed / double_coded; null before the first one")


class SurveyProgress(BaseModel):
    survey_id: int
    title: str
    coded: int = Field(description="Stories of this survey the researcher has coded")
    remaining_in_queue: int
    assigned_remaining: int


class NotificationRead(BaseModel):
    """A message about the reader's own work, e.g. a proposed code they used was rejected."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    incident_id: int | None
    message: str
    payload: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class Progress(BaseModel):
    researcher: str
    coded: int = Field(description="Stories the researcher has coded")
    remaining_in_queue: int = Field(description="Stories the queue could still hand them")
    assigned_remaining: int = Field(description="Stories assigned to them, not yet coded")
    agreement: CoderAgreement
    by_survey: list[SurveyProgress] = Field(
        default_factory=list, description="The same counts per survey (surveys with any)"
    )
    needs_revision: list[int] = Field(
        default_factory=list,
        description="Stories whose coding lost its codes (a proposed code was rejected): code "
        "them again",
    )
    notifications: list[NotificationRead] = Field(
        default_factory=list, description="Unread notifications, newest first"
    )


class SurveyQueueCounts(BaseModel):
    """Where a survey's stories are in the review workflow."""

    survey_id: int
    title: str
    double_coding_share: int
    stories: int
    by_status: dict[str, int] = Field(description="new, in_review, adjudication, coded, excluded")
    double_coded: int = Field(description="Stories that need two independent codings")
    awaiting_codings: int = Field(description="Open stories with fewer codings than they need")
    leased_now: int = Field(description="Stories a researcher holds right now")
    waiting_for_proposals: int = Field(
        description="Stories whose coding uses a proposed code not decided yet"
    )


class DoubleCodingFilter(Strict):
    survey_id: StrictInt
    valence: Literal["satisfying", "dissatisfying"] | None = None
    touchpoint: str | None = None
    channel: str | None = None
    submitted_from: datetime | None = None
    submitted_to: datetime | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = Field(
        None, description="At most this many (oldest first)"
    )


class DoubleCodingChoice(Strict):
    """Stories an admin picks for (or takes out of) blind double coding, by id or by filter;
    besides the survey's share, which decides for the stories nobody picked."""

    incident_ids: Annotated[list[StrictInt], Field(min_length=1, max_length=10_000)] | None = None
    filter: DoubleCodingFilter | None = None
    coders_required: Literal[1, 2] = Field(2, description="2: double-code; 1: single-code")

    @model_validator(mode="after")
    def _one_way(self) -> DoubleCodingChoice:
        if (self.incident_ids is None) == (self.filter is None):
            raise ValueError("give either incident_ids or filter")
        return self


class SkippedStory(BaseModel):
    incident_id: int
    reason: str


class DoubleCodingResult(BaseModel):
    coders_required: int
    updated: list[int]
    unchanged: list[int]
    skipped: list[SkippedStory]


class LeaseRead(BaseModel):
    incident_id: int
    researcher: str
    expires_at: datetime


class LeaseBreakResult(BaseModel):
    incident_id: int
    released: list[str] = Field(description="Whose leases were removed")


# Agreement report -------------------------------------------------------------------------------


class IntervalRead(BaseModel):
    """A 95 % confidence interval and how it was computed (seeded: the same data and seed give
    the same interval)."""

    low: float
    high: float
    level: float = 0.95
    method: str
    resamples: int | None = None
    seed: int | None = None
    prob_below: dict[str, float] | None = Field(
        None,
        description="Krippendorff's alpha: share of bootstrap resamples below 0.667 / 0.800 "
        "(q(alpha_min), Hayes & Krippendorff 2007)",
    )


class StatisticRead(BaseModel):
    value: float | None
    n_units: int = Field(description="Stories the figure rests on")
    reason: str | None = Field(description="Why the value is null, when it is")
    ci95: IntervalRead | None = Field(
        None, description="95 % confidence interval, where one is computed and the value is set"
    )


class PairStatisticRead(StatisticRead):
    coders: tuple[str, str]


class FiguresRead(BaseModel):
    """Agreement on one code's presence/absence (or the mean over the codes, for overall)."""

    percent_agreement: StatisticRead
    cohen_kappa: list[PairStatisticRead] = Field(
        description="Every pair of coders with at least one story in common"
    )
    fleiss_kappa: StatisticRead
    krippendorff_alpha: StatisticRead
    perreault_leigh_ir: StatisticRead


class SingleLabelRead(BaseModel):
    """Nominal figures over the code itself, when every coding carries exactly one code."""

    applicable: bool
    reason: str | None
    percent_agreement: StatisticRead | None = None
    cohen_kappa: list[PairStatisticRead] = []
    scott_pi: StatisticRead | None = None
    fleiss_kappa: StatisticRead | None = None
    krippendorff_alpha: StatisticRead | None = None
    perreault_leigh_ir: StatisticRead | None = None


class ExclusionAgreementRead(BaseModel):
    units: int = Field(description="Stories with two or more codings")
    all_excluded: int
    none_excluded: int
    split: int = Field(description="Some coders excluded the story, others coded it")
    agreement: float | None


class ShareRead(BaseModel):
    stories: int
    agreed: int
    share: float | None
    ci95: IntervalRead | None
    description: str


class StoryLevelRead(BaseModel):
    """Story-level agreement: identical code sets (the figure most CIT papers print)."""

    exclusion_missing: ShareRead
    exclusion_as_category: ShareRead


class ReliabilitySection(BaseModel):
    coders: list[str]
    n_units: int = Field(
        description="Stories with two or more coders' codings (an exclusion counts as a coding)"
    )
    overall_codes: list[str] = Field(
        description="Codes the overall means run over: active codes a coder used"
    )
    left_out_of_overall: dict[str, str] = Field(
        description="Codes listed per code but left out of the overall means, and why"
    )
    overall: FiguresRead = Field(
        description="Plain means of the per-code values over overall_codes (Ir: k = 2 each)"
    )
    per_code: dict[str, FiguresRead]
    story_level: StoryLevelRead
    single_label: SingleLabelRead


class AdjudicationRead(BaseModel):
    adjudicated: int = Field(description="Stories an admin adjudicated")
    adjudicated_coded: int
    adjudicated_excluded: int
    pending: int = Field(description="Stories waiting for adjudication")
    method: str


class ParentLevelRead(BaseModel):
    """Agreement on the top-level categories, each rolling up the codes below it."""

    available: bool
    reason: str | None
    children: dict[str, list[str]] = {}
    section: ReliabilitySection | None = None


class BootstrapRead(BaseModel):
    seed: int
    resamples: int = Field(description="Resamples of the stories (kappa, means over codes)")
    alpha_resamples: int = Field(description="Resamples of the coincidences (per-code alpha)")
    alpha_method: str
    method: str


class AgreementFilters(BaseModel):
    survey_id: int | None
    codebook_version_id: int | None
    submitted_from: datetime | None
    submitted_to: datetime | None


class SuggestionSourceRead(BaseModel):
    """Which model (null: the rules alone) and codebook version made the compared suggestions."""

    model_id: int | None
    codebook_version_id: int
    n_stories: int


class AgreementReportRead(ReliabilitySection):
    """Inter-coder agreement over the stories two or more researchers coded, and the model's
    suggestions against the final codes. Aggregates only: no story text, no story ids."""

    available: bool = Field(
        description="True when at least one story was coded by two or more researchers"
    )
    reason: str | None = Field(description="Why inter-coder figures are missing, when they are")
    filters: AgreementFilters
    codebook_version_ids: list[int]
    codes: list[str]
    k: int = Field(
        description="Number of active codes of the codebook version (Ir of single-label coding)"
    )
    n_codings: int
    exclusion_handling: Literal["missing", "category"] = Field(
        description="missing: an excluding coder is left out of the per-code figures; "
        "category: an exclusion is one more code, '(excluded)'"
    )
    exclusions: ExclusionAgreementRead
    include_exclude: FiguresRead = Field(
        description="Agreement on the include / exclude decision (two values)"
    )
    adjudication: AdjudicationRead
    parent_level: ParentLevelRead
    bootstrap: BootstrapRead
    model_vs_final: ReliabilitySection = Field(
        description='Suggested codes ("model") against the final codes ("final") of coded stories'
    )
    model_vs_final_made_by: list[SuggestionSourceRead] = Field(
        default_factory=list,
        description="The models (null: rules) and codebook versions whose suggestions "
        "model_vs_final compares, with how many stories each",
    )
    notes: list[str]


# Audit trail -----------------------------------------------------------------------------------


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_id: int | None
    actor_name: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEventRead]
    next_cursor: str | None


__all__ = [
    "AdjudicationUpdate",
    "AgreementReportRead",
    "AssignmentCreate",
    "AssignmentResult",
    "AuditEventRead",
    "AuditPage",
    "CodeChoice",
    "CodingRead",
    "CodingUpdate",
    "DoubleCodingChoice",
    "DoubleCodingResult",
    "MyCoding",
    "NextRequest",
    "NotificationRead",
    "Progress",
    "ReviewItem",
    "SpanChoice",
    "SurveyQueueCounts",
]
