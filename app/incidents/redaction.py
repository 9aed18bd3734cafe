"""PII redaction of stored stories: what researchers see instead of the original answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spacy.language import Language

from app.models import Incident
from nlp import redact
from nlp.redact import PLACEHOLDERS

REDACTED_FIELDS = ("occurred", "circumstances", "what_happened", "outcome")


def redaction_columns(
    answers: Mapping[str, str | None], pipeline: Language | None = None
) -> dict[str, Any]:
    """Pattern-based redaction (e-mail, phone, card, account, URL), cheap enough for the request
    path; with an NER `pipeline` (the worker, when one is configured) person names too."""
    redacted: dict[str, str | None] = {}
    spans: dict[str, list[dict[str, Any]]] = {}
    for field in REDACTED_FIELDS:
        text = answers.get(field)
        if text is None:
            redacted[field] = None
            continue
        result = redact(text, pipeline)
        redacted[field] = result.text
        if result.spans:
            spans[field] = [{"start": s.start, "end": s.end, "kind": s.kind} for s in result.spans]
    return {"redacted": redacted, "redaction_spans": spans}


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


def redacted_offset(spans: list[dict[str, Any]], offset: int, *, end: bool = False) -> int:
    """Where an offset into an original answer lands in its redacted text (`spans` are the
    field's `redaction_spans`); one inside replaced data snaps to the placeholder's edge."""
    shift = 0
    for span in sorted(spans, key=lambda s: int(s["start"])):
        start, stop = int(span["start"]), int(span["end"])
        placeholder = len(PLACEHOLDERS.get(span.get("kind", ""), ""))
        if offset >= stop:
            shift += placeholder - (stop - start)
        elif offset > start:
            return start + shift + (placeholder if end else 0)
        else:
            break
    return offset + shift
