"""Code suggestions for stories: rule evidence always, scores from the rules or a trained model."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import spacy
from spacy.language import Language
from spacy.tokens import Doc

from .codebook import Codebook
from .labels import EXCLUDE_LABEL
from .logistic import Logistic, logit
from .pipeline import HITS_ATTR, RuleHit, build_pipeline, evidence_count, rule_score

__all__ = [
    "MODEL_FORMAT",
    "MODEL_META_FILE",
    "TEXTCAT_NAME",
    "CodeSuggestion",
    "Evidence",
    "ExclusionSuggestion",
    "ScoredStory",
    "Suggester",
]

MODEL_META_FILE = "cit-model.json"
MODEL_FORMAT = 2
"""Version of `cit-model.json`: 1 = one text classifier for every code (codebook thresholds);
2 = a layer and threshold per code chosen by cross-validation (`nlp.selection`)."""
TEXTCAT_NAME = "cit_textcat"

Source = Literal["rules", "model", "combined"]


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
    threshold: float = 0.5
    """The score at or above which the code is suggested (the codebook's for rules, the one
    chosen by cross-validation for a trained layer)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "score": self.score,
            "suggested": self.suggested,
            "source": self.source,
            "threshold": self.threshold,
            "evidence": [
                {"start": e.start, "end": e.end, "text": e.text, "indicator": e.indicator}
                for e in self.evidence
            ],
        }


@dataclass(frozen=True, slots=True)
class ExclusionSuggestion:
    """Whether the story looks like no critical incident (chatter, a bare thanks, an insult)."""

    score: float
    suggested: bool
    threshold: float
    source: Source

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "suggested": self.suggested,
            "threshold": self.threshold,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class ScoredStory:
    """Everything the suggester says about one story."""

    codes: list[CodeSuggestion]
    exclude: ExclusionSuggestion | None = None


def _hit_order(hit: RuleHit) -> tuple[int, int, str]:
    return hit.start, hit.end, hit.indicator


@dataclass(frozen=True, slots=True)
class _CodePlan:
    code: str
    layer: Source
    threshold: float
    label_index: int | None
    stacker: Logistic | None


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _has_doc_vectors(nlp: Language) -> bool:
    if nlp.vocab.vectors.size > 0:
        return True
    probe = nlp.make_doc("probe")
    for _, component in nlp.pipeline:
        probe = component(probe)
    return bool(probe.tensor is not None and getattr(probe.tensor, "size", 0) > 0)


class _VectorModels:
    """Logistic regressions on doc vectors, one per label, scored together as one matrix."""

    def __init__(self, models: dict[str, Logistic], labels: Sequence[str]) -> None:
        self.labels = [label for label in labels if label in models]
        self.weights = np.array(
            [
                np.asarray(models[label].weights) / np.asarray(models[label].scale)
                for label in self.labels
            ]
        )
        self.bias = np.array(
            [
                models[label].bias
                - float(
                    np.dot(
                        models[label].weights,
                        np.asarray(models[label].center) / np.asarray(models[label].scale),
                    )
                )
                for label in self.labels
            ]
        )

    def __call__(self, vector: Any) -> dict[str, float]:
        if len(vector) != self.weights.shape[1]:
            return {}
        z = self.weights @ np.asarray(vector, dtype=np.float64) + self.bias
        return {label: _sigmoid(float(value)) for label, value in zip(self.labels, z, strict=True)}


