"""A respondent's story (critical incident), each CIT answer in its own field, kept as typed."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

VALENCES = ("satisfying", "dissatisfying")
# new: not yet coded; in_review: coded by fewer coders than it needs; adjudication: two coders
# disagree; coded: final codes set; excluded: fails the inclusion criteria (with a reason).
INCIDENT_STATUSES = ("new", "in_review", "adjudication", "coded", "excluded")


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint("valence IN ('satisfying', 'dissatisfying')", name="valence"),
        CheckConstraint(
            "status IN ('new', 'in_review', 'adjudication', 'coded', 'excluded')", name="status"
        ),
        # One story per submitted form: a refresh or double click re-sends the same key.
        UniqueConstraint("survey_id", "submission_key", name="uq_incidents_survey_submission"),
        Index("ix_incidents_survey_id_id", "survey_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id", ondelete="RESTRICT"))
    invitation_id: Mapped[int | None] = mapped_column(
        ForeignKey("invitations.id", ondelete="SET NULL"), unique=True
    )
    submission_key: Mapped[str] = mapped_column(String(64))

    occurred_text: Mapped[str | None] = mapped_column(Text)
    occurred_on: Mapped[date | None]
    circumstances: Mapped[str | None] = mapped_column(Text)
    what_happened: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)
    valence: Mapped[str] = mapped_column(String(16))
    touchpoint: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(8))
    attributes: Mapped[dict[str, Any]]

    # What researchers see: each answer field with PII replaced ({"what_happened": "..."}), and
    # the redacted spans. The fields above keep the original, shown to admins only.
    redacted: Mapped[dict[str, Any]]
    redaction_spans: Mapped[dict[str, Any]]
    # Which redaction produced `redacted`: None = the pattern redaction done at submission,
    # "ner:<pipeline>@<version>" = patterns plus that pipeline's person names (set by the worker).
    # With NER configured, researchers read only stories redacted with it.
    redacted_with: Mapped[str | None] = mapped_column(String(200))

    submitted_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    # How many independent codings the story needs (1, or 2 for blind double coding); decided
    # from the survey's double-coding share when the story is first handed out.
    coders_required: Mapped[int | None]
    exclusion_reason: Mapped[str | None] = mapped_column(Text)
    finalized_at: Mapped[datetime | None] = mapped_column(index=True)
    # Bumped on every change a coder makes; served as the ETag for optimistic concurrency.
    version: Mapped[int] = mapped_column(default=1)
