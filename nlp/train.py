"""The learned layers: a spaCy multi-label text classifier (and, with a pipeline that has vectors,
a logistic regression on doc vectors), trained on what coders decided, chosen per code by
cross-validation against the rules (`nlp.selection`), and saved with its thresholds and figures."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from numpy.typing import NDArray
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import fix_random_seed, minibatch
from thinc.api import Adam

from .codebook import Codebook
from .labels import EXCLUDE, LabelledStory, as_labelled
from .logistic import Logistic, fit_logistic
from .metrics import CodeMetrics, binary_metrics
from .pipeline import build_pipeline
from .selection import (
    DEFAULT_FOLDS,
    EXCLUDE_LABEL,
    VECTOR_L2,
    Features,
    SelectionReport,
    make_folds,
    pipeline_has_vectors,
    select_all,
    story_features,
)
from .suggest import MODEL_FORMAT, MODEL_META_FILE, TEXTCAT_NAME

__all__ = [
    "DEFAULT_EPOCHS",
    "MIN_CONFIRMED_FOR_MODEL",
    "FittedModel",
    "TrainResult",
    "evaluate_rules",
    "evaluate_suggester",
    "fit_model",
    "fit_textcat",
    "predict_codes",
    "train_suggester",
]

MIN_CONFIRMED_FOR_MODEL = 30
"""Below this many confirmed stories the rules alone carry the suggestions (no model is trained)."""

DEFAULT_EPOCHS = 12
LEARN_RATE = 0.003

TEXTCAT_CONFIG: dict[str, Any] = {
    "threshold": 0.5,
    "model": {
        "@architectures": "spacy.TextCatBOW.v3",
        "exclusive_classes": False,
        "ngram_size": 2,
        "no_output_layer": False,
        "length": 131072,
    },
}

FloatArray = NDArray[np.float64]


def _codebook_examples(codebook: Codebook) -> list[LabelledStory]:
    codes = [code.key for code in codebook.active_codes]
    return [
        LabelledStory(
            example,
            {key: key == code.key for key in codes},
            excluded=False,
            final=False,
            source="codebook",
        )
        for code in codebook.active_codes
        for example in code.examples
    ]


def _cats(story: LabelledStory, labels: Sequence[str]) -> dict[str, float]:
    """Known labels only: spaCy's textcat leaves labels missing from `cats` out of the loss."""
    cats: dict[str, float] = {}
    for label in labels:
        value = story.excluded if label == EXCLUDE_LABEL else story.labels.get(label)
        if value is not None:
            cats[label] = float(value)
    return cats


class DocCache:
    """Tokenised stories and light reference docs for the classifier's training examples.

    `Example.from_dict` copies every token into a reference doc, which costs as much as the
    training itself; the classifier's loss reads only `reference.cats`, so each example pairs
    the tokenised story with a one-token reference doc carrying the cats (shared per distinct
    cats), and the tokenised stories are kept for the next fold."""

    def __init__(self, docs: Iterable[Doc] = ()) -> None:
        # Docs of the rule pipeline can be handed in: the classifier reads hashed token
        # attributes, which do not depend on the pipeline or vocabulary that made the doc.
        self._docs: dict[str, Doc] = {doc.text: doc for doc in docs}
        self._references: dict[tuple[tuple[str, float], ...], Doc] = {}
        self._examples: dict[tuple[str, tuple[tuple[str, float], ...]], Example] = {}

    def example(self, nlp: Language, text: str, cats: dict[str, float]) -> Example:
        key = tuple(sorted(cats.items()))
        found = self._examples.get((text, key))
        if found is not None:
            return found
        doc = self._docs.get(text)
        if doc is None:
            doc = self._docs[text] = nlp.make_doc(text)
        reference = self._references.get(key)
        if reference is None:
            reference = Doc(nlp.vocab, words=["_"])
            reference.cats = dict(cats)
            self._references[key] = reference
        example = self._examples[(text, key)] = Example(doc, reference)
        return example


