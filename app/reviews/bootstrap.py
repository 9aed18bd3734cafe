"""95 % confidence intervals for agreement figures, seeded so that a report is reproducible.

Krippendorff's alpha: the bootstrap of Hayes & Krippendorff (2007) as Krippendorff's algorithm
for bootstrapping alpha (2006, revised 2011) defines it: M pairs of values are drawn with
replacement from the observed coincidence matrix (M = the number of pairable value pairs), the
observed disagreement of each resample is set against the *observed* expected disagreement
D_e, and the 2.5 / 97.5 % quantiles of the resampled alphas bound the interval; q(alpha_min) is
the share of resamples below a threshold. For nominal data a drawn pair either disagrees or
not, so the number of disagreeing draws is Binomial(M, share of off-diagonal coincidences).

Cohen's kappa, and the means over codes: the units (stories) are resampled with replacement
(Efron's percentile bootstrap), every code and coder pair of one resample drawing the same
stories, so the overall (mean over codes) figures get intervals too. Resampling units is
drawing multinomial weights per unit; every statistic here is a function of weighted sums of
per-unit features, so a resample is one matrix product (numpy).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.reviews.agreement import Table, is_missing

DEFAULT_SEED = 20070401
DEFAULT_RESAMPLES = 1000
ALPHA_RESAMPLES = 10_000
ALPHA_THRESHOLDS = (0.667, 0.800)
HK_METHOD = "Hayes & Krippendorff (2007) bootstrap of the coincidence matrix"
UNITS_METHOD = "percentile bootstrap over stories"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str
    resamples: int
    seed: int
    prob_below: dict[str, float] = field(default_factory=dict)


def _quantiles(values: np.ndarray) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = np.quantile(finite, [0.025, 0.975])
    return float(low), float(high)


def alpha_interval(table: Table, *, seed: int, resamples: int = ALPHA_RESAMPLES) -> Interval | None:
    """Hayes & Krippendorff's bootstrap interval for nominal alpha; None when alpha is
    undefined (no pairable unit, or one value only)."""
    labels: Counter[Hashable] = Counter()
    pairs = 0
    off_diagonal = 0.0
    for column in zip(*table, strict=True):
        values = [v for v in column if not is_missing(v)]
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        labels.update(counts)
        pairs += m * (m - 1) // 2
        off_diagonal += (m * m - sum(c * c for c in counts.values())) / (m - 1)
    n = sum(labels.values())
    if pairs == 0 or n < 2:
        return None
    expected = (n * n - sum(t * t for t in labels.values())) / (n * (n - 1))
    if expected == 0:
        return None
    disagreeing = off_diagonal / n  # share of the coincidences off the diagonal
    rng = np.random.default_rng(seed)
    draws = rng.binomial(pairs, min(1.0, disagreeing), size=resamples)
    alphas = 1.0 - (draws / pairs) / expected
    bounds = _quantiles(alphas)
    assert bounds is not None
    return Interval(
        low=bounds[0],
        high=bounds[1],
        method=HK_METHOD,
        resamples=resamples,
        seed=seed,
        prob_below={f"{t:.3f}": float(np.mean(alphas < t)) for t in ALPHA_THRESHOLDS},
    )


# Above this many weights (resamples x units) they are drawn again, chunk by chunk, for each
# statistic instead of being kept: the same seed gives the same resamples, memory stays small.
MAX_KEPT_WEIGHTS = 5_000_000
CHUNK = 100


class UnitBootstrap:
    """Multinomial unit weights shared by every statistic of one report section."""

    def __init__(self, n_units: int, *, seed: int, resamples: int = DEFAULT_RESAMPLES) -> None:
        self.n_units = n_units
        self.seed = seed
        self.resamples = resamples
        self._kept = (
            np.vstack(list(self._chunks())) if n_units * resamples <= MAX_KEPT_WEIGHTS else None
        )

    def _chunks(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        if self.n_units == 0:
            yield np.zeros((self.resamples, 0))
            return
        n = self.n_units
        for start in range(0, self.resamples, CHUNK):
            size = min(CHUNK, self.resamples - start)
            # n draws of a unit per resample, counted: the resample's weight of each unit.
            drawn = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
            counts = np.bincount(drawn.ravel(), minlength=size * n)
            yield counts.reshape(size, n).astype(np.float64)

    def _sums(self, features: np.ndarray) -> np.ndarray:
        """Per resample, the weighted sums of the per-unit features."""
        if self._kept is not None:
            return np.asarray(self._kept @ features)
        return np.vstack([chunk @ features for chunk in self._chunks()])

    def interval(self, values: np.ndarray) -> Interval | None:
        bounds = _quantiles(values)
        if bounds is None:
            return None
        return Interval(
            low=bounds[0],
            high=bounds[1],
            method=UNITS_METHOD,
            resamples=self.resamples,
            seed=self.seed,
        )

    def kappas(self, a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> np.ndarray:
        """Cohen's kappa of two coders in every resample (nan where undefined); `a` and `b`
        hold one entry per unit of the section (None: that coder did not code it)."""
        return self.many([("kappa", (a, b))])[0]

    def alphas(self, table: Table) -> np.ndarray:
        """Nominal Krippendorff's alpha in every resample (nan where undefined); the table's
        columns are the section's units."""
        return self.many([("alpha", table)])[0]

    def many(self, statistics: Sequence[tuple[str, Any]]) -> list[np.ndarray]:
        """Several statistics over the same resamples in one pass over the weights:
        ("kappa", (a, b)) or ("alpha", table)."""
        built = [
            _kappa_features(self.n_units, *args)
            if kind == "kappa"
            else _alpha_features(self.n_units, args)
            for kind, args in statistics
        ]
        if not built:
            return []
        sums = self._sums(np.hstack([features for features, _size in built]))
        out: list[np.ndarray] = []
        start = 0
        for (kind, _args), (features, size) in zip(statistics, built, strict=True):
            part = sums[:, start : start + features.shape[1]]
            start += features.shape[1]
            out.append(_kappa(part, size) if kind == "kappa" else _alpha(part, size))
        return out


