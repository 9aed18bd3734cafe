"""The learned layers: training, selection per code by cross-validation, saving and suggesting."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
import spacy

from nlp import (
    EXCLUDE,
    MIN_CONFIRMED_FOR_MODEL,
    MIN_SUPPORT,
    MODEL_META_FILE,
    Codebook,
    LabelledStory,
    Suggester,
    TrainResult,
    evaluate_suggester,
    fit_textcat,
    parse_codebook,
    regressions,
    train_suggester,
)
from nlp.labels import EXCLUDE_LABEL
from nlp.logistic import best_threshold, fit_logistic
from nlp.selection import SELECTION_MARGIN, make_folds
from nlp.train import predict_codes


class Synthetic(Protocol):
    """The `synthetic` fixture (tests/nlp/conftest.py): n seeded template stories."""

    def __call__(self, n: int, seed: int) -> list[tuple[str, frozenset[str]]]: ...


EPOCHS = 6
CODES = ("complaint", "extra_mile")
FILLER = [
    "the",
    "day",
    "the",
    "train",
    "the",
    "shop",
    "a",
    "bus",
    "my",
    "aunt",
    "some",
    "tea",
    "a",
    "letter",
    "our",
    "street",
]


def filler(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(n))


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, small_codebook: Codebook, synthetic: Synthetic
) -> TrainResult:
    out = tmp_path_factory.mktemp("models") / "small"
    return train_suggester(synthetic(40, seed=1), small_codebook, out, epochs=EPOCHS, seed=0)


def test_threshold_for_the_app_is_exported() -> None:
    assert isinstance(MIN_CONFIRMED_FOR_MODEL, int) and MIN_CONFIRMED_FOR_MODEL >= 20
    assert MIN_SUPPORT == 15


def test_model_dir_holds_pipeline_selection_and_figures(trained: TrainResult) -> None:
    meta = json.loads((trained.model_dir / MODEL_META_FILE).read_text(encoding="utf-8"))
    assert (meta["format"], meta["codebook_key"], meta["codes"]) == (2, "small", list(CODES))
    assert (meta["n_examples"], meta["n_codebook_examples"]) == (40, 4)
    assert meta["trained_at"].endswith("+00:00") and meta["train_seconds"] > 0
    assert set(meta["layers"]) == set(CODES)
    for code in CODES:
        spec = meta["layers"][code]
        assert spec["layer"] in ("rules", "model", "combined")
        assert 0.0 <= spec["threshold"] <= 1.0
        assert (spec["stacker"] is not None) == (spec["layer"] == "combined")
    evaluation = meta["evaluation"]
    assert (evaluation["k"], evaluation["n_final"]) == (5, 40)
    assert [c["code"] for c in evaluation["codes"]] == list(CODES)
    assert evaluation["macro"]["selected"]["n_codes"] == 2
    assert meta["labels"] == list(CODES) and meta["vectors"] is None
    assert {k: v for k, v in meta.items() if k not in ("labels", "vectors")} == trained.to_dict()
    loaded = spacy.load(trained.model_dir)
    assert loaded.get_pipe_meta("cit_textcat").factory == "textcat_multilabel"


def test_suggestions_follow_the_selected_layers_with_rule_evidence(
    trained: TrainResult, small_codebook: Codebook
) -> None:
    suggester = Suggester(small_codebook, model_dir=trained.model_dir)
    layers = {s.code: s.layer for s in trained.evaluation.codes}
    assert suggester.layers == layers
    complaint_text = "I waited four hours because the flight was cancelled, where is my refund"
    praise_text = "a kind pilot surprised my family with flowers"
    complaint, extra = suggester.suggest(complaint_text, "dissatisfying")
    assert (complaint.source, extra.source) == (layers["complaint"], layers["extra_mile"])
    assert complaint.threshold == trained.evaluation.code("complaint").threshold
    assert complaint.suggested and not extra.suggested
    assert [e.text for e in complaint.evidence] == ["cancelled", "refund"]
    complaint, extra = suggester.suggest(praise_text, "satisfying")
    assert extra.suggested and not complaint.suggested
    assert all(0.0 <= s.score <= 1.0 for s in suggester.suggest("") + suggester.suggest("x"))


def test_a_code_with_too_few_positives_stays_on_rules(
    tmp_path: Path, small_codebook: Codebook
) -> None:
    rng = random.Random(3)
    stories = [
        LabelledStory.confirmed(f"{filler(rng)} wonderful", {"extra_mile"}, CODES)
        for _ in range(MIN_SUPPORT - 1)
    ] + [LabelledStory.confirmed(filler(rng), set(), CODES) for _ in range(30)]
    result = train_suggester(stories, small_codebook, tmp_path / "m", epochs=2)
    extra = result.evaluation.code("extra_mile")
    assert (extra.layer, extra.support) == ("rules", MIN_SUPPORT - 1)
    assert extra.reason == (
        f"stays on rules: {MIN_SUPPORT - 1} confirmed stories with it, fewer than {MIN_SUPPORT}"
    )
    complaint = result.evaluation.code("complaint")
    assert complaint.layer == "rules" and complaint.support == 0
    assert result.evaluation.macro("selected")["codes_without_support"] == ["complaint"]
    suggester = Suggester(small_codebook, model_dir=tmp_path / "m")
    assert suggester.layer == "rules"


def test_perfect_rules_are_never_replaced(tmp_path: Path, small_codebook: Codebook) -> None:
    """The rules decide exactly (complaint iff "refund"): no trained layer can beat them."""
    rng = random.Random(5)
    stories = []
    for i in range(60):
        has = i % 3 == 0
        text = f"{filler(rng)} {'refund' if has else 'receipt'} {filler(rng, 4)}"
        stories.append(LabelledStory.confirmed(text, {"complaint"} if has else set(), CODES))
    report = evaluate_suggester(stories, small_codebook, epochs=4)
    complaint = report.code("complaint")
    assert complaint.candidates["rules"].metrics.kappa == 1.0
    assert complaint.layer == "rules"
    assert "no trained candidate beats them" in complaint.reason


def test_a_model_replaces_rules_that_cannot_see_the_code(small_codebook: Codebook) -> None:
    """No indicator of complaint occurs; the word "dreadful" decides: the model must win."""
    rng = random.Random(7)
    stories = []
    for i in range(80):
        has = i % 2 == 0
        text = f"{filler(rng)} {'dreadful' if has else 'pleasant'} {filler(rng, 4)}"
        stories.append(LabelledStory.confirmed(text, {"complaint"} if has else set(), CODES))
    report = evaluate_suggester(stories, small_codebook, epochs=8)
    complaint = report.code("complaint")
    rules = complaint.candidates["rules"].metrics.kappa or 0.0
    assert complaint.layer in ("model", "combined")
    assert complaint.kappa is not None and complaint.kappa >= rules + SELECTION_MARGIN
    assert complaint.kappa > 0.8


def test_valence_is_a_feature_of_the_combined_layer(
    tmp_path: Path, small_codebook: Codebook
) -> None:
    """Texts say nothing; valence says everything: only the stacker can see it."""
    rng = random.Random(11)
    stories = []
    for i in range(60):
        has = i % 2 == 0
        stories.append(
            LabelledStory.confirmed(
                filler(rng),
                {"complaint"} if has else set(),
                CODES,
                valence="dissatisfying" if has else "satisfying",
            )
        )
    result = train_suggester(stories, small_codebook, tmp_path / "m", epochs=3)
    complaint = result.evaluation.code("complaint")
    assert complaint.layer == "combined" and complaint.kappa == 1.0
    suggester = Suggester(small_codebook, model_dir=tmp_path / "m")
    text = filler(rng)
    assert suggester.suggest(text, "dissatisfying")[0].suggested
    assert not suggester.suggest(text, "satisfying")[0].suggested
    got = [
        s[0].suggested
        for s in suggester.suggest_many([text, text], valences=["satisfying", "dissatisfying"])
    ]
    assert got == [False, True]


def test_exclusions_are_negatives_and_exclude_is_suggested_once_learnt(
    tmp_path: Path, small_codebook: Codebook
) -> None:
    rng = random.Random(13)
    stories = []
    for i in range(80):
        if i % 4 == 0:
            stories.append(
                LabelledStory.exclusion(f"lol {rng.choice(['ok', 'yes', 'hm'])} lol", CODES)
            )
        else:
            complaint = i % 2 == 1
            text = f"{filler(rng)} {'cancelled flight' if complaint else 'kind pilot'}"
            stories.append(
                LabelledStory.confirmed(text, {"complaint"} if complaint else {"extra_mile"}, CODES)
            )
    result = train_suggester(stories, small_codebook, tmp_path / "m", epochs=6)
    report = result.evaluation
    assert report.n_excluded == 20
    assert report.exclude is not None and report.exclude.code == EXCLUDE
    assert report.exclude.layer in ("model", "combined") and (report.exclude.kappa or 0) > 0.8
    # Excluded stories are negatives for every code: 80 stories measured, 20 of them excluded.
    complaint = report.code("complaint").candidates["rules"].metrics
    assert complaint.tp + complaint.fp + complaint.fn + complaint.tn == 80
    assert json.loads((tmp_path / "m" / MODEL_META_FILE).read_text())["labels"][-1] == EXCLUDE_LABEL
    suggester = Suggester(small_codebook, model_dir=tmp_path / "m")
    chatter, story = suggester.score_many(["lol hm lol", f"{filler(rng)} kind pilot"])
    assert chatter.exclude is not None and chatter.exclude.suggested
    assert story.exclude is not None and not story.exclude.suggested


def test_one_coders_decisions_train_but_are_not_measured(small_codebook: Codebook) -> None:
    rng = random.Random(17)
    final = [
        LabelledStory.confirmed(
            f"{filler(rng)} {'dreadful' if i % 2 else 'fine'}",
            {"complaint"} if i % 2 else set(),
            CODES,
        )
        for i in range(30)
    ]
    partial = [
        LabelledStory(f"{filler(rng)} dreadful", {"complaint": True}, excluded=None, final=False),
        LabelledStory(f"{filler(rng)} fine", {"complaint": False}, excluded=None, final=False),
    ]
    report = evaluate_suggester(final + partial, small_codebook, epochs=2)
    assert (report.n_final, report.n_partial) == (30, 2)
    metrics = report.code("complaint").candidates["model"].metrics
    assert metrics.tp + metrics.fp + metrics.fn + metrics.tn == 30


def test_folds_share_out_each_codes_positives() -> None:
    stories = [
        LabelledStory.confirmed(str(i), {"rare"} if i < 10 else set(), ["rare"]) for i in range(100)
    ]
    stories.append(LabelledStory("x", {"rare": True}, final=False))
    folds = make_folds(stories, ["rare"], 5, seed=0)
    assert folds[-1] == -1
    assert sorted(folds[i] for i in range(10)) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [folds[:100].count(f) for f in range(5)] == [20] * 5
    assert make_folds(stories, ["rare"], 5, seed=0) == folds


def test_regressions_name_every_code_below_the_layer_in_use(trained: TrainResult) -> None:
    report = trained.evaluation
    kappa = report.code("complaint").kappa
    assert kappa is not None
    assert regressions(report, {}) == []
    assert regressions(report, {"complaint": kappa}) == []
    found = regressions(report.to_dict(), {"complaint": kappa + 0.01, "extra_mile": None})
    assert len(found) == 1 and found[0].startswith("complaint: cross-validated kappa")


def test_logistic_fit_and_kappa_threshold_by_hand() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    y = np.array([0, 0, 1, 0, 1, 1])
    model = fit_logistic(x, y, l2=0.01)
    probabilities = model.score_matrix(x)
    assert list(np.argsort(probabilities)) == [0, 1, 2, 3, 4, 5]  # monotone in x
    assert model.score([2.5]) == pytest.approx(0.5, abs=0.05)
    assert model.score([5.0]) == pytest.approx(float(probabilities[-1]))
    constant = fit_logistic(x, np.zeros(6), l2=1.0)
    assert constant.weights == (0.0,) and constant.score([9.0]) < 0.1
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert best_threshold(scores, labels, 0.5) == 0.5  # 0.5 already separates them
    assert best_threshold(scores, labels, 0.95) == pytest.approx(0.55)
    assert best_threshold(scores, np.zeros(6), 0.5) == 0.5  # one class: keep the default


def test_logistic_fit_stays_finite_on_separable_data() -> None:
    """Newton's method without damping sent the bias to -2.6e11 on a rare, separable code."""
    x = np.zeros((400, 4))
    x[:31, 0] = 1.0
    y = np.zeros(400, dtype=bool)
    y[:31] = True
    model = fit_logistic(x, y, l2=1.0)
    assert all(abs(w) < 50 for w in (*model.weights, model.bias))
    assert model.score([1.0, 0, 0, 0]) > 0.9 > 0.01 > model.score([0.0, 0, 0, 0])


