"""The agreement report end to end: codings made through the API, figures checked against the
method doc's test vector 8 and against the pure statistics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.models import Survey
from app.models.base import utcnow
from app.reviews.agreement import agreement_report
from app.reviews.reliability import reliability_report
from app.reviews.service import codebook_version_for

CODES = ["complaint", "special_request", "extra_mile", "owner_error"]
# docs/cit-method.md, test vector 8
CODER_A = [
    "complaint", "complaint", "extra_mile", "special_request", "owner_error",
    "complaint", "extra_mile", "special_request", "complaint", "owner_error",
]  # fmt: skip
CODER_B = [
    "complaint", "special_request", "extra_mile", "special_request", "complaint",
    "complaint", "extra_mile", "extra_mile", "complaint", "owner_error",
]  # fmt: skip
CODER_C: list[str | None] = [*CODER_A[:5], None, *CODER_A[6:9], "complaint"]


def r6(value: float | None) -> float:
    assert value is not None
    return round(value, 6)


def _report(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/reports/agreement", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _code_all(review: Any, coder: Any, stories: list[int], labels: list[str | None]) -> None:
    for story, label in zip(stories, labels, strict=True):
        if label is not None:
            review.code(coder, story, [label])


@pytest.fixture
def vector_8(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> tuple[Survey, list[int]]:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    stories = [make_story(survey) for _ in range(10)]
    _code_all(review, person(name="coder-a"), stories, list(CODER_A))
    _code_all(review, person(name="coder-b"), stories, list(CODER_B))
    return survey, stories


def test_vector_8_through_the_api(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    vector_8: tuple[Survey, list[int]],
    db: Any,
) -> None:
    survey, stories = vector_8
    viewer = person("viewer")
    report = _report(client, viewer.headers, survey_id=survey.id)

    assert report["available"] is True and report["reason"] is None
    assert report["coders"] == ["coder-a", "coder-b"]
    assert report["codes"] == CODES and report["k"] == 4
    assert report["n_units"] == 10 and report["n_codings"] == 20
    single = report["single_label"]
    assert single["applicable"] is True
    assert r6(single["percent_agreement"]["value"]) == 0.70
    assert single["percent_agreement"]["n_units"] == 10
    [kappa] = single["cohen_kappa"]
    assert kappa["coders"] == ["coder-a", "coder-b"] and r6(kappa["value"]) == 0.583333
    assert r6(single["scott_pi"]["value"]) == 0.580420
    assert r6(single["fleiss_kappa"]["value"]) == 0.580420
    assert r6(single["krippendorff_alpha"]["value"]) == 0.601399
    assert r6(single["perreault_leigh_ir"]["value"]) == 0.774597

    # Per code (binary presence) and overall: exactly the pure library's figures.
    pure = agreement_report(
        {
            i: {"coder-a": frozenset({a}), "coder-b": frozenset({b})}
            for i, (a, b) in enumerate(zip(CODER_A, CODER_B, strict=True))
        },
        CODES,
        k=4,
    )
    for code in CODES:
        got, want = report["per_code"][code], pure.per_code[code]
        assert got["percent_agreement"]["value"] == pytest.approx(want.percent_agreement.value)
        assert got["krippendorff_alpha"]["value"] == pytest.approx(want.krippendorff_alpha.value)
        assert got["fleiss_kappa"]["value"] == pytest.approx(want.fleiss_kappa.value)
        assert got["cohen_kappa"][0]["value"] == pytest.approx(
            want.cohen_kappa[("coder-a", "coder-b")].value
        )
        assert got["perreault_leigh_ir"]["value"] == pytest.approx(want.perreault_leigh_ir.value)
    overall = report["overall"]
    assert overall["krippendorff_alpha"]["value"] == pytest.approx(
        pure.overall.krippendorff_alpha.value
    )
    assert overall["perreault_leigh_ir"]["value"] == pytest.approx(
        pure.overall.perreault_leigh_ir.value
    )
    assert overall["cohen_kappa"][0]["value"] == pytest.approx(
        pure.overall.cohen_kappa[("coder-a", "coder-b")].value
    )
    assert report["exclusions"] == {
        "units": 10,
        "all_excluded": 0,
        "none_excluded": 10,
        "split": 0,
        "agreement": 1.0,
    }

    # 7 stories agreed (final), 3 wait for adjudication.
    statuses = [review.status(person(), s) for s in stories]
    assert statuses.count("coded") == 7 and statuses.count("adjudication") == 3

    # Aggregates only: no story text or ids.
    text = str(report)
    assert "rebooked" not in text and "incident" not in text

    # The function the study report calls gives the same document.
    with db() as session:
        direct = reliability_report(
            session,
            survey_id=survey.id,
            codebook_version_id=None,
            submitted_from=None,
            submitted_to=None,
        )
    assert direct == report


def test_three_coders_with_a_missing_story(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    set_incident: Callable[..., None],
    admin: dict[str, str],
) -> None:
    survey = make_survey(codebook_id=codebook_id)
    stories = [make_story(survey) for _ in range(10)]
    set_incident(stories, coders_required=3)  # a reliability study with three judges
    for name, labels in (("coder-a", CODER_A), ("coder-b", CODER_B), ("coder-c", CODER_C)):
        _code_all(review, person(name=name), stories, list(labels))
    report = _report(client, admin, survey_id=survey.id)
    single = report["single_label"]
    assert report["coders"] == ["coder-a", "coder-b", "coder-c"]
    assert r6(single["krippendorff_alpha"]["value"]) == 0.624161
    assert single["krippendorff_alpha"]["n_units"] == 10
    assert single["fleiss_kappa"]["n_units"] == 9  # the stories all three coded
    assert single["scott_pi"]["value"] is None
    assert {tuple(p["coders"]) for p in single["cohen_kappa"]} == {
        ("coder-a", "coder-b"),
        ("coder-a", "coder-c"),
        ("coder-b", "coder-c"),
    }
    ab = next(p for p in single["cohen_kappa"] if p["coders"] == ["coder-a", "coder-b"])
    assert r6(ab["value"]) == 0.583333


def test_filters_exclusions_and_empty_reports(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    admin: dict[str, str],
    db: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    old = make_story(survey, age_minutes=60 * 24 * 30)
    both_out = make_story(survey, age_minutes=60)
    split = make_story(survey, age_minutes=50)
    multi = make_story(survey, age_minutes=40)
    review.code(alice, old, ["complaint"])
    review.code(bob, old, ["complaint"])
    review.exclude(alice, both_out, "no interaction")
    review.exclude(bob, both_out, "no interaction")
    review.exclude(alice, split, "no interaction")
    review.code(bob, split, ["extra_mile"])
    review.code(alice, multi, ["complaint", "extra_mile"])
    review.code(bob, multi, ["complaint"])

    report = _report(client, admin, survey_id=survey.id)
    assert report["exclusions"] == {
        "units": 4,
        "all_excluded": 1,
        "none_excluded": 2,
        "split": 1,
        "agreement": 0.75,
    }
    # Excluded codings are missing: only `old` and `multi` have two coders' codes.
    complaint = report["per_code"]["complaint"]
    po = complaint["percent_agreement"]
    assert (po["value"], po["n_units"], po["reason"]) == (1.0, 2, None)
    assert po["ci95"]["method"] == "Wilson score interval" and po["ci95"]["high"] == 1.0
    assert report["per_code"]["extra_mile"]["percent_agreement"]["value"] == 0.5
    # Codes nobody used are listed but left out of the overall means.
    assert report["overall_codes"] == ["complaint", "extra_mile"]
    assert set(report["left_out_of_overall"]) == {"special_request", "owner_error"}
    assert report["overall"]["percent_agreement"]["value"] == 0.75
    # Story level: identical code sets (old agrees, multi does not); with an exclusion
    # counted as an answer, both_out agrees too and split does not.
    story = report["story_level"]
    assert (story["exclusion_missing"]["stories"], story["exclusion_missing"]["agreed"]) == (2, 1)
    assert story["exclusion_as_category"]["share"] == 0.5
    assert (
        story["exclusion_as_category"]["ci95"]["low"]
        < 0.5
        < story["exclusion_as_category"]["ci95"]["high"]
    )
    include = report["include_exclude"]
    assert include["percent_agreement"]["value"] == 0.75
    assert include["percent_agreement"]["n_units"] == 4
    assert report["exclusion_handling"] == "missing"
    as_category = _report(client, admin, survey_id=survey.id, exclusion="category")
    assert as_category["exclusion_handling"] == "category"
    excluded = as_category["per_code"]["(excluded)"]["percent_agreement"]
    assert (excluded["value"], excluded["n_units"]) == (0.75, 4)
    # The excluding coder gave no code: complaint is now scored on all four stories.
    assert as_category["per_code"]["complaint"]["percent_agreement"]["n_units"] == 4
    assert report["single_label"]["applicable"] is False
    assert "one code" in report["single_label"]["reason"]
    # Both coders always said complaint: kappa is null with a reason, never 1.
    kappa = complaint["cohen_kappa"][0]
    assert kappa["value"] is None and "expected agreement is 1" in kappa["reason"]

    recent = _report(
        client, admin, survey_id=survey.id, submitted_from=(utcnow() - timedelta(days=1))
    )
    assert recent["n_units"] == 3
    assert _report(client, admin, submitted_to=(utcnow() - timedelta(days=1)))["n_units"] == 1
    with db() as session:
        version_id = codebook_version_for(session, survey.id).id
    same = _report(client, admin, survey_id=survey.id, codebook_version=version_id)
    assert same["n_units"] == 4 and same["codebook_version_ids"] == [version_id]
    alias = _report(client, admin, survey_id=survey.id, codebook_version_id=version_id)
    assert alias == same
    other_version = _report(client, admin, survey_id=survey.id, codebook_version=version_id + 99)
    assert other_version["n_units"] == 0 and other_version["model_vs_final"]["n_units"] == 0
    clash = client.get(
        "/api/v1/reports/agreement",
        params={"codebook_version": version_id, "codebook_version_id": version_id + 1},
        headers=admin,
    )
    assert clash.status_code == 400

    empty = _report(client, admin, survey_id=survey.id + 1000)
    assert empty["n_units"] == 0 and empty["coders"] == [] and empty["codes"] == []
    assert empty["available"] is False and "two or more" in empty["reason"]
    alpha = empty["overall"]["krippendorff_alpha"]
    assert alpha["value"] is None and alpha["reason"]
    assert empty["single_label"]["applicable"] is False
    assert empty["model_vs_final"]["n_units"] == 0


def test_model_suggestions_against_final_codes(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Any,
    admin: dict[str, str],
) -> None:
    alice = person(name="alice")
    cases = [
        (("complaint",), ["complaint"]),
        (("complaint", "extra_mile"), ["complaint"]),
        ((), ["special_request"]),
        (("owner_error",), ["owner_error"]),
        (("extra_mile",), ["extra_mile", "special_request"]),
    ]
    for suggested, final in cases:
        story = make_story(survey, suggested=suggested)
        review.code(alice, story, final)
    make_story(survey, suggested=("complaint",))  # not final: does not count
    excluded = make_story(survey, suggested=("complaint",))
    review.exclude(alice, excluded, "no interaction")

    report = _report(client, admin, survey_id=survey.id)
    assert report["n_units"] == 0  # nobody double coded
    section = report["model_vs_final"]
    assert section["coders"] == ["model", "final"] and section["n_units"] == 5
    pure = agreement_report(
        {i: {"model": frozenset(s), "final": frozenset(f)} for i, (s, f) in enumerate(cases)},
        CODES,
        k=4,
    )
    for code in CODES:
        got = section["per_code"][code]
        want = pure.per_code[code]
        assert got["percent_agreement"]["value"] == pytest.approx(want.percent_agreement.value)
        assert (got["krippendorff_alpha"]["value"] is None) == (
            want.krippendorff_alpha.value is None
        )
        if want.krippendorff_alpha.value is not None:
            assert got["krippendorff_alpha"]["value"] == pytest.approx(
                want.krippendorff_alpha.value
            )
    assert section["overall"]["percent_agreement"]["value"] == pytest.approx(
        pure.overall.percent_agreement.value
    )
    assert section["single_label"]["applicable"] is False