def _kappa_features(
    n_units: int, a: Sequence[Hashable | None], b: Sequence[Hashable | None]
) -> tuple[np.ndarray, int]:
    both = [i for i in range(len(a)) if not is_missing(a[i]) and not is_missing(b[i])]
    labels = list(dict.fromkeys([a[i] for i in both] + [b[i] for i in both]))
    index = {label: k for k, label in enumerate(labels)}
    size = len(labels)
    features = np.zeros((n_units, size * size))
    for i in both:
        features[i, index[a[i]] * size + index[b[i]]] = 1.0
    return features, size


def _kappa(sums: np.ndarray, size: int) -> np.ndarray:
    cells = sums.reshape(sums.shape[0], size, size)
    n = cells.sum(axis=(1, 2))
    agree = np.trace(cells, axis1=1, axis2=2)
    chance = np.einsum("ri,ri->r", cells.sum(axis=2), cells.sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (n * agree - chance) / (n * n - chance)
    kappa[(n == 0) | (n * n == chance)] = np.nan
    return np.asarray(kappa)


def _alpha_features(n_units: int, table: Table) -> tuple[np.ndarray, int]:
    """Per unit: its value counts, and its off-diagonal coincidences (m^2 - sum c^2)/(m-1)."""
    columns = list(zip(*table, strict=True)) if table else []
    labels = list(dict.fromkeys(v for col in columns for v in col if not is_missing(v)))
    index = {label: k for k, label in enumerate(labels)}
    size = len(labels)
    features = np.zeros((n_units, size + 1))
    for u, column in enumerate(columns):
        values = [v for v in column if not is_missing(v)]
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for label, c in counts.items():
            features[u, index[label]] = c
        features[u, size] = (m * m - sum(c * c for c in counts.values())) / (m - 1)
    return features, size


def _alpha(sums: np.ndarray, size: int) -> np.ndarray:
    totals = sums[:, :size]
    n = totals.sum(axis=1)
    expected = n * n - (totals * totals).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 - (n - 1) * sums[:, size] / expected
    alpha[expected == 0] = np.nan
    return np.asarray(alpha)


def nanmean_rows(columns: list[np.ndarray]) -> np.ndarray:
    """Per resample, the mean over codes of the defined values (nan when none is)."""
    if not columns:
        return np.array([])
    stacked = np.vstack(columns)
    defined = np.isfinite(stacked)
    counts = defined.sum(axis=0)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / counts
    mean[counts == 0] = np.nan
    return np.asarray(mean)
