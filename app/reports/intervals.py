"""Wilson score intervals and two-proportion z-tests for shares of reported incidents."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
