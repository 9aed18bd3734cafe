"""Scoring stories (in the worker, in batches), training models, and reading suggestions."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.orm import Session

import nlp
from app.codebooks.service import current_version, load_nlp_codebook
from app.config import Settings
from app.errors import Invalid
from app.incidents.redaction import original_answers, redacted_answers, redaction_columns
from app.models import (
    Codebook,
    CodebookVersion,
    Incident,
    IncidentCode,
    Job,
    NlpModel,
    Suggestion,
    Survey,
)
from app.models.base import utcnow
from app.suggestions.engine import SuggesterCache
from app.suggestions.queue import SUGGEST, enqueue_rescoring

log = logging.getLogger(__name__)


def active_model(session: Session, codebook_id: int) -> NlpModel | None:
    return session.scalar(
        select(NlpModel).where(NlpModel.codebook_id == codebook_id, NlpModel.active.is_(True))
    )


@dataclass(frozen=True)
class ScoringContext:
    codebook: Codebook
    version: CodebookVersion
    model: NlpModel | None
    suggester: nlp.Suggester


def scoring_context(session: Session, codebook: Codebook, cache: SuggesterCache) -> ScoringContext:
    version = current_version(session, codebook)
    model = active_model(session, codebook.id)
    model_dir = Path(model.path) if model is not None else None
    suggester = cache.get(
        version.id, load_nlp_codebook(version), model.id if model else None, model_dir
    )
    return ScoringContext(codebook, version, model, suggester)


def score_incidents(
    session: Session, incident_ids: Sequence[int], cache: SuggesterCache, batch_size: int = 256
) -> int:
    """Replace the suggestions of these stories with fresh ones; returns how many were scored."""
    rows = session.execute(
        select(Incident.id, Incident.redacted, Survey.codebook_id)
        .join(Survey, Survey.id == Incident.survey_id)
        .where(Incident.id.in_(incident_ids))
    ).all()
    if not rows:
        return 0
    # A survey without a codebook (none existed when it was made) has nothing to score against.
    groups: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        if row.codebook_id is not None:
            groups[row.codebook_id].append(row)
    scored = 0
    for codebook_id, group in groups.items():
        codebook = session.get(Codebook, codebook_id)
        assert codebook is not None
        context = scoring_context(session, codebook, cache)
        ids = [row.id for row in group]
        if "ner" in context.suggester.nlp.pipe_names:
            texts = _redact_names(session, ids, context.suggester.nlp)
        else:
            texts = [row.redacted or _redact_now(session, row.id) for row in group]
        stories = [nlp.compose_story(t) for t in texts]
        thresholds = {c.key: c.threshold for c in context.suggester.codebook.active_codes}
        now = utcnow()
        new_rows: list[dict[str, Any]] = []
        for incident_id, story, suggestions in zip(
            ids, stories, score_stories(context.suggester, stories, batch_size), strict=True
        ):
            new_rows.append(
                {
                    "incident_id": incident_id,
                    "items": [suggestion_item(story, s) for s in suggestions],
                    "certainty": min(
                        (abs(s.score - thresholds[s.code]) for s in suggestions), default=1.0
                    ),
                    "codebook_version_id": context.version.id,
                    "model_id": context.model.id if context.model else None,
                    "created_at": now,
                }
            )
        session.execute(delete(Suggestion).where(Suggestion.incident_id.in_(ids)))
        # A failed attempt at these stories is history now that they have fresh suggestions.
        session.execute(
            delete(Job).where(
                Job.kind == SUGGEST,
                Job.status == "failed",
                Job.subject.in_([f"incident:{i}" for i in ids]),
            )
        )
        if new_rows:  # Core executemany: the ORM's bulk path costs a tenth of the scoring time
            session.execute(insert(cast(Table, Suggestion.__table__)), new_rows)
        scored += len(ids)
    return scored


def score_stories(
    suggester: nlp.Suggester, stories: Sequence[nlp.ComposedStory], batch_size: int = 256
) -> Iterator[list[nlp.CodeSuggestion]]:
    """The one scoring path, shared by the worker and `cit nlp suggest`."""
    return suggester.suggest_many((s.text for s in stories), batch_size)


def suggestion_item(story: nlp.ComposedStory, suggestion: nlp.CodeSuggestion) -> dict[str, Any]:
    """One code's suggestion as stored and served, evidence located in its answer field."""
    evidence = []
    for e in suggestion.evidence:
        field, start, end = story.locate(e.start, e.end)
        evidence.append(
            {"field": field, "start": start, "end": end, "text": e.text, "indicator": e.indicator}
        )
    return {
        "code": suggestion.code,
        "score": suggestion.score,
        "suggested": suggestion.suggested,
        "source": suggestion.source,
        "evidence": evidence,
    }


