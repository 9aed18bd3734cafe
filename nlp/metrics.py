"""Agreement and retrieval metrics for multi-label coding, computed per code on binary presence."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CodeMetrics",
    "binary_metrics",
    "code_metrics",
    "cohen_kappa",
    "macro_f1",
    "macro_summary",
    "mean_or_none",
]


def cohen_kappa(rater_a: Sequence[Hashable], rater_b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa `(Po - Pe) / (1 - Pe)` with each rater's own marginals.

    Returns None when Pe == 1 (both raters always use one and the same label) or with no units:
    kappa is undefined there, and reporting 1 would overstate agreement.
    """
    if len(rater_a) != len(rater_b):
        raise ValueError("both raters must rate the same units")
    n = len(rater_a)
    if n == 0:
        return None
    observed = sum(1 for a, b in zip(rater_a, rater_b, strict=True) if a == b) / n
    counts_a = Counter(rater_a)
    counts_b = Counter(rater_b)
    expected = sum(counts_a[label] * counts_b[label] for label in counts_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class CodeMetrics:
    """Suggested vs confirmed for one code. Precision/recall are 0 when their denominator is 0."""

    code: str
    precision: float
    recall: float
    f1: float
    support: int
    """Stories confirmed with this code."""
    kappa: float | None
    """Cohen's kappa between suggested and confirmed presence of the code; None if undefined."""
    tp: int
    fp: int
    fn: int
    tn: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def code_metrics(
    confirmed: Sequence[frozenset[str]],
    suggested: Sequence[frozenset[str]],
    codes: Sequence[str],
) -> tuple[CodeMetrics, ...]:
    """Per-code precision, recall, F1, support and kappa of suggested against confirmed codes."""
    if len(confirmed) != len(suggested):
        raise ValueError("confirmed and suggested must describe the same stories")
    results = []
    for code in codes:
        gold = [code in labels for labels in confirmed]
        pred = [code in labels for labels in suggested]
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g and p)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if p and not g)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g and not p)
        tn = len(gold) - tp - fp - fn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        results.append(
            CodeMetrics(
                code=code,
                precision=precision,
                recall=recall,
                f1=f1,
                support=tp + fn,
                kappa=cohen_kappa(pred, gold),
                tp=tp,
                fp=fp,
                fn=fn,
                tn=tn,
            )
        )
    return tuple(results)


def binary_metrics(
    code: str, gold: Sequence[bool] | Any, predicted: Sequence[bool] | Any
) -> CodeMetrics:
    """`code_metrics` for one code from two boolean sequences (lists or numpy arrays)."""
    gold_list = [bool(g) for g in gold]
    predicted_list = [bool(p) for p in predicted]
    yes = frozenset({code})
    no: frozenset[str] = frozenset()
    return code_metrics(
        [yes if g else no for g in gold_list],
        [yes if p else no for p in predicted_list],
        [code],
    )[0]


def macro_f1(metrics: Sequence[CodeMetrics]) -> float:
    """Unweighted mean F1 over *all* the given codes.

    A code without support (never confirmed in the sample) counts with F1 0 rather than being
    left out: a suggester cannot be shown to handle a code nobody confirmed, and a mean that drops
    it overstates quality. `macro_summary` names those codes beside the mean.
    """
    return sum(m.f1 for m in metrics) / len(metrics) if metrics else 0.0


def macro_summary(metrics: Sequence[CodeMetrics]) -> dict[str, Any]:
    """Means over all codes (precision, recall, F1 with codes without support counted as 0;
    kappa over the codes where it is defined), and which codes lack support or a kappa."""
    n = len(metrics)
    supported = [m for m in metrics if m.support > 0]
    return {
        "n_codes": n,
        "precision": sum(m.precision for m in metrics) / n if n else 0.0,
        "recall": sum(m.recall for m in metrics) / n if n else 0.0,
        "f1": macro_f1(metrics),
        "kappa": mean_or_none([m.kappa for m in metrics]),
        "codes_without_support": [m.code for m in metrics if m.support == 0],
        "codes_without_kappa": [m.code for m in metrics if m.kappa is None],
        "f1_over_supported_codes": (
            sum(m.f1 for m in supported) / len(supported) if supported else None
        ),
    }


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None when none is defined."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None
