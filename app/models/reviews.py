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
    note: Mapped[str | None] = mapped_column(Text)
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
    # Where in the story the coder applied the code: [{"field", "start", "end"}], offsets into
    # the original answer text; None means the whole story (QDA programs' coded selections).
    spans: Mapped[list[dict[str, Any]] | None]


class ReviewLease(Base):
    """A story handed to a coder by the review queue, until `expires_at`."""

    __tablename__ = "review_leases"
    __table_args__ = (UniqueConstraint("incident_id", "coder_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    coder_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
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
