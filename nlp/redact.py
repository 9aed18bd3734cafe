"""Replace personal data in story text (e-mail, phone, card, account, URL, name) by placeholders."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: the pattern redaction runs without spaCy imported
    from spacy.language import Language
    from spacy.tokens import Doc

__all__ = ["PLACEHOLDERS", "RedactedSpan", "Redaction", "luhn_valid", "redact", "redact_many"]

Kind = Literal["EMAIL", "URL", "IBAN", "CARD", "PHONE", "ACCOUNT", "NAME"]

PLACEHOLDERS: dict[str, str] = {
    "EMAIL": "[EMAIL]",
    "URL": "[URL]",
    "IBAN": "[ACCOUNT]",
    "CARD": "[CARD]",
    "PHONE": "[PHONE]",
    "ACCOUNT": "[ACCOUNT]",
    "NAME": "[NAME]",
}

CFPB_MASK = "XXXX"
"""The CFPB masks personal details as XXXX (XX/XX/XXXX for dates): already redacted, left alone."""

# Components a pipeline can skip when it is only asked for PERSON entities.
_NOT_NEEDED_FOR_NER = {
    "tagger",
    "parser",
    "lemmatizer",
    "attribute_ruler",
    "morphologizer",
    "senter",
    "cit_lemmatizer",
    "cit_codebook_matcher",
    "cit_textcat",
}

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`{}|\\^\[\]]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)'\""
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_DIGIT_GROUPS = re.compile(r"(?<![\w.,/+-])\d+(?:[ -]\d+)+(?![\w]|[.,/]\d)")
_PHONE_PATTERNS = (
    # US: (800) 555-0199, 800-555-0199, 800.555.0199, +1 800 555 0199, 1-800-555-0199
    re.compile(
        r"(?<![\w+.-])(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.-]\d)"
    ),
    # International: +44 20 7946 0958, +33 1 23 45 67 89, 0049 30 1234567, +49-(0)30-123456
    re.compile(
        r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,5})){2,6}(?![\w]|[.-]\d)"
    ),
    # National trunk prefix: 020 7946 0958, 07700 900123
    re.compile(r"(?<![\w+.-])0\d{2,4}[ -]?\d{3,4}[ -]?\d{3,4}(?![\w]|[.-]\d)"),
)
_DIGIT_RUN = re.compile(r"(?<![\w.,])\d{8,}(?![\w]|[.,]\d)")


@dataclass(frozen=True)
class RedactedSpan:
    """Where personal data was: offsets in the original text and in the redacted text.

    The original characters are deliberately not kept.
    """

    kind: Kind
    start: int
    end: int
    redacted_start: int
    redacted_end: int

    @property
    def placeholder(self) -> str:
        return PLACEHOLDERS[self.kind]


@dataclass(frozen=True)
class Redaction:
    """The redacted text and the spans replaced, in text order."""

    text: str
    spans: tuple[RedactedSpan, ...]


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that card numbers carry."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def _prefixes(text: str, start: int, end: int, separators: str) -> Iterator[tuple[int, int]]:
    """The span, then shorter spans ending before each separator: a greedy match can overrun."""
    yield start, end
    for position in range(end - 1, start, -1):
        if text[position] in separators:
            yield start, position


def _plausible_date(digits: str) -> bool:
    """YYYYMMDD or DDMMYYYY / MMDDYYYY: an 8-digit run that reads as a date is left alone."""
    if len(digits) != 8:
        return False
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    if 1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31:
        return True
    first, second, year = int(digits[:2]), int(digits[2:4]), int(digits[4:])
    return 1900 <= year <= 2099 and 1 <= min(first, second) <= 12 and max(first, second) <= 31


def _count_digits(text: str) -> int:
    return sum(char.isdigit() for char in text)


def _candidates(text: str) -> Iterator[tuple[Kind, int, int]]:
    """Candidate spans in priority order: when two overlap, the earlier kind wins."""
    for match in _EMAIL.finditer(text):
        yield "EMAIL", match.start(), match.end()
    for match in _URL.finditer(text):
        end = match.end()
        while end > match.start() and text[end - 1] in _URL_TRAILING:
            if text[end - 1] == ")" and "(" in text[match.start() : end - 1]:
                break
            end -= 1
        yield "URL", match.start(), end
    for match in _IBAN.finditer(text):
        for start, end in _prefixes(text, match.start(), match.end(), " "):
            if _iban_valid(text[start:end]):
                yield "IBAN", start, end
                break
    for match in _DIGIT_GROUPS.finditer(text):
        for start, end in _prefixes(text, match.start(), match.end(), " -"):
            digits = re.sub(r"\D", "", text[start:end])
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                yield "CARD", start, end
                break
    for match in _DIGIT_RUN.finditer(text):
        if 13 <= len(match.group()) <= 19 and luhn_valid(match.group()):
            yield "CARD", match.start(), match.end()
    for pattern in _PHONE_PATTERNS:
        for match in pattern.finditer(text):
            if 8 <= _count_digits(match.group()) <= 15:
                yield "PHONE", match.start(), match.end()
    for match in _DIGIT_RUN.finditer(text):
        if not _plausible_date(match.group()):
            yield "ACCOUNT", match.start(), match.end()
    for match in _DIGIT_GROUPS.finditer(text):
        # Grouped digits that are no valid card but as long as one: an account number.
        if 13 <= _count_digits(match.group()) <= 19:
            yield "ACCOUNT", match.start(), match.end()


def _person_spans(doc: Doc) -> Iterator[tuple[Kind, int, int]]:
    for ent in doc.ents:
        if ent.label_ == "PERSON" and CFPB_MASK not in ent.text:
            yield "NAME", ent.start_char, ent.end_char


def _apply(text: str, found: Iterable[tuple[Kind, int, int]]) -> Redaction:
    taken: list[tuple[Kind, int, int]] = []
    for kind, start, end in found:
        if start >= end or CFPB_MASK in text[start:end]:
            continue
        if any(start < t_end and t_start < end for _, t_start, t_end in taken):
            continue
        taken.append((kind, start, end))
    taken.sort(key=lambda item: item[1])
    parts: list[str] = []
    spans: list[RedactedSpan] = []
    position = 0
    length = 0
    for kind, start, end in taken:
        kept = text[position:start]
        parts.append(kept)
        length += len(kept)
        placeholder = PLACEHOLDERS[kind]
        parts.append(placeholder)
        spans.append(RedactedSpan(kind, start, end, length, length + len(placeholder)))
        length += len(placeholder)
        position = end
    parts.append(text[position:])
    return Redaction("".join(parts), tuple(spans))


def _ner_pipes(nlp: Language) -> list[str]:
    return [name for name in nlp.pipe_names if name in _NOT_NEEDED_FOR_NER]


def redact(text: str, nlp: Language | None = None) -> Redaction:
    """Replace personal data by placeholders; all other text is kept as it was.

    E-mail addresses, URLs, IBANs, card numbers (13-19 digits, Luhn-valid), phone numbers (US,
    international and national formats; not years, amounts or dates), account numbers (runs of
    8 or more digits that are not a date, or long digit groups that fail the card checksum), and,
    when `nlp` has a named-entity recogniser, PERSON names. Spans that already hold the CFPB's
    XXXX masking are left as they are.
    """
    found = list(_candidates(text))
    if nlp is not None:
        found += list(_person_spans(nlp(text, disable=_ner_pipes(nlp))))
    return _apply(text, found)


def redact_many(
    texts: Iterable[str], nlp: Language | None = None, batch_size: int = 64
) -> Iterator[Redaction]:
    """`redact` for many texts, running the NER through `nlp.pipe`."""
    if nlp is None:
        for text in texts:
            yield redact(text)
        return
    with nlp.select_pipes(disable=_ner_pipes(nlp)):
        for doc in nlp.pipe(texts, batch_size=batch_size):
            yield _apply(doc.text, [*_candidates(doc.text), *_person_spans(doc)])
