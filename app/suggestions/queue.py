"""Queuing suggestion work: one job per story, deduplicated while queued."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.jobs.queue import enqueue_many
from app.models import Incident, IncidentCode, Survey

SUGGEST = "suggest"
TRAIN = "train"
REDACT = "redact"
"""Re-redact every stored story with the configured NER pipeline (one job, with progress)."""
IMPORT = "import"  # a file upload (app.imports.jobs), run by the same workers
ALL_KINDS = (SUGGEST, TRAIN, IMPORT, REDACT)


def enqueue_suggestions(session: Session, incident_ids: Sequence[int]) -> None:
    enqueue_many(session, SUGGEST, [({"incident_id": i}, f"incident:{i}") for i in incident_ids])


def uncoded_incident_ids(
    session: Session, *, codebook_id: int | None = None, survey_id: int | None = None
) -> list[int]:
    """Stories without final codes (and not excluded), optionally of one codebook or survey."""
    query = select(Incident.id).where(
        ~exists().where(IncidentCode.incident_id == Incident.id),
        Incident.status != "excluded",
    )
    if survey_id is not None:
        query = query.where(Incident.survey_id == survey_id)
    if codebook_id is not None:
        query = query.join(Survey, Survey.id == Incident.survey_id).where(
            Survey.codebook_id == codebook_id
        )
    return list(session.scalars(query.order_by(Incident.id)))


def enqueue_rescoring(
    session: Session, *, codebook_id: int | None = None, survey_id: int | None = None
) -> int:
    """Queue re-scoring of every story not yet coded; returns how many were queued."""
    ids = uncoded_incident_ids(session, codebook_id=codebook_id, survey_id=survey_id)
    enqueue_suggestions(session, ids)
    return len(ids)
