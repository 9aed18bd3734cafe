"""Import runs: which file was read into which survey, by whom, when, and how it went."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

IMPORT_STATUSES = ("queued", "running", "done", "failed")


class ImportRun(Base):
    """One import of a file (CLI or API upload); imported stories point at it (`import_id`)."""

    __tablename__ = "imports"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    # csv, jsonl, xlsx or qdpx; for text files also the encoding and delimiter found.
    file_format: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]]
    # {"map": {"source column": "field"}, "defaults": {"valence": "dissatisfying"}}
    options: Mapped[dict[str, Any]]
    imported_by: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    rows_total: Mapped[int | None]
    rows_read: Mapped[int] = mapped_column(default=0)
    stored: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    coded: Mapped[int] = mapped_column(default=0)
    error_count: Mapped[int] = mapped_column(default=0)
    # The first errors: [{"line", "column", "value", "message"}] (capped; error_count has all).
    errors: Mapped[list[dict[str, Any]]]
    failure: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
