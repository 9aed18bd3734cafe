"""Tests of the Wilson interval (doc test vector 9) and of the two-proportion z-test."""

from __future__ import annotations

import math

import pytest

from app.reports.intervals import (
    Z_95,
    TwoProportionResult,
    two_proportion,
    two_proportion_test,
    wilson_95,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [
        (2, 10, 0.056682, 0.509838),
        (5, 10, 0.236593, 0.763407),
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722467, 1.0),
        (347, 699, 0.459479, 0.533407),
    ],
)
def test_vector_9_wilson(x: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(x, n)
    assert interval is not None
    assert (round(interval[0], 6), round(interval[1], 6)) == (low, high)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 10) or (math.nan, math.nan)
    assert low == 0.0 and abs(high - 0.277533) < 5e-7
    interval = wilson_interval(1, 1)
    assert interval is not None and interval[1] == 1.0 and 0.0 < interval[0] < 1.0
    for bad in [(-1, 10), (11, 10), (0, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, z=0)


def test_wilson_contains_the_share_and_narrows_with_z() -> None:
    for n in range(1, 40):
        for x in range(n + 1):
            interval = wilson_interval(x, n)
            narrow = wilson_interval(x, n, z=1.0)
            assert interval is not None and narrow is not None
            assert 0.0 <= interval[0] <= x / n <= interval[1] <= 1.0
            assert interval[0] <= narrow[0] and narrow[1] <= interval[1]
    assert Z_95 == 1.959964


def test_two_proportion_by_hand() -> None:
    # 30/100 vs 45/100: pooled p = 75/200 = 0.375; SE^2 = 0.375 * 0.625 * (2/100) = 0.0046875;
    # z^2 = 0.15^2 / 0.0046875 = 4.8 exactly, so z = -sqrt(4.8) = -2.190890 and
    # p = erfc(sqrt(4.8) / sqrt(2)) = erfc(sqrt(2.4)) = 0.028460.
    result = two_proportion_test(30, 100, 45, 100)
    assert result.diff is not None and result.z is not None and result.p_value is not None
    assert round(result.diff, 6) == -0.15
    assert round(result.z, 6) == -2.190890
    assert abs(result.z + math.sqrt(4.8)) < 1e-12
    assert round(result.p_value, 6) == 0.028460
    assert result.reason is None
    mirrored = two_proportion_test(45, 100, 30, 100)
    assert mirrored.z == pytest.approx(-result.z)
    assert mirrored.p_value == pytest.approx(result.p_value)


def test_two_proportion_at_the_95_percent_boundary() -> None:
    # equal shares: z = 0 and p = 1
    assert two_proportion_test(5, 10, 50, 100) == TwoProportionResult(0.0, 0.0, 1.0)
    # a |z| of Z_95 gives p = 0.05 to 6 decimals
    assert round(math.erfc(Z_95 / math.sqrt(2)), 6) == 0.05


def test_two_proportion_undefined_cases() -> None:
    empty = two_proportion_test(0, 0, 3, 10)
    assert empty.diff is None and empty.z is None and empty.p_value is None
    assert empty.reason is not None
    none_seen = two_proportion_test(0, 10, 0, 20)
    assert none_seen.diff == 0.0 and none_seen.z is None and none_seen.p_value is None
    assert none_seen.reason is not None
    all_seen = two_proportion_test(10, 10, 20, 20)
    assert all_seen.p_value is None and all_seen.reason is not None
    with pytest.raises(ValueError):
        two_proportion_test(11, 10, 1, 10)


def test_the_reports_fast_paths_give_the_same_floats() -> None:
    """wilson_95 and two_proportion (the trends rows') are wilson_interval and
    two_proportion_test bit for bit, edges and errors included."""
    sizes = [*range(1, 60), 99, 100, 101, 347, 699, 1_000, 4_097, 14_069, 123_457]
    for n in sizes:
        step = max(1, n // 97)
        for x in {*range(0, n + 1, step), n - 1, n}:
            assert wilson_95(x, n) == wilson_interval(x, n), (x, n)
    for bad in [(-1, 10), (11, 10), (0, -1), (0, 0)]:
        with pytest.raises(ValueError):
            wilson_95(*bad)
    cases = [(0, 0, 1, 2), (0, 5, 0, 7), (5, 5, 7, 7), (30, 100, 45, 100), (1, 3, 2, 9)]
    cases += [(x, 40, y, 53) for x in range(0, 41, 3) for y in range(0, 54, 4)]
    for x1, n1, x2, n2 in cases:
        result = two_proportion_test(x1, n1, x2, n2)
        assert two_proportion(x1, n1, x2, n2) == (
            result.diff,
            result.z,
            result.p_value,
            result.reason,
        )
    for bad in [(-1, 10, 1, 10), (1, 10, 11, 10), (0, -1, 0, 1)]:
        with pytest.raises(ValueError):
            two_proportion(*bad)


def _bits(value: float | None) -> bytes | None:
    import struct

    return None if value is None else struct.pack("<d", value)


def test_the_array_versions_equal_the_scalar_ones_bit_for_bit() -> None:
    """wilson_95_many / two_proportion_many (a grouped report's rows) give exactly the floats of
    wilson_95 / two_proportion, edges included (0, all, pooled 0 or 1, totals of 0)."""
    import random

    from app.reports.intervals import two_proportion_many, wilson_95_many

    rng = random.Random(12)
    for size in (3, 200, 5000):
        ns = [rng.choice((1, 2, 5, 37, 699, 10_000, 2_000_003)) for _ in range(size)]
        xs = [rng.choice((0, n, rng.randint(0, n))) for n in ns]
        shares, lows, highs = wilson_95_many(xs, ns)
        for x, n, share, low, high in zip(xs, ns, shares, lows, highs, strict=True):
            expected_low, expected_high = wilson_95(x, n)
            assert (_bits(share), _bits(low), _bits(high)) == (
                _bits(x / n),
                _bits(expected_low),
                _bits(expected_high),
            ), (x, n)
        n1s = [rng.choice((0, 1, 4, 699, 52_001)) for _ in range(size)]
        n2s = [rng.choice((0, 1, 3, 701, 48_999)) for _ in range(size)]
        x1s = [rng.choice((0, n, rng.randint(0, n))) for n in n1s]
        x2s = [rng.choice((0, n, rng.randint(0, n))) for n in n2s]
        for quad, got in zip(
            zip(x1s, n1s, x2s, n2s, strict=True),
            two_proportion_many(x1s, n1s, x2s, n2s),
            strict=True,
        ):
            want = two_proportion(*quad)
            assert [_bits(v) if isinstance(v, float) else v for v in got] == [
                _bits(v) if isinstance(v, float) else v for v in want
            ], quad
    with pytest.raises(ValueError):
        wilson_95_many([1] * 100 + [11], [10] * 101)
    with pytest.raises(ValueError):
        two_proportion_many([1] * 100 + [11], [10] * 101, [1] * 101, [10] * 101)
