"""Tests of the inter-coder agreement statistics against the test vectors of docs/cit-method.md."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable

import pytest

from app.reviews.agreement import (
    REASON_COHEN_PE_1,
    REASON_NO_PAIRABLE_UNIT,
    Statistic,
    agreement_report,
    binary_tables,
    coders_of,
    coding_table,
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_from_counts,
    is_missing,
    krippendorff_alpha_nominal,
    pairwise_cohen_kappa,
    percent_agreement,
    percent_agreement_table,
    perreault_leigh_ir,
    scott_pi,
)

nan = float("nan")


def value(stat: Statistic) -> float:
    assert stat.value is not None, stat.reason
    return stat.value


def close(x: float, expected: float) -> bool:
    return abs(x - expected) < 5e-7


# --------------------------------------------------------------------------- doc test vectors

VECTOR_1 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
]
VECTOR_2 = [
    [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
    [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
    [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
]
VECTOR_3 = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]
VECTOR_4 = [
    ["a", "a", "b", "b", "d", "c", "c", "c", "e", "d", "d", "a"],
    ["b", "a", "b", "b", "b", "c", "c", "c", "e", "d", "d", "d"],
]
VECTOR_5 = [[0] * 40 + [1] * 60, [0] * 20 + [1] * 20 + [0] * 10 + [1] * 50]
VECTOR_6 = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]
CODER_A = [
    "complaint",
    "complaint",
    "extra_mile",
    "special_request",
    "owner_error",
    "complaint",
    "extra_mile",
    "special_request",
    "complaint",
    "owner_error",
]
CODER_B = [
    "complaint",
    "special_request",
    "extra_mile",
    "special_request",
    "complaint",
    "complaint",
    "extra_mile",
    "extra_mile",
    "complaint",
    "owner_error",
]
CODER_C: list[str | None] = [*CODER_A[:5], None, *CODER_A[6:9], "complaint"]
CODEBOOK = ["complaint", "special_request", "extra_mile", "owner_error"]


def test_vector_1_krippendorff_2011_four_coders() -> None:
    alpha = krippendorff_alpha_nominal(VECTOR_1)
    assert round(value(alpha), 6) == 0.743421
    assert alpha.n_units == 11  # unit 12 has a single value and is ignored


def test_vector_2_three_coders_with_gaps() -> None:
    assert round(value(krippendorff_alpha_nominal(VECTOR_2)), 6) == 0.691358


def test_vector_3_binary() -> None:
    assert round(value(krippendorff_alpha_nominal(VECTOR_3)), 6) == 0.095238


def test_vector_4_letters() -> None:
    a, b = VECTOR_4
    assert round(value(krippendorff_alpha_nominal(VECTOR_4)), 6) == 0.691964
    assert round(value(cohen_kappa(a, b)), 6) == 0.684211


def test_vector_5_two_by_hundred() -> None:
    a, b = VECTOR_5
    po = percent_agreement(a, b)
    assert close(value(po), 0.70) and po.n_units == 100
    assert round(value(cohen_kappa(a, b)), 6) == 0.347826
    assert round(value(krippendorff_alpha_nominal(VECTOR_5)), 6) == 0.343956


def test_vector_6_fleiss_counts() -> None:
    kappa = fleiss_kappa_from_counts(VECTOR_6)
    assert round(value(kappa), 6) == 0.209931
    assert kappa.n_units == 10


@pytest.mark.parametrize(
    ("po", "k", "expected"),
    [(0.80, 3, 0.836660), (0.70, 4, 0.774597), (0.75, 2, 0.707107), (0.50, 2, 0.0)],
)
def test_vector_7_perreault_leigh(po: float, k: int, expected: float) -> None:
    assert round(perreault_leigh_ir(po, k), 6) == expected


def test_vector_8_codebook_single_label() -> None:
    a, b = CODER_A, CODER_B
    po = percent_agreement(a, b)
    assert close(value(po), 0.70)
    assert round(value(cohen_kappa(a, b)), 6) == 0.583333
    assert round(value(scott_pi(a, b)), 6) == 0.580420
    assert round(value(fleiss_kappa([a, b])), 6) == 0.580420
    assert round(value(krippendorff_alpha_nominal([a, b])), 6) == 0.601399
    assert round(perreault_leigh_ir(value(po), len(CODEBOOK)), 6) == 0.774597


def test_vector_8_third_coder_with_a_missing_story() -> None:
    alpha = krippendorff_alpha_nominal([CODER_A, CODER_B, CODER_C])
    assert round(value(alpha), 6) == 0.624161
    assert alpha.n_units == 10


def test_vector_8_from_a_unit_coder_mapping() -> None:
    codings: dict[int, dict[str, str | None]] = {
        story: {"A": CODER_A[story], "B": CODER_B[story], "C": CODER_C[story]}
        for story in range(10)
    }
    del codings[5]["C"]  # an absent coder is as missing as an explicit None
    table = coding_table(codings)
    assert table.coders == ("A", "B", "C")
    assert table.units == tuple(range(10))
    assert round(value(krippendorff_alpha_nominal(table.rows)), 6) == 0.624161
    two = coding_table(codings, coders=["B", "A"])
    assert round(value(cohen_kappa(two.rows[1], two.rows[0])), 6) == 0.583333
    # Fleiss over A, B, C only counts the 9 stories all three coded.
    assert fleiss_kappa(table.rows).n_units == 9


def test_vector_10_kappa_is_null_when_both_coders_use_one_label() -> None:
    kappa = cohen_kappa(["complaint"] * 5, ["complaint"] * 5)
    assert kappa.value is None
    assert kappa.reason == REASON_COHEN_PE_1
    assert kappa.n_units == 5


def test_vector_10_alpha_is_null_when_no_unit_has_two_coders() -> None:
    alpha = krippendorff_alpha_nominal([[1, None, nan], [None, 2, nan], [None, None, 3]])
    assert alpha == Statistic(None, 0, REASON_NO_PAIRABLE_UNIT)
    assert krippendorff_alpha_nominal([]).value is None


# --------------------------------------------------------------------------- other edge cases


def test_alpha_is_null_when_only_one_value_appears() -> None:
    alpha = krippendorff_alpha_nominal([[1, 1, None], [1, 1, 2]])
    assert alpha.value is None and alpha.reason is not None and alpha.n_units == 2


def test_kappa_is_zero_not_null_when_each_coder_uses_a_different_single_label() -> None:
    assert cohen_kappa([1, 1, 1], [2, 2, 2]) == Statistic(0.0, 3)


def test_two_coder_statistics_skip_units_either_coder_missed() -> None:
    a = [1, 2, None, 1, nan]
    b = [1, 2, 1, None, 2]
    assert percent_agreement(a, b) == Statistic(1.0, 2)
    assert percent_agreement([None], [1]).value is None
    assert cohen_kappa([None], [1]).reason == "no unit was coded by both coders"
    assert scott_pi([1, 1], [1, 1]).value is None


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ValueError):
        krippendorff_alpha_nominal([[1, 2], [1]])


def test_fleiss_counts_need_a_constant_number_of_raters() -> None:
    uneven = fleiss_kappa_from_counts([[1, 1], [2, 1]])
    assert uneven.value is None and uneven.reason is not None and "different" in uneven.reason
    single = fleiss_kappa_from_counts([[1, 0], [0, 1]])
    assert single.value is None and single.reason is not None
    assert fleiss_kappa_from_counts([]).value is None
    assert fleiss_kappa_from_counts([[3, 0], [3, 0]]).value is None  # one category used
    with pytest.raises(ValueError):
        fleiss_kappa_from_counts([[1, 1], [2]])
    with pytest.raises(ValueError):
        fleiss_kappa_from_counts([[3, -1], [1, 1]])


def test_fleiss_from_table_counts_only_units_every_coder_rated() -> None:
    table: list[list[int | None]] = [[1, 2, 1, None], [1, 2, 2, 1], [1, 2, 1, 1]]
    kappa = fleiss_kappa(table)
    assert kappa.n_units == 3
    assert kappa == fleiss_kappa_from_counts([[3, 0], [0, 3], [2, 1]])
    assert fleiss_kappa([[1, None], [None, 1]]).value is None
    assert fleiss_kappa([[1, 2]]).value is None


def test_percent_agreement_over_many_coders() -> None:
    table: list[list[int | None]] = [[1, 1, 2, None], [1, 2, 2, 1], [1, None, None, None]]
    # units 1-3 have >= 2 coders; unit 1 and 3 agree fully, unit 2 does not; unit 4 is ignored
    assert percent_agreement_table(table) == Statistic(2 / 3, 3)
    assert percent_agreement_table([[1], [None]]).value is None


def test_missing_values_are_none_and_nan_only() -> None:
    assert is_missing(None) and is_missing(nan)
    assert not is_missing(0) and not is_missing("") and not is_missing(0.0)


def test_ir_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        perreault_leigh_ir(0.5, 1)
    with pytest.raises(ValueError):
        perreault_leigh_ir(1.5, 2)
    assert perreault_leigh_ir(0.2, 4) == 0.0
    assert perreault_leigh_ir(1.0, 4) == 1.0


# --------------------------------------------------------------------------- multi-label


def _single_label_codings() -> dict[int, dict[str, frozenset[str] | None]]:
    return {
        story: {"A": frozenset({CODER_A[story]}), "B": frozenset({CODER_B[story]})}
        for story in range(10)
    }


def test_binary_tables_mark_present_absent_and_missing() -> None:
    codings: dict[str, dict[str, frozenset[str] | None]] = {
        "s1": {"A": frozenset({"complaint", "extra_mile"}), "B": frozenset()},
        "s2": {"A": None, "B": frozenset({"complaint"})},
        "s3": {"B": frozenset({"owner_error"})},
    }
    tables = binary_tables(codings, ["complaint", "extra_mile", "owner_error"])
    assert tables["complaint"] == [[1, None, None], [0, 1, 0]]
    assert tables["extra_mile"] == [[1, None, None], [0, 0, 0]]
    assert tables["owner_error"] == [[0, None, None], [0, 0, 1]]
    assert coders_of(codings) == ("A", "B")
    only_b = binary_tables(codings, ["complaint", "owner_error"], coders=["B"])
    assert only_b == {"complaint": [[0, 1, 0]], "owner_error": [[0, 0, 1]]}
    with pytest.raises(ValueError):
        binary_tables(codings, ["complaint"])  # extra_mile is not in the codebook


def test_agreement_report_per_code_by_hand() -> None:
    report = agreement_report(_single_label_codings(), CODEBOOK)
    assert report.coders == ("A", "B")
    assert report.k == 4
    complaint = report.per_code["complaint"]
    # A: 1100010010, B: 1000110010 -> Po 8/10; 4 and 4 ones: Pe = .16 + .36 = .52
    assert close(value(complaint.percent_agreement), 0.8)
    assert complaint.percent_agreement.n_units == 10
    assert round(value(complaint.cohen_kappa[("A", "B")]), 6) == round((0.8 - 0.52) / 0.48, 6)
    assert round(value(complaint.perreault_leigh_ir), 6) == round(math.sqrt(0.6), 6)  # k = 2


def test_agreement_report_matches_the_plain_functions() -> None:
    codings = _single_label_codings()
    report = agreement_report(codings, CODEBOOK)
    tables = binary_tables(codings, CODEBOOK)
    for code in CODEBOOK:
        a, b = tables[code]
        figures = report.per_code[code]
        assert figures.percent_agreement == percent_agreement(a, b)
        assert figures.cohen_kappa == {("A", "B"): cohen_kappa(a, b)}
        assert figures.fleiss_kappa == fleiss_kappa([a, b])
        assert figures.krippendorff_alpha == krippendorff_alpha_nominal([a, b])
    overall = report.overall
    pos = [value(report.per_code[c].percent_agreement) for c in CODEBOOK]
    alphas = [value(report.per_code[c].krippendorff_alpha) for c in CODEBOOK]
    assert close(value(overall.percent_agreement), sum(pos) / 4)
    assert close(value(overall.krippendorff_alpha), sum(alphas) / 4)
    assert overall.krippendorff_alpha.n_units == 10
    # overall Ir: the mean of the per-code Ir values, each with k = 2 (cit-method.md), not
    # Ir of the mean Po with k = the number of codes; k does not change it.
    irs = [perreault_leigh_ir(po, 2) for po in pos]
    assert close(value(overall.perreault_leigh_ir), sum(irs) / 4)
    assert not close(value(overall.perreault_leigh_ir), perreault_leigh_ir(sum(pos) / 4, 4))
    assert close(
        value(agreement_report(codings, CODEBOOK, k=6).overall.perreault_leigh_ir), sum(irs) / 4
    )
    # The means run over the codes asked for: a never-used code's Po of 1 is left out.
    two = agreement_report(codings, CODEBOOK, overall_codes=CODEBOOK[:2])
    assert close(value(two.overall.percent_agreement), sum(pos[:2]) / 2)


def test_agreement_report_skips_undefined_codes_in_the_mean() -> None:
    codings: dict[str, dict[str, frozenset[str] | None]] = {
        "s1": {"A": frozenset({"complaint"}), "B": frozenset({"complaint"}), "C": None},
        "s2": {"A": frozenset(), "B": frozenset({"complaint"}), "C": frozenset()},
        "s3": {"A": frozenset({"complaint"}), "B": frozenset({"complaint"})},
    }
    report = agreement_report(codings, ["complaint", "extra_mile"])
    extra = report.per_code["extra_mile"]  # nobody ever used it
    assert extra.krippendorff_alpha.value is None
    assert extra.cohen_kappa[("A", "B")].value is None
    assert value(extra.percent_agreement) == 1.0
    complaint = report.per_code["complaint"]
    assert report.overall.krippendorff_alpha == complaint.krippendorff_alpha
    assert complaint.fleiss_kappa.n_units == 1  # only s2 was coded by A, B and C
    assert complaint.cohen_kappa[("A", "C")].n_units == 1
    assert set(report.overall.cohen_kappa) == {("A", "B"), ("A", "C"), ("B", "C")}
    nobody = agreement_report({"s1": {"A": frozenset({"complaint"})}}, ["complaint"])
    assert nobody.overall.krippendorff_alpha.value is None
    assert nobody.overall.krippendorff_alpha.reason is not None
    assert nobody.overall.perreault_leigh_ir.value is None


# --------------------------------------------------------------------------- properties


def _random_table(
    rng: random.Random, coders: int, units: int, labels: int, missing: float
) -> list[list[Hashable | None]]:
    return [
        [None if rng.random() < missing else rng.randrange(labels) for _ in range(units)]
        for _ in range(coders)
    ]


def test_alpha_of_two_identical_coders_is_one() -> None:
    rng = random.Random(20240601)
    for _ in range(200):
        units = rng.randrange(2, 40)
        row = [rng.randrange(5) for _ in range(units)]
        row[0], row[1] = 0, 1  # at least two distinct labels
        assert value(krippendorff_alpha_nominal([row, list(row)])) == pytest.approx(1.0)
        assert value(cohen_kappa(row, row)) == pytest.approx(1.0)


def test_kappa_is_symmetric_and_fleiss_of_two_is_scott() -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(300):
        a, b = _random_table(rng, 2, rng.randrange(1, 30), rng.randrange(1, 5), 0.2)
        ab, ba = cohen_kappa(a, b), cohen_kappa(b, a)
        assert (ab.value is None) == (ba.value is None)
        if ab.value is not None and ba.value is not None:
            assert ab.value == pytest.approx(ba.value)
        pi, fleiss = scott_pi(a, b), fleiss_kappa([a, b])
        assert pi.n_units == fleiss.n_units
        if pi.value is not None and fleiss.value is not None:
            assert fleiss.value == pytest.approx(pi.value)
            checked += 1
    assert checked > 100


def test_two_coder_alpha_is_small_sample_corrected_scott_pi() -> None:
    rng = random.Random(11)
    for _ in range(200):
        a, b = _random_table(rng, 2, rng.randrange(2, 30), rng.randrange(2, 5), 0.0)
        pi, alpha = scott_pi(a, b), krippendorff_alpha_nominal([a, b])
        if pi.value is None:
            assert alpha.value is None
            continue
        n = pi.n_units
        assert value(alpha) == pytest.approx(1 - (2 * n - 1) / (2 * n) * (1 - pi.value))


def test_table_functions_agree_with_two_coder_functions() -> None:
    rng = random.Random(3)
    for _ in range(200):
        table = _random_table(rng, rng.randrange(2, 5), rng.randrange(1, 25), 3, 0.3)
        for (i, j), stat in pairwise_cohen_kappa(table).items():
            assert stat == cohen_kappa(table[i], table[j])
        if len(table) == 2:
            many, two = percent_agreement_table(table), percent_agreement(*table)
            assert (many.value, many.n_units) == (two.value, two.n_units)


def test_alpha_ignores_the_order_of_coders_and_units() -> None:
    rng = random.Random(5)
    for _ in range(100):
        table = _random_table(rng, 3, 20, 4, 0.3)
        alpha = krippendorff_alpha_nominal(table)
        order = list(range(20))
        rng.shuffle(order)
        shuffled = [[row[u] for u in order] for row in reversed(table)]
        other = krippendorff_alpha_nominal(shuffled)
        assert other.n_units == alpha.n_units
        if alpha.value is not None and other.value is not None:
            assert other.value == pytest.approx(alpha.value)
