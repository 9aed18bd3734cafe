"""API models for submitting and reading stories."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

SubmissionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class StorySubmission(BaseModel):
    """A story sent by a custom front end: the same fields as the web form."""

    model_config = ConfigDict(extra="forbid")

    occurred: str | None = Field(None, description="When it happened: free text or YYYY-MM-DD")
    circumstances: str | None = None
    what_happened: str = Field(description="Exactly what the employee (or you) said or did")
    outcome: str | None = None
    valence: Literal["satisfying", "dissatisfying"]
    touchpoint: str | None = None
    channel: str | None = None
    consent: StrictBool = False
    contact_ok: StrictBool = Field(
        False, description="The answer to the survey's contact question (if it asks one)"
    )
    contact: str | None = Field(
        None,
        max_length=254,
        description="With contact_ok: an e-mail address or phone number, stored encrypted and "
        "apart from the story",
    )
    invitation: str | None = Field(None, description="The token of a personal invitation link")
    submission_id: SubmissionId | None = Field(
        None, description="Idempotency key: sending the same id twice stores one story"
    )


class SubmissionReceipt(BaseModel):
    status: Literal["received", "already_received"]
    submitted_at: datetime
    receipt_code: str | None = Field(
        None,
        description="Keep it to withdraw the story later (POST /api/v1/public/surveys/{slug}/"
        "withdrawals or the page /s/{slug}/withdraw); it cannot be used to read the story",
    )


class EvidenceRead(BaseModel):
    field: str = Field(description="Answer field the span is in (offsets into its redacted text)")
    start: int
    end: int
    text: str
    indicator: str = Field(description="Which codebook indicator matched")


class SuggestionRead(BaseModel):
    code: str
    score: float
    suggested: bool
    source: Literal["rules", "model", "combined"] = Field(
        description="The layer that scored the code: the codebook's rules, the trained model, "
        "or the two combined (with the story's valence)"
    )
    threshold: float = Field(0.5, description="Score at or above which the code is suggested")
    kappa: float | None = Field(
        None,
        description="Cross-validated Cohen's kappa of this layer for this code in the active "
        "model's training run (null: not measured, e.g. rules before any training)",
    )
    evidence: list[EvidenceRead]
    codebook_version_id: int
    model_id: int | None
    created_at: datetime


class FinalCodeRead(BaseModel):
    code: str
    source: str
    codebook_version_id: int
    confirmed_by: str
    confirmed_at: datetime


class SpanRead(BaseModel):
    field: str = Field(description="Answer field the passage is in")
    start: int = Field(description="Character offset into the text as the reader reads it")
    end: int
    text: str = Field(description="The passage, in the reader's view (redacted for researchers)")


class CodeDecisionRead(BaseModel):
    code: str
    origin: Literal["suggestion", "manual"] = Field(
        description="suggestion: an accepted model suggestion; manual: added by the coder"
    )
    spans: list[SpanRead] = Field(
        [], description="Passages the coder marked as the reason for this code"
    )
    proposed: bool = Field(
        False, description="A code the coder proposed, not yet accepted into the codebook"
    )
    proposal_id: int | None = Field(None, description="The open proposal, when proposed")


class CodingHistoryEntry(BaseModel):
    """What the coder had chosen before a codebook change or a decision on a proposed code
    mapped the coding's codes (the coding itself holds the mapped codes)."""

    at: datetime
    reason: Literal["codebook_change", "proposal_accepted", "proposal_merged", "proposal_rejected"]
    note: str | None = None
    codebook_version_id: int = Field(description="The version the codes below belong to")
    mapped_to_version_id: int | None = None
    codes: list[dict[str, str]] = Field(description='[{"code", "decision"}] as chosen then')


class CodingRead(BaseModel):
    """One coder's independent coding of a story (codes, or an exclusion with its reason)."""

    id: int
    incident_id: int
    coder: str
    codebook_version_id: int
    codes: list[CodeDecisionRead]
    rejected_suggestions: list[str]
    excluded: bool
    exclusion_reason: str | None
    no_code_applies: bool = Field(
        False, description="Included, but no code of the codebook applies (a decision)"
    )
    note: str | None
    history: list[CodingHistoryEntry] = Field(
        default_factory=list,
        description="Earlier codes of this coding, before codebook changes mapped them",
    )
    created_at: datetime
    updated_at: datetime


class SuggestionJobRead(BaseModel):
    status: Literal["queued", "running", "failed"]
    attempts: int
    last_error: str | None


class ExclusionSuggestionRead(BaseModel):
    score: float
    suggested: bool = Field(description="The model thinks the story is no critical incident")
    threshold: float
    source: Literal["model", "combined"]


class IncidentRead(BaseModel):
    id: int
    survey_id: int
    occurred: str | None
    occurred_on: date | None
    circumstances: str | None
    what_happened: str
    outcome: str | None
    valence: Literal["satisfying", "dissatisfying", "neutral", "unknown"] = Field(
        description="neutral/unknown: imported without a clear valence (to code or exclude)"
    )
    touchpoint: str | None
    channel: str | None
    language: str
    attributes: dict[str, Any]
    invitation_id: int | None
    submitted_at: datetime
    status: str
    version: int = Field(description="Changes with every coding; sent as the ETag")
    coders_required: int | None = Field(
        description="Independent codings the story needs (1, or 2 for blind double coding); "
        "decided when the story is first handed out"
    )
    exclusion_reason: str | None
    finalized_at: datetime | None
    view: Literal["original", "redacted"] = Field(
        description="Admins read the original text; everyone else the text with personal data "
        "replaced. Evidence offsets always refer to the redacted text."
    )
    redaction_pending: bool = Field(
        False,
        description="True while the story awaits redaction with the configured NER pipeline: "
        "researchers get no text, evidence or suggestions until then",
    )
    suggestions: list[SuggestionRead]
    exclusion_suggestion: ExclusionSuggestionRead | None = Field(
        None, description='"Exclude" suggested once the model has learnt confirmed exclusions'
    )
    suggestion_job: SuggestionJobRead | None = Field(
        description="Set while suggestions are being (re)computed, or when that failed"
    )
    final_codes: list[FinalCodeRead]
    codings: list[CodingRead] = Field(
        description="Researchers see only their own coding until every required coding is in "
        "(blind double coding); admins see all"
    )


class IncidentPage(BaseModel):
    items: list[IncidentRead]
    next_cursor: str | None