class Suggester:
    """Suggests codes for stories with one spaCy pipeline built from the codebook.

    Every active code gets one `CodeSuggestion` per story, in codebook order (score 0 without
    evidence); retired codes never appear. Without a model the score is the rule score
    (`nlp.pipeline.rule_score`) at the codebook's threshold. With `model_dir` (written by
    `nlp.train.train_suggester`) each code is scored by the layer chosen for it by
    cross-validation ("rules", "model" or "combined") at the threshold chosen with it; evidence
    always comes from the rules. Codes added to the codebook after training are scored by the
    rules. The combined layer reads the story's valence: pass `valences` to `score_many` /
    `suggest_many` (unknown valence is allowed, and is what the stacker saw for codebook
    examples).
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
        self._plan: tuple[_CodePlan, ...] = ()
        self._exclude: _CodePlan | None = None
        self._vectors: _VectorModels | None = None
        self._model_source: Language | None = None
        self.warnings: list[str] = []
        self._scores = tuple(rule_score(n) for n in range(64))
        if model_dir is not None:
            self.load_model(model_dir)
        else:
            self._make_plan({})

    @property
    def layer(self) -> Literal["rules", "model"]:
        """ "model" when a trained layer scores at least one code, else "rules"."""
        return "model" if any(p.layer != "rules" for p in self._plan) else "rules"

    @property
    def layers(self) -> dict[str, str]:
        """The layer that scores each active code."""
        return {p.code: p.layer for p in self._plan}

    def load_model(self, model_dir: str | Path) -> None:
        """Score with the model saved in `model_dir` (replacing any previous model)."""
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
        if info.get("format", 1) >= 2:
            layers = info.get("layers") or {}
            exclude = info.get("exclude")
            labels = list(info.get("labels") or info["codes"])
        else:  # format 1: the classifier scores every code it knows, at the codebook thresholds
            layers = {code: {"layer": "model", "threshold": None} for code in info["codes"]}
            exclude = None
            labels = list(info["codes"])
        self._attach(spacy.load(directory), labels, layers, exclude)
        vector_file = info.get("vectors")
        self.warnings = []
        if vector_file and not _has_doc_vectors(self.nlp):
            # Trained on a pipeline with vectors, loaded on one without (CIT_NLP_PIPELINE
            # changed): the classifier alone scores; its figures were measured with both.
            self.warnings.append(
                f"model trained with the vectors of {info.get('settings', {}).get('base')!r}, "
                f"loaded on {self.base!r} without vectors: the text classifier alone scores"
            )
            vector_file = None
        if vector_file:
            data = json.loads((directory / vector_file).read_text(encoding="utf-8"))
            self._vectors = _VectorModels(
                {label: Logistic.from_dict(m) for label, m in data.items()}, labels
            )
        self.model_info = info

    def force_layer(self, layer: Source) -> None:
        """Score every code the model was trained on with one layer ("rules", "model" or
        "combined", at the threshold chosen for it), whatever was selected: for side-by-side
        comparisons (`bench.quality`). Needs a model trained with format 2."""
        if self.model_info is None or self.model_info.get("format", 1) < 2:
            raise ValueError("force_layer needs a model trained with per-code selection")
        layers = {}
        for code, spec in self.model_info["layers"].items():
            alternative = (spec.get("alternatives") or {}).get(layer)
            if alternative is None:
                layers[code] = {"layer": "rules"}
            else:
                layers[code] = {"layer": layer, **alternative}
        if layer != "rules" and TEXTCAT_NAME not in self.nlp.pipe_names:
            assert self._model_source is not None
            self.nlp.add_pipe(TEXTCAT_NAME, source=self._model_source)
        self._make_plan(layers, self.model_info.get("exclude"))

    def attach_model(self, model: Language, codes: Sequence[str]) -> None:
        """Use the `cit_textcat` component of an in-memory pipeline for the given codes (model
        layer, codebook thresholds)."""
        layers = {code: {"layer": "model", "threshold": None} for code in codes}
        self._attach(model, list(codes), layers, None)
        self.model_info = None

    def _attach(
        self,
        model: Language,
        labels: Sequence[str],
        layers: dict[str, dict[str, Any]],
        exclude: dict[str, Any] | None,
    ) -> None:
        if TEXTCAT_NAME in self.nlp.pipe_names:
            self.nlp.remove_pipe(TEXTCAT_NAME)
        self._vectors = None
        self._model_source = model
        if any(spec.get("layer") in ("model", "combined") for spec in layers.values()) or exclude:
            self.nlp.add_pipe(TEXTCAT_NAME, source=model)
        self._labels = list(labels)
        self._make_plan(layers, exclude)

    def _make_plan(
        self, layers: dict[str, dict[str, Any]], exclude: dict[str, Any] | None = None
    ) -> None:
        labels = getattr(self, "_labels", [])
        plan = []
        for code in self.codebook.active_codes:
            spec = layers.get(code.key) or {}
            layer: Source = "combined" if spec.get("layer") == "combined" else "model"
            if spec.get("layer") not in ("model", "combined") or code.key not in labels:
                plan.append(_CodePlan(code.key, "rules", code.threshold, None, None))
                continue
            threshold = spec.get("threshold")
            stacker = spec.get("stacker")
            plan.append(
                _CodePlan(
                    code.key,
                    layer,
                    code.threshold if threshold is None else float(threshold),
                    labels.index(code.key),
                    Logistic.from_dict(stacker) if stacker else None,
                )
            )
        self._plan = tuple(plan)
        self._exclude = None
        if exclude and exclude.get("layer") in ("model", "combined") and EXCLUDE_LABEL in labels:
            stacker = exclude.get("stacker")
            self._exclude = _CodePlan(
                "exclude",
                exclude["layer"],
                float(exclude["threshold"]),
                labels.index(EXCLUDE_LABEL),
                Logistic.from_dict(stacker) if stacker else None,
            )

    def suggest(self, text: str, valence: str | None = None) -> list[CodeSuggestion]:
        """Suggestions for one story, one per active code."""
        return self._from_doc(self.nlp(text), valence).codes

    def suggest_many(
        self,
        texts: Iterable[str],
        batch_size: int = 256,
        valences: Iterable[str | None] | None = None,
    ) -> Iterator[list[CodeSuggestion]]:
        """Suggestions for many stories, in input order, through `nlp.pipe`."""
        for story in self.score_many(texts, batch_size, valences):
            yield story.codes

    def score_many(
        self,
        texts: Iterable[str],
        batch_size: int = 256,
        valences: Iterable[str | None] | None = None,
    ) -> Iterator[ScoredStory]:
        """Code suggestions and the exclusion suggestion (when the model has one) per story."""
        valence_iter = iter(valences) if valences is not None else None
        for doc in self.nlp.pipe(texts, batch_size=batch_size):
            yield self._from_doc(doc, next(valence_iter) if valence_iter is not None else None)

    def _model_scores(self, doc: Doc) -> dict[str, float]:
        cats = doc.cats
        if self._vectors is None:
            return cats
        vector_scores = self._vectors(doc.vector)
        return {
            label: (score + vector_scores[label]) / 2.0 if label in vector_scores else score
            for label, score in cats.items()
        }

    def _from_doc(self, doc: Doc, valence: str | None) -> ScoredStory:
        hits: list[RuleHit] = doc._.get(HITS_ATTR) or []
        by_code: dict[str, list[RuleHit]] = {}
        for hit in hits:
            by_code.setdefault(hit.code, []).append(hit)
        scores = self._scores
        model: dict[str, float] | None = None
        satisfying = float(valence == "satisfying")
        dissatisfying = float(valence == "dissatisfying")
        suggestions = []
        rule_total = 0.0
        for plan in self._plan:
            code = plan.code
            code_hits = by_code.get(code)
            if code_hits:
                code_hits.sort(key=_hit_order)
                evidence = tuple(Evidence(h.start, h.end, h.text, h.indicator) for h in code_hits)
                distinct = evidence_count(code_hits)
                rule = scores[distinct] if distinct < len(scores) else rule_score(distinct)
            else:
                evidence = ()
                rule = 0.0
            rule_total += rule
            score = rule
            if plan.layer != "rules":
                if model is None:
                    model = self._model_scores(doc)
                model_score = min(1.0, max(0.0, float(model.get(code, 0.0))))
                if plan.layer == "combined" and plan.stacker is not None:
                    score = plan.stacker.score(
                        [rule, logit(model_score), satisfying, dissatisfying]
                    )
                else:
                    score = model_score
            suggestions.append(
                CodeSuggestion(
                    code, score, score >= plan.threshold, plan.layer, evidence, plan.threshold
                )
            )
        exclusion = None
        if self._exclude is not None:
            if model is None:
                model = self._model_scores(doc)
            plan = self._exclude
            model_score = min(1.0, max(0.0, float(model.get(EXCLUDE_LABEL, 0.0))))
            score = model_score
            if plan.layer == "combined" and plan.stacker is not None:
                score = plan.stacker.score(
                    [
                        rule_total,
                        logit(model_score),
                        satisfying,
                        dissatisfying,
                        math.log1p(len(doc)),
                    ]
                )
            exclusion = ExclusionSuggestion(
                score, score >= plan.threshold, plan.threshold, plan.layer
            )
        return ScoredStory(suggestions, exclusion)
