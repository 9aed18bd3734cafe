"""The spaCy pipeline: a lookup lemmatizer and the codebook matcher that records rule hits on docs.

Rule score. For each code the matcher counts the *distinct pieces of evidence* in a story and
scores the code `1 - 0.5 ** n`: no hit 0, one 0.5, two 0.75, three 0.875, ... Matches of one
indicator count once however often it is found, and matches whose spans overlap count once
whichever indicators found them ("requested", matched by a phrase and by a pattern, is one piece
of evidence): see `evidence_count`. The score is monotone in the evidence, never reaches 1, and
with the default threshold 0.5 a single piece of evidence is enough for a suggestion.

Negative cues (`exclude_phrases`, `exclude_patterns`) veto their code's matches that overlap them
or lie within `exclude_window` tokens: vetoed matches are neither evidence nor counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import spacy
from spacy.attrs import LEMMA, LOWER, ORTH
from spacy.language import Language
from spacy.matcher import Matcher, PhraseMatcher
from spacy.strings import get_string_id
from spacy.tokens import Doc
from spacy.vocab import Vocab

from .codebook import Codebook, codebook_to_dict, parse_codebook

__all__ = [
    "HITS_ATTR",
    "LEMMATIZER_FACTORY",
    "MATCHER_FACTORY",
    "CodebookMatcher",
    "LookupLemmatizer",
    "RuleHit",
    "build_pipeline",
    "evidence_count",
    "rule_score",
]

MATCHER_FACTORY = "cit_codebook_matcher_v1"
LEMMATIZER_FACTORY = "cit_lookup_lemmatizer_v1"
MATCHER_NAME = "cit_codebook_matcher"
LEMMATIZER_NAME = "cit_lemmatizer"
HITS_ATTR = "cit_rule_hits"
"""`doc._.cit_rule_hits`: the list of `RuleHit`s the matcher found, in no particular order."""

if not Doc.has_extension(HITS_ATTR):
    Doc.set_extension(HITS_ATTR, default=None)


class RuleHit(NamedTuple):
    """One indicator of one code matched in a doc; `start`/`end` are character offsets."""

    code: str
    indicator: str
    start: int
    end: int
    text: str


def rule_score(n_distinct_hits: int) -> float:
    """`1 - 0.5 ** n`: 0 without evidence, 0.5 for one distinct piece of evidence, 0.75 for two."""
    return 1.0 - 0.5**n_distinct_hits if n_distinct_hits > 0 else 0.0


def evidence_count(hits: Sequence[RuleHit]) -> int:
    """Distinct pieces of evidence among one code's hits.

    Two hits are the same evidence when they come from the same indicator (a phrase found three
    times) or when their spans overlap (one span found by two indicators); the count is the number
    of groups that these two relations join, transitively.
    """
    if len(hits) < 2:
        return len(hits)
    parent = list(range(len(hits)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[b] = a

    first_of: dict[str, int] = {}
    order = sorted(range(len(hits)), key=lambda i: (hits[i].start, hits[i].end))
    reach, reach_index = -1, -1
    for i in order:
        hit = hits[i]
        if hit.start < reach:
            join(reach_index, i)
        if hit.end > reach:
            reach, reach_index = hit.end, i
        seen = first_of.setdefault(hit.indicator, i)
        if seen != i:
            join(seen, i)
    return sum(1 for i in range(len(hits)) if root(i) == i)


class LookupLemmatizer:
    """Lemmas from spacy-lookups-data's `lemma_lookup` table, tried as written and lower-cased.

    spaCy's own lookup mode only tries the exact text, so "Lost" or the all-caps "LOST" of a
    complaint letter keep their form; here every lemma is the looked-up form of the lower-cased
    word (or the lower-cased word). A per-word cache keeps the per-token cost to a dict lookup.
    """

    def __init__(self, nlp: Language, name: str, lang: str) -> None:
        from spacy.lookups import load_lookups

        self.name = name
        self.lang = lang or nlp.lang or "en"
        try:
            lookups = load_lookups(self.lang, ["lemma_lookup"], strict=True)
        except Exception as exc:  # spaCy raises ValueError when the table is not installed
            raise ValueError(
                f"no lemma_lookup table for {self.lang!r}: is spacy-lookups-data installed?"
            ) from exc
        self._table = lookups.get_table("lemma_lookup")
        self._strings = nlp.vocab.strings
        self._cache: dict[int, int] = {}

    def _lemma_id(self, orth: int) -> int:
        word = self._strings[orth]
        lower = word.lower()
        lemma = self._table.get(word) or self._table.get(lower) or lower
        lemma_id = self._strings.add(str(lemma).lower())
        if len(self._cache) > 2_000_000:  # bounded: new words keep arriving in a long-lived worker
            self._cache.clear()
        self._cache[orth] = lemma_id
        return lemma_id

    def __call__(self, doc: Doc) -> Doc:
        cache = self._cache
        for token in doc:
            lemma_id = cache.get(token.orth)
            token.lemma = lemma_id if lemma_id is not None else self._lemma_id(token.orth)
        return doc


@Language.factory(
    LEMMATIZER_FACTORY,
    default_config={"lang": ""},
    assigns=["token.lemma"],
)
def make_lookup_lemmatizer(nlp: Language, name: str, lang: str) -> LookupLemmatizer:
    return LookupLemmatizer(nlp, name, lang)


_UNBOUNDED = 1 << 30
_COLUMNS = {"ORTH": 0, "TEXT": 0, "LOWER": 1, "LEMMA": 2}
_DOC_ATTRS = [ORTH, LOWER, LEMMA]
_RANGE_OP = re.compile(r"\{(\d*)(,?)(\d*)\}\Z")


def _op_bounds(op: object) -> tuple[int, int]:
    """Minimum and maximum number of tokens a pattern token with this OP consumes."""
    if op is None or op == "!":
        return 1, 1  # "!" consumes one token that does not match
    if op == "?":
        return 0, 1
    if op == "+":
        return 1, _UNBOUNDED
    if op == "*":
        return 0, _UNBOUNDED
    found = _RANGE_OP.match(str(op))
    if found is None:
        return 0, _UNBOUNDED  # unknown to us: never gate on it, never bound a window by it
    low, comma, high = found.groups()
    minimum = int(low) if low else 0
    if not comma:
        return minimum, minimum
    return minimum, int(high) if high else _UNBOUNDED


def _required_values(token: dict[str, Any]) -> tuple[int, frozenset[int]] | None:
    """(column, string ids) that a token must show, if it restricts ORTH, LOWER or LEMMA."""
    for attr, column in _COLUMNS.items():
        value = token.get(attr)
        if isinstance(value, str):
            return column, frozenset({get_string_id(value)})
        if isinstance(value, dict) and isinstance(value.get("IN"), list):
            words = value["IN"]
            if all(isinstance(word, str) for word in words):
                return column, frozenset(get_string_id(word) for word in words)
    return None


class _DocIndex:
    """ORTH, LOWER and LEMMA ids of a doc's tokens, for gating patterns and finding anchors.

    Lookups run as C-level list and set operations (`list.count`, `list.index`, set
    intersection): a per-token Python loop here would cost as much as the matching it saves.
    """

    __slots__ = ("_sets", "columns", "present")

    def __init__(self, doc: Doc) -> None:
        self.columns: list[list[int]] = doc.to_array(_DOC_ATTRS).T.tolist()
        self.present: set[int] = {*self.columns[0], *self.columns[1], *self.columns[2]}
        self._sets: list[set[int] | None] = [None, None, None]

    def common(self, column: int, values: frozenset[int]) -> set[int]:
        """The given ids that occur in `column`."""
        found = self._sets[column]
        if found is None:
            found = self._sets[column] = set(self.columns[column])
        return found & values

    def count(self, column: int, values: set[int]) -> int:
        tokens = self.columns[column]
        return sum(tokens.count(value) for value in values)

    def positions(self, column: int, values: set[int]) -> list[int]:
        """Sorted token positions whose id in `column` is one of `values`."""
        tokens = self.columns[column]
        found: list[int] = []
        for value in values:
            position = -1
            for _ in range(tokens.count(value)):
                position = tokens.index(value, position + 1)
                found.append(position)
        if len(values) > 1:
            found.sort()
        return found


class _GatedPattern:
    """One token pattern, run only where it can match.

    spaCy's `Matcher` costs time per token and per pattern (set predicates such as IN are Python
    calls), whatever the text. Most patterns need words that a story lacks, so each pattern is
    skipped unless every word it requires occurs in the doc, and then run only on windows around
    the occurrences of its rarest required word (a window spans the longest match the pattern can
    make on either side). Matches are the same as on the whole doc: every match contains an
    occurrence of that word and fits in its window. Patterns that cannot be bounded run on the
    whole doc.
    """

    def __init__(self, vocab: Vocab, key: str, pattern: list[dict[str, Any]]) -> None:
        self.key = vocab.strings.add(key)
        self.matcher = Matcher(vocab, validate=True)
        self.matcher.add(key, [pattern])
        bounds = [_op_bounds(token.get("OP")) for token in pattern]
        self.required: list[tuple[int, frozenset[int], int, int]] = []
        for index, token in enumerate(pattern):
            restriction = _required_values(token)
            if restriction is None or bounds[index][0] == 0 or token.get("OP") == "!":
                continue
            column, values = restriction
            if bounds[index] == (1, 1):
                before = sum(high for _, high in bounds[:index])
                after = sum(high for _, high in bounds[index + 1 :])
            else:
                before = after = _UNBOUNDED
            self.required.append((column, values, before, after))

    def __call__(self, doc: Doc, index: _DocIndex) -> list[tuple[int, int]]:
        present = index.present
        if not all(not values.isdisjoint(present) for _, values, _, _ in self.required):
            return []
        best: tuple[int, int, set[int], int, int] | None = None
        for column, values, before, after in self.required:
            if before < _UNBOUNDED and after < _UNBOUNDED:
                common = index.common(column, values)
                count = index.count(column, common)
                if best is None or count < best[0]:
                    best = (count, column, common, before, after)
        if best is None:
            return self._longest([(start, end) for _, start, end in self.matcher(doc)])
        _, column, common, before, after = best
        positions = index.positions(column, common)
        windows: list[list[int]] = []
        for position in positions:
            start, end = max(0, position - before), min(len(doc), position + after + 1)
            if windows and start <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], end)
            else:
                windows.append([start, end])
        found: set[tuple[int, int]] = set()
        for start, end in windows:
            found.update((start + s, start + e) for _, s, e in self.matcher(doc[start:end]))
        return self._longest(list(found))

    @staticmethod
    def _longest(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """spaCy's greedy="LONGEST" filter: longest first, then earliest, never overlapping."""
        if len(pairs) < 2:
            return pairs
        taken: list[tuple[int, int]] = []
        for start, end in sorted(pairs, key=lambda p: (p[0] - p[1], p[0])):
            if all(end <= s or start >= e for s, e in taken):
                taken.append((start, end))
        return taken


