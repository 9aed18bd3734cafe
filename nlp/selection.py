"""Choosing, per code and by evidence, which layer suggests it: rules, model, or both combined.

Every training run measures three candidates per code by k-fold cross-validation on the
confirmed stories, with the same folds for all of them:

- `rules`: the codebook's indicators alone, at the codebook's threshold (the cold-start layer);
- `model`: the text classifier trained on the other folds (plus the codebook's examples); with a
  spaCy pipeline that has word vectors or a tensor (`CIT_NLP_PIPELINE`), the mean of the text
  classifier and a logistic regression on the story's vector;
- `combined`: a logistic regression (a calibrated stacker) over the rule score, the model's
  out-of-fold score and the story's valence.

The model's and the stacker's thresholds are chosen for the best kappa on the training folds only
and applied to the held-out fold, so the pooled figures are honest; the stored thresholds are then
chosen on all folds. A code keeps the rules unless it has at least `MIN_SUPPORT` positive and
`MIN_SUPPORT` negative confirmed stories and a candidate beats the rules' kappa by
`SELECTION_MARGIN`, in at least `FOLD_WIN_SHARE` of the folds (each fold trains its own model)
and in at least `BOOTSTRAP_CONFIDENCE` of paired bootstrap resamples of the stories, so that a
difference within noise does not replace the rules (choosing the best of several noisy estimates
favours luck); the reason is recorded either way. "exclude" (a story
that is not a critical incident) is learnt the same way from confirmed exclusions, and suggested
only when its kappa reaches `MIN_EXCLUDE_KAPPA`.

The stacker reads out-of-fold model scores of stories in its own training folds: those scores
come from models that saw the held-out fold, a small optimism that stacking usually accepts.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from spacy.language import Language
from spacy.tokens import Doc

from .codebook import Codebook
from .labels import EXCLUDE, EXCLUDE_LABEL, LabelledStory
from .logistic import Logistic, best_threshold, fit_logistic, kappa_from_counts, logit
from .metrics import CodeMetrics, binary_metrics, macro_summary
from .pipeline import HITS_ATTR, RuleHit, evidence_count

__all__ = [
    "DEFAULT_FOLDS",
    "EXCLUDE_LABEL",
    "LAYERS",
    "MIN_EXCLUDE_KAPPA",
    "MIN_SUPPORT",
    "SELECTION_MARGIN",
    "CodeSelection",
    "Features",
    "SelectionReport",
    "combined_inputs",
    "exclusion_inputs",
    "make_folds",
    "regressions",
    "story_features",
]

Layer = Literal["rules", "model", "combined"]
LAYERS: tuple[Layer, ...] = ("rules", "model", "combined")

DEFAULT_FOLDS = 5
MIN_SUPPORT = 15
"""Positive (and negative) confirmed stories a code needs before anything but rules suggests it:
three per fold with 5 folds. With 8 (about 100 stories for special_request in the evaluation
set), fold kappas rested on one or two positives each and a trained layer won the selection by
luck, below the rules on held-out stories."""
SELECTION_MARGIN = 0.02
"""Kappa by which a trained candidate must beat the rules to replace them."""
BOOTSTRAP_SAMPLES = 500
BOOTSTRAP_CONFIDENCE = 0.9
"""Share of paired bootstrap resamples of the confirmed stories in which the trained candidate
must beat the rules: the difference must be more than fold noise (a one-sided 90% test)."""
BOOTSTRAP_SEED = 20261201
FOLD_WIN_SHARE = 0.8
"""Share of the folds (4 of 5) in which the trained candidate must beat the rules."""
MIN_EXCLUDE_KAPPA = 0.4
"""Cross-validated kappa the exclusion suggestion needs before it is shown (moderate agreement)."""
STACKER_L2 = 1.0
VECTOR_L2 = 10.0

FloatArray = NDArray[np.float64]


# Features --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """What the rule pipeline says about each story, computed once per training run."""

    codes: tuple[str, ...]
    evidence: NDArray[np.int64]
    """(stories, codes): distinct pieces of rule evidence."""
    valence: FloatArray
    """(stories, 2): one-hot satisfying, dissatisfying (both 0 when unknown)."""
    n_tokens: NDArray[np.int64]
    vectors: FloatArray | None
    """(stories, dims) doc vectors when the pipeline has word vectors or a tensor, else None."""

    @property
    def rule_scores(self) -> FloatArray:
        return 1.0 - np.power(0.5, self.evidence.astype(np.float64))


def valence_inputs(valence: str | None) -> tuple[float, float]:
    return (float(valence == "satisfying"), float(valence == "dissatisfying"))


def pipeline_has_vectors(nlp: Language) -> bool:
    """True when docs of this pipeline carry a meaningful `doc.vector` (vectors or a tensor)."""
    if nlp.vocab.vectors.size > 0:
        return True
    probe = nlp("The agent was kind.")
    return bool(probe.tensor is not None and getattr(probe.tensor, "size", 0) > 0)


def story_features(
    nlp: Language,
    codes: Sequence[str],
    texts: Sequence[str],
    valences: Sequence[str | None],
    *,
    use_vectors: bool,
    batch_size: int = 256,
    keep: list[Doc] | None = None,
) -> Features:
    """Run the rule pipeline (`nlp.build_pipeline`) once over the stories (`keep`: a list that
    receives the docs, so that training need not tokenise the stories again)."""
    index = {code: i for i, code in enumerate(codes)}
    evidence = np.zeros((len(texts), len(codes)), dtype=np.int64)
    n_tokens = np.zeros(len(texts), dtype=np.int64)
    vectors: list[FloatArray] = []
    for row, doc in enumerate(nlp.pipe(texts, batch_size=batch_size)):
        hits: list[RuleHit] = doc._.get(HITS_ATTR) or []
        by_code: dict[str, list[RuleHit]] = {}
        for hit in hits:
            by_code.setdefault(hit.code, []).append(hit)
        for code, code_hits in by_code.items():
            if code in index:
                evidence[row, index[code]] = evidence_count(code_hits)
        n_tokens[row] = len(doc)
        if keep is not None:
            keep.append(doc)
        if use_vectors:
            vectors.append(np.asarray(doc.vector, dtype=np.float64))
    valence = np.array([valence_inputs(v) for v in valences], dtype=np.float64).reshape(-1, 2)
    return Features(
        codes=tuple(codes),
        evidence=evidence,
        valence=valence,
        n_tokens=n_tokens,
        vectors=np.vstack(vectors) if use_vectors and vectors else None,
    )


def combined_inputs(
    rule: float, model: float, satisfying: float, dissatisfying: float
) -> list[float]:
    """The stacker's inputs for one code (the same function at training and suggestion time)."""
    return [rule, logit(model), satisfying, dissatisfying]


