"""The evaluation set's tools: quota allocation, reading texts back by SHA-1, coding-file checks.

The data sets are replaced by a small CSV written here, so the tests do not depend on
../shared/datasets; `python -m bench.eval_sample --check` checks the real set against them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from bench import _data
from bench.eval_sample import allocate, validate_coding


def test_allocate_gives_the_minimum_then_shares_by_size() -> None:
    quotas = allocate(20, {"a": 100, "b": 10, "c": 1_000}, minimum=4)
    assert sum(quotas.values()) == 20
    assert quotas == {"a": 5, "b": 4, "c": 11}


def test_allocate_never_exceeds_a_stratum() -> None:
    assert allocate(12, {"small": 2, "big": 10}, minimum=2) == {"small": 2, "big": 10}
    with pytest.raises(ValueError):
        allocate(60, {"small": 2, "big": 50})


@pytest.fixture
def tiny_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data set folder with one CSV, and an evaluation set pointing at two of its rows."""
    datasets = tmp_path / "datasets"
    (datasets / "b").mkdir(parents=True)
    texts = [
        "My card fell out of my coat on the bus",
        "Please send my son a card too",
        'Line one\r\nline "two"',
    ]
    with (datasets / "b" / "test.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows([text, "x"] for text in texts)
    records = [
        {
            "id": f"b77-test-{row}",
            "source": "banking77",
            "file": "b/test.csv",
            "key_column": "row",
            "key": str(row),
            "text_column": "text",
            "sha1": hashlib.sha1(texts[row].encode("utf-8")).hexdigest(),
        }
        for row in (2, 0)
    ]
    eval_file = tmp_path / "eval_stories.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    monkeypatch.setattr(_data, "DATASETS", datasets)
    monkeypatch.setattr(_data, "EVAL_STORIES", eval_file)
    return datasets


def test_eval_texts_reads_the_exact_texts_in_the_set_order(tiny_set: Path) -> None:
    assert _data.eval_texts() == {
        "b77-test-2": 'Line one\r\nline "two"',
        "b77-test-0": "My card fell out of my coat on the bus",
    }


def test_eval_texts_refuses_a_changed_text(tiny_set: Path) -> None:
    path = tiny_set / "b" / "test.csv"
    path.write_bytes(path.read_bytes().replace(b"coat", b"jacket"))
    with pytest.raises(_data.EvalSetError, match=r"b77-test-0: .* has SHA-1"):
        _data.eval_texts()


def test_eval_texts_refuses_a_missing_row(tiny_set: Path) -> None:
    (tiny_set / "b" / "test.csv").write_text(
        "text,category\nMy card fell out of my coat on the bus,x\n", encoding="utf-8"
    )
    with pytest.raises(_data.EvalSetError, match="b77-test-2: no row with row = '2'"):
        _data.eval_texts()


def _coding(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "coding.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(story: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": story,
        "coder": "a",
        "include": True,
        "exclusion_reason": None,
        "valence": "unclear",
        "codes": ["owner_error"],
        "note": None,
    }
    row.update(fields)
    return row


def test_validate_coding_accepts_a_complete_file(tiny_set: Path, tmp_path: Path) -> None:
    path = _coding(
        tmp_path,
        [
            _row("b77-test-0"),
            _row(
                "b77-test-2",
                include=False,
                exclusion_reason="not_an_incident",
                codes=[],
            ),
        ],
    )
    assert validate_coding(path) == []


def test_validate_coding_names_each_problem(tiny_set: Path, tmp_path: Path) -> None:
    path = _coding(
        tmp_path,
        [
            _row("b77-test-0", codes=[], note="unsure"),
            _row("b77-test-0", include=False, exclusion_reason="boring", codes=["complaint"]),
            _row("air-1", valence="meh", coder="b"),
        ],
    )
    problems = validate_coding(path)
    assert "line 1 (b77-test-0): included with no code needs a note 'no code: ...'" in problems
    assert "line 2 (b77-test-0): coded twice" in problems
    assert "line 2 (b77-test-0): exclusion_reason must be one of the guide's list" in problems
    assert "line 2 (b77-test-0): an excluded story has no codes" in problems
    assert "line 3 (air-1): not a story of the set" in problems
    assert "line 3 (air-1): valence must be one of satisfying, dissatisfying, unclear" in problems
    assert "1 stories not coded, e.g. b77-test-2" in problems
    assert "more than one coder name in the file: a, b" in problems
