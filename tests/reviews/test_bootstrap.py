"""Seeded 95 % intervals: reproducible, containing the estimate, and close to the reference
(statsmodels' asymptotic interval for kappa) where the sample is large."""

from __future__ import annotations

import math

import numpy as np
from statsmodels.stats.inter_rater import cohens_kappa

from app.reviews.agreement import cohen_kappa, krippendorff_alpha_nominal
from app.reviews.bootstrap import UnitBootstrap, alpha_interval, nanmean_rows

A5 = [0] * 40 + [1] * 60
B5 = [0] * 20 + [1] * 20 + [0] * 10 + [1] * 50
A8 = ["c", "c", "e", "s", "o", "c", "e", "s", "c", "o"]
B8 = ["c", "s", "e", "s", "c", "c", "e", "e", "c", "o"]


def test_alpha_interval_is_seeded_and_contains_alpha() -> None:
    table = [A8, B8]
    alpha = krippendorff_alpha_nominal(table).value
    assert alpha is not None and round(alpha, 6) == 0.601399
    first = alpha_interval(table, seed=7)
    again = alpha_interval(table, seed=7)
    other = alpha_interval(table, seed=8)
    assert first is not None and other is not None
    assert first == again and first != other
    assert first.low <= alpha <= first.high < 1.0 + 1e-12
    assert first.resamples == 10_000 and "Hayes & Krippendorff" in first.method
    # q(alpha_min): most resamples fall short of 0.800 for an alpha of 0.60.
    assert set(first.prob_below) == {"0.667", "0.800"}
    assert (
        first.prob_below["0.800"] > 0.5 and first.prob_below["0.667"] <= first.prob_below["0.800"]
    )


def test_alpha_interval_edges() -> None:
    perfect = alpha_interval([[1, 2, 1, 2], [1, 2, 1, 2]], seed=1)
    assert perfect is not None and (perfect.low, perfect.high) == (1.0, 1.0)
    assert alpha_interval([[1, 1], [1, 1]], seed=1) is None  # one value: alpha undefined
    assert alpha_interval([[1, None], [None, 2]], seed=1) is None  # nothing pairable


def test_kappa_bootstrap_matches_the_asymptotic_interval_on_100_units() -> None:
    kappa = cohen_kappa(A5, B5).value
    assert kappa is not None and round(kappa, 6) == 0.347826
    boot = UnitBootstrap(100, seed=11, resamples=2000)
    runs = boot.kappas(A5, B5)
    interval = boot.interval(runs)
    assert interval is not None and interval.low < kappa < interval.high
    assert math.isclose(float(np.nanmean(runs)), kappa, abs_tol=0.02)
    table = np.zeros((2, 2))
    for a, b in zip(A5, B5, strict=True):
        table[a, b] += 1
    reference = cohens_kappa(table)
    assert math.isclose(interval.low, reference.kappa_low, abs_tol=0.05)
    assert math.isclose(interval.high, reference.kappa_upp, abs_tol=0.05)
    assert UnitBootstrap(100, seed=11, resamples=2000).interval(runs) == interval


def test_unit_bootstrap_alpha_agrees_with_the_point_estimate() -> None:
    boot = UnitBootstrap(len(A8), seed=3, resamples=500)
    runs = boot.alphas([A8, B8])
    assert runs.shape == (500,)
    # The resample that draws every unit once is the point estimate itself.
    assert math.isclose(float(np.nanmedian(runs)), 0.6, abs_tol=0.2)
    means = nanmean_rows([np.array([1.0, np.nan]), np.array([0.0, np.nan])])
    assert means[0] == 0.5 and math.isnan(means[1])
