"""Codebooks and their immutable versions (who, when, change note, full content)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, true
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
