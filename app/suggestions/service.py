"""Scoring stories (in the worker, in batches), training models, and reading suggestions."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
        version.id, lambda: load_nlp_codebook(version), model.id if model else None, model_dir
    )
    return ScoringContext(codebook, version, model, suggester)


@dataclass
class ScoringWork:
    """Stories of one codebook to score: read in one transaction, scored with none open, then
    stored in a short one (the worker's write lock is never held while spaCy runs)."""

    context: ScoringContext
    ids: list[int]
    # The redacted answers to score, or None where they must be made first (from `originals`).
    texts: list[dict[str, str | None] | None]
    originals: dict[int, dict[str, str | None]]
    redactions: dict[int, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_scoring_work(
    session: Session, incident_ids: Sequence[int], cache: SuggesterCache
) -> list[ScoringWork]:
    """What scoring these stories needs, grouped by codebook; reads only."""
    rows = session.execute(
        select(Incident.id, Incident.redacted, Survey.codebook_id)
        .join(Survey, Survey.id == Incident.survey_id)
        .where(Incident.id.in_(incident_ids))
    ).all()
    # A survey without a codebook (none existed when it was made) has nothing to score against.
    groups: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        if row.codebook_id is not None:
            groups[row.codebook_id].append(row)
    work = []
    for codebook_id, group in groups.items():
        codebook = session.get(Codebook, codebook_id)
        assert codebook is not None
        context = scoring_context(session, codebook, cache)
        ids = [row.id for row in group]
        with_names = "ner" in context.suggester.nlp.pipe_names
        # With an NER pipeline, person names are redacted too, from the original text; stories
        # stored before redaction existed (empty `redacted`) are redacted when scored.
        texts = [None if with_names or not row.redacted else row.redacted for row in group]
        missing = [i for i, text in zip(ids, texts, strict=True) if text is None]
        originals = {}
        if missing:
            for incident in session.scalars(select(Incident).where(Incident.id.in_(missing))):
                originals[incident.id] = original_answers(incident)
        work.append(ScoringWork(context, ids, texts, originals))
    return work


def compute_scores(work: ScoringWork, batch_size: int = 256) -> ScoringWork:
    """Redact what must be redacted and score every story; no database."""
    suggester = work.context.suggester
    pipeline = suggester.nlp if "ner" in suggester.nlp.pipe_names else None
    texts: list[dict[str, str | None]] = []
    for incident_id, text in zip(work.ids, work.texts, strict=True):
        if text is None:
            columns = redaction_columns(work.originals[incident_id], pipeline)
            work.redactions[incident_id] = columns
            text = columns["redacted"]
        texts.append(text)
    stories = [nlp.compose_story(t) for t in texts]
    thresholds = {c.key: c.threshold for c in suggester.codebook.active_codes}
    now = utcnow()
    context = work.context
    work.rows = [
        {
            "incident_id": incident_id,
            "items": [suggestion_item(story, s) for s in suggestions],
            "certainty": min((abs(s.score - thresholds[s.code]) for s in suggestions), default=1.0),
            "codebook_version_id": context.version.id,
            "model_id": context.model.id if context.model else None,
            "created_at": now,
        }
        for incident_id, story, suggestions in zip(
            work.ids, stories, score_stories(suggester, stories, batch_size), strict=True
        )
    ]
    return work


def store_scores(session: Session, work: ScoringWork) -> int:
    """Write scored work: fresh redactions, the stories' suggestions replaced."""
    ids = work.ids
    for incident_id, columns in work.redactions.items():
        session.execute(
            update(Incident)
            .where(Incident.id == incident_id)
            .values(redacted=columns["redacted"], redaction_spans=columns["redaction_spans"])
            .execution_options(synchronize_session=False)
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
    if work.rows:  # Core executemany: the ORM's bulk path costs a tenth of the scoring time
        session.execute(insert(cast(Table, Suggestion.__table__)), work.rows)
    return len(ids)


def score_incidents(
    session: Session, incident_ids: Sequence[int], cache: SuggesterCache, batch_size: int = 256
) -> int:
    """Replace the suggestions of these stories with fresh ones, all in `session`; returns how
    many were scored. (The worker runs the three steps in separate transactions.)"""
    return sum(
        store_scores(session, compute_scores(work, batch_size))
        for work in read_scoring_work(session, incident_ids, cache)
    )


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
