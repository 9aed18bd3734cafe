"""The committed coders' files and the adjudicated final coding of the evaluation set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import eval_agreement
from bench._data import eval_stories
from bench.eval_sample import CODES, EXCLUSION_REASONS, VALENCES, validate_coding

FIELDS = ("include", "exclusion_reason", "valence", "codes")
FINAL_FIELDS = {"id", *FIELDS, "decided_by", "note"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.mark.parametrize("path", [eval_agreement.CODING_A, eval_agreement.CODING_B])
def test_coders_files_are_valid_and_carry_no_text(path: Path) -> None:
    assert validate_coding(path) == []
    assert all("text" not in row for row in _rows(path))


def test_final_has_every_story_once_in_the_set_order_with_valid_values() -> None:
    final = _rows(eval_agreement.FINAL)
    assert [row["id"] for row in final] == [record["id"] for record in eval_stories()]
    for row in final:
        assert row.keys() == FINAL_FIELDS, row["id"]
        assert row["valence"] in VALENCES
        assert row["codes"] == [code for code in CODES if code in row["codes"]]
        if row["include"]:
            assert row["exclusion_reason"] is None
        else:
            assert row["exclusion_reason"] in EXCLUSION_REASONS and row["codes"] == []


def test_final_keeps_agreed_codings_and_explains_every_adjudication() -> None:
    a = {row["id"]: row for row in _rows(eval_agreement.CODING_A)}
    b = {row["id"]: row for row in _rows(eval_agreement.CODING_B)}
    adjudicated = 0
    for row in _rows(eval_agreement.FINAL):
        agreed = all(a[row["id"]][f] == b[row["id"]][f] for f in FIELDS)
        if row["decided_by"] == "agreement":
            assert agreed, row["id"]
            assert all(row[f] == a[row["id"]][f] for f in FIELDS), row["id"]
        else:
            assert row["decided_by"] == "adjudication"
            adjudicated += 1
            assert isinstance(row["note"], str) and 0 < len(row["note"]) <= 200
            if row["include"] and not row["codes"]:
                assert row["note"].startswith("no code:"), row["id"]
    disputed = sum(1 for i in a if any(a[i][f] != b[i][f] for f in FIELDS))
    assert adjudicated >= disputed > 0


def test_read_coding_refuses_text_and_missing_ids(tmp_path: Path) -> None:
    path = tmp_path / "coding.jsonl"
    path.write_text(json.dumps({"id": "x", "text": "a story"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="story text"):
        eval_agreement.read_coding(path, ["x"])
    path.write_text(json.dumps({"id": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="1 stories missing"):
        eval_agreement.read_coding(path, ["x", "y"])
