"""NLP API: train a model (queued for the worker), list models, queue re-scoring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

import nlp
from app import audit
from app.auth import RequireAdmin, RequireResearcher
from app.codebooks.service import default_codebook, get_codebook
from app.db import SessionDep
from app.errors import Conflict, Forbidden, Invalid, NotFound, problem_responses
from app.jobs.queue import enqueue
from app.models import Codebook, NlpModel
from app.suggestions import service
from app.suggestions.queue import TRAIN, enqueue_rescoring

router = APIRouter(prefix="/api/v1/nlp", tags=["nlp"], responses=problem_responses(Forbidden))


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codebook_id: StrictInt | None = None


class TrainQueued(BaseModel):
    job_id: int | None
    codebook_id: int
    confirmed_stories: int
    detail: str


class CandidateRead(BaseModel):
    precision: float
    recall: float
    f1: float
    kappa: float | None
    tp: int
    fp: int
    fn: int
    tn: int
    fold_kappa_sd: float | None = Field(
        None, description="Spread of kappa over the folds: how much of a difference is noise"
    )


class CodeFiguresRead(BaseModel):
    """One code's cross-validated figures in the run that trained the model."""

    code: str
    layer: str | None = Field(
        description="rules, model or combined: what scores this code when the model is active"
    )
    threshold: float
    support: int = Field(description="Confirmed stories with the code (positives)")
    negatives: int = Field(description="Confirmed stories without it (excluded ones included)")
    precision: float
    recall: float
    f1: float
    kappa: float | None = Field(description="Cohen's kappa of the active layer vs confirmed codes")
    tp: int
    fp: int
    fn: int
    tn: int
    no_support: bool = Field(description="No confirmed story has the code: figures mean little")
    reason: str = Field(description="Why this layer (or why the code stays on rules)")
    candidates: dict[str, CandidateRead] = Field(
        description="The same folds for rules, model and combined, side by side"
    )


class MacroRead(BaseModel):
    n_codes: int
    precision: float
    recall: float
    f1: float = Field(description="Mean F1 over all codes; codes without support count as 0")
    kappa: float | None = Field(description="Mean kappa over the codes where it is defined")
    codes_without_support: list[str]
    codes_without_kappa: list[str]
    f1_over_supported_codes: float | None


class ModelRead(BaseModel):
    id: int
    codebook_id: int
    codebook_version_id: int
    n_examples: int = Field(description="Confirmed (final) stories it was trained on")
    active: bool
    trained_by: str
    created_at: datetime
    folds: int | None
    codes: list[CodeFiguresRead]
    exclude: CodeFiguresRead | None = Field(
        description='"Suggest exclude": figures and whether it is suggested (layer null: not)'
    )
    macro: dict[str, MacroRead] = Field(
        description="Per layer (selected, rules, model, combined), over all codes"
    )
    activation: dict[str, Any] | None = Field(
        description="Whether training activated it by itself, and why (not)"
    )
    metrics: dict[str, Any] = Field(description="The whole cit-model.json document")
    erased_stories: int = Field(
        0, description="Stories it was trained on that were erased since: retrain to forget them"
    )
    last_erasure_at: datetime | None = None


class CodebookNlpRead(BaseModel):
    codebook_id: int
    auto_activate: bool
    active_model_id: int | None


class CodebookNlpUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auto_activate: StrictBool


def _figures(data: dict[str, Any]) -> CodeFiguresRead:
    selected = data.get("selected") or data["candidates"].get("model") or {}
    return CodeFiguresRead(
        code=data["code"],
        layer=data["layer"],
        threshold=data["threshold"],
        support=data["support"],
        negatives=data["negatives"],
        precision=selected.get("precision", 0.0),
        recall=selected.get("recall", 0.0),
        f1=selected.get("f1", 0.0),
        kappa=selected.get("kappa"),
        tp=selected.get("tp", 0),
        fp=selected.get("fp", 0),
        fn=selected.get("fn", 0),
        tn=selected.get("tn", 0),
        no_support=data["support"] == 0,
        reason=data["reason"],
        candidates={name: CandidateRead(**c) for name, c in data["candidates"].items()},
    )


def _legacy_figures(data: dict[str, Any]) -> CodeFiguresRead:
    """Format 1 models: one held-out split, every code on the model."""
    candidate = CandidateRead(**{k: data[k] for k in CandidateRead.model_fields if k in data})
    return CodeFiguresRead(
        code=data["code"],
        layer="model",
        threshold=0.5,
        support=data["support"],
        negatives=data["fp"] + data["tn"],
        precision=data["precision"],
        recall=data["recall"],
        f1=data["f1"],
        kappa=data.get("kappa"),
        tp=data["tp"],
        fp=data["fp"],
        fn=data["fn"],
        tn=data["tn"],
        no_support=data["support"] == 0,
        reason="trained before per-code selection: held-out split, every code on the model",
        candidates={"model": candidate},
    )


