"""Researchers' codings of stories (independent, possibly two per story), leases that hand a story
to a coder, and batch assignments. Final codes live in `incident_codes`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class Coding(Base):
    """One coder's independent coding of one story: codes, or an exclusion with a reason."""

    __tablename__ = "codings"
    __table_args__ = (UniqueConstraint("incident_id", "coder_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    coder_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    codebook_version_id: Mapped[int] = mapped_column(ForeignKey("codebook_versions.id"))
    excluded: Mapped[bool] = mapped_column(default=False)
    exclusion_reason: Mapped[str | None] = mapped_column(Text)
    # An included story to which no code of the codebook applies (a decision, not a gap).
    no_code_applies: Mapped[bool] = mapped_column(default=False, server_default="0")
    note: Mapped[str | None] = mapped_column(Text)
    # What the coder chose before a codebook change (or a decision on a proposed code) mapped
    # the codes forward: [{"at", "reason", "codebook_version_id", "codes": [{code, decision}]}].
    history: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default="[]")
    # Bumped on each revision by its coder: part of the ETag that coder reads (see
    # app.incidents.service.etag), so a coder's other tab cannot overwrite it unseen.
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)


class CodingCode(Base):
    """A code decision inside a coding: an accepted suggestion, a code added by hand, or a
    suggestion the coder rejected (recorded, but not one of the coder's codes)."""

    __tablename__ = "coding_codes"
    __table_args__ = (
        UniqueConstraint("coding_id", "code"),
        CheckConstraint("decision IN ('accepted', 'added', 'rejected')", name="decision"),
        Index("ix_coding_codes_code", "code"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    coding_id: Mapped[int] = mapped_column(ForeignKey("codings.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(100))
    decision: Mapped[str] = mapped_column(String(16))
    # Set while the code is a researcher's proposal, not (yet) a code of the codebook.
    proposal_id: Mapped[int | None] = mapped_column(
        ForeignKey("code_proposals.id", ondelete="SET NULL"), index=True
    )


class ReviewLease(Base):
    """A story handed to a coder by the review queue, until `expires_at`."""

    __tablename__ = "review_leases"
    __table_args__ = (UniqueConstraint("incident_id", "coder_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    coder_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Assignment(Base):
    """An admin's assignment of a story to a named researcher (their queue serves it first)."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("incident_id", "researcher_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    researcher_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    assigned_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """A message to one person about their work (e.g. a proposed code they used was rejected)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id_read_at", "user_id", "read_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    message: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]


class CodingSpan(Base):
    """A passage a coder marked as the reason for one of their codes: a field of the story and
    character offsets into its ORIGINAL text (which never changes; a researcher's offsets into
    the redacted text are mapped on the way in and out, see app.incidents.redaction)."""

    __tablename__ = "coding_spans"
    __table_args__ = (
        CheckConstraint("start_offset >= 0 AND end_offset > start_offset", name="offsets"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    coding_code_id: Mapped[int] = mapped_column(
        ForeignKey("coding_codes.id", ondelete="CASCADE"), index=True
    )
    field: Mapped[str] = mapped_column(String(32))
    start: Mapped[int] = mapped_column("start_offset")
    end: Mapped[int] = mapped_column("end_offset")