def exclusion_inputs(
    rule_total: float, model: float, satisfying: float, dissatisfying: float, n_tokens: int
) -> list[float]:
    """The stacker's inputs for "exclude": all rule evidence, model score, valence, length."""
    return [rule_total, logit(model), satisfying, dissatisfying, math.log1p(n_tokens)]


# Folds -----------------------------------------------------------------------------------------


def make_folds(
    stories: Sequence[LabelledStory], labels: Sequence[str], k: int, seed: int
) -> list[int]:
    """A fold number per story (-1 for stories that only train), stratified on the rarest label.

    Final stories are grouped by the rarest of their positive labels (codes, then "exclude", then
    "none"); each group is shuffled with `seed` and dealt round-robin, continuing from fold to
    fold, so that every fold gets its share of each code's positives.
    """
    folds = [-1] * len(stories)
    final = [i for i, s in enumerate(stories) if s.final]
    frequency = {label: 0 for label in labels}
    for i in final:
        for label in labels:
            if stories[i].label(label):
                frequency[label] += 1
    groups: dict[str, list[int]] = {}
    for i in final:
        present = [label for label in labels if stories[i].label(label)]
        key = min(present, key=lambda label: (frequency[label], label)) if present else "~none"
        groups.setdefault(key, []).append(i)
    rng = random.Random(seed)
    position = 0
    for key in sorted(groups, key=lambda g: (len(groups[g]), g)):
        members = groups[key]
        rng.shuffle(members)
        for i in members:
            folds[i] = position % k
            position += 1
    return folds


