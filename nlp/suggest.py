"""Code suggestions for stories: rule evidence always, scores from the rules or a trained model."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from .codebook import Codebook
from .pipeline import HITS_ATTR, RuleHit, build_pipeline, evidence_count, rule_score

__all__ = ["MODEL_META_FILE", "TEXTCAT_NAME", "CodeSuggestion", "Evidence", "Suggester"]

MODEL_META_FILE = "cit-model.json"
TEXTCAT_NAME = "cit_textcat"

Source = Literal["rules", "model"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """A matched indicator: `text == story[start:end]` (character offsets into the input)."""

    start: int
    end: int
    text: str
    indicator: str
    """Which indicator matched, named after its place in the codebook: "phrases: refund",
    "lemma_phrases: lose bag" or "patterns[1]"."""


@dataclass(frozen=True, slots=True)
class CodeSuggestion:
    """One code for one story: its score in [0, 1], whether it is suggested, and the evidence."""

    code: str
    score: float
    suggested: bool
    source: Source
    evidence: tuple[Evidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "score": self.score,
            "suggested": self.suggested,
            "source": self.source,
            "evidence": [
                {"start": e.start, "end": e.end, "text": e.text, "indicator": e.indicator}
                for e in self.evidence
            ],
        }


def _hit_order(hit: RuleHit) -> tuple[int, int, str]:
    return hit.start, hit.end, hit.indicator


class Suggester:
    """Suggests codes for stories with one spaCy pipeline built from the codebook.

    Every active code gets one `CodeSuggestion` per story, in codebook order (score 0 without
    evidence); retired codes never appear. Without a model the score is the rule score
    (`nlp.pipeline.rule_score`); with `model_dir` (written by `nlp.train.train_textcat`) the score
    of each code the model was trained on comes from the model, and the evidence still from the
    rules. Codes added to the codebook after training are scored by the rules.
    """

    def __init__(
        self,
        codebook: Codebook,
        model_dir: str | Path | None = None,
        base: str = "blank:en",
    ) -> None:
        self.codebook = codebook
        self.base = base
        self.nlp: Language = build_pipeline(codebook, base)
        self.model_info: dict[str, Any] | None = None
        self._model_codes: frozenset[str] = frozenset()
        self._plan: tuple[tuple[str, float, bool], ...] = ()
        self._scores = tuple(rule_score(n) for n in range(64))
        if model_dir is not None:
            self.load_model(model_dir)
        else:
            self._make_plan()

    @property
    def layer(self) -> Source:
        """Which layer scores: "model" when a trained model scores codes, else "rules"."""
        return "model" if self._model_codes else "rules"

    def load_model(self, model_dir: str | Path) -> None:
        """Score with the text classifier saved in `model_dir` (replacing any previous model)."""
        directory = Path(model_dir)
        meta_file = directory / MODEL_META_FILE
        if not meta_file.exists():
            raise ValueError(f"{directory} has no {MODEL_META_FILE}: not a trained CIT model")
        info = json.loads(meta_file.read_text(encoding="utf-8"))
        if info.get("codebook_key") != self.codebook.key:
            raise ValueError(
                f"model was trained for codebook {info.get('codebook_key')!r}, "
                f"not {self.codebook.key!r}"
            )
        self.attach_model(spacy.load(directory), info["codes"])
        self.model_info = info

    def attach_model(self, model: Language, codes: Sequence[str]) -> None:
        """Use the `cit_textcat` component of an in-memory pipeline for the given codes."""
        if TEXTCAT_NAME in self.nlp.pipe_names:
            self.nlp.remove_pipe(TEXTCAT_NAME)
        self.nlp.add_pipe(TEXTCAT_NAME, source=model)
        self._model_codes = frozenset(codes)
        self.model_info = None
        self._make_plan()

    def _make_plan(self) -> None:
        self._plan = tuple(
            (code.key, code.threshold, code.key in self._model_codes)
            for code in self.codebook.active_codes
        )

    def suggest(self, text: str) -> list[CodeSuggestion]:
        """Suggestions for one story, one per active code."""
        return self._from_doc(self.nlp(text))

    def suggest_many(
        self, texts: Iterable[str], batch_size: int = 256
    ) -> Iterator[list[CodeSuggestion]]:
        """Suggestions for many stories, in input order, through `nlp.pipe`."""
        for doc in self.nlp.pipe(texts, batch_size=batch_size):
            yield self._from_doc(doc)

    def _from_doc(self, doc: Doc) -> list[CodeSuggestion]:
        hits: list[RuleHit] = doc._.get(HITS_ATTR) or []
        by_code: dict[str, list[RuleHit]] = {}
        for hit in hits:
            by_code.setdefault(hit.code, []).append(hit)
        cats = doc.cats
        scores = self._scores
        suggestions = []
        for code, threshold, from_model in self._plan:
            code_hits = by_code.get(code)
            if code_hits:
                code_hits.sort(key=_hit_order)
                evidence = tuple(Evidence(h.start, h.end, h.text, h.indicator) for h in code_hits)
                distinct = evidence_count(code_hits)
                score = scores[distinct] if distinct < len(scores) else rule_score(distinct)
            else:
                evidence = ()
                score = 0.0
            source: Source = "rules"
            if from_model:
                score = min(1.0, max(0.0, float(cats.get(code, 0.0))))
                source = "model"
            suggestions.append(CodeSuggestion(code, score, score >= threshold, source, evidence))
        return suggestions
