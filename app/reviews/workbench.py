"""The coding and adjudication pages' view of a story, built from the same reads as the JSON
API (`to_reads`, `my_coding`): the codebook's codes with their suggestions, the answer texts cut
into plain-text segments for highlighting (evidence and marked spans; never markup), the
sentences a coder without JavaScript can mark, and the coder's choices, from a saved coding or
from a posted form, turned into the API's `CodingUpdate`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from pydantic import ValidationError

from app.incidents.redaction import TextViews
from app.incidents.schemas import CodingRead, IncidentRead, SuggestionRead
from app.models import CodebookVersion
from app.pages import FormFields
from app.reviews.schemas import SPAN_FIELDS, CodeChoice, CodingUpdate, SpanChoice
from nlp.codebook import Codebook as NlpCodebook
from nlp.codebook import CodeSpec, parse_codebook

FIELD_LABELS = {
    "occurred": "When it happened",
    "circumstances": "Circumstances",
    "what_happened": "What happened",
    "outcome": "Outcome",
}
Offsets = tuple[str, int, int]


_codebooks: dict[tuple[Any, ...], NlpCodebook] = {}


def parsed_codebook(version: CodebookVersion) -> NlpCodebook:
    """Versions never change once written, so each is parsed once per process (keyed by more
    than its id, so that another database in the same process, as in tests, is not mistaken
    for this one)."""
    key = (version.id, version.codebook_id, version.number, version.created_at)
    found = _codebooks.get(key)
    if found is None:
        found = parse_codebook(version.content)
        if len(_codebooks) > 256:
            _codebooks.clear()
        _codebooks[key] = found
    return found


# Codes ----------------------------------------------------------------------------------------


@dataclass
class CodeRow:
    spec: CodeSpec
    depth: int
    shortcut: str | None
    suggestion: SuggestionRead | None
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (field label, text)

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def suggested(self) -> bool:
        return bool(self.suggestion and self.suggestion.suggested)


def code_rows(codebook: NlpCodebook, suggestions: Sequence[SuggestionRead]) -> list[CodeRow]:
    """Active codes as a tree (parents before their children), digits 1-9 and 0 as shortcuts."""
    active = [c for c in codebook.codes if not c.retired]
    keys = {c.key for c in active}
    children: dict[str | None, list[CodeSpec]] = {}
    for code in active:
        parent = code.parent if code.parent in keys else None
        children.setdefault(parent, []).append(code)
    ordered: list[tuple[CodeSpec, int]] = []

    def walk(parent: str | None, depth: int) -> None:
        for code in children.get(parent, []):
            ordered.append((code, depth))
            walk(code.key, depth + 1)

    walk(None, 0)
    by_code = {s.code: s for s in suggestions}
    rows = []
    for i, (code, depth) in enumerate(ordered):
        shortcut = str(i + 1) if i < 9 else ("0" if i == 9 else None)
        suggestion = by_code.get(code.key)
        row = CodeRow(code, depth, shortcut, suggestion)
        if suggestion:
            row.evidence = [
                (FIELD_LABELS.get(e.field, e.field), e.text) for e in suggestion.evidence
            ]
        rows.append(row)
    return rows


def all_codes(codebook: NlpCodebook) -> list[CodeSpec]:
    return [c for c in codebook.codes if not c.retired]


# Text -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    text: str
    evidence: tuple[str, ...] = ()  # codes whose suggestion evidence covers it
    marked: tuple[str, ...] = ()  # span marks covering it (codes, or coder slots)


@dataclass(frozen=True)
class Sentence:
    value: str  # "field|start|end"
    text: str


@dataclass(frozen=True)
class Answer:
    field: str
    label: str
    text: str
    segments: list[Segment]
    sentences: list[Sentence]


_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)|\n+")


def sentences(text: str) -> list[tuple[int, int]]:
    """Sentence offsets: cut after . ! ? followed by a space, and at line breaks; surrounding
    white space left out."""
    found = []
    start = 0
    cuts = [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    for end in cuts:
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if piece.strip():
            found.append((start + lead, end - trail))
        start = end
    return found


def segments(text: str, marks: Iterable[tuple[int, int, str, str]]) -> list[Segment]:
    """Cut `text` at every mark boundary; each piece knows which marks cover it. A mark is
    (start, end, kind, name) with kind "evidence" or "marked"."""
    marks = [(max(0, s), min(len(text), e), k, n) for s, e, k, n in marks if s < e]
    cuts = sorted({0, len(text), *(s for s, _, _, _ in marks), *(e for _, e, _, _ in marks)})
    out = []
    for a, b in pairwise(cuts):
        if a >= b:
            continue
        ev = tuple(sorted({n for s, e, k, n in marks if k == "evidence" and s <= a and b <= e}))
        mk = tuple(sorted({n for s, e, k, n in marks if k == "marked" and s <= a and b <= e}))
        out.append(Segment(text[a:b], ev, mk))
    return out


def answers(
    read: IncidentRead,
    views: TextViews,
    marked: dict[str, list[Offsets]],
    *,
    with_evidence: bool = True,
) -> list[Answer]:
    """The story's answers as the reader reads them (`read.view`), with suggestion evidence
    (stored in redacted offsets, mapped to the reader's view) and the given marks."""
    out = []
    for name in SPAN_FIELDS:
        text = getattr(read, name)
        if not text:
            continue
        marks: list[tuple[int, int, str, str]] = []
        if with_evidence:
            for suggestion in read.suggestions:
                for ev in suggestion.evidence:
                    if ev.field == name:
                        start, end = (
                            (ev.start, ev.end)
                            if read.view == "redacted"
                            else views.to_original("redacted", name, ev.start, ev.end)
                        )
                        marks.append((start, end, "evidence", suggestion.code))
        for label, spans in marked.items():
            marks.extend((s, e, "marked", label) for f, s, e in spans if f == name)
        out.append(
            Answer(
                field=name,
                label=FIELD_LABELS[name],
                text=text,
                segments=segments(text, marks),
                sentences=[Sentence(f"{name}|{s}|{e}", text[s:e]) for s, e in sentences(text)],
            )
        )
    return out


# The coder's choices --------------------------------------------------------------------------


@dataclass
class Choices:
    codes: list[str] = field(default_factory=list)
    spans: dict[str, list[Offsets]] = field(default_factory=dict)
    exclude: bool = False
    exclusion_reason: str = ""
    note: str = ""
    no_code_applies: bool = False

    def span_values(self, code: str) -> set[str]:
        return {f"{code}|{f}|{s}|{e}" for f, s, e in self.spans.get(code, [])}

    def summary(self) -> dict[str, str]:
        """For showing two versions side by side (a conflict)."""
        spans = "; ".join(
            f"{code}: {len(v)} passage{'s' if len(v) != 1 else ''}"
            for code, v in sorted(self.spans.items())
            if v and code in self.codes
        )
        return {
            "Codes": ", ".join(sorted(self.codes)) or "(none)",
            "No code applies": "yes" if self.no_code_applies else "no",
            "Marked passages": spans or "(none)",
            "Excluded": "yes" if self.exclude else "no",
            "Exclusion reason": self.exclusion_reason or "(none)",
            "Memo": self.note or "(none)",
        }


def choices_from_coding(coding: CodingRead | None) -> Choices:
    if coding is None:
        return Choices()
    return Choices(
        codes=[c.code for c in coding.codes],
        spans={c.code: [(s.field, s.start, s.end) for s in c.spans] for c in coding.codes},
        exclude=coding.excluded,
        exclusion_reason=coding.exclusion_reason or "",
        note=coding.note or "",
        no_code_applies=coding.no_code_applies,
    )


def _offsets(value: str) -> tuple[str, Offsets] | None:
    parts = value.split("|")
    if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return parts[0], (parts[1], int(parts[2]), int(parts[3]))


def choices_from_form(form: FormFields) -> Choices:
    spans: dict[str, list[Offsets]] = {}
    for value in form.getlist("span"):
        parsed = _offsets(value)
        if parsed is not None and parsed[1] not in spans.setdefault(parsed[0], []):
            spans[parsed[0]].append(parsed[1])
    return Choices(
        codes=list(dict.fromkeys(form.getlist("code"))),
        spans=spans,
        exclude=form.get("exclude") == "1",
        exclusion_reason=form.get("exclusion_reason").strip(),
        note=form.get("note"),
        no_code_applies=form.get("no_code_applies") == "1",
    )


def coding_update(choices: Choices, suggested: set[str]) -> CodingUpdate:
    """The API's coding body: excluding drops the ticked codes; a suggestion not ticked is
    recorded as rejected; a code that was suggested counts as an accepted suggestion."""
    if choices.exclude:
        return CodingUpdate(
            exclude=True,
            exclusion_reason=choices.exclusion_reason or None,
            note=choices.note or None,
        )
    return CodingUpdate(
        codes=[
            CodeChoice(
                code=code,
                origin="suggestion" if code in suggested else "manual",
                spans=[
                    SpanChoice(field=f, start=s, end=e)  # type: ignore[arg-type]
                    for f, s, e in choices.spans.get(code, [])
                ],
            )
            for code in choices.codes
        ],
        rejected_suggestions=sorted(suggested - set(choices.codes)),
        no_code_applies=choices.no_code_applies,
        note=choices.note or None,
    )


def validation_messages(exc: ValidationError) -> list[str]:
    """Plain sentences for a coder, from the API model's validation errors."""
    messages = []
    for error in exc.errors():
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        where = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
        if "spans" in where:
            message = "A marked passage does not fit the text; remove it and mark it again."
        elif "no_code_applies" in message:  # the API's field name means nothing on the page
            message = message.replace("set no_code_applies", "tick “No code applies”").replace(
                "no_code_applies", "“No code applies”"
            )
            message = message[0].upper() + message[1:]
        elif message and message[0].islower():
            message = message[0].upper() + message[1:]
        messages.append(message if message.endswith(".") else message + ".")
    return list(dict.fromkeys(messages))


def custom_spans(choices: Choices, shown: Sequence[Answer]) -> dict[str, list[tuple[str, str]]]:
    """Marked passages that are not one of the listed sentences (marked by selecting text):
    per code, (form value, quoted text), so that the form sends them back unchanged."""
    texts = {a.field: a.text for a in shown}
    listed = {s.value for a in shown for s in a.sentences}
    found: dict[str, list[tuple[str, str]]] = {}
    for code, spans in choices.spans.items():
        for f, s, e in spans:
            if f"{f}|{s}|{e}" not in listed and f in texts:
                found.setdefault(code, []).append((f"{code}|{f}|{s}|{e}", texts[f][s:e]))
    return found