# Reports ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One layer's cross-validated figures for one code."""

    layer: Layer
    metrics: CodeMetrics
    fold_kappas: tuple[float | None, ...]
    predicted: NDArray[np.bool_] | None = field(default=None, compare=False, repr=False)
    """The pooled out-of-fold predictions (not serialised), for the paired bootstrap."""

    def to_dict(self) -> dict[str, Any]:
        defined = [k for k in self.fold_kappas if k is not None]
        spread = float(np.std(defined)) if len(defined) > 1 else None
        return {
            **self.metrics.to_dict(),
            "fold_kappas": list(self.fold_kappas),
            "fold_kappa_sd": spread,
        }


@dataclass(frozen=True)
class CodeSelection:
    """The layer chosen for one code (or "exclude"), its threshold, figures and why."""

    code: str
    layer: Layer | None
    """None for "exclude" when it is not suggested."""
    threshold: float
    support: int
    negatives: int
    candidates: dict[str, Candidate]
    reason: str
    stacker: Logistic | None = None
    alternatives: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Threshold (and stacker) of every candidate, so that any layer can be scored (bench)."""

    @property
    def selected(self) -> CodeMetrics | None:
        if self.layer is None:
            return None
        return self.candidates[self.layer].metrics

    @property
    def kappa(self) -> float | None:
        selected = self.selected
        return selected.kappa if selected else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "layer": self.layer,
            "threshold": self.threshold,
            "support": self.support,
            "negatives": self.negatives,
            "kappa": self.kappa,
            "selected": self.selected.to_dict() if self.selected else None,
            "candidates": {name: c.to_dict() for name, c in self.candidates.items()},
            "reason": self.reason,
            "stacker": self.stacker.to_dict() if self.stacker else None,
            "alternatives": self.alternatives,
        }


@dataclass
class SelectionReport:
    """The cross-validated comparison of one training run, per code and over all codes."""

    k: int
    seed: int
    n_final: int
    n_excluded: int
    n_partial: int
    n_codebook_examples: int
    codes: list[CodeSelection]
    exclude: CodeSelection | None
    uses_vectors: bool
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def code(self, key: str) -> CodeSelection:
        for selection in self.codes:
            if selection.code == key:
                return selection
        raise KeyError(key)

    def macro(self, layer: str) -> dict[str, Any]:
        """Macro figures of one layer ("rules", "model", "combined" or "selected") over all
        codes, codes without support counted (F1 0) and named."""
        metrics = []
        for selection in self.codes:
            if layer == "selected":
                assert selection.layer is not None
                metrics.append(selection.candidates[selection.layer].metrics)
            else:
                metrics.append(selection.candidates[layer].metrics)
        return macro_summary(metrics)

    def layers(self) -> dict[str, str]:
        return {s.code: s.layer or "none" for s in self.codes}

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "seed": self.seed,
            "n_final": self.n_final,
            "n_excluded": self.n_excluded,
            "n_partial": self.n_partial,
            "n_codebook_examples": self.n_codebook_examples,
            "uses_vectors": self.uses_vectors,
            "codes": [s.to_dict() for s in self.codes],
            "exclude": self.exclude.to_dict() if self.exclude else None,
            "macro": {name: self.macro(name) for name in ("selected", *LAYERS)},
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def regressions(
    report: SelectionReport | Mapping[str, Any], in_use: Mapping[str, float | None]
) -> list[str]:
    """Why this run must not replace the layers in use: every code whose selected
    cross-validated kappa is below the kappa of the layer in use for it (empty: no regression)."""
    codes = report.codes if isinstance(report, SelectionReport) else report["codes"]
    found = []
    for selection in codes:
        code = selection.code if isinstance(selection, CodeSelection) else selection["code"]
        kappa = selection.kappa if isinstance(selection, CodeSelection) else selection["kappa"]
        previous = in_use.get(code)
        if previous is None:
            continue
        if kappa is None or kappa < previous:
            shown = "undefined" if kappa is None else f"{kappa:.3f}"
            found.append(
                f"{code}: cross-validated kappa {shown} < {previous:.3f} of the layer in use"
            )
    return found


# Candidates ------------------------------------------------------------------------------------


def _kappa_or_zero(metrics: CodeMetrics) -> float:
    return metrics.kappa if metrics.kappa is not None else 0.0


def _pooled(
    label: str,
    layer: Layer,
    y: NDArray[np.bool_],
    predicted: NDArray[np.bool_],
    folds: NDArray[np.int64],
    k: int,
) -> Candidate:
    fold_kappas = []
    for f in range(k):
        mask = folds == f
        fold_kappas.append(
            binary_metrics(label, y[mask], predicted[mask]).kappa if mask.any() else None
        )
    return Candidate(
        layer, binary_metrics(label, y, predicted), tuple(fold_kappas), np.asarray(predicted)
    )


def _nested_threshold_predictions(
    scores: FloatArray, y: NDArray[np.bool_], folds: NDArray[np.int64], k: int, default: float
) -> NDArray[np.bool_]:
    predicted = np.zeros(len(scores), dtype=bool)
    for f in range(k):
        held = folds == f
        if not held.any():
            continue
        threshold = best_threshold(scores[~held], y[~held], default)
        predicted[held] = scores[held] >= threshold
    return predicted


def _stacker_predictions(
    inputs: FloatArray, y: NDArray[np.bool_], folds: NDArray[np.int64], k: int
) -> NDArray[np.bool_]:
    predicted = np.zeros(len(y), dtype=bool)
    for f in range(k):
        held = folds == f
        if not held.any():
            continue
        stacker = fit_logistic(inputs[~held], y[~held], l2=STACKER_L2)
        threshold = best_threshold(stacker.score_matrix(inputs[~held]), y[~held], 0.5)
        predicted[held] = stacker.score_matrix(inputs[held]) >= threshold
    return predicted


def select_label(
    label: str,
    y: NDArray[np.bool_],
    folds: NDArray[np.int64],
    k: int,
    *,
    rule_scores: FloatArray | None,
    rule_threshold: float,
    model_scores: FloatArray,
    inputs: FloatArray,
) -> CodeSelection:
    """Measure the candidates for one label on the final stories that know it, and choose."""
    support = int(y.sum())
    negatives = int(len(y) - support)
    candidates: dict[str, Candidate] = {}
    if rule_scores is not None:
        candidates["rules"] = _pooled(label, "rules", y, rule_scores >= rule_threshold, folds, k)
    model_predicted = _nested_threshold_predictions(model_scores, y, folds, k, 0.5)
    candidates["model"] = _pooled(label, "model", y, model_predicted, folds, k)
    candidates["combined"] = _pooled(
        label, "combined", y, _stacker_predictions(inputs, y, folds, k), folds, k
    )
    model_threshold = best_threshold(model_scores, y, 0.5)
    stacker = fit_logistic(inputs, y, l2=STACKER_L2)
    stacker_threshold = best_threshold(stacker.score_matrix(inputs), y, 0.5)
    alternatives: dict[str, dict[str, Any]] = {
        "model": {"threshold": model_threshold},
        "combined": {"threshold": stacker_threshold, "stacker": stacker.to_dict()},
    }
    if rule_scores is not None:
        alternatives["rules"] = {"threshold": rule_threshold}
    return replace(
        _choose(
            label,
            y,
            support,
            negatives,
            candidates,
            rule_threshold,
            model_threshold,
            stacker,
            stacker_threshold,
        ),
        alternatives=alternatives,
    )


def _choose(
    label: str,
    y: NDArray[np.bool_],
    support: int,
    negatives: int,
    candidates: dict[str, Candidate],
    rule_threshold: float,
    model_threshold: float,
    stacker: Logistic,
    stacker_threshold: float,
) -> CodeSelection:

    if label == EXCLUDE:
        return _select_exclusion(
            y, support, negatives, candidates, model_threshold, stacker, stacker_threshold
        )
    rules_kappa = _kappa_or_zero(candidates["rules"].metrics)
    if support < MIN_SUPPORT or negatives < MIN_SUPPORT:
        few = (
            f"{support} confirmed stories with it"
            if support < MIN_SUPPORT
            else f"{negatives} confirmed stories without it"
        )
        return CodeSelection(
            label,
            "rules",
            rule_threshold,
            support,
            negatives,
            candidates,
            f"stays on rules: {few}, fewer than {MIN_SUPPORT}",
        )
    best: Layer = max(("model", "combined"), key=lambda c: _kappa_or_zero(candidates[c].metrics))
    best_kappa = _kappa_or_zero(candidates[best].metrics)
    shown = ", ".join(f"{name} {_kappa_or_zero(c.metrics):.3f}" for name, c in candidates.items())
    if best_kappa < rules_kappa + SELECTION_MARGIN:
        return CodeSelection(
            label,
            "rules",
            rule_threshold,
            support,
            negatives,
            candidates,
            f"stays on rules: no trained candidate beats them by {SELECTION_MARGIN} "
            f"(kappa {shown})",
        )
    wins = _fold_wins(candidates[best], candidates["rules"])
    needed = math.ceil(FOLD_WIN_SHARE * len(candidates["rules"].fold_kappas))
    if wins < needed:
        return CodeSelection(
            label,
            "rules",
            rule_threshold,
            support,
            negatives,
            candidates,
            f"stays on rules: {best} beats them in {wins} of "
            f"{len(candidates['rules'].fold_kappas)} folds, fewer than {needed} (kappa {shown})",
        )
    sure = _share_better(y, candidates[best], candidates["rules"])
    if sure < BOOTSTRAP_CONFIDENCE:
        return CodeSelection(
            label,
            "rules",
            rule_threshold,
            support,
            negatives,
            candidates,
            f"stays on rules: {best} beats them in only {sure:.0%} of {BOOTSTRAP_SAMPLES} "
            f"bootstrap samples, fewer than {BOOTSTRAP_CONFIDENCE:.0%} (kappa {shown})",
        )
    return CodeSelection(
        label,
        best,
        model_threshold if best == "model" else stacker_threshold,
        support,
        negatives,
        candidates,
        f"{best}: best cross-validated kappa, better than the rules in {sure:.0%} of "
        f"{BOOTSTRAP_SAMPLES} bootstrap samples ({shown})",
        stacker=stacker if best == "combined" else None,
    )


def _fold_wins(candidate: Candidate, rules: Candidate) -> int:
    """Folds in which the candidate's kappa beats the rules' (undefined counts as 0): each fold
    has its own trained model, so this sees the variance of training, not just of stories."""
    return sum(
        1
        for mine, theirs in zip(candidate.fold_kappas, rules.fold_kappas, strict=True)
        if (mine or 0.0) > (theirs or 0.0)
    )


def _share_better(y: NDArray[np.bool_], candidate: Candidate, rules: Candidate) -> float:
    """Share of paired bootstrap resamples of the stories in which the candidate's kappa
    exceeds the rules' (the same resampled stories for both: a paired comparison)."""
    assert candidate.predicted is not None and rules.predicted is not None
    n = len(y)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    better = 0
    for start in range(0, BOOTSTRAP_SAMPLES, 100):
        size = min(100, BOOTSTRAP_SAMPLES - start)
        index = rng.integers(0, n, size=(size, n))
        truth = y[index]
        kappas = []
        for predicted in (candidate.predicted, rules.predicted):
            guess = predicted[index]
            tp = np.sum(truth & guess, axis=1).astype(np.float64)
            fp = np.sum(~truth & guess, axis=1).astype(np.float64)
            fn = np.sum(truth & ~guess, axis=1).astype(np.float64)
            tn = n - tp - fp - fn
            kappas.append(np.nan_to_num(kappa_from_counts(tp, fp, fn, tn), nan=0.0))
        better += int(np.sum(kappas[0] > kappas[1]))
    return better / BOOTSTRAP_SAMPLES


