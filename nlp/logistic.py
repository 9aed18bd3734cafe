"""L2-regularised logistic regression by Newton's method, and the kappa-maximising threshold.

The stacker that combines rule evidence, model score and valence has a handful of inputs, and the
vector model a hundred or so; both are fitted on at most a few thousand confirmed stories. For a
problem that small, Newton's method (iteratively reweighted least squares) reaches the exact
optimum of the convex loss in a few steps, deterministically, with the numpy that spaCy already
brings; its output is a calibrated probability (the logistic loss is a proper scoring rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Logistic", "best_threshold", "fit_logistic", "kappa_from_counts", "logit"]

FloatArray = NDArray[np.float64]

LOGIT_CLIP = 8.0
BIAS_L2 = 1e-4
"""A whisker of penalty on the bias too, so that separable data keep a finite optimum."""


def logit(p: float) -> float:
    """log(p / (1 - p)), clipped to +-8 so that a score of 0 or 1 stays a finite feature."""
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return max(-LOGIT_CLIP, min(LOGIT_CLIP, math.log(p / (1.0 - p))))


@dataclass(frozen=True)
class Logistic:
    """P(y=1 | x) = sigmoid(x . weights + bias), on inputs scaled by (x - center) / scale."""

    weights: tuple[float, ...]
    bias: float
    center: tuple[float, ...]
    scale: tuple[float, ...]

    def score(self, x: list[float] | tuple[float, ...]) -> float:
        """One row, in plain Python (the suggestion path scores a handful of inputs per code)."""
        z = self.bias
        for value, w, c, s in zip(x, self.weights, self.center, self.scale, strict=True):
            z += w * (value - c) / s
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def score_matrix(self, x: FloatArray) -> FloatArray:
        z = ((x - np.asarray(self.center)) / np.asarray(self.scale)) @ np.asarray(
            self.weights
        ) + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -500, 500))), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": list(self.weights),
            "bias": self.bias,
            "center": list(self.center),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Logistic:
        return cls(
            weights=tuple(float(w) for w in data["weights"]),
            bias=float(data["bias"]),
            center=tuple(float(c) for c in data["center"]),
            scale=tuple(float(s) for s in data["scale"]),
        )


def fit_logistic(
    x: FloatArray, y: NDArray[Any], *, l2: float = 1.0, max_iter: int = 50
) -> Logistic:
    """Minimise the mean logistic loss + l2/(2n) * |w|^2 (the bias is not penalised).

    Inputs are standardised first (columns with no spread keep scale 1), so one `l2` suits
    features of any unit. With one class only the weights stay 0 and the bias is the smoothed
    log-odds of that class.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    center = x.mean(axis=0) if n else np.zeros(d)
    spread = x.std(axis=0) if n else np.ones(d)
    scale = np.where(spread > 1e-9, spread, 1.0)
    z = np.hstack([(x - center) / scale, np.ones((n, 1))])
    positives = float(y.sum())
    prior = (positives + 0.5) / (n + 1.0)
    theta = np.zeros(d + 1)
    theta[-1] = math.log(prior / (1.0 - prior))
    if 0 < positives < n:
        penalty = np.full(d + 1, l2)
        penalty[-1] = BIAS_L2

        def loss(t: FloatArray) -> float:
            margin = z @ t
            # log(1 + e^m) - y m, computed without overflow
            return float(
                np.sum(np.logaddexp(0.0, margin) - y * margin) + 0.5 * np.sum(penalty * t * t)
            )

        current = loss(theta)
        for _ in range(max_iter):
            p = 1.0 / (1.0 + np.exp(-np.clip(z @ theta, -500, 500)))
            gradient = z.T @ (p - y) + penalty * theta
            hessian = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            # Damped Newton: halve the step until the loss goes down (nearly separable data
            # would otherwise send the weights off to infinity).
            factor = 1.0
            while factor > 1e-6:
                candidate = theta - factor * step
                value = loss(candidate)
                if value <= current:
                    break
                factor /= 2.0
            else:
                break
            theta, previous, current = candidate, current, value
            if float(np.max(np.abs(factor * step))) < 1e-8 or previous - current < 1e-10:
                break
    return Logistic(
        weights=tuple(float(w) for w in theta[:-1]),
        bias=float(theta[-1]),
        center=tuple(float(c) for c in center),
        scale=tuple(float(s) for s in scale),
    )


def kappa_from_counts(tp: Any, fp: Any, fn: Any, tn: Any) -> Any:
    """Cohen's kappa of binary predictions from the 2x2 counts (numpy arrays or numbers); nan
    where it is undefined (expected agreement 1)."""
    n = tp + fp + fn + tn
    observed = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected < 1.0, (observed - expected) / (1.0 - expected), np.nan)


def best_threshold(scores: FloatArray, labels: NDArray[Any], default: float) -> float:
    """The cut of `scores` whose binary predictions agree best with `labels` (Cohen's kappa).

    Candidates are the midpoints between consecutive distinct scores (and `default`); ties go
    to the higher threshold (fewer, surer suggestions). Without both classes `default` is kept.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n = len(scores)
    positives = int(labels.sum())
    if n == 0 or positives in (0, n):
        return default
    order = np.argsort(-scores, kind="stable")
    ranked, truth = scores[order], labels[order]
    # Predict the top k as positive, for every k where the score changes.
    cuts = np.flatnonzero(np.diff(ranked) < 0) + 1
    cuts = np.concatenate([cuts, [n]])
    tp = np.cumsum(truth)[cuts - 1].astype(np.float64)
    fp = cuts - tp
    fn = positives - tp
    tn = n - positives - fp
    kappas = np.nan_to_num(kappa_from_counts(tp, fp, fn, tn), nan=-1.0)
    default_kappa = -1.0
    predicted = scores >= default
    d_tp = float(np.sum(predicted & labels))
    d_fp = float(np.sum(predicted & ~labels))
    value = kappa_from_counts(d_tp, d_fp, positives - d_tp, n - positives - d_fp)
    if not np.isnan(value):
        default_kappa = float(value)
    best = int(np.argmax(kappas))  # first maximum: the highest threshold
    if kappas[best] <= default_kappa + 1e-12:
        return default
    k = int(cuts[best])
    if k >= n:
        return float(ranked[-1])
    return float((ranked[k - 1] + ranked[k]) / 2.0)