def _apostrophe_variants(phrase: str) -> list[str]:
    """The phrase, plus its twin with the other apostrophe (U+0027 / U+2019)."""
    variants = [phrase]
    for straight, curly in (("'", "\u2019"), ("\u2019", "'")):
        if straight in phrase:
            variants.append(phrase.replace(straight, curly))
    return variants


class CodebookMatcher:
    """Compiles a codebook's indicators into matchers; stores hits on `doc._.cit_rule_hits`.

    Phrases match on LOWER, lemma phrases on LEMMA (each phrase is lemmatised by the pipeline's
    components that run before this one), patterns with spaCy's `Matcher` (longest match per
    pattern). Retired codes are not compiled.
    """

    def __init__(self, nlp: Language, name: str) -> None:
        self.nlp = nlp
        self.name = name
        self.codebook: Codebook | None = None
        self._phrase_matchers: list[Callable[[Doc], Any]] = []
        self._patterns: list[_GatedPattern] = []
        self._labels: dict[int, tuple[str, str]] = {}
        self._vetoes: frozenset[int] = frozenset()
        self._windows: dict[str, int] = {}

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code.key for code in self.codebook.active_codes) if self.codebook else ()

    def _preceding(self, text: str) -> Doc:
        """A doc of `text` run through the components before this one (for lemma phrases)."""
        doc = self.nlp.make_doc(text)
        for name, component in self.nlp.pipeline:
            if name == self.name:
                break
            doc = component(doc)
        return doc

    def set_codebook(self, codebook: Codebook) -> None:
        """(Re)compile the matchers from the codebook's active codes."""
        vocab = self.nlp.vocab
        lower = PhraseMatcher(vocab, attr="LOWER")
        lemma = PhraseMatcher(vocab, attr="LEMMA")
        patterns: list[_GatedPattern] = []
        labels: dict[int, tuple[str, str]] = {}
        vetoes: set[int] = set()
        windows: dict[str, int] = {}

        def key_for(code: str, indicator: str, veto: bool = False) -> str:
            match_key = f"{self.name}\x1f{code}\x1f{indicator}"
            labels[vocab.strings.add(match_key)] = (code, indicator)
            if veto:
                vetoes.add(vocab.strings.add(match_key))
            return match_key

        for code in codebook.active_codes:
            found = code.indicators
            # Case variants of one phrase are one indicator: they match the same tokens on LOWER.
            for phrase in {p.lower(): p for p in reversed(found.phrases)}.values():
                docs = [self.nlp.make_doc(v) for v in _apostrophe_variants(phrase)]
                lower.add(key_for(code.key, f"phrases: {phrase}"), [d for d in docs if len(d)])
            for phrase in dict.fromkeys(found.lemma_phrases):
                docs = [self._preceding(v) for v in _apostrophe_variants(phrase)]
                lemma.add(
                    key_for(code.key, f"lemma_phrases: {phrase}"), [d for d in docs if len(d)]
                )
            for index, pattern in enumerate(found.patterns):
                key = key_for(code.key, f"patterns[{index}]")
                patterns.append(_GatedPattern(vocab, key, [dict(token) for token in pattern]))
            if found.has_exclusions:
                windows[code.key] = found.exclude_window
            for phrase in {p.lower(): p for p in reversed(found.exclude_phrases)}.values():
                docs = [self.nlp.make_doc(v) for v in _apostrophe_variants(phrase)]
                key = key_for(code.key, f"exclude_phrases: {phrase}", veto=True)
                lower.add(key, [d for d in docs if len(d)])
            for index, pattern in enumerate(found.exclude_patterns):
                key = key_for(code.key, f"exclude_patterns[{index}]", veto=True)
                patterns.append(_GatedPattern(vocab, key, [dict(token) for token in pattern]))
        self._phrase_matchers = [m for m in (lower, lemma) if len(m)]
        self._patterns = patterns
        self._labels = labels
        self._vetoes = frozenset(vetoes)
        self._windows = windows
        self.codebook = codebook

    def __call__(self, doc: Doc) -> Doc:
        found: list[tuple[int, int, int]] = []
        for matcher in self._phrase_matchers:
            found.extend(matcher(doc))
        if self._patterns and len(doc):
            index = _DocIndex(doc)
            for pattern in self._patterns:
                key = pattern.key
                found.extend((key, start, end) for start, end in pattern(doc, index))
        labels = self._labels
        vetoes = self._vetoes
        vetoed: dict[str, list[tuple[int, int]]] = {}
        if vetoes:
            for match_id, start, end in found:
                if match_id in vetoes:
                    vetoed.setdefault(labels[match_id][0], []).append((start, end))
        hits: list[RuleHit] = []
        for match_id, start, end in found:
            if match_id in vetoes:
                continue
            code, indicator = labels[match_id]
            cues = vetoed.get(code)
            if cues is not None:
                window = self._windows[code]
                # Overlapping, or at most `window` tokens between the match and the cue.
                if any(
                    start < c_end + window + 1 and c_start < end + window + 1
                    for c_start, c_end in cues
                ):
                    continue
            span = doc[start:end]
            hits.append(RuleHit(code, indicator, span.start_char, span.end_char, span.text))
        doc._.set(HITS_ATTR, hits)
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 256) -> Iterable[Doc]:
        for doc in docs:
            yield self(doc)

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        data = codebook_to_dict(self.codebook) if self.codebook else None
        return json.dumps(data).encode("utf-8")

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> CodebookMatcher:
        loaded = json.loads(data.decode("utf-8"))
        if loaded is not None:
            self.set_codebook(parse_codebook(loaded))
        return self

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "codebook.json").write_bytes(self.to_bytes())

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> CodebookMatcher:
        file = Path(path) / "codebook.json"
        if file.exists():
            self.from_bytes(file.read_bytes())
        return self