def _select_exclusion(
    y: NDArray[np.bool_],
    support: int,
    negatives: int,
    candidates: dict[str, Candidate],
    model_threshold: float,
    stacker: Logistic,
    stacker_threshold: float,
) -> CodeSelection:
    if support < MIN_SUPPORT or negatives < MIN_SUPPORT:
        return CodeSelection(
            EXCLUDE,
            None,
            1.0,
            support,
            negatives,
            candidates,
            f"not suggested: {support} confirmed exclusions, fewer than {MIN_SUPPORT}"
            if support < MIN_SUPPORT
            else f"not suggested: {negatives} included stories, fewer than {MIN_SUPPORT}",
        )
    best: Layer = max(("model", "combined"), key=lambda c: _kappa_or_zero(candidates[c].metrics))
    kappa = _kappa_or_zero(candidates[best].metrics)
    if kappa < MIN_EXCLUDE_KAPPA:
        return CodeSelection(
            EXCLUDE,
            None,
            1.0,
            support,
            negatives,
            candidates,
            f"not suggested: best cross-validated kappa {kappa:.3f} ({best}) is below "
            f"{MIN_EXCLUDE_KAPPA}",
        )
    return CodeSelection(
        EXCLUDE,
        best,
        model_threshold if best == "model" else stacker_threshold,
        support,
        negatives,
        candidates,
        f"{best}: cross-validated kappa {kappa:.3f}",
        stacker=stacker if best == "combined" else None,
    )