def test_a_format_1_model_scores_every_code_with_the_classifier(
    tmp_path: Path, small_codebook: Codebook, synthetic: Synthetic
) -> None:
    out = tmp_path / "old"
    train_suggester(synthetic(30, seed=1), small_codebook, out, epochs=2)
    meta = json.loads((out / MODEL_META_FILE).read_text())
    old = {"codebook_key": meta["codebook_key"], "codes": meta["codes"], "metrics": None}
    (out / MODEL_META_FILE).write_text(json.dumps(old))
    suggester = Suggester(small_codebook, model_dir=out)
    complaint, extra = suggester.suggest("refund")
    assert (complaint.source, extra.source) == ("model", "model")
    assert (complaint.threshold, extra.threshold) == (0.5, 0.7)


def test_saved_model_scores_like_the_model_in_memory(
    tmp_path: Path, small_codebook: Codebook, synthetic: Synthetic
) -> None:
    stories = synthetic(40, seed=1)
    out = tmp_path / "m"
    train_suggester(stories, small_codebook, out, epochs=EPOCHS, seed=0)
    in_memory = fit_textcat(stories, small_codebook, epochs=EPOCHS, seed=0, labels=list(CODES))
    loaded = spacy.load(out)
    for text, _ in synthetic(10, seed=9):
        assert loaded(text).cats == pytest.approx(in_memory(text).cats, abs=1e-6)


