"""bench.quality reads the evaluation set format, checks texts by SHA-1, and measures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench.quality import (
    EvalSetError,
    human_ceiling,
    labelled,
    load_eval_set,
    metrics_for,
    sha1,
)

CODES = ("complaint", "special_request", "extra_mile", "owner_error")
TWEETS = [
    ("570306133677760513", "@SkyLineAir lost my bag again, third time"),
    ("570306133677760514", "@SkyLineAir thanks!!"),
]
QUERIES = ["I left my card in a taxi, please freeze it", "How do I get a second card for my son?"]


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def made_up(tmp_path: Path) -> tuple[Path, Path]:
    datasets = tmp_path / "datasets"
    (datasets / "airline-tweets").mkdir(parents=True)
    (datasets / "banking77").mkdir()
    with (datasets / "airline-tweets" / "Tweets.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tweet_id", "airline_sentiment", "text"])
        for key, text in TWEETS:
            writer.writerow([key, "x", text])
    with (datasets / "banking77" / "test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        for text in QUERIES:
            writer.writerow([text, "x"])
    data = tmp_path / "data"
    data.mkdir()
    stories = [
        {"id": f"air-{key}", "source": "airline", "file": "airline-tweets/Tweets.csv",
         "key_column": "tweet_id", "key": key, "text_column": "text", "sha1": sha1(text)}
        for key, text in TWEETS
    ] + [
        {"id": f"b77-test-{row}", "source": "banking77", "file": "banking77/test.csv",
         "key_column": "row", "key": str(row), "text_column": "text", "sha1": sha1(text)}
        for row, text in enumerate(QUERIES)
    ]  # fmt: skip
    _write_jsonl(data / "eval_stories.jsonl", stories)
    final = [
        {"id": "air-570306133677760513", "include": True, "exclusion_reason": None,
         "valence": "dissatisfying", "codes": ["complaint"]},
        {"id": "air-570306133677760514", "include": False,
         "exclusion_reason": "insufficient_detail", "valence": "satisfying", "codes": []},
        {"id": "b77-test-0", "include": True, "exclusion_reason": None, "valence": "unclear",
         "codes": ["owner_error"]},
        {"id": "b77-test-1", "include": True, "exclusion_reason": None, "valence": "unclear",
         "codes": ["special_request"]},
    ]  # fmt: skip
    _write_jsonl(data / "eval_final.jsonl", final)
    _write_jsonl(data / "eval_coding_a.jsonl", final)
    other = [dict(row) for row in final]
    other[3]["codes"] = []  # coder B missed the special request
    _write_jsonl(data / "eval_coding_b.jsonl", other)
    return data, datasets


def test_loads_texts_by_key_and_row_and_the_codings(made_up: tuple[Path, Path]) -> None:
    data, datasets = made_up
    eval_set = load_eval_set(data, datasets, CODES)
    assert [s.text for s in eval_set.stories] == [t for _, t in TWEETS] + QUERIES
    assert [s.source for s in eval_set.stories] == ["airline"] * 2 + ["banking77"] * 2
    excluded = labelled(eval_set, eval_set.stories[1])
    assert excluded.excluded and not any(excluded.labels.values())
    assert excluded.valence == "satisfying"
    query = labelled(eval_set, eval_set.stories[2])
    assert query.codes == {"owner_error"} and query.valence is None  # "unclear": no feature
    ceiling = {m.code: m for m in human_ceiling(eval_set) or []}
    assert ceiling["complaint"].kappa == 1.0
    assert (ceiling["special_request"].tp, ceiling["special_request"].fp) == (0, 1)  # A vs B


def test_a_changed_text_or_a_missing_file_is_refused(made_up: tuple[Path, Path]) -> None:
    data, datasets = made_up
    with (datasets / "banking77" / "test.csv").open("a", newline="") as f:
        csv.writer(f).writerow(["extra row", "x"])
    load_eval_set(data, datasets, CODES)  # an extra row changes nothing
    rows = (datasets / "banking77" / "test.csv").read_text().replace("taxi", "cab")
    (datasets / "banking77" / "test.csv").write_text(rows)
    with pytest.raises(EvalSetError, match="differ from their SHA-1"):
        load_eval_set(data, datasets, CODES)
    (datasets / "banking77" / "test.csv").unlink()
    with pytest.raises(EvalSetError, match="not found"):
        load_eval_set(data, datasets, CODES)


def test_bad_codings_are_named(made_up: tuple[Path, Path]) -> None:
    data, datasets = made_up
    lines = (data / "eval_final.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["codes"] = ["complaint", "nonsense"]
    (data / "eval_final.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(EvalSetError, match="unknown codes nonsense"):
        load_eval_set(data, datasets, CODES)
    (data / "eval_final.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(EvalSetError, match="1 stories have no adjudicated coding"):
        load_eval_set(data, datasets, CODES)


def test_metrics_count_excluded_stories_as_negatives(made_up: tuple[Path, Path]) -> None:
    data, datasets = made_up
    eval_set = load_eval_set(data, datasets, CODES)
    stories = [labelled(eval_set, s) for s in eval_set.stories]
    predicted = [frozenset({"complaint"}), frozenset({"complaint"}), frozenset(), frozenset()]
    complaint = metrics_for(stories, predicted, CODES)[0]
    assert (complaint.tp, complaint.fp, complaint.fn, complaint.tn) == (1, 1, 0, 2)
