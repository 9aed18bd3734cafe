"""Follow-up with respondents: the contact a respondent left (encrypted, apart from the story)
and the case that a dissatisfying story with consent to contact opens, with its notes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

CONTACT_KINDS = ("email", "phone")
CASE_STATUSES = ("open", "contacted", "resolved")


class IncidentContact(Base):
    """How the respondent agreed to be contacted about their story. `ciphertext` is a Fernet
    token (app.cases.crypto) of the e-mail address or phone number; nothing else here is
    personal. Deleted with the story (ON DELETE CASCADE: erasure and withdrawal)."""

    __tablename__ = "incident_contacts"
    __table_args__ = (CheckConstraint("kind IN ('email', 'phone')", name="kind"),)

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Case(Base):
    """A follow-up of one story: open -> contacted -> resolved (who and when in the audit)."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'contacted', 'resolved')", name="status"),
        Index("ix_cases_survey_id_status", "survey_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), unique=True
    )
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    contacted_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(default=1)


class CaseNote(Base):
    """A case manager's note (may quote the respondent: never exported, erased with the story)."""

    __tablename__ = "case_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
