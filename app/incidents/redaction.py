"""PII redaction of stored stories: what researchers see instead of the original answers.

Two strengths: the pattern redaction (e-mail, phone, card, account, URL) runs when a story is
stored; with an NER pipeline configured (`CIT_NLP_PIPELINE` naming a spaCy package with `ner`),
the worker also redacts person names and marks the story `redacted_with`. Researchers read a
story only once it carries the redaction the configuration asks for (`readable`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from spacy.language import Language

from app.models import Incident
from nlp import redact, redact_many

REDACTED_FIELDS = ("occurred", "circumstances", "what_happened", "outcome")


@lru_cache(maxsize=16)
def required_redaction(pipeline: str) -> str | None:
    """The `redacted_with` marker researchers' reads require under this `CIT_NLP_PIPELINE`:
    None when the pipeline has no NER (the pattern redaction done at submission is all there
    is), else "ner:<package>@<version>". Reads the installed package's meta, not the model."""
    if pipeline.startswith("blank:"):
        return None
    import spacy.util

    try:
        meta = spacy.util.get_model_meta(spacy.util.get_package_path(pipeline))
    except Exception:  # not installed as a package: a path, or missing (the worker will say)
        return f"ner:{pipeline}"
    if "ner" not in meta.get("pipeline", []):
        return None
    return f"ner:{pipeline}@{meta.get('version', '?')}"


def readable(incident: Incident, required: str | None) -> bool:
    """True when the story's redaction is the one the configuration requires."""
    return required is None or incident.redacted_with == required


def redaction_columns(
    answers: Mapping[str, str | None], pipeline: Language | None = None
) -> dict[str, Any]:
    """Pattern-based redaction (e-mail, phone, card, account, URL), cheap enough for the request
    path; with an NER `pipeline` (the worker, when one is configured) person names too."""
    return redaction_columns_many([answers], pipeline)[0]


def redaction_columns_many(
    answers: Sequence[Mapping[str, str | None]], pipeline: Language | None = None
) -> list[dict[str, Any]]:
    """`redaction_columns` for many stories, the NER running in batches (`nlp.pipe`)."""
    out: list[dict[str, Any]] = [{"redacted": {}, "redaction_spans": {}} for _ in answers]
    for field in REDACTED_FIELDS:
        rows = [i for i, a in enumerate(answers) if a.get(field) is not None]
        for row in (i for i, a in enumerate(answers) if a.get(field) is None):
            out[row]["redacted"][field] = None
        texts = [answers[i].get(field) or "" for i in rows]
        results = redact_many(texts, pipeline) if pipeline is not None else map(redact, texts)
        for row, result in zip(rows, results, strict=True):
            out[row]["redacted"][field] = result.text
            if result.spans:
                out[row]["redaction_spans"][field] = [
                    {"start": s.start, "end": s.end, "kind": s.kind} for s in result.spans
                ]
    return out


def original_answers(incident: Incident) -> dict[str, str | None]:
    return {
        "occurred": incident.occurred_text,
        "circumstances": incident.circumstances,
        "what_happened": incident.what_happened,
        "outcome": incident.outcome,
    }


def redacted_answers(incident: Incident) -> dict[str, str | None]:
    """The researcher's view; stories from before redaction existed are redacted on the fly."""
    if not incident.redacted:
        return dict(redaction_columns(original_answers(incident))["redacted"])
    return {field: incident.redacted.get(field) for field in REDACTED_FIELDS}
