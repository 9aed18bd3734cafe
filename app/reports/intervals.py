"""Wilson score intervals and two-proportion z-tests for shares of reported incidents."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959964


def _check_count(x: int, n: int) -> None:
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"need 0 <= x <= n, got x={x}, n={n}")


def wilson_interval(x: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for the share x/n (95% by default), clipped to [0, 1]; None if n == 0.

    (x + z^2/2) / (n + z^2)  +-  z / (n + z^2) * sqrt(x (n - x) / n + z^2 / 4)
    """
    _check_count(x, n)
    if z <= 0:
        raise ValueError("z must be positive")
    if n == 0:
        return None
    z2 = z * z
    return _wilson(x, n, z, z2 / 2, z2, z2 / 4)


def _wilson(
    x: int, n: int, z: float, z2_half: float, z2: float, z2_quarter: float
) -> tuple[float, float]:
    centre = (x + z2_half) / (n + z2)
    half = z / (n + z2) * math.sqrt(x * (n - x) / n + z2_quarter)
    low = 0.0 if x == 0 else max(0.0, centre - half)
    high = 1.0 if x == n else min(1.0, centre + half)
    return low, high


_Z2_95 = Z_95 * Z_95
_Z2_95_HALF = _Z2_95 / 2
_Z2_95_QUARTER = _Z2_95 / 4


def wilson_95(x: int, n: int) -> tuple[float, float]:
    """`wilson_interval(x, n)` for n > 0 (the same arithmetic, the constants computed once): a
    grouped report computes thousands."""
    if x < 0 or x > n or n <= 0:
        _check_count(x, n)
        raise ValueError(f"need n > 0, got n={n}")
    return _wilson(x, n, Z_95, _Z2_95_HALF, _Z2_95, _Z2_95_QUARTER)


@dataclass(frozen=True)
class TwoProportionResult:
    """Difference p1 - p2, pooled z and two-sided p-value; fields left None come with a reason."""

    diff: float | None
    z: float | None
    p_value: float | None
    reason: str | None = None


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> TwoProportionResult:
    """Pooled two-proportion z-test of x1/n1 against x2/n2, two-sided p = erfc(|z| / sqrt 2)."""
    return TwoProportionResult(*two_proportion(x1, n1, x2, n2))


_SQRT_2 = math.sqrt(2)


def two_proportion(
    x1: int, n1: int, x2: int, n2: int
) -> tuple[float | None, float | None, float | None, str | None]:
    """`two_proportion_test` as a tuple (diff, z, p_value, reason), without the result object
    (a grouped report computes thousands)."""
    if x1 < 0 or x1 > n1 or x2 < 0 or x2 > n2:
        _check_count(x1, n1)
        _check_count(x2, n2)
    if n1 == 0 or n2 == 0:
        return None, None, None, "a group has no incidents (total is 0)"
    diff = x1 / n1 - x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    if x1 + x2 == 0 or x1 + x2 == n1 + n2:
        return diff, None, None, f"pooled share is {pooled:g}: the z statistic is undefined"
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = diff / se
    return diff, z, math.erfc(abs(z) / _SQRT_2), None


# Below this many values the arrays cost more than they save.
_MANY = 64


def wilson_95_many(
    xs: Sequence[int], ns: Sequence[int]
) -> tuple[list[float], list[float], list[float]]:
    """`x / n` and `wilson_95(x, n)` for each pair, as three lists (shares, lows, highs): the
    same IEEE operations in the same order on float64 arrays, so the same floats bit for bit
    (counts below 2**53: int products and quotients are exact or correctly rounded alike).
    A grouped report computes tens of thousands. Raises as wilson_95 for a bad pair."""
    if len(xs) < _MANY:
        pairs = [wilson_95(x, n) for x, n in zip(xs, ns, strict=True)]
        return (
            [x / n for x, n in zip(xs, ns, strict=True)],
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )
    x = np.array(xs, dtype=np.int64)
    n = np.array(ns, dtype=np.int64)
    bad = (x < 0) | (x > n) | (n <= 0)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        wilson_95(int(x[index]), int(n[index]))  # raises
    centre = (x + _Z2_95_HALF) / (n + _Z2_95)
    half = Z_95 / (n + _Z2_95) * np.sqrt(x * (n - x) / n + _Z2_95_QUARTER)
    low = np.where(x == 0, 0.0, np.maximum(0.0, centre - half))
    high = np.where(x == n, 1.0, np.minimum(1.0, centre + half))
    return (x / n).tolist(), low.tolist(), high.tolist()


def two_proportion_many(
    x1s: Sequence[int], n1s: Sequence[int], x2s: Sequence[int], n2s: Sequence[int]
) -> list[tuple[float | None, float | None, float | None, str | None]]:
    """`two_proportion` of each quadruple (the same floats bit for bit, see wilson_95_many);
    the rare ones without a z statistic (a total of 0, a pooled share of 0 or 1, a bad count)
    go through two_proportion itself."""
    if len(x1s) < _MANY:
        return [two_proportion(*q) for q in zip(x1s, n1s, x2s, n2s, strict=True)]
    x1 = np.array(x1s, dtype=np.int64)
    n1 = np.array(n1s, dtype=np.int64)
    x2 = np.array(x2s, dtype=np.int64)
    n2 = np.array(n2s, dtype=np.int64)
    pooled_x, pooled_n = x1 + x2, n1 + n2
    plain = (
        (x1 >= 0) & (x1 <= n1) & (x2 >= 0) & (x2 <= n2) & (n1 > 0) & (n2 > 0)
        & (pooled_x > 0) & (pooled_x < pooled_n)
    )  # fmt: skip
    # Only the plain rows enter the arithmetic (the others would divide by zero).
    safe_n1, safe_n2 = np.where(plain, n1, 1), np.where(plain, n2, 1)
    safe_x1, safe_x2 = np.where(plain, x1, 0), np.where(plain, x2, 1)
    diff = safe_x1 / safe_n1 - safe_x2 / safe_n2
    pooled = (safe_x1 + safe_x2) / (safe_n1 + safe_n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / safe_n1 + 1 / safe_n2))
    z = diff / se
    # erfc(|z| / sqrt 2) per row: the quotient on the array is the same IEEE division.
    p_values = map(math.erfc, (np.abs(z) / _SQRT_2).tolist())
    results: list[tuple[float | None, float | None, float | None, str | None]] = list(
        zip(diff.tolist(), z.tolist(), p_values, itertools.repeat(None))
    )
    for index in np.flatnonzero(~plain).tolist():
        results[index] = two_proportion(x1s[index], n1s[index], x2s[index], n2s[index])
    return results