def label_inputs(
    label: str,
    codes: Sequence[str],
    features: Features,
    model_scores: FloatArray,
    rows: NDArray[np.int64],
) -> FloatArray:
    """Stacker inputs of the given stories for one label (model_scores: their scores)."""
    rule = features.rule_scores
    if label == EXCLUDE:
        total = rule.sum(axis=1)
        return np.array(
            [
                exclusion_inputs(
                    float(total[r]),
                    float(m),
                    float(features.valence[r, 0]),
                    float(features.valence[r, 1]),
                    int(features.n_tokens[r]),
                )
                for r, m in zip(rows, model_scores, strict=True)
            ],
            dtype=np.float64,
        ).reshape(-1, 5)
    c = list(codes).index(label)
    return np.array(
        [
            combined_inputs(
                float(rule[r, c]),
                float(m),
                float(features.valence[r, 0]),
                float(features.valence[r, 1]),
            )
            for r, m in zip(rows, model_scores, strict=True)
        ],
        dtype=np.float64,
    ).reshape(-1, 4)


def select_all(
    stories: Sequence[LabelledStory],
    codebook: Codebook,
    features: Features,
    folds: Sequence[int],
    k: int,
    oof: FloatArray,
    labels: Sequence[str],
    *,
    seed: int,
    n_codebook_examples: int,
    started: float,
) -> SelectionReport:
    """Choose per label from the out-of-fold model scores `oof` (stories x labels)."""
    codes = features.codes
    fold_array = np.asarray(folds, dtype=np.int64)
    thresholds = {code.key: code.threshold for code in codebook.active_codes}
    selections: list[CodeSelection] = []
    exclude: CodeSelection | None = None
    for j, label in enumerate(labels):
        rows = np.array(
            [i for i, s in enumerate(stories) if s.final and s.label(label) is not None],
            dtype=np.int64,
        )
        y = np.array([bool(stories[i].label(label)) for i in rows], dtype=bool)
        model_scores = oof[rows, j]
        inputs = label_inputs(label, codes, features, model_scores, rows)
        selection = select_label(
            label,
            y,
            fold_array[rows],
            k,
            rule_scores=None
            if label == EXCLUDE
            else features.rule_scores[rows, codes.index(label)],
            rule_threshold=thresholds.get(label, 0.5),
            model_scores=model_scores,
            inputs=inputs,
        )
        if label == EXCLUDE:
            exclude = selection
        else:
            selections.append(selection)
    return SelectionReport(
        k=k,
        seed=seed,
        n_final=sum(1 for s in stories if s.final),
        n_excluded=sum(1 for s in stories if s.final and s.excluded),
        n_partial=sum(1 for s in stories if not s.final),
        n_codebook_examples=n_codebook_examples,
        codes=selections,
        exclude=exclude,
        uses_vectors=features.vectors is not None,
        seconds=time.perf_counter() - started,
    )
