"""PII redaction of stored stories: what researchers see instead of the original answers.

Two strengths: the pattern redaction (e-mail, phone, card, account, URL) runs when a story is
stored; with an NER pipeline configured (`CIT_NLP_PIPELINE` naming a spaCy package with `ner`),
the worker also redacts person names and marks the story `redacted_with`. Researchers read a
story only once it carries the redaction the configuration asks for (`readable`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from app.models import Incident
from nlp import redact, redact_many
from nlp.redact import PLACEHOLDERS

if TYPE_CHECKING:  # annotations only: importing spaCy costs ~0.6 s (the export's second process)
    from spacy.language import Language

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


def gated_answers(incident: Incident, required: str | None) -> tuple[dict[str, str | None], bool]:
    """The researcher's view of the answers and whether it is held back: until the story is
    redacted as `required`, every answer is None (pending True)."""
    if not readable(incident, required):
        return dict.fromkeys(REDACTED_FIELDS), True
    return redacted_answers(incident), False


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


# Offsets between the two views ------------------------------------------------------------------

# (start, end) in the text offsets come from, (start, end) in the text they go to
_Pair = tuple[int, int, int, int]


def _move(position: int, pairs: list[_Pair], side: str) -> int:
    """An offset carried across replaced passages; one inside a replaced passage snaps outward
    (a start to its beginning, an end to its end), so a span never cuts a placeholder or a
    redacted name in half."""
    shift = 0
    for src_start, src_end, dst_start, dst_end in pairs:
        if position <= src_start:
            break
        if position < src_end:
            return dst_start if side == "start" else dst_end
        shift = dst_end - src_end
    return position + shift


@dataclass(frozen=True)
class TextViews:
    """A story's answers as admins (original) and researchers (redacted) read them, and how an
    offset in one maps to the other."""

    original: dict[str, str | None]
    redacted: dict[str, str | None]
    # per field: (original start, original end, redacted start, redacted end) of each replacement
    replaced: dict[str, list[_Pair]]

    def text(self, view: str, field: str) -> str | None:
        return (self.original if view == "original" else self.redacted).get(field)

    def to_original(self, view: str, field: str, start: int, end: int) -> tuple[int, int]:
        if view == "original":
            return start, end
        pairs = [(r0, r1, o0, o1) for o0, o1, r0, r1 in self.replaced.get(field, [])]
        return _move(start, pairs, "start"), _move(end, pairs, "end")

    def from_original(self, view: str, field: str, start: int, end: int) -> tuple[int, int]:
        if view == "original":
            return start, end
        pairs = self.replaced.get(field, [])
        return _move(start, pairs, "start"), _move(end, pairs, "end")


def _replacements(spans: list[dict[str, Any]]) -> list[_Pair]:
    pairs: list[_Pair] = []
    shift = 0
    for span in sorted(spans, key=lambda s: int(s["start"])):
        start, end = int(span["start"]), int(span["end"])
        placeholder = PLACEHOLDERS.get(str(span["kind"]), "")
        pairs.append((start, end, start + shift, start + shift + len(placeholder)))
        shift += len(placeholder) - (end - start)
    return pairs


def replacements_of(redaction_spans: dict[str, list[dict[str, Any]]]) -> TextViews:
    """The offset mapping alone (no texts), from a story's stored `redaction_spans`."""
    return TextViews(
        original={},
        redacted={},
        replaced={field: _replacements(items) for field, items in redaction_spans.items()},
    )


def text_views(incident: Incident) -> TextViews:
    original = original_answers(incident)
    if incident.redacted:
        redacted = redacted_answers(incident)
        spans = incident.redaction_spans or {}
    else:
        columns = redaction_columns(original)
        redacted, spans = columns["redacted"], columns["redaction_spans"]
    return TextViews(
        original=original,
        redacted=redacted,
        replaced={field: _replacements(items) for field, items in spans.items()},
    )
