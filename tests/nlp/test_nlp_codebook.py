"""Codebook parsing, round trips and validation errors that name the place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nlp import (
    Codebook,
    CodebookError,
    codebook_to_dict,
    codebook_to_yaml,
    load_codebook_file,
    parse_codebook,
)


def problems_of(data: Any) -> dict[str, str]:
    with pytest.raises(CodebookError) as caught:
        parse_codebook(data)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_default_codebook_has_the_four_codes_with_criteria_and_examples(
    default_codebook: Codebook,
) -> None:
    assert default_codebook.key == "cit-service-encounters"
    assert [code.key for code in default_codebook.active_codes] == [
        "complaint",
        "special_request",
        "extra_mile",
        "owner_error",
    ]
    for code in default_codebook.codes:
        assert code.definition.strip()
        assert code.inclusion and code.exclusion
        assert len(code.examples) >= 5
        assert code.bitner_group
        assert not code.indicators.is_empty
        assert all(1 <= len(e.split(". ")) <= 4 for e in code.examples)
    assert "admitted customer error" in str(default_codebook.code("owner_error").bitner_group)


def test_round_trip_through_dict_and_yaml(default_codebook: Codebook) -> None:
    data = codebook_to_dict(default_codebook)
    assert parse_codebook(data) == default_codebook
    assert parse_codebook(yaml.safe_load(codebook_to_yaml(default_codebook))) == default_codebook
    assert list(data) == ["key", "name", "description", "language", "codes"]
    assert data["codes"][0]["indicators"]["patterns"][0] == [
        dict(token) for token in default_codebook.codes[0].indicators.patterns[0]
    ]


def test_round_trip_fills_defaults(small_data: dict[str, Any]) -> None:
    codebook = parse_codebook(small_data)
    again = parse_codebook(codebook_to_dict(codebook))
    assert again == codebook
    assert codebook.code("complaint").threshold == 0.5
    assert codebook.code("extra_mile").threshold == 0.7
    assert codebook.code("complaint").parent is None


def test_retired_codes_are_not_active(small_codebook: Codebook) -> None:
    assert [c.key for c in small_codebook.codes] == ["complaint", "extra_mile", "old_code"]
    assert [c.key for c in small_codebook.active_codes] == ["complaint", "extra_mile"]


def test_codebooks_hash_and_fingerprint_by_content(small_data: dict[str, Any]) -> None:
    first, second = parse_codebook(small_data), parse_codebook(small_data)
    assert hash(first) == hash(second)
    assert first.fingerprint() == second.fingerprint()
    small_data["codes"][0]["indicators"]["phrases"].append("unacceptable")
    assert parse_codebook(small_data).fingerprint() != first.fingerprint()


def test_duplicate_key_names_the_second_code(small_data: dict[str, Any]) -> None:
    small_data["codes"][1]["key"] = "complaint"
    problems = problems_of(small_data)
    assert "codes[1].key" in problems
    assert "duplicate" in problems["codes[1].key"]
    assert "codes[0]" in problems["codes[1].key"]


def test_bad_pattern_names_the_pattern(small_data: dict[str, Any]) -> None:
    small_data["codes"][0]["indicators"]["patterns"][1] = [{"LOWERCASE": "never"}]
    problems = problems_of(small_data)
    assert list(problems) == ["codes[0].indicators.patterns[1]"]
    assert "does not compile" in problems["codes[0].indicators.patterns[1]"]


@pytest.mark.parametrize(
    "pattern",
    [
        [],
        "cancel",
        [{"LEMMA": {"IN": "cancel"}}],
        [{"LOWER": "a", "OP": "??"}],
        ["cancel"],
    ],
)
def test_malformed_patterns_are_reported(small_data: dict[str, Any], pattern: Any) -> None:
    small_data["codes"][0]["indicators"]["patterns"][0] = pattern
    problems = problems_of(small_data)
    assert any(path.startswith("codes[0].indicators.patterns[0]") for path in problems), problems


def test_unknown_parent_is_reported(small_data: dict[str, Any]) -> None:
    small_data["codes"][0]["parent"] = "nowhere"
    assert problems_of(small_data) == {"codes[0].parent": "unknown parent 'nowhere'"}


def test_parent_cycle_is_reported_once(small_data: dict[str, Any]) -> None:
    small_data["codes"][0]["parent"] = "extra_mile"
    small_data["codes"][1]["parent"] = "complaint"
    problems = problems_of(small_data)
    assert list(problems) == ["codes[0].parent"]
    assert problems["codes[0].parent"] == "parent cycle: complaint -> extra_mile -> complaint"


def test_self_parent_is_a_cycle(small_data: dict[str, Any]) -> None:
    small_data["codes"][1]["parent"] = "extra_mile"
    assert "parent cycle" in problems_of(small_data)["codes[1].parent"]


def test_valid_parent_chain_is_accepted(small_data: dict[str, Any]) -> None:
    small_data["codes"].insert(0, {"key": "group", "label": "Group"})
    small_data["codes"][1]["parent"] = "group"
    small_data["codes"][2]["parent"] = "complaint"
    assert parse_codebook(small_data).code("extra_mile").parent == "complaint"


def test_all_problems_are_collected_and_listed(small_data: dict[str, Any]) -> None:
    small_data["surprise"] = 1
    small_data["codes"][0]["key"] = "Bad Key"
    small_data["codes"][0]["label"] = "  "
    small_data["codes"][0]["threshold"] = 1.5
    small_data["codes"][0]["examples"] = "one story"
    small_data["codes"][1]["retired"] = "yes"
    small_data["codes"][1]["colour"] = "red"
    small_data["codes"][1]["indicators"]["phrases"] = ["ok", 3]
    small_data["codes"][2] = "not a mapping"
    with pytest.raises(CodebookError) as caught:
        parse_codebook(small_data)
    places = [problem.path for problem in caught.value.problems]
    assert sorted(places) == sorted(
        [
            "surprise",
            "codes[0].key",
            "codes[0].label",
            "codes[0].threshold",
            "codes[0].examples",
            "codes[1].retired",
            "codes[1].colour",
            "codes[1].indicators.phrases[1]",
            "codes[2]",
        ]
    )
    message = str(caught.value)
    assert message.startswith("invalid codebook (9 problems)")
    for place in places:
        assert place in message


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"key": None}, "key"),
        ({"name": ""}, "name"),
        ({"codes": []}, "codes"),
        ({"codes": "x"}, "codes"),
        ({"language": 3}, "language"),
    ],
)
def test_top_level_problems(small_data: dict[str, Any], change: dict[str, Any], path: str) -> None:
    small_data.update(change)
    assert path in problems_of(small_data)


def test_missing_code_key_and_label(small_data: dict[str, Any]) -> None:
    del small_data["codes"][1]["key"]
    del small_data["codes"][1]["label"]
    problems = problems_of(small_data)
    assert problems["codes[1].key"] == "is required"
    assert problems["codes[1].label"] == "is required"


def test_threshold_must_be_a_number_in_range(small_data: dict[str, Any]) -> None:
    small_data["codes"][0]["threshold"] = True
    small_data["codes"][1]["threshold"] = -0.1
    problems = problems_of(small_data)
    assert set(problems) == {"codes[0].threshold", "codes[1].threshold"}


def test_not_a_mapping() -> None:
    assert "" in problems_of(["codes"])


def test_load_file_reports_yaml_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("key: x\ncodes: [\n", encoding="utf-8")
    with pytest.raises(CodebookError) as caught:
        load_codebook_file(broken)
    assert "not valid YAML" in str(caught.value)


def test_load_file_round_trip(tmp_path: Path, default_codebook: Codebook) -> None:
    path = tmp_path / "copy.yaml"
    path.write_text(codebook_to_yaml(default_codebook), encoding="utf-8")
    assert load_codebook_file(path) == default_codebook


def test_negative_cues_round_trip_and_leave_other_fingerprints_alone(
    small_data: dict[str, Any], small_codebook: Codebook
) -> None:
    before = small_codebook.fingerprint()
    assert "exclude_phrases" not in codebook_to_dict(small_codebook)["codes"][0]["indicators"]
    small_data["codes"][0]["indicators"]["exclude_phrases"] = ["refund policy"]
    small_data["codes"][0]["indicators"]["exclude_patterns"] = [[{"LOWER": "policy"}]]
    small_data["codes"][0]["indicators"]["exclude_window"] = 5
    codebook = parse_codebook(small_data)
    assert codebook.fingerprint() != before
    indicators = codebook.code("complaint").indicators
    assert indicators.exclude_phrases == ("refund policy",) and indicators.exclude_window == 5
    assert parse_codebook(codebook_to_dict(codebook)) == codebook


def test_negative_cues_are_validated(small_data: dict[str, Any]) -> None:
    complaint = small_data["codes"][0]["indicators"]
    complaint["exclude_phrases"] = ["refund", 3]
    complaint["exclude_patterns"] = [[{"LOWER": "x", "NOPE": 1}]]
    complaint["exclude_window"] = 99
    small_data["codes"][2]["indicators"] = {"exclude_phrases": ["no positives here"]}
    with pytest.raises(CodebookError) as caught:
        parse_codebook(small_data)
    paths = {problem.path: problem.message for problem in caught.value.problems}
    assert "itself" in paths["codes[0].indicators.exclude_phrases[0]"]
    assert "must be a string" in paths["codes[0].indicators.exclude_phrases[1]"]
    assert "Matcher" in paths["codes[0].indicators.exclude_patterns[0]"]
    assert "between 0 and 50" in paths["codes[0].indicators.exclude_window"]
    assert "has none" in paths["codes[2].indicators"]
