"""Surveys and their personal invitations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

SURVEY_STATUSES = ("draft", "open", "closed")


class Survey(Base):
    __tablename__ = "surveys"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'open', 'closed')", name="status"),
        CheckConstraint(
            "double_coding_share >= 0 AND double_coding_share <= 100", name="double_coding_share"
        ),
        CheckConstraint("review_order IN ('oldest', 'least_certain')", name="review_order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    introduction: Mapped[str] = mapped_column(Text, default="")
    consent_text: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8), default="en")
    # Wording of each CIT question, keyed by answer field (see app.surveys.schemas.QUESTION_KEYS).
    questions: Mapped[dict[str, Any]]
    # {"touchpoints": [...], "channels": [...]}: the choices offered to respondents.
    choices: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="draft")
    closes_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)
    # Share of stories (0-100 %) that get two independent coders; and the review queue's order.
    double_coding_share: Mapped[int] = mapped_column(default=0)
    review_order: Mapped[str] = mapped_column(String(16), default="oldest")
    codebook_id: Mapped[int | None] = mapped_column(
        ForeignKey("codebooks.id", ondelete="SET NULL"), index=True
    )
    # What the team writes for the methods section (app.surveys.schemas.StudyProtocol):
    # incident definition, inclusion/exclusion criteria, data collection, instructions.
    study_protocol: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # "May we contact you about this?": the wording, or None when the survey does not ask.
    contact_question: Mapped[str | None] = mapped_column(Text)
    # A dissatisfying story with a contact opens a case: always (empty), or only when its final
    # codes include one of these.
    case_codes: Mapped[list[str]] = mapped_column(default=list, server_default="[]")


class Invitation(Base):
    """A single-use personal link. The token is never stored: only its hash and the nonce from
    which the server (holding CIT_SECRET_KEY) can derive the link again for the CSV download."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"), index=True)
    nonce: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    attributes: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    used_at: Mapped[datetime | None]
