"""Codebooks and their immutable versions (who, when, change note, full content)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class Codebook(Base):
    __tablename__ = "codebooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The newest version; versions themselves never change.
    current_version: Mapped[int] = mapped_column(default=1)
    # Whether a training run may make its model active by itself (when it beats the layer in use
    # on every code); when off, an admin activates models by hand.
    auto_activate: Mapped[bool] = mapped_column(default=True, server_default=true())


class CodebookVersion(Base):
    __tablename__ = "codebook_versions"
    __table_args__ = (UniqueConstraint("codebook_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    codebook_id: Mapped[int] = mapped_column(ForeignKey("codebooks.id", ondelete="CASCADE"))
    number: Mapped[int]
    # The whole codebook as in codebooks/*.yaml (nlp.codebook_to_dict).
    content: Mapped[dict[str, Any]]
    change_note: Mapped[str] = mapped_column(Text, default="")
    # How codings of the previous version map onto this one: {"old_key": ["new_key", ...]}.
    code_mapping: Mapped[dict[str, Any] | None]
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


PROPOSAL_STATUSES = ("proposed", "accepted", "merged", "rejected")


class CodeProposal(Base):
    """A new code a researcher proposed while coding (inductive category building): usable in
    their own coding at once, until an admin accepts, merges or rejects it."""

    __tablename__ = "code_proposals"
    __table_args__ = (
        CheckConstraint("status IN ('proposed', 'accepted', 'merged', 'rejected')", name="status"),
        # One open proposal per key and codebook, even if two researchers propose at once.
        Index(
            "uq_code_proposals_open_key",
            "codebook_id",
            "key",
            unique=True,
            sqlite_where=text("status = 'proposed'"),
            postgresql_where=text("status = 'proposed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    codebook_id: Mapped[int] = mapped_column(
        ForeignKey("codebooks.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200))
    definition: Mapped[str] = mapped_column(Text, default="")
    # The story that prompted it: its first example.
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    proposed_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default="proposed")
    # accepted: the key it got in the codebook; merged: the code it was merged into.
    resolved_code: Mapped[str | None] = mapped_column(String(100))
    codebook_version_id: Mapped[int | None] = mapped_column(ForeignKey("codebook_versions.id"))
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
