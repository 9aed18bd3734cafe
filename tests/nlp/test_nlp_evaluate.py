"""Metrics by hand, kappa test vectors, and the cross-validation report's shape."""

from __future__ import annotations

import json
from typing import Protocol

import pytest

from nlp import Codebook, SelectionReport, cohen_kappa, cross_validate, format_table
from nlp.metrics import code_metrics, macro_f1, macro_summary, mean_or_none
from nlp.train import evaluate_rules


class Synthetic(Protocol):
    """The `synthetic` fixture (tests/nlp/conftest.py): n seeded template stories."""

    def __call__(self, n: int, seed: int) -> list[tuple[str, frozenset[str]]]: ...


F = frozenset
CO, SR, EM, OE = "complaint", "special_request", "extra_mile", "owner_error"


def test_code_metrics_by_hand() -> None:
    confirmed = [F({"a"}), F({"a", "b"}), F(), F({"b"}), F({"a"})]
    suggested = [F({"a"}), F({"a"}), F({"a"}), F({"b"}), F()]
    a, b = code_metrics(confirmed, suggested, ["a", "b"])
    # a: tp 2 (stories 0, 1), fp 1 (story 2), fn 1 (story 4), tn 1 (story 3)
    assert (a.tp, a.fp, a.fn, a.tn, a.support) == (2, 1, 1, 1, 3)
    assert a.precision == pytest.approx(2 / 3)
    assert a.recall == pytest.approx(2 / 3)
    assert a.f1 == pytest.approx(2 / 3)
    # kappa for a: Po = 3/5; suggested yes 3/5, confirmed yes 3/5: Pe = .36 + .16 = .52
    assert a.kappa == pytest.approx((0.6 - 0.52) / (1 - 0.52))
    # b: tp 1, fn 1 (story 1), no fp: precision 1, recall .5
    assert (b.precision, b.recall, b.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    assert macro_f1([a, b]) == pytest.approx(2 / 3)


def test_metrics_without_positives_are_zero_and_kappa_undefined() -> None:
    (m,) = code_metrics([F(), F()], [F(), F()], ["a"])
    assert (m.precision, m.recall, m.f1, m.support) == (0.0, 0.0, 0.0, 0)
    assert m.kappa is None  # both raters always say "absent": Pe = 1


def test_macro_counts_codes_without_support_and_names_them() -> None:
    confirmed = [F({"a"}), F({"a"}), F()]
    suggested = [F({"a"}), F(), F({"b"})]
    a, b, c = code_metrics(confirmed, suggested, ["a", "b", "c"])
    assert (a.f1, b.f1, c.f1) == (pytest.approx(2 / 3), 0.0, 0.0)
    assert macro_f1([a, b, c]) == pytest.approx(2 / 9)  # b and c count, with F1 0
    summary = macro_summary([a, b, c])
    assert summary["n_codes"] == 3
    assert summary["codes_without_support"] == ["b", "c"]
    assert summary["codes_without_kappa"] == ["c"]  # c: never confirmed nor suggested
    assert summary["f1_over_supported_codes"] == pytest.approx(2 / 3)
    assert summary["kappa"] == pytest.approx(mean_or_none([a.kappa, b.kappa]))


@pytest.mark.parametrize(
    ("a", "b", "kappa"),
    [
        (list("aabbdcccedda"), list("babbbcccedd" + "d"), 0.684211),
        ([0] * 40 + [1] * 60, [0] * 20 + [1] * 20 + [0] * 10 + [1] * 50, 0.347826),
        (
            [CO, CO, EM, SR, OE, CO, EM, SR, CO, OE],
            [CO, SR, EM, SR, CO, CO, EM, EM, CO, OE],
            0.583333,
        ),
    ],
)
def test_cohen_kappa_test_vectors(a: list[object], b: list[object], kappa: float) -> None:
    assert cohen_kappa(a, b) == pytest.approx(kappa, abs=1e-6)


def test_cohen_kappa_is_null_when_one_label_only() -> None:
    assert cohen_kappa(["x"] * 5, ["x"] * 5) is None
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])


def test_rule_layer_report_by_hand(small_codebook: Codebook) -> None:
    stories = [
        ("Where is my refund?", F({"complaint"})),  # rules: complaint -> tp
        ("The flight was fine.", F({"complaint"})),  # rules: nothing -> fn
        ("They promised a refund.", F()),  # rules: complaint -> fp
        ("Above and beyond, amazing service!", F({"extra_mile"})),  # rules: extra_mile -> tp
        ("A quiet day.", F({"old_code"})),  # retired code: ignored
    ]
    complaint, extra = evaluate_rules(stories, small_codebook)
    assert (complaint.tp, complaint.fp, complaint.fn, complaint.tn) == (1, 1, 1, 2)
    assert (complaint.precision, complaint.recall) == (0.5, 0.5)
    # Po = 3/5; suggested yes 2/5, confirmed yes 2/5: Pe = .16 + .36 = .52
    assert complaint.kappa == pytest.approx((0.6 - 0.52) / 0.48)
    assert (extra.precision, extra.recall, extra.f1, extra.kappa) == (1.0, 1.0, 1.0, 1.0)


def test_cross_validation_report_shape(small_codebook: Codebook, synthetic: Synthetic) -> None:
    stories = synthetic(40, seed=4)
    report = cross_validate(stories, small_codebook, k=4, seed=1, epochs=4)
    assert isinstance(report, SelectionReport)
    assert (report.k, report.n_final, report.n_codebook_examples) == (4, 40, 4)
    assert [s.code for s in report.codes] == ["complaint", "extra_mile"]
    for selection in report.codes:
        assert set(selection.candidates) == {"rules", "model", "combined"}
        for candidate in selection.candidates.values():
            m = candidate.metrics
            assert m.tp + m.fp + m.fn + m.tn == 40 and m.support == 20
            assert len(candidate.fold_kappas) == 4
        assert selection.layer in ("rules", "model", "combined") and selection.reason
    assert report.macro("selected")["f1"] > 0.8  # the synthetic classes are easy to tell apart
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data["macro"]) == {"selected", "rules", "model", "combined"}
    assert set(data["codes"][0]["candidates"]["model"]) >= {
        "code", "precision", "recall", "f1", "support", "kappa", "tp", "fp", "fn", "tn",
        "fold_kappas", "fold_kappa_sd",
    }  # fmt: skip


def test_cross_validation_is_reproducible(small_codebook: Codebook, synthetic: Synthetic) -> None:
    stories = synthetic(32, seed=6)
    first = cross_validate(stories, small_codebook, k=2, seed=3, epochs=2)
    second = cross_validate(stories, small_codebook, k=2, seed=3, epochs=2)
    assert first.to_dict()["codes"] == second.to_dict()["codes"]


def test_too_few_stories_for_the_folds_is_an_error(small_codebook: Codebook) -> None:
    with pytest.raises(ValueError, match="too few for 5-fold"):
        cross_validate([("refund", F({"complaint"}))], small_codebook)


def test_format_table_lists_every_candidate_and_the_macros(
    small_codebook: Codebook, synthetic: Synthetic
) -> None:
    report = cross_validate(synthetic(30, seed=2), small_codebook, k=3, epochs=2)
    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].startswith("3-fold cross-validation on 30 confirmed stories")
    assert "kappa" in lines[1] and "tp" in lines[1]
    assert sum("<- active" in line for line in lines) == 2
    assert any(line.startswith("complaint") and "rules" in line for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("macro")] == [
        "selected", "rules", "model", "combined",
    ]  # fmt: skip
