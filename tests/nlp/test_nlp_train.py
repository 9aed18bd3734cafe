"""The learned layer: training on a small synthetic set, suggesting from the model, saving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import pytest
import spacy

from nlp import (
    MIN_CONFIRMED_FOR_MODEL,
    MODEL_META_FILE,
    Codebook,
    Suggester,
    TrainResult,
    fit_textcat,
    parse_codebook,
    train_textcat,
)
from nlp.train import predict_codes


class Synthetic(Protocol):
    """The `synthetic` fixture (tests/nlp/conftest.py): n seeded template stories."""

    def __call__(self, n: int, seed: int) -> list[tuple[str, frozenset[str]]]: ...


EPOCHS = 6


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, small_codebook: Codebook, synthetic: Synthetic
) -> TrainResult:
    out = tmp_path_factory.mktemp("models") / "small"
    return train_textcat(synthetic(40, seed=1), small_codebook, out, epochs=EPOCHS, seed=0)


def test_threshold_for_the_app_is_exported() -> None:
    assert isinstance(MIN_CONFIRMED_FOR_MODEL, int) and MIN_CONFIRMED_FOR_MODEL >= 20


def test_model_dir_holds_pipeline_and_metadata(trained: TrainResult) -> None:
    meta = json.loads((trained.model_dir / MODEL_META_FILE).read_text(encoding="utf-8"))
    assert meta["codebook_key"] == "small"
    assert meta["codes"] == ["complaint", "extra_mile"]
    assert meta["n_examples"] == 40
    assert meta["n_codebook_examples"] == 4
    assert meta["trained_at"].endswith("+00:00")
    assert meta["train_seconds"] > 0
    metrics = meta["metrics"]
    assert (metrics["n_train"], metrics["n_test"]) == (32, 8)
    assert [c["code"] for c in metrics["codes"]] == ["complaint", "extra_mile"]
    assert set(metrics["codes"][0]) >= {"precision", "recall", "f1", "support"}
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert meta == trained.to_dict()
    assert (trained.model_dir / "config.cfg").exists()
    loaded = spacy.load(trained.model_dir)
    assert loaded.get_pipe_meta("cit_textcat").factory == "textcat_multilabel"


def test_no_held_out_metrics_below_twenty_stories(
    tmp_path: Path, small_codebook: Codebook, synthetic: Synthetic
) -> None:
    result = train_textcat(synthetic(12, seed=2), small_codebook, tmp_path / "m", epochs=2)
    assert result.metrics is None
    assert result.n_examples == 12


def test_suggestions_come_from_the_model_with_rule_evidence(
    trained: TrainResult, small_codebook: Codebook
) -> None:
    suggester = Suggester(small_codebook, model_dir=trained.model_dir)
    assert suggester.layer == "model"
    complaint_text = "I waited four hours because the flight was cancelled, where is my refund"
    praise_text = "a kind pilot surprised my family with flowers"
    complaint, extra = suggester.suggest(complaint_text)
    assert (complaint.code, complaint.source) == ("complaint", "model")
    assert extra.source == "model"
    assert complaint.score > 0.5 > extra.score
    assert complaint.suggested and not extra.suggested
    assert [e.text for e in complaint.evidence] == ["cancelled", "refund"]
    complaint, extra = suggester.suggest(praise_text)
    assert extra.score > 0.5 > complaint.score
    assert all(0.0 <= s.score <= 1.0 for s in suggester.suggest("") + suggester.suggest("x"))


def test_saved_model_scores_like_the_model_in_memory(
    trained: TrainResult, small_codebook: Codebook, synthetic: Synthetic
) -> None:
    in_memory = fit_textcat(synthetic(40, seed=1), small_codebook, epochs=EPOCHS, seed=0)
    texts = [text for text, _ in synthetic(10, seed=9)]
    loaded = Suggester(small_codebook, model_dir=trained.model_dir)
    for text, suggestions in zip(texts, loaded.suggest_many(texts), strict=True):
        cats = in_memory(text).cats
        assert [s.score for s in suggestions] == pytest.approx(
            [cats["complaint"], cats["extra_mile"]], abs=1e-6
        )


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
    assert suggestions["complaint"].source == "model"


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
    train_textcat(synthetic(10, seed=1), small_codebook, out, epochs=1)
    result = train_textcat(synthetic(14, seed=1), small_codebook, out, epochs=1)
    assert json.loads((out / MODEL_META_FILE).read_text())["n_examples"] == 14 == result.n_examples
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not replacing"):
        train_textcat(synthetic(10, seed=1), small_codebook, precious, epochs=1)
    assert (precious / "notes.txt").read_text() == "keep me"
