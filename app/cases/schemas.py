"""API models of cases and contacts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CaseStatus = Literal["open", "contacted", "resolved"]


class CaseNoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]


class CaseUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: CaseStatus


class CaseNoteRead(BaseModel):
    id: int
    author: str
    body: str
    created_at: datetime


class ContactRead(BaseModel):
    kind: Literal["email", "phone"]
    value: str | None = Field(description="In clear; null when no configured key opens it")


class CaseStory(BaseModel):
    """The story a case is about, as researchers read it (redacted: a case manager follows up
    on what happened without the respondent's other personal data in the text)."""

    submitted_at: datetime
    valence: str
    touchpoint: str | None
    channel: str | None
    occurred: str | None
    circumstances: str | None
    what_happened: str | None
    outcome: str | None
    redaction_pending: bool = Field(
        description="The configured redaction has not run on this story yet: no text until it has"
    )


class CaseRead(BaseModel):
    id: int
    incident_id: int
    survey_id: int
    status: CaseStatus
    opened_at: datetime
    contacted_at: datetime | None
    resolved_at: datetime | None
    updated_at: datetime
    updated_by: str | None
    version: int
    codes: list[str] = Field(description="The story's final codes")
    contact: ContactRead | None
    notes: list[CaseNoteRead]
    story: CaseStory | None = Field(
        None, description="One case read (`GET /api/v1/cases/{id}`) only; null in lists"
    )


class CasePage(BaseModel):
    items: list[CaseRead]
    next_cursor: str | None


class CaseSummary(BaseModel):
    open: int
    contacted: int
    resolved: int
    median_hours_to_resolution: float | None = Field(
        description="Median time from opening to resolution of the resolved cases"
    )
    mean_hours_to_resolution: float | None