@Language.factory(MATCHER_FACTORY, assigns=[f"doc._.{HITS_ATTR}"])
def make_codebook_matcher(nlp: Language, name: str) -> CodebookMatcher:
    return CodebookMatcher(nlp, name)


def _has_lemmatizer(nlp: Language) -> bool:
    factories = {nlp.get_pipe_meta(name).factory for name in nlp.component_names}
    return bool(factories & {"lemmatizer", LEMMATIZER_FACTORY})


def load_base(base: str = "blank:en") -> Language:
    """`blank:xx` is `spacy.blank("xx")`; any other name an installed package for `spacy.load`."""
    if base.startswith("blank:"):
        return spacy.blank(base.removeprefix("blank:") or "en")
    try:
        return spacy.load(base)
    except OSError as exc:
        raise ValueError(
            f"spaCy pipeline {base!r} is not installed (use 'blank:en' or install the package)"
        ) from exc


def build_pipeline(codebook: Codebook, base: str = "blank:en") -> Language:
    """A pipeline that marks the codebook's rule hits on every doc.

    `base` is "blank:en" (a blank English pipeline, plus the lookup lemmatizer from
    spacy-lookups-data when the codebook matches on lemmas: nothing is downloaded) or the name of an
    installed spaCy package. Rule scores come from `rule_score` (see the module docstring).
    """
    nlp = load_base(base)
    if codebook.uses_lemmas and not _has_lemmatizer(nlp):
        nlp.add_pipe(LEMMATIZER_FACTORY, name=LEMMATIZER_NAME)
    matcher: CodebookMatcher = nlp.add_pipe(MATCHER_FACTORY, name=MATCHER_NAME)  # type: ignore[assignment]
    matcher.set_codebook(codebook)
    return nlp
