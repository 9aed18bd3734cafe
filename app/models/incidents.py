"""A respondent's story (critical incident), each CIT answer in its own field, kept as typed."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

VALENCES = ("satisfying", "dissatisfying")
# Imported stories may come without a clear valence: stored, then coded or excluded by
# researchers (CIT keeps only clearly satisfying or dissatisfying incidents; trends count only
# those). The form and the JSON submission still require one of VALENCES.
STORED_VALENCES = (*VALENCES, "neutral", "unknown")
# Where a story came from: the open link (form or JSON), a personal invitation, or an import.
SOURCES = ("form", "invitation", "import")
# given: the respondent ticked the survey's consent; not_asked: the survey asked for none;
# unknown: imported without a consent column.
CONSENT_STATES = ("given", "not_asked", "unknown")
# new: not yet coded; in_review: coded by fewer coders than it needs; adjudication: two coders
# disagree; coded: final codes set; excluded: fails the inclusion criteria (with a reason).
INCIDENT_STATUSES = ("new", "in_review", "adjudication", "coded", "excluded")
# Waiting for a coder (app.reviews.queue.OPEN_STATUSES), as the partial indexes spell it.
OPEN_CONDITION = "status IN ('new', 'in_review')"


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint(
            "valence IN ('satisfying', 'dissatisfying', 'neutral', 'unknown')", name="valence"
        ),
        CheckConstraint("source IN ('form', 'invitation', 'import')", name="source"),
        CheckConstraint("consent IN ('given', 'not_asked', 'unknown')", name="consent"),
        CheckConstraint(
            "status IN ('new', 'in_review', 'adjudication', 'coded', 'excluded')", name="status"
        ),
        # One story per submitted form: a refresh or double click re-sends the same key.
        UniqueConstraint("survey_id", "submission_key", name="uq_incidents_survey_submission"),
        Index("ix_incidents_survey_id_id", "survey_id", "id"),
        # The review queue: open stories by date, overall and per survey. Partial, so they hold
        # only what waits to be coded, however many stories are done.
        Index(
            "ix_incidents_open_by_date",
            "submitted_at",
            "id",
            sqlite_where=text(OPEN_CONDITION),
            postgresql_where=text(OPEN_CONDITION),
        ),
        Index(
            "ix_incidents_open_by_survey_date",
            "survey_id",
            "submitted_at",
            "id",
            sqlite_where=text(OPEN_CONDITION),
            postgresql_where=text(OPEN_CONDITION),
        ),
        Index("uq_incidents_receipt_hash", "receipt_hash", unique=True),
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

    source: Mapped[str] = mapped_column(String(16), default="form", server_default="form")
    consent: Mapped[str] = mapped_column(String(16), default="unknown", server_default="unknown")
    # The import run that stored the story (file name, who, when), for source "import".
    import_id: Mapped[int | None] = mapped_column(
        ForeignKey("imports.id", ondelete="SET NULL"), index=True
    )
    # SHA-256 of the respondent's withdrawal receipt code (app.erasure.receipts); the code
    # itself is derived from the submission key and never stored.
    receipt_hash: Mapped[str | None] = mapped_column(String(64))