def test_training_is_deterministic(small_codebook: Codebook, synthetic: Synthetic) -> None:
    texts = [text for text, _ in synthetic(6, seed=5)]
    first = fit_textcat(synthetic(24, seed=3), small_codebook, epochs=3, seed=7)
    second = fit_textcat(synthetic(24, seed=3), small_codebook, epochs=3, seed=7)
    assert predict_codes(first, texts, small_codebook) == predict_codes(
        second, texts, small_codebook
    )
    scores = [score for t in texts for score in first(t).cats.values()]
    assert scores == pytest.approx([score for t in texts for score in second(t).cats.values()])
    assert scores != pytest.approx([0.5] * len(scores), abs=0.05)  # it did learn something


def test_codes_added_after_training_are_scored_by_rules(
    trained: TrainResult, small_data: dict[str, Any]
) -> None:
    small_data["codes"].append(
        {"key": "special_request", "label": "Special", "indicators": {"phrases": ["wheelchair"]}}
    )
    suggester = Suggester(parse_codebook(small_data), model_dir=trained.model_dir)
    suggestions = {s.code: s for s in suggester.suggest("I asked for a wheelchair.")}
    assert list(suggestions) == ["complaint", "extra_mile", "special_request"]
    assert suggestions["special_request"].source == "rules"
    assert suggestions["special_request"].score == 0.5


