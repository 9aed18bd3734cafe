"""Cross-validated quality of the suggestions against researcher-confirmed codes."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .codebook import Codebook
from .metrics import CodeMetrics, code_metrics, macro_f1, mean_or_none
from .suggest import Suggester
from .train import DEFAULT_EPOCHS, MIN_CONFIRMED_FOR_MODEL, LabelledStory, fit_textcat

__all__ = ["EvaluationReport", "cross_validate", "format_table"]

Layer = Literal["rules", "model"]


@dataclass(frozen=True)
class EvaluationReport:
    """Per-code metrics of suggested vs confirmed codes, and their means.

    `layer` says what was evaluated: "model" (k-fold cross-validation, a model trained per fold)
    or "rules" (too few confirmed stories for a model: the rules, which learn nothing, are
    measured once on all stories and `k` is 0).
    """

    layer: Layer
    k: int
    seed: int
    n_examples: int
    codes: tuple[CodeMetrics, ...]
    macro_f1: float
    mean_kappa: float | None
    seconds: float
    note: str = ""

    def code(self, key: str) -> CodeMetrics:
        for metrics in self.codes:
            if metrics.code == key:
                return metrics
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "k": self.k,
            "seed": self.seed,
            "n_examples": self.n_examples,
            "codes": [m.to_dict() for m in self.codes],
            "macro_f1": self.macro_f1,
            "mean_kappa": self.mean_kappa,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


def _suggested(suggester: Suggester, texts: Sequence[str]) -> list[frozenset[str]]:
    return [
        frozenset(s.code for s in suggestions if s.suggested)
        for suggestions in suggester.suggest_many(texts)
    ]


def cross_validate(
    examples: Sequence[LabelledStory],
    codebook: Codebook,
    k: int = 5,
    seed: int = 0,
    base: str = "blank:en",
    *,
    epochs: int = DEFAULT_EPOCHS,
    min_examples_for_model: int = MIN_CONFIRMED_FOR_MODEL,
) -> EvaluationReport:
    """Compare suggested with confirmed codes on the given stories.

    With at least `min_examples_for_model` stories: k folds (shuffled with `seed`), a model trained
    on the other folds plus the codebook examples scores each fold, through the same `Suggester`
    path as production; the predictions of all folds are pooled before computing the metrics.
    With fewer stories the rule layer is evaluated instead. Labels outside the active codes are
    ignored.
    """
    started = time.perf_counter()
    codes = [code.key for code in codebook.active_codes]
    active = frozenset(codes)
    texts = [text for text, _ in examples]
    confirmed = [frozenset(labels) & active for _, labels in examples]
    suggester = Suggester(codebook, base=base)
    n = len(examples)
    layer: Layer
    if n < max(min_examples_for_model, 2):
        layer, folds_used = "rules", 0
        suggested = _suggested(suggester, texts)
        note = f"{n} confirmed stories, fewer than {min_examples_for_model}: rule layer evaluated"
    else:
        if k < 2:
            raise ValueError("k must be at least 2")
        layer, folds_used = "model", min(k, n)
        order = list(range(n))
        random.Random(seed).shuffle(order)
        folds = [order[i::folds_used] for i in range(folds_used)]
        predicted: list[frozenset[str] | None] = [None] * n
        for fold in folds:
            held = set(fold)
            train = [examples[i] for i in range(n) if i not in held]
            model = fit_textcat(train, codebook, base=base, epochs=epochs, seed=seed)
            suggester.attach_model(model, codes)
            fold_suggested = _suggested(suggester, [texts[i] for i in fold])
            for index, labels in zip(fold, fold_suggested, strict=True):
                predicted[index] = labels
        suggested = [labels or frozenset() for labels in predicted]
        note = f"{folds_used}-fold cross-validation, one model per fold"
    metrics = code_metrics(confirmed, suggested, codes)
    return EvaluationReport(
        layer=layer,
        k=folds_used,
        seed=seed,
        n_examples=n,
        codes=metrics,
        macro_f1=macro_f1(metrics),
        mean_kappa=mean_or_none([m.kappa for m in metrics]),
        seconds=time.perf_counter() - started,
        note=note,
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(report: EvaluationReport) -> str:
    """A plain-text table of the report, one line per code and one for the means."""
    width = max([len("macro / mean"), *(len(m.code) for m in report.codes)])
    columns = f"{'precision':>9}  {'recall':>6}  {'f1':>5}  {'support':>7}  {'kappa':>6}"
    header = f"{'code':<{width}}  {columns}"
    lines = [
        f"layer: {report.layer} ({report.note}; {report.n_examples} stories)",
        header,
        "-" * len(header),
    ]
    for m in report.codes:
        lines.append(
            f"{m.code:<{width}}  {m.precision:>9.3f}  {m.recall:>6.3f}  {m.f1:>5.3f}  "
            f"{m.support:>7d}  {_number(m.kappa):>6}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'macro / mean':<{width}}  {'':>9}  {'':>6}  {report.macro_f1:>5.3f}  {'':>7}  "
        f"{_number(report.mean_kappa):>6}"
    )
    return "\n".join(lines)
