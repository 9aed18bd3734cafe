"""The learned layer: a spaCy multi-label text classifier trained on confirmed stories."""

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

import spacy
from spacy.language import Language
from spacy.training import Example
from spacy.util import fix_random_seed, minibatch
from thinc.api import Adam

from .codebook import Codebook
from .metrics import CodeMetrics, code_metrics, macro_f1
from .pipeline import load_base
from .suggest import MODEL_META_FILE, TEXTCAT_NAME

__all__ = [
    "DEFAULT_EPOCHS",
    "MIN_CONFIRMED_FOR_MODEL",
    "HeldOutMetrics",
    "TrainResult",
    "fit_textcat",
    "predict_codes",
    "train_textcat",
]

MIN_CONFIRMED_FOR_MODEL = 30
"""Below this many confirmed stories the rules alone carry the suggestions (no model is trained)."""

DEFAULT_EPOCHS = 12
LEARN_RATE = 0.003
HOLDOUT_SHARE = 0.2
MIN_FOR_HOLDOUT = 20
"""A held-out split is measured only from this many confirmed stories on."""

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

LabelledStory = tuple[str, frozenset[str]]


@dataclass(frozen=True)
class HeldOutMetrics:
    """Quality on the held-out share, of a model trained on the rest (plus codebook examples)."""

    n_train: int
    n_test: int
    codes: tuple[CodeMetrics, ...]
    macro_f1: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "codes": [m.to_dict() for m in self.codes],
            "macro_f1": self.macro_f1,
        }


@dataclass(frozen=True)
class TrainResult:
    """What `train_textcat` wrote: the model directory and its `cit-model.json` contents."""

    model_dir: Path
    codebook_key: str
    codes: tuple[str, ...]
    n_examples: int
    n_codebook_examples: int
    trained_at: str
    train_seconds: float
    metrics: HeldOutMetrics | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The `cit-model.json` document."""
        return {
            "codebook_key": self.codebook_key,
            "codes": list(self.codes),
            "n_examples": self.n_examples,
            "n_codebook_examples": self.n_codebook_examples,
            "trained_at": self.trained_at,
            "train_seconds": round(self.train_seconds, 3),
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "settings": self.settings,
        }


def _codebook_examples(codebook: Codebook) -> list[LabelledStory]:
    return [
        (example, frozenset({code.key}))
        for code in codebook.active_codes
        for example in code.examples
    ]


def fit_textcat(
    examples: Sequence[LabelledStory],
    codebook: Codebook,
    *,
    base: str = "blank:en",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    include_codebook_examples: bool = True,
) -> Language:
    """Train a `textcat_multilabel` (bag of words, uni- and bigrams) in memory and return it.

    Labels outside the codebook's active codes are ignored. Each codebook example counts as one
    more story carrying its own code. The component is named `cit_textcat`.
    """
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    codes = [code.key for code in codebook.active_codes]
    data = list(examples)
    if include_codebook_examples:
        data += _codebook_examples(codebook)
    if not data:
        raise ValueError("no training examples (and the codebook has no examples)")
    fix_random_seed(seed)
    nlp = load_base(base)
    textcat = nlp.add_pipe("textcat_multilabel", name=TEXTCAT_NAME, config=TEXTCAT_CONFIG)
    for code in codes:
        textcat.add_label(code)  # type: ignore[attr-defined]
    train = [
        Example.from_dict(
            nlp.make_doc(text), {"cats": {code: float(code in labels) for code in codes}}
        )
        for text, labels in data
    ]
    textcat.initialize(lambda: train, nlp=nlp)  # type: ignore[attr-defined]
    optimizer = Adam(LEARN_RATE, use_averages=False)
    rng = random.Random(seed)
    # About twenty updates per epoch, within 4..64 stories a batch: small sets still learn, and
    # large ones do not pay for an optimiser step over the whole hashed feature table per story.
    batch_size = max(4, min(64, len(train) // 20))
    for _ in range(epochs):
        rng.shuffle(train)
        for batch in minibatch(train, size=batch_size):
            textcat.update(batch, sgd=optimizer, drop=0.2)  # type: ignore[attr-defined]
    return nlp


def predict_codes(
    model: Language, texts: Iterable[str], codebook: Codebook, batch_size: int = 256
) -> list[frozenset[str]]:
    """The codes whose model score reaches the code's threshold, per text."""
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


def _held_out(
    examples: Sequence[LabelledStory],
    codebook: Codebook,
    *,
    base: str,
    epochs: int,
    seed: int,
) -> HeldOutMetrics:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(examples) * HOLDOUT_SHARE))
    test = [examples[i] for i in order[:n_test]]
    train = [examples[i] for i in order[n_test:]]
    model = fit_textcat(train, codebook, base=base, epochs=epochs, seed=seed)
    codes = [code.key for code in codebook.active_codes]
    predicted = predict_codes(model, [text for text, _ in test], codebook)
    metrics = code_metrics([labels for _, labels in test], predicted, codes)
    return HeldOutMetrics(len(train), len(test), metrics, macro_f1(metrics))


def train_textcat(
    examples: Sequence[LabelledStory],
    codebook: Codebook,
    out_dir: Path,
    *,
    base: str = "blank:en",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
) -> TrainResult:
    """Train the classifier on confirmed stories and save it to `out_dir` with `cit-model.json`.

    With at least 20 stories a model is first trained on 80% (plus the codebook examples) and
    measured on the other 20%; the saved model is then trained on all stories. An existing
    model in `out_dir` is replaced (swapped in whole); any other non-empty directory is refused.
    Load it with `Suggester(codebook, model_dir=out_dir)`.
    """
    metrics = None
    if len(examples) >= MIN_FOR_HOLDOUT:
        metrics = _held_out(examples, codebook, base=base, epochs=epochs, seed=seed)
    started = time.perf_counter()
    model = fit_textcat(examples, codebook, base=base, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    codes = tuple(code.key for code in codebook.active_codes)
    result = TrainResult(
        model_dir=Path(out_dir),
        codebook_key=codebook.key,
        codes=codes,
        n_examples=len(examples),
        n_codebook_examples=len(_codebook_examples(codebook)),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        train_seconds=seconds,
        metrics=metrics,
        settings={
            "base": base,
            "epochs": epochs,
            "seed": seed,
            "architecture": TEXTCAT_CONFIG["model"]["@architectures"],
            "learn_rate": LEARN_RATE,
            "codebook_fingerprint": codebook.fingerprint(),
            "spacy_version": spacy.__version__,
        },
    )
    _save(model, result, Path(out_dir))
    return result


def _save(model: Language, result: TrainResult, directory: Path) -> None:
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
    model.to_disk(staging)
    (staging / MODEL_META_FILE).write_text(
        json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if directory.exists():
        directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)