def test_model_for_another_codebook_is_refused(
    trained: TrainResult, small_data: dict[str, Any]
) -> None:
    small_data["key"] = "other"
    with pytest.raises(ValueError, match="trained for codebook 'small'"):
        Suggester(parse_codebook(small_data), model_dir=trained.model_dir)


def test_retraining_replaces_the_model_but_not_other_directories(
    tmp_path: Path, small_codebook: Codebook, synthetic: Synthetic
) -> None:
    out = tmp_path / "model"
    train_suggester(synthetic(10, seed=1), small_codebook, out, epochs=1)
    result = train_suggester(synthetic(14, seed=1), small_codebook, out, epochs=1)
    assert json.loads((out / MODEL_META_FILE).read_text())["n_examples"] == 14 == result.n_examples
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not replacing"):
        train_suggester(synthetic(10, seed=1), small_codebook, precious, epochs=1)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_the_issues_44_stories_40_complaints_leave_every_code_on_rules(
    tmp_path: Path, small_codebook: Codebook
) -> None:
    """Issue 13: 44 confirmed stories, 40 of them complaints. Four stories without the code
    are too few to measure a model against; it stays on the rules, and says so."""
    rng = random.Random(19)
    stories = [
        LabelledStory.confirmed(f"{filler(rng)} cancelled again", {"complaint"}, CODES)
        for _ in range(40)
    ] + [LabelledStory.confirmed(f"{filler(rng)} thanks", {"extra_mile"}, CODES) for _ in range(4)]
    result = train_suggester(stories, small_codebook, tmp_path / "m", epochs=2)
    complaint = result.evaluation.code("complaint")
    assert complaint.layer == "rules"
    assert complaint.reason == "stays on rules: 4 confirmed stories without it, fewer than 15"
    assert Suggester(small_codebook, model_dir=tmp_path / "m").layer == "rules"
    macro = result.evaluation.macro("selected")
    assert macro["n_codes"] == 2 and macro["codes_without_support"] == []