def model_read(model: NlpModel) -> ModelRead:
    metrics = model.metrics or {}
    evaluation = metrics.get("evaluation")
    if evaluation:
        codes = [_figures(c) for c in evaluation["codes"]]
        exclude = _figures(evaluation["exclude"]) if evaluation.get("exclude") else None
        macro = {name: MacroRead(**m) for name, m in evaluation["macro"].items()}
        folds = evaluation["k"]
    else:
        held_out = metrics.get("metrics") or {}
        codes = [_legacy_figures(c) for c in held_out.get("codes", [])]
        exclude = None
        macro = {
            "selected": MacroRead(
                **nlp.macro_summary(
                    [
                        nlp.CodeMetrics(**{k: c[k] for k in nlp.CodeMetrics.__dataclass_fields__})
                        for c in held_out.get("codes", [])
                    ]
                )
            )
        }
        folds = None
    return ModelRead(
        id=model.id,
        codebook_id=model.codebook_id,
        codebook_version_id=model.codebook_version_id,
        n_examples=model.n_examples,
        active=model.active,
        trained_by=model.trained_by,
        created_at=model.created_at,
        folds=folds,
        codes=codes,
        exclude=exclude,
        macro=macro,
        activation=metrics.get("activation"),
        metrics=metrics,
        erased_stories=model.erased_stories,
        last_erasure_at=model.last_erasure_at,
    )


class ResuggestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codebook_id: StrictInt | None = None
    survey_id: StrictInt | None = None


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
    """Queue training on what coders decided under a codebook. The worker cross-validates rules,
    model and combined per code, stores the model with its figures, and makes it active when
    auto-activation is on and no code gets worse than the layer in use."""
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
    """Every trained model with its cross-validated figures per code (support, precision,
    recall, F1, Cohen's kappa against the confirmed codes, for rules, model and combined side by
    side), the layer each code uses, and the macro figures over all codes."""
    return [model_read(m) for m in service.list_models(session, codebook_id)]


@router.get(
    "/models/{model_id:int}", response_model=ModelRead, responses=problem_responses(NotFound)
)
def read_model(model_id: int, session: SessionDep, _user: RequireResearcher) -> ModelRead:
    return model_read(service.get_model(session, model_id))


@router.post(
    "/models/{model_id:int}/activate",
    response_model=ModelRead,
    responses=problem_responses(NotFound, Conflict),
)
def activate_model(model_id: int, session: SessionDep, user: RequireAdmin) -> ModelRead:
    """Make this model the active one of its codebook (an earlier one too: a roll-back); the
    stories not yet coded are re-scored with it."""
    return model_read(service.activate_model(session, model_id, user))


@router.post(
    "/models/{model_id:int}/deactivate",
    response_model=ModelRead,
    responses=problem_responses(NotFound, Conflict),
)
def deactivate_model(model_id: int, session: SessionDep, user: RequireAdmin) -> ModelRead:
    """Go back to the rules for this model's codebook; the stories not yet coded are
    re-scored by the rules."""
    return model_read(service.deactivate_model(session, model_id, user))


@router.get(
    "/codebooks/{codebook_id:int}",
    response_model=CodebookNlpRead,
    responses=problem_responses(NotFound),
)
def read_codebook_settings(
    codebook_id: int, session: SessionDep, _user: RequireResearcher
) -> CodebookNlpRead:
    return _codebook_settings(session, get_codebook(session, codebook_id))


@router.patch(
    "/codebooks/{codebook_id:int}",
    response_model=CodebookNlpRead,
    responses=problem_responses(NotFound),
)
def update_codebook_settings(
    codebook_id: int, data: CodebookNlpUpdate, session: SessionDep, user: RequireAdmin
) -> CodebookNlpRead:
    """`auto_activate: false` keeps every trained model inactive until an admin activates it."""
    codebook = service.set_auto_activate(
        session, get_codebook(session, codebook_id), data.auto_activate, user
    )
    return _codebook_settings(session, codebook)


def _codebook_settings(session: SessionDep, codebook: Codebook) -> CodebookNlpRead:
    active = service.active_model(session, codebook.id)
    return CodebookNlpRead(
        codebook_id=codebook.id,
        auto_activate=codebook.auto_activate,
        active_model_id=active.id if active else None,
    )


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