def fit_textcat(
    examples: Sequence[LabelledStory] | Sequence[tuple[str, frozenset[str]]],
    codebook: Codebook,
    *,
    base: str = "blank:en",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    include_codebook_examples: bool = True,
    labels: Sequence[str] | None = None,
    reuse: Language | None = None,
    docs: DocCache | None = None,
) -> Language:
    """Train a `textcat_multilabel` (bag of words, uni- and bigrams) in memory and return it.

    The classifier reads tokens only, so it is trained on a blank pipeline of the codebook's
    language whatever `base` is (kept for the call signature). Labels: the active codes (and
    `EXCLUDE_LABEL` when some story is a known exclusion), or `labels`. A story's unknown labels
    are left out of the loss. Each codebook example counts as one more story of its code. The
    component is named `cit_textcat`. `reuse`: a blank pipeline from an earlier call, whose
    classifier is replaced (building a blank English pipeline costs half a second); `docs`:
    tokenised texts kept across calls on the same `reuse` pipeline (k folds tokenise once).
    `epochs` is the number for up to 1,500 stories; larger sets get proportionally fewer passes
    (at least 5), each with more updates.
    """
    del base
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    codes = [code.key for code in codebook.active_codes]
    data = as_labelled(examples, codes)
    if include_codebook_examples:
        data += _codebook_examples(codebook)
    if labels is None:
        labels = [*codes, *([EXCLUDE_LABEL] if any(s.excluded for s in data) else [])]
    fix_random_seed(seed)
    nlp = reuse if reuse is not None else spacy.blank(codebook.language or "en")
    if TEXTCAT_NAME in nlp.pipe_names:
        nlp.remove_pipe(TEXTCAT_NAME)
    textcat = nlp.add_pipe("textcat_multilabel", name=TEXTCAT_NAME, config=TEXTCAT_CONFIG)
    for label in labels:
        textcat.add_label(label)  # type: ignore[attr-defined]
    if docs is None:
        docs = DocCache()
    train = []
    for story in data:
        cats = _cats(story, labels)
        if cats:
            train.append(docs.example(nlp, story.text, cats))
    if not train:
        raise ValueError("no training examples (and the codebook has no examples)")
    textcat.initialize(lambda: train, nlp=nlp)  # type: ignore[attr-defined]
    optimizer = Adam(LEARN_RATE, use_averages=False)
    rng = random.Random(seed)
    # About twenty updates per epoch, within 4..64 stories a batch: small sets still learn, and
    # large ones do not pay for an optimiser step over the whole hashed feature table per story.
    batch_size = max(4, min(64, len(train) // 20))
    passes = (
        epochs if len(train) <= 1500 else max(min(5, epochs), round(epochs * 1500 / len(train)))
    )
    for _ in range(passes):
        rng.shuffle(train)
        for batch in minibatch(train, size=batch_size):
            textcat.update(batch, sgd=optimizer, drop=0.2)  # type: ignore[attr-defined]
    return nlp


def predict_codes(
    model: Language, texts: Iterable[str], codebook: Codebook, batch_size: int = 256
) -> list[frozenset[str]]:
    """The codes whose text-classifier score reaches the code's codebook threshold, per text."""
    thresholds = {code.key: code.threshold for code in codebook.active_codes}
    with model.select_pipes(enable=[TEXTCAT_NAME]):
        return [
            frozenset(
                code
                for code, score in doc.cats.items()
                if code in thresholds and score >= thresholds[code]
            )
            for doc in model.pipe(texts, batch_size=batch_size)
        ]


@dataclass
class FittedModel:
    """The text classifier and, with vectors, one logistic regression per label on doc vectors."""

    textcat: Language
    labels: tuple[str, ...]
    vector_models: dict[str, Logistic] | None = None

    def scores(self, texts: Sequence[str], vectors: FloatArray | None) -> FloatArray:
        """(texts, labels) model scores: the classifier's, averaged with the vector model's."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        with self.textcat.select_pipes(enable=[TEXTCAT_NAME]):
            for row, doc in enumerate(self.textcat.pipe(texts, batch_size=256)):
                cats = doc.cats
                for j, label in enumerate(self.labels):
                    out[row, j] = cats.get(label, 0.0)
        if self.vector_models is not None and vectors is not None:
            for j, label in enumerate(self.labels):
                vector_model = self.vector_models.get(label)
                if vector_model is not None:
                    out[:, j] = (out[:, j] + vector_model.score_matrix(vectors)) / 2.0
        return out


def _labels_of(stories: Sequence[LabelledStory], codes: Sequence[str]) -> tuple[str, ...]:
    return (*codes, *([EXCLUDE_LABEL] if any(s.excluded for s in stories if s.final) else []))


def fit_model(
    stories: Sequence[LabelledStory],
    codebook: Codebook,
    labels: Sequence[str],
    vectors: FloatArray | None,
    *,
    epochs: int,
    seed: int,
    include_codebook_examples: bool = True,
    reuse: Language | None = None,
    docs: DocCache | None = None,
) -> FittedModel:
    """Fit the model layer on `stories` (`vectors`: their doc vectors, or None)."""
    textcat = fit_textcat(
        stories,
        codebook,
        epochs=epochs,
        seed=seed,
        include_codebook_examples=include_codebook_examples,
        labels=labels,
        reuse=reuse,
        docs=docs,
    )
    vector_models = None
    if vectors is not None:
        vector_models = {}
        for label in labels:
            known = [
                (row, value)
                for row, story in enumerate(stories)
                if (
                    value := (story.excluded if label == EXCLUDE_LABEL else story.labels.get(label))
                )
                is not None
            ]
            if not known:
                continue
            rows = np.array([row for row, _ in known], dtype=np.int64)
            y = np.array([bool(value) for _, value in known], dtype=bool)
            vector_models[label] = fit_logistic(vectors[rows], y, l2=VECTOR_L2)
    return FittedModel(textcat, tuple(labels), vector_models)


@dataclass(frozen=True)
class TrainResult:
    """What `train_suggester` wrote: the model directory and its `cit-model.json` contents."""

    model_dir: Path
    codebook_key: str
    codes: tuple[str, ...]
    n_examples: int
    n_codebook_examples: int
    trained_at: str
    train_seconds: float
    evaluation: SelectionReport
    settings: dict[str, Any] = field(default_factory=dict)

    def layers(self) -> dict[str, dict[str, Any]]:
        return {
            s.code: {
                "layer": s.layer,
                "threshold": s.threshold,
                "stacker": s.stacker.to_dict() if s.stacker else None,
                "alternatives": s.alternatives,
            }
            for s in self.evaluation.codes
        }

    def to_dict(self) -> dict[str, Any]:
        """The `cit-model.json` document (without the vector models: see `_save`)."""
        exclude = self.evaluation.exclude
        return {
            "format": MODEL_FORMAT,
            "codebook_key": self.codebook_key,
            "codes": list(self.codes),
            "layers": self.layers(),
            "exclude": None
            if exclude is None or exclude.layer is None
            else {
                "layer": exclude.layer,
                "threshold": exclude.threshold,
                "stacker": exclude.stacker.to_dict() if exclude.stacker else None,
            },
            "n_examples": self.n_examples,
            "n_codebook_examples": self.n_codebook_examples,
            "trained_at": self.trained_at,
            "train_seconds": round(self.train_seconds, 3),
            "evaluation": self.evaluation.to_dict(),
            "settings": self.settings,
        }


@dataclass
class _Run:
    stories: list[LabelledStory]
    features: Features
    labels: tuple[str, ...]
    report: SelectionReport
    extra: list[LabelledStory]
    blank: Language | None = None
    docs: DocCache | None = None


def _cross_validate(
    examples: Sequence[Any],
    codebook: Codebook,
    *,
    base: str,
    k: int,
    seed: int,
    epochs: int,
) -> _Run:
    started = time.perf_counter()
    codes = tuple(code.key for code in codebook.active_codes)
    stories = as_labelled(examples, codes)
    n_final = sum(1 for s in stories if s.final)
    if k < 2:
        raise ValueError("k must be at least 2")
    if n_final < k:
        raise ValueError(f"{n_final} confirmed stories: too few for {k}-fold cross-validation")
    rules = build_pipeline(codebook, base)
    use_vectors = not base.startswith("blank:") and pipeline_has_vectors(rules)
    kept: list[Doc] = []
    features = story_features(
        rules,
        codes,
        [s.text for s in stories],
        [s.valence for s in stories],
        use_vectors=use_vectors,
        keep=kept,
    )
    labels = _labels_of(stories, codes)
    folds = make_folds(stories, [*codes, EXCLUDE], k, seed)
    oof = np.zeros((len(stories), len(labels)), dtype=np.float64)
    fold_array = np.asarray(folds)
    blank: Language | None = None
    docs = DocCache(kept)
    for f in range(k):
        held = np.flatnonzero(fold_array == f)
        train_rows = np.flatnonzero(fold_array != f)
        fitted = fit_model(
            [stories[i] for i in train_rows],
            codebook,
            labels,
            None if features.vectors is None else features.vectors[train_rows],
            epochs=epochs,
            seed=seed,
            reuse=blank,
            docs=docs,
        )
        blank = fitted.textcat
        oof[held] = fitted.scores(
            [stories[i].text for i in held],
            None if features.vectors is None else features.vectors[held],
        )
    select_labels = [EXCLUDE if label == EXCLUDE_LABEL else label for label in labels]
    report = select_all(
        stories,
        codebook,
        features,
        folds,
        k,
        oof,
        select_labels,
        seed=seed,
        n_codebook_examples=len(_codebook_examples(codebook)),
        started=started,
    )
    return _Run(stories, features, labels, report, [], blank, docs)


def evaluate_rules(
    examples: Sequence[Any], codebook: Codebook, *, base: str = "blank:en"
) -> tuple[CodeMetrics, ...]:
    """The rule layer's figures on the final stories (rules learn nothing: no folds needed)."""
    codes = tuple(code.key for code in codebook.active_codes)
    stories = [s for s in as_labelled(examples, codes) if s.final]
    features = story_features(
        build_pipeline(codebook, base),
        codes,
        [s.text for s in stories],
        [s.valence for s in stories],
        use_vectors=False,
    )
    out = []
    for j, code in enumerate(codebook.active_codes):
        rows = [i for i, s in enumerate(stories) if s.label(code.key) is not None]
        out.append(
            binary_metrics(
                code.key,
                [bool(stories[i].label(code.key)) for i in rows],
                [features.rule_scores[i, j] >= code.threshold for i in rows],
            )
        )
    return tuple(out)


def evaluate_suggester(
    examples: Sequence[Any],
    codebook: Codebook,
    *,
    base: str = "blank:en",
    k: int = DEFAULT_FOLDS,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
) -> SelectionReport:
    """Cross-validated figures of rules, model and combined per code, and the layer each code
    would get, without saving anything (`cit nlp evaluate`)."""
    return _cross_validate(examples, codebook, base=base, k=k, seed=seed, epochs=epochs).report


def train_suggester(
    examples: Sequence[Any],
    codebook: Codebook,
    out_dir: Path,
    *,
    base: str = "blank:en",
    k: int = DEFAULT_FOLDS,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
) -> TrainResult:
    """Cross-validate, choose a layer and threshold per code, train the model on every story and
    save it to `out_dir` with `cit-model.json` (selection, thresholds, stackers and figures).

    `examples` are `LabelledStory` objects (or `(text, codes)` pairs of confirmed stories). An
    existing model in `out_dir` is replaced (swapped in whole); any other non-empty directory is
    refused. Load it with `Suggester(codebook, model_dir=out_dir)`.
    """
    run = _cross_validate(examples, codebook, base=base, k=k, seed=seed, epochs=epochs)
    started = time.perf_counter()
    fitted = fit_model(
        run.stories,
        codebook,
        run.labels,
        run.features.vectors,
        epochs=epochs,
        seed=seed,
        reuse=run.blank,
        docs=run.docs,
    )
    seconds = time.perf_counter() - started
    codes = tuple(code.key for code in codebook.active_codes)
    result = TrainResult(
        model_dir=Path(out_dir),
        codebook_key=codebook.key,
        codes=codes,
        n_examples=len(run.stories),
        n_codebook_examples=len(_codebook_examples(codebook)),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        train_seconds=seconds,
        evaluation=run.report,
        settings={
            "base": base,
            "epochs": epochs,
            "seed": seed,
            "folds": k,
            "architecture": TEXTCAT_CONFIG["model"]["@architectures"],
            "learn_rate": LEARN_RATE,
            "uses_vectors": run.features.vectors is not None,
            "codebook_fingerprint": codebook.fingerprint(),
            "spacy_version": spacy.__version__,
        },
    )
    _save(fitted, result, Path(out_dir))
    return result


VECTOR_FILE = "cit-vectors.json"


def _save(fitted: FittedModel, result: TrainResult, directory: Path) -> None:
    """Write beside `directory`, then swap it in, so a reader never sees half a model."""
    if (
        directory.exists()
        and any(directory.iterdir())
        and not (directory / MODEL_META_FILE).exists()
    ):
        raise ValueError(f"{directory} is not empty and holds no CIT model: not replacing it")
    staging = directory.with_name(f".{directory.name}.staging-{os.getpid()}")
    retired = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    fitted.textcat.to_disk(staging)
    meta = result.to_dict()
    meta["labels"] = list(fitted.labels)
    meta["vectors"] = VECTOR_FILE if fitted.vector_models else None
    if fitted.vector_models:
        (staging / VECTOR_FILE).write_text(
            json.dumps({label: m.to_dict() for label, m in fitted.vector_models.items()}),
            encoding="utf-8",
        )
    (staging / MODEL_META_FILE).write_text(
        json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if directory.exists():
        directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)