def _redact_now(session: Session, incident_id: int) -> dict[str, str | None]:
    """Stories stored before redaction existed (empty `redacted`) are redacted when scored."""
    incident = session.get(Incident, incident_id)
    assert incident is not None
    return redacted_answers(incident)


def _redact_names(
    session: Session, incident_ids: Sequence[int], pipeline: Any
) -> list[dict[str, str | None]]:
    """With an NER pipeline configured, redact person names too (from the original text),
    store the result, and return the redacted answers in the given order."""
    incidents = {
        i.id: i for i in session.scalars(select(Incident).where(Incident.id.in_(incident_ids)))
    }
    texts = []
    for incident_id in incident_ids:
        incident = incidents[incident_id]
        columns = redaction_columns(original_answers(incident), pipeline)
        incident.redacted = columns["redacted"]
        incident.redaction_spans = columns["redaction_spans"]
        texts.append(columns["redacted"])
    session.flush()
    return texts


# Training ---------------------------------------------------------------------------------------


def confirmed_examples(session: Session, codebook: Codebook) -> list[tuple[str, frozenset[str]]]:
    """(redacted story text, final codes) of every story confirmed under this codebook."""
    version_ids = select(CodebookVersion.id).where(CodebookVersion.codebook_id == codebook.id)
    rows = session.execute(
        select(IncidentCode.incident_id, IncidentCode.code)
        .where(IncidentCode.codebook_version_id.in_(version_ids))
        .order_by(IncidentCode.incident_id)
    ).all()
    codes: dict[int, set[str]] = defaultdict(set)
    for incident_id, code in rows:
        codes[incident_id].add(code)
    examples = []
    ids = list(codes)
    for start in range(0, len(ids), 1000):
        for incident in session.scalars(
            select(Incident).where(Incident.id.in_(ids[start : start + 1000]))
        ):
            text = nlp.compose_story(redacted_answers(incident)).text
            examples.append((text, frozenset(codes[incident.id])))
    return examples


def count_confirmed(session: Session, codebook: Codebook) -> int:
    version_ids = select(CodebookVersion.id).where(CodebookVersion.codebook_id == codebook.id)
    return int(
        session.scalar(
            select(func.count(func.distinct(IncidentCode.incident_id))).where(
                IncidentCode.codebook_version_id.in_(version_ids)
            )
        )
        or 0
    )


def train_model(
    session: Session, codebook: Codebook, settings: Settings, trained_by: str
) -> NlpModel:
    """Train on confirmed stories, store the model under the data directory, make it active and
    queue re-scoring of the stories not yet coded."""
    examples = confirmed_examples(session, codebook)
    if len(examples) < nlp.MIN_CONFIRMED_FOR_MODEL:
        raise Invalid(
            f"codebook {codebook.key!r} has {len(examples)} confirmed stories; a model needs "
            f"{nlp.MIN_CONFIRMED_FOR_MODEL}. Until then the rule layer carries the suggestions."
        )
    version = current_version(session, codebook)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    out_dir = settings.models_dir / codebook.key / f"v{version.number}-{stamp}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    result = nlp.train_textcat(
        examples, load_nlp_codebook(version), out_dir, base=settings.nlp_pipeline
    )
    session.execute(
        update(NlpModel).where(NlpModel.codebook_id == codebook.id).values(active=False)
    )
    model = NlpModel(
        codebook_id=codebook.id,
        codebook_version_id=version.id,
        path=str(out_dir.resolve()),
        n_examples=len(examples),
        metrics=result.to_dict(),
        active=True,
        trained_by=trained_by,
    )
    session.add(model)
    session.flush()
    enqueue_rescoring(session, codebook_id=codebook.id)
    return model
