"""API models of the review workflow: codings, the queue, adjudication, assignments, progress,
agreement reports and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.incidents.schemas import CodingRead, IncidentRead

CodeKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Note = Annotated[str, StringConstraints(max_length=5000)]
ResearcherName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeChoice(Strict):
    code: CodeKey
    origin: Literal["suggestion", "manual"] = Field(
        "manual", description="suggestion: accepting a model suggestion; manual: added by hand"
    )


def _unique(values: list[str], what: str) -> None:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{what} lists {', '.join(duplicates)} more than once")


class _Decision(Strict):
    """Codes, or an exclusion with its reason (a story that fails the inclusion criteria)."""

    exclude: bool = Field(False, description="The story fails the inclusion criteria")
    exclusion_reason: Reason | None = Field(
        None, description='Required when excluding, e.g. "not one discrete episode"'
    )
    note: Note | None = None

    def _check_exclusion(self, has_codes: bool) -> None:
        if self.exclude:
            if has_codes:
                raise ValueError("an excluded story gets no codes")
            if not self.exclusion_reason:
                raise ValueError("exclusion_reason is required when excluding a story")
        else:
            if self.exclusion_reason is not None:
                raise ValueError("exclusion_reason is only for excluded stories")
            if not has_codes:
                raise ValueError("give at least one code, or exclude the story with a reason")


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


class NextRequest(Strict):
    survey_id: int | None = Field(None, description="Only stories of this survey")


class ReviewItem(BaseModel):
    """A story handed out by the review queue, held for the caller until `lease_expires_at`."""

    incident: IncidentRead
    lease_expires_at: datetime


class AssignmentCreate(Strict):
    """Either `incident_ids`, or `survey_id` with `count` (its oldest unassigned, uncoded
    stories)."""

    researcher: ResearcherName
    incident_ids: Annotated[list[int], Field(min_length=1, max_length=10_000)] | None = None
    survey_id: int | None = None
    count: Annotated[int, Field(ge=1, le=10_000)] | None = None

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


class Progress(BaseModel):
    researcher: str
    coded: int = Field(description="Stories the researcher has coded")
    remaining_in_queue: int = Field(description="Stories the queue could still hand them")
    assigned_remaining: int = Field(description="Stories assigned to them, not yet coded")
    agreement: CoderAgreement


# Agreement report -------------------------------------------------------------------------------


class StatisticRead(BaseModel):
    value: float | None
    n_units: int = Field(description="Stories the figure rests on")
    reason: str | None = Field(description="Why the value is null, when it is")


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


class ReliabilitySection(BaseModel):
    coders: list[str]
    n_units: int = Field(
        description="Stories with two or more coders' codings (an exclusion counts as a coding)"
    )
    overall: FiguresRead
    per_code: dict[str, FiguresRead]
    single_label: SingleLabelRead


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
    k: int = Field(description="Number of active codes of the codebook version (for Ir)")
    n_codings: int
    exclusions: ExclusionAgreementRead
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
    "MyCoding",
    "NextRequest",
    "Progress",
    "ReviewItem",
]
