"""Confirmed (final) codes of stories, model suggestions, trained models and the job queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class IncidentCode(Base):
    """A final, researcher-confirmed code of a story: the only codes that count in reports."""

    __tablename__ = "incident_codes"
    __table_args__ = (
        UniqueConstraint("incident_id", "code"),
        Index("ix_incident_codes_code_confirmed_at", "code", "confirmed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(100))
    codebook_version_id: Mapped[int] = mapped_column(ForeignKey("codebook_versions.id"))
    # import (an earlier study), review (one coder), agreement (two agreed), adjudication.
    source: Mapped[str] = mapped_column(String(16))
    confirmed_by: Mapped[str] = mapped_column(String(100))
    confirmed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Suggestion(Base):
    """The latest suggestions for one story: one row per story holding every code's score,
    source and evidence (computed together, replaced together when the story is re-scored)."""

    __tablename__ = "suggestions"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), unique=True
    )
    # [{"code", "score", "suggested", "source", "evidence": [{"field", "start", "end", "text",
    #   "indicator"}]}], one entry per active code of the codebook version, in codebook order.
    items: Mapped[list[dict[str, Any]]]
    # The smallest distance of a score from its code's threshold: low = uncertain (review order).
    certainty: Mapped[float] = mapped_column(Float, index=True)
    codebook_version_id: Mapped[int] = mapped_column(ForeignKey("codebook_versions.id"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("nlp_models.id", ondelete="SET NULL"))
    # {"score", "suggested", "threshold", "source"}: whether the story looks like no critical
    # incident; None while the model has not learnt exclusions (too few confirmed).
    exclusion: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NlpModel(Base):
    """A trained textcat model on disk, with its metrics; at most one active per codebook."""

    __tablename__ = "nlp_models"
    __table_args__ = (
        # At most one active model per codebook, even if two trainings finish at once.
        Index(
            "uq_nlp_models_active_codebook",
            "codebook_id",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    codebook_id: Mapped[int] = mapped_column(ForeignKey("codebooks.id", ondelete="CASCADE"))
    codebook_version_id: Mapped[int] = mapped_column(ForeignKey("codebook_versions.id"))
    path: Mapped[str] = mapped_column(String(500))
    n_examples: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    active: Mapped[bool] = mapped_column(default=False)
    trained_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Stories this model was trained on that have since been erased (withdrawn or deleted):
    # the model still carries what it learnt from them until it is retrained.
    erased_stories: Mapped[int] = mapped_column(default=0, server_default="0")
    last_erasure_at: Mapped[datetime | None]


JOB_STATUSES = ("queued", "running", "done", "failed")


class Job(Base):
    """Work off the request path. Claimed with FOR UPDATE SKIP LOCKED on PostgreSQL; a job whose
    lease ran out (a crashed worker) is claimed again."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
        Index("ix_jobs_status_run_after", "status", "run_after"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    # While queued, one job per dedupe key ("suggest:42"): re-queuing a queued story is a no-op.
    dedupe_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    # What the job is about ("incident:42", "codebook:3"), so the API can show a story's jobs.
    subject: Mapped[str | None] = mapped_column(String(100), index=True)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
