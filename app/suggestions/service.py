"""Scoring stories (in the worker, in batches), training models, and reading suggestions."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

import nlp
from app import audit
from app.codebooks.service import current_version, load_nlp_codebook
from app.config import Settings
from app.errors import Conflict, Invalid, NotFound
from app.incidents.redaction import (
    original_answers,
    redacted_answers,
    redaction_columns,
    redaction_columns_many,
    required_redaction,
)
from app.models import (
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
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
from app.webhooks import events as webhooks

if TYPE_CHECKING:
    from app.auth import Principal

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
    """Stories of one codebook to score: read in one transaction, scored (and, with an NER
    pipeline, redacted) with none open, then stored in a short one: the worker holds no write
    lock (SQLite) and no row lock while spaCy runs."""

    context: ScoringContext
    ids: list[int]
    valences: list[str | None]
    # The redacted answers to score, or None where they must be made first (from `originals`).
    texts: list[dict[str, str | None] | None]
    originals: dict[int, dict[str, str | None]]
    # Stories to redact with the NER pipeline and mark with `marker` (the rest of the missing
    # texts are stories stored before redaction existed, redacted with patterns on the fly).
    stale: set[int]
    marker: str | None
    kappas: dict[str, float | None]
    redactions: dict[int, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_scoring_work(
    session: Session, incident_ids: Sequence[int], cache: SuggesterCache
) -> list[ScoringWork]:
    """What scoring these stories needs, grouped by codebook; reads only."""
    required = required_redaction(cache.base)
    rows = session.execute(
        select(
            Incident.id,
            Incident.redacted,
            Incident.redacted_with,
            Incident.valence,
            Survey.codebook_id,
        )
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
        with_names = "ner" in context.suggester.nlp.pipe_names
        # With an NER pipeline configured, stories not yet redacted with it are redacted first,
        # from the original text, and marked; then every story is scored from its redacted text.
        stale = {row.id for row in group if with_names and row.redacted_with != required}
        texts = [None if row.id in stale or not row.redacted else row.redacted for row in group]
        missing = [row.id for row, text in zip(group, texts, strict=True) if text is None]
        originals = {}
        if missing:
            for incident in session.scalars(select(Incident).where(Incident.id.in_(missing))):
                originals[incident.id] = original_answers(incident)
        work.append(
            ScoringWork(
                context,
                [row.id for row in group],
                [row.valence for row in group],
                texts,
                originals,
                stale,
                required,
                layer_kappas(context.model),
            )
        )
    return work


def compute_scores(work: ScoringWork, batch_size: int = 256) -> ScoringWork:
    """Redact what must be redacted and score every story; no database."""
    suggester = work.context.suggester
    pipeline = suggester.nlp if "ner" in suggester.nlp.pipe_names else None
    stale = [i for i in work.ids if i in work.stale]
    if stale:
        columns = redaction_columns_many([work.originals[i] for i in stale], pipeline)
        work.redactions = dict(zip(stale, columns, strict=True))
    texts: list[dict[str, str | None]] = []
    for incident_id, text in zip(work.ids, work.texts, strict=True):
        if text is None:
            redacted = work.redactions.get(incident_id)
            text = (
                redacted["redacted"]
                if redacted is not None
                else redaction_columns(work.originals[incident_id])["redacted"]
            )
        texts.append(text)
    stories = [nlp.compose_story(t) for t in texts]
    now = utcnow()
    context = work.context
    work.rows = []
    for incident_id, story, scored in zip(
        work.ids,
        stories,
        score_stories(suggester, stories, batch_size, work.valences),
        strict=True,
    ):
        suggestions = scored.codes
        work.rows.append(
            {
                "incident_id": incident_id,
                "items": [suggestion_item(story, s, work.kappas.get(s.code)) for s in suggestions],
                "exclusion": scored.exclude.to_dict() if scored.exclude else None,
                "certainty": min((abs(s.score - s.threshold) for s in suggestions), default=1.0),
                "codebook_version_id": context.version.id,
                "model_id": context.model.id if context.model else None,
                "created_at": now,
            }
        )
    return work


def store_scores(session: Session, work: ScoringWork) -> int:
    """Write scored work: fresh NER redactions (marked), the stories' suggestions replaced;
    publishes story.redacted (a story's redaction is done: NER just now, or, without NER, the
    submission's patterns on the story's first scoring) and suggestions.ready."""
    ids = work.ids
    survey_of = dict(
        session.execute(select(Incident.id, Incident.survey_id).where(Incident.id.in_(ids))).all()
    )
    scored_before = (
        set()
        if work.marker is not None
        else set(
            session.scalars(
                select(Suggestion.incident_id).where(Suggestion.incident_id.in_(ids)).distinct()
            )
        )
    )
    for incident_id, columns in work.redactions.items():
        session.execute(
            update(Incident)
            .where(Incident.id == incident_id)
            .values(
                redacted=columns["redacted"],
                redaction_spans=columns["redaction_spans"],
                redacted_with=work.marker,
            )
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
    redacted_now = set(work.redactions) if work.marker is not None else set(ids) - scored_before
    events: list[tuple[str, dict[str, Any], int | None, int | None]] = [
        (
            webhooks.STORY_REDACTED,
            {"story_id": i, "survey_id": survey_of[i], "redacted_with": work.marker},
            survey_of[i],
            i,
        )
        for i in ids
        if i in redacted_now and i in survey_of
    ]
    events += [
        (
            webhooks.SUGGESTIONS_READY,
            _suggestions_payload(row, survey_of[row["incident_id"]]),
            survey_of[row["incident_id"]],
            row["incident_id"],
        )
        for row in work.rows
        if row["incident_id"] in survey_of
    ]
    webhooks.publish_many(session, events)
    return len(ids)


def _suggestions_payload(row: dict[str, Any], survey_id: int) -> dict[str, Any]:
    """Codes and scores only: the evidence quotes the story, which a payload never carries."""
    exclusion = row.get("exclusion") or None
    return {
        "story_id": row["incident_id"],
        "survey_id": survey_id,
        "codebook_version_id": row["codebook_version_id"],
        "model_id": row["model_id"],
        "suggestions": [
            {
                "code": item["code"],
                "score": item["score"],
                "threshold": item["threshold"],
                "suggested": item["suggested"],
                "source": item["source"],
            }
            for item in row["items"]
        ],
        "exclusion": (
            {k: exclusion.get(k) for k in ("score", "threshold", "suggested")}
            if exclusion
            else None
        ),
    }


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
    suggester: nlp.Suggester,
    stories: Sequence[nlp.ComposedStory],
    batch_size: int = 256,
    valences: Sequence[str | None] | None = None,
) -> Iterator[nlp.ScoredStory]:
    """The one scoring path, shared by the worker and `cit nlp suggest`."""
    return suggester.score_many((s.text for s in stories), batch_size, valences)


def layer_kappas(model: NlpModel | None) -> dict[str, float | None]:
    """Each code's cross-validated kappa in the active model's run (None: not measured)."""
    if model is None:
        return {}
    evaluation = (model.metrics or {}).get("evaluation") or {}
    return {c["code"]: c.get("kappa") for c in evaluation.get("codes", [])}


def suggestion_item(
    story: nlp.ComposedStory, suggestion: nlp.CodeSuggestion, kappa: float | None = None
) -> dict[str, Any]:
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
        "threshold": suggestion.threshold,
        "kappa": kappa,
        "evidence": evidence,
    }


def redact_stories(
    session: Session, incident_ids: Sequence[int], pipeline: Any, marker: str | None
) -> dict[int, dict[str, str | None]]:
    """Redact these stories from their original text with `pipeline` (person names too), store
    and mark the result, all in `session` (the CLI; the worker redacts between transactions);
    returns the redacted answers by story id."""
    incidents = list(session.scalars(select(Incident).where(Incident.id.in_(incident_ids))))
    columns = redaction_columns_many([original_answers(i) for i in incidents], pipeline)
    found = dict(zip([i.id for i in incidents], columns, strict=True))
    store_redactions(session, found, marker)
    return {incident_id: column["redacted"] for incident_id, column in found.items()}


def stale_redactions(
    session: Session, marker: str, limit: int
) -> tuple[list[int], list[dict[str, str | None]]]:
    """The next stories not yet redacted with `marker` and their original answers; reads only."""
    ids = stale_redaction_ids(session, marker, limit)
    by_id = {
        incident.id: original_answers(incident)
        for incident in session.scalars(select(Incident).where(Incident.id.in_(ids)))
    }
    return ids, [by_id[i] for i in ids]


def store_redactions(
    session: Session, redactions: dict[int, dict[str, Any]], marker: str | None
) -> None:
    """Store fresh redaction columns and their marker.

    Evidence offsets of stored suggestions point into the old redacted text: evidence whose text
    no longer sits at its offsets is dropped (re-scoring the stories not yet coded renews it)."""
    if not redactions:
        return
    changed: dict[int, dict[str, str | None]] = {}
    events: list[tuple[str, dict[str, Any], int | None, int | None]] = []
    for incident in session.scalars(select(Incident).where(Incident.id.in_(list(redactions)))):
        column = redactions[incident.id]
        if marker is not None and incident.redacted_with != marker:
            payload = {"story_id": incident.id, "survey_id": incident.survey_id}
            events.append(
                (
                    webhooks.STORY_REDACTED,
                    {**payload, "redacted_with": marker},
                    incident.survey_id,
                    incident.id,
                )
            )
        if incident.redacted != column["redacted"]:
            changed[incident.id] = column["redacted"]
        incident.redacted = column["redacted"]
        incident.redaction_spans = column["redaction_spans"]
        incident.redacted_with = marker
    if changed:
        for suggestion in session.scalars(
            select(Suggestion).where(Suggestion.incident_id.in_(list(changed)))
        ):
            text = changed[suggestion.incident_id]
            suggestion.items = [
                {
                    **item,
                    "evidence": [
                        e
                        for e in item.get("evidence", [])
                        if (text.get(e["field"]) or "")[e["start"] : e["end"]] == e["text"]
                    ],
                }
                for item in suggestion.items
            ]
    webhooks.publish_many(session, events)
    session.flush()


def uncoded(session: Session, incident_ids: Sequence[int]) -> list[int]:
    """The given stories that have no final codes and are not excluded."""
    if not incident_ids:
        return []
    return list(
        session.scalars(
            select(Incident.id).where(
                Incident.id.in_(incident_ids),
                Incident.status.not_in(("coded", "excluded")),
                ~Incident.id.in_(select(IncidentCode.incident_id)),
            )
        )
    )


def stale_redaction_ids(session: Session, marker: str, limit: int) -> list[int]:
    """Stories not yet redacted with `marker`, oldest first."""
    return list(
        session.scalars(
            select(Incident.id)
            .where(or_(Incident.redacted_with.is_(None), Incident.redacted_with != marker))
            .order_by(Incident.id)
            .limit(limit)
        )
    )


def count_stale_redactions(session: Session, marker: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Incident)
            .where(or_(Incident.redacted_with.is_(None), Incident.redacted_with != marker))
        )
        or 0
    )


# Training ---------------------------------------------------------------------------------------


def _codebook_story_ids(codebook: Codebook) -> Any:
    return (
        select(Incident.id)
        .join(Survey, Survey.id == Incident.survey_id)
        .where(Survey.codebook_id == codebook.id)
    )


def training_stories(session: Session, codebook: Codebook) -> list[nlp.LabelledStory]:
    """Everything coders decided under this codebook, as training data (redacted text).

    Final: a story with confirmed codes is positive for them and negative for the other active
    codes; an excluded story is negative for every code and positive for "exclude". Not final
    yet (one coder of two, or coders disagreeing): each coder's chosen codes are positives and
    rejected suggestions negatives, where the coders do not contradict each other; these only
    train, they are never measured."""
    version = current_version(session, codebook)
    codes = [c.key for c in load_nlp_codebook(version).active_codes]
    version_ids = select(CodebookVersion.id).where(CodebookVersion.codebook_id == codebook.id)
    final_codes: dict[int, set[str]] = defaultdict(set)
    for incident_id, code in session.execute(
        select(IncidentCode.incident_id, IncidentCode.code).where(
            IncidentCode.codebook_version_id.in_(version_ids)
        )
    ):
        final_codes[incident_id].add(code)
    excluded = set(
        session.scalars(
            select(Incident.id).where(
                Incident.status == "excluded", Incident.id.in_(_codebook_story_ids(codebook))
            )
        )
    )
    partial: dict[int, dict[str, set[bool]]] = defaultdict(lambda: defaultdict(set))
    partial_excluded: dict[int, set[bool]] = defaultdict(set)
    codings = select(Coding.id, Coding.incident_id, Coding.excluded).where(
        Coding.codebook_version_id.in_(version_ids),
        Coding.incident_id.in_(
            _codebook_story_ids(codebook).where(Incident.status.in_(("in_review", "adjudication")))
        ),
    )
    coding_rows = session.execute(codings).all()
    if coding_rows:
        decisions: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for coding_id, code, decision in session.execute(
            select(CodingCode.coding_id, CodingCode.code, CodingCode.decision).where(
                CodingCode.coding_id.in_([row.id for row in coding_rows])
            )
        ):
            decisions[coding_id].append((code, decision))
        for coding_id, incident_id, is_excluded in coding_rows:
            if incident_id in final_codes or incident_id in excluded:
                continue
            partial_excluded[incident_id].add(bool(is_excluded))
            if is_excluded:
                for code in codes:
                    partial[incident_id][code].add(False)
            for code, decision in decisions[coding_id]:
                partial[incident_id][code].add(decision != "rejected")
    stories: list[nlp.LabelledStory] = []
    ids = sorted(set(final_codes) | excluded | set(partial_excluded))
    for start in range(0, len(ids), 1000):
        for incident in session.scalars(
            select(Incident).where(Incident.id.in_(ids[start : start + 1000])).order_by(Incident.id)
        ):
            text = nlp.compose_story(redacted_answers(incident)).text
            if incident.id in final_codes:
                stories.append(
                    nlp.LabelledStory.confirmed(
                        text, final_codes[incident.id], codes, valence=incident.valence
                    )
                )
            elif incident.id in excluded:
                stories.append(nlp.LabelledStory.exclusion(text, codes, valence=incident.valence))
            else:
                votes = partial[incident.id]
                labels = {
                    code: next(iter(values))
                    for code, values in votes.items()
                    if code in codes and len(values) == 1
                }
                exclusion = partial_excluded[incident.id]
                stories.append(
                    nlp.LabelledStory(
                        text,
                        labels,
                        valence=incident.valence,
                        excluded=next(iter(exclusion)) if len(exclusion) == 1 else None,
                        final=False,
                    )
                )
    return stories


def count_confirmed(session: Session, codebook: Codebook) -> int:
    """Final stories of this codebook: with confirmed codes, or excluded."""
    version_ids = select(CodebookVersion.id).where(CodebookVersion.codebook_id == codebook.id)
    coded = select(IncidentCode.incident_id).where(
        IncidentCode.codebook_version_id.in_(version_ids)
    )
    return int(
        session.scalar(
            select(func.count())
            .select_from(Incident)
            .where(
                or_(
                    Incident.id.in_(coded),
                    and_(
                        Incident.status == "excluded",
                        Incident.id.in_(_codebook_story_ids(codebook)),
                    ),
                )
            )
        )
        or 0
    )


def in_use_kappas(model: NlpModel | None) -> dict[str, float | None]:
    """Per code, the cross-validated kappa of the layer the active model uses for it; codes it
    leaves to the rules are left out (the new run measures the rules itself)."""
    if model is None:
        return {}
    metrics = model.metrics or {}
    evaluation = metrics.get("evaluation")
    if evaluation:
        return {
            c["code"]: c.get("kappa") for c in evaluation.get("codes", []) if c["layer"] != "rules"
        }
    held_out = metrics.get("metrics") or {}  # format 1: a held-out split of one model
    return {c["code"]: c.get("kappa") for c in held_out.get("codes", [])}


def _model_summary(model: NlpModel) -> dict[str, Any]:
    evaluation = (model.metrics or {}).get("evaluation") or {}
    return {
        "model_id": model.id,
        "codebook_version_id": model.codebook_version_id,
        "n_examples": model.n_examples,
        "layers": {c["code"]: c["layer"] for c in evaluation.get("codes", [])},
        "macro_kappa": ((evaluation.get("macro") or {}).get("selected") or {}).get("kappa"),
    }


def train_model(
    session: Session,
    codebook: Codebook,
    settings: Settings,
    trained_by: str,
    *,
    actor: Principal | None = None,
) -> NlpModel:
    """Train on what coders decided, choose each code's layer by cross-validation, store the
    model, and make it active when the codebook allows it and no code would get worse than the
    layer in use; then queue re-scoring of the stories not yet coded."""
    stories = training_stories(session, codebook)
    n_final = sum(1 for s in stories if s.final)
    if n_final < nlp.MIN_CONFIRMED_FOR_MODEL:
        raise Invalid(
            f"codebook {codebook.key!r} has {n_final} confirmed stories; a model needs "
            f"{nlp.MIN_CONFIRMED_FOR_MODEL}. Until then the rule layer carries the suggestions."
        )
    version = current_version(session, codebook)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    out_dir = settings.models_dir / codebook.key / f"v{version.number}-{stamp}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    result = nlp.train_suggester(
        stories, load_nlp_codebook(version), out_dir, base=settings.nlp_pipeline
    )
    previous = active_model(session, codebook.id)
    found = nlp.regressions(result.evaluation, in_use_kappas(previous))
    if not codebook.auto_activate:
        activate, reason = False, "automatic activation is off for this codebook"
    elif found:
        activate, reason = False, "kept the layers in use: " + "; ".join(found)
    else:
        activate = True
        reason = (
            "no code is worse than the layer in use"
            if previous is not None
            else "no model was active (rules in use); each code got its best layer"
        )
    metrics = result.to_dict()
    metrics["activation"] = {"automatic": activate, "reason": reason}
    model = NlpModel(
        codebook_id=codebook.id,
        codebook_version_id=version.id,
        path=str(out_dir.resolve()),
        n_examples=n_final,
        metrics=metrics,
        active=False,
        trained_by=trained_by,
    )
    session.add(model)
    session.flush()
    audit.record(
        session,
        actor,
        "nlp.model.train",
        "nlp_model",
        model.id,
        after={**_model_summary(model), "activated": activate, "reason": reason},
        actor_name=trained_by,
    )
    if activate:
        _make_active(session, codebook, model, actor, trained_by, automatic=True)
    return model


def _make_active(
    session: Session,
    codebook: Codebook,
    model: NlpModel | None,
    actor: Principal | None,
    actor_name: str,
    *,
    automatic: bool = False,
) -> None:
    previous = active_model(session, codebook.id)
    if previous is not None:
        previous.active = False
        session.flush()  # the partial unique index allows one active model per codebook
    if model is not None:
        model.active = True
        session.flush()
        webhooks.publish(
            session,
            webhooks.MODEL_ACTIVATED,
            {
                "model_id": model.id,
                "codebook_id": codebook.id,
                "previous_model_id": previous.id if previous else None,
                "automatic": automatic,
            },
        )
    audit.record(
        session,
        actor,
        "nlp.model.activate" if model is not None else "nlp.model.deactivate",
        "codebook",
        codebook.id,
        before={"model_id": previous.id if previous else None},
        after={"model_id": model.id if model else None, "automatic": automatic},
        actor_name=actor_name,
    )
    enqueue_rescoring(session, codebook_id=codebook.id)


def get_model(session: Session, model_id: int) -> NlpModel:
    model = session.get(NlpModel, model_id)
    if model is None:
        raise NotFound(f"model {model_id} does not exist")
    return model


def activate_model(
    session: Session, model_id: int, actor: Principal | None, actor_name: str = "cli"
) -> NlpModel:
    """Make any stored model of a codebook the active one (a roll-back to an earlier model
    too); stories not yet coded are re-scored with it."""
    model = get_model(session, model_id)
    if model.active:
        raise Conflict(f"model {model_id} is already active")
    if not (Path(model.path) / nlp.MODEL_META_FILE).exists():
        raise Conflict(f"model {model_id}'s files are gone from {model.path}: cannot activate it")
    codebook = session.get(Codebook, model.codebook_id)
    assert codebook is not None
    _make_active(session, codebook, model, actor, actor_name)
    return model


def deactivate_model(
    session: Session, model_id: int, actor: Principal | None, actor_name: str = "cli"
) -> NlpModel:
    """Go back to the rules for this model's codebook (the model stays stored)."""
    model = get_model(session, model_id)
    if not model.active:
        raise Conflict(f"model {model_id} is not active")
    codebook = session.get(Codebook, model.codebook_id)
    assert codebook is not None
    _make_active(session, codebook, None, actor, actor_name)
    return model


def set_auto_activate(
    session: Session,
    codebook: Codebook,
    value: bool,
    actor: Principal | None,
    actor_name: str = "cli",
) -> Codebook:
    before = codebook.auto_activate
    codebook.auto_activate = value
    session.flush()
    audit.record(
        session,
        actor,
        "nlp.auto_activate",
        "codebook",
        codebook.id,
        before={"auto_activate": before},
        after={"auto_activate": value},
        actor_name=actor_name,
    )
    return codebook


def list_models(session: Session, codebook_id: int | None = None) -> list[NlpModel]:
    query = select(NlpModel).order_by(NlpModel.id)
    if codebook_id is not None:
        query = query.where(NlpModel.codebook_id == codebook_id)
    return list(session.scalars(query))
