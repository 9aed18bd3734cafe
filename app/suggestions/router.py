"""NLP API: train a model (queued for the worker), list models, queue re-scoring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

import nlp
from app import audit
from app.auth import RequireAdmin, RequireResearcher
from app.codebooks.service import default_codebook, get_codebook
from app.db import SessionDep
from app.errors import Forbidden, Invalid, NotFound, problem_responses
from app.jobs.queue import enqueue
from app.models import Codebook, NlpModel
from app.suggestions import service
from app.suggestions.queue import TRAIN, enqueue_rescoring

router = APIRouter(prefix="/api/v1/nlp", tags=["nlp"], responses=problem_responses(Forbidden))


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codebook_id: int | None = None


class TrainQueued(BaseModel):
    job_id: int | None
    codebook_id: int
    confirmed_stories: int
    detail: str


class ModelRead(BaseModel):
    id: int
    codebook_id: int
    codebook_version_id: int
    n_examples: int
    metrics: dict[str, Any]
    active: bool
    trained_by: str
    created_at: datetime
    erased_stories: int = Field(
        0, description="Stories it was trained on that were erased since: retrain to forget them"
    )
    last_erasure_at: datetime | None = None


class ResuggestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codebook_id: int | None = None
    survey_id: int | None = None


class ResuggestQueued(BaseModel):
    queued: int


def _codebook(session: SessionDep, codebook_id: int | None) -> Codebook:
    if codebook_id is not None:
        return get_codebook(session, codebook_id)
    found = default_codebook(session)
    if found is None:
        raise NotFound("there is no codebook yet; import one first")
    return found


@router.post(
    "/train",
    status_code=202,
    response_model=TrainQueued,
    responses=problem_responses(NotFound, Invalid),
)
def train(data: TrainRequest, session: SessionDep, user: RequireAdmin) -> TrainQueued:
    """Queue training of a text classifier on the researcher-confirmed stories of a codebook.
    The worker trains it, stores it with its metrics and makes it the active model."""
    codebook = _codebook(session, data.codebook_id)
    confirmed = service.count_confirmed(session, codebook)
    if confirmed < nlp.MIN_CONFIRMED_FOR_MODEL:
        raise Invalid(
            f"{confirmed} confirmed stories; a model needs {nlp.MIN_CONFIRMED_FOR_MODEL}. "
            "Until then the rule layer carries the suggestions."
        )
    job_id = enqueue(
        session,
        TRAIN,
        {"codebook_id": codebook.id, "requested_by": user.name},
        subject=f"codebook:{codebook.id}",
        dedupe=True,
        max_attempts=2,
    )
    audit.record(session, user, "nlp.train", "codebook", codebook.id, after={"job_id": job_id})
    return TrainQueued(
        job_id=job_id,
        codebook_id=codebook.id,
        confirmed_stories=confirmed,
        detail="training queued; follow it at /api/v1/jobs/{job_id}",
    )


@router.get("/models", response_model=list[ModelRead])
def list_models(
    session: SessionDep, _user: RequireResearcher, codebook_id: int | None = None
) -> list[ModelRead]:
    query = select(NlpModel).order_by(NlpModel.id)
    if codebook_id is not None:
        query = query.where(NlpModel.codebook_id == codebook_id)
    return [ModelRead.model_validate(m, from_attributes=True) for m in session.scalars(query)]


@router.post("/resuggest", status_code=202, response_model=ResuggestQueued)
def resuggest(data: ResuggestRequest, session: SessionDep, user: RequireAdmin) -> ResuggestQueued:
    """Queue re-scoring of the stories not yet coded (all, one survey's, or one codebook's)."""
    queued = enqueue_rescoring(session, codebook_id=data.codebook_id, survey_id=data.survey_id)
    audit.record(
        session,
        user,
        "nlp.resuggest",
        "codebook",
        data.codebook_id or "all",
        after={"queued": queued, "survey_id": data.survey_id},
    )
    return ResuggestQueued(queued=queued)
