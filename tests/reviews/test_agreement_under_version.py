"""Agreement under one codebook version counts every double-coded story of the codebook, with
the codings mapped into that version (a codebook change moves only the codings it touches)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.codebooks import service
from app.models import Codebook, Survey
from app.reviews.service import codebook_version_for


def _report(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/reports/agreement", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_codings_left_under_the_old_version_count_under_the_new_one(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    db: Callable[[], Any],
    client: TestClient,
    admin: dict[str, str],
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    stories = [make_story(survey) for _ in range(4)]
    a, b = person(name="coder-a"), person(name="coder-b")
    for story, (code_a, code_b) in zip(
        stories,
        [
            ("complaint", "complaint"),
            ("owner_error", "owner_error"),
            ("complaint", "extra_mile"),
            ("extra_mile", "extra_mile"),
        ],
        strict=True,
    ):
        review.code(a, story, [code_a])
        review.code(b, story, [code_b])
    with db() as session:
        first = codebook_version_for(session, survey.id).id
        codebook = session.get(Codebook, codebook_id)
        assert codebook is not None
        second = service.apply_changes(
            session,
            codebook,
            [{"op": "rename", "from": "owner_error", "to": "own_error"}],
            None,
            "rename",
        ).id
    under_first = _report(client, admin, survey_id=survey.id, codebook_version=first)
    under_second = _report(client, admin, survey_id=survey.id, codebook_version=second)
    pooled = _report(client, admin, survey_id=survey.id)
    # Only the owner_error codings moved to version 2; all four stories count under either.
    assert under_first["n_units"] == under_second["n_units"] == pooled["n_units"] == 4
    assert "own_error" in under_second["per_code"] and "owner_error" not in under_second["per_code"]
    assert "owner_error" in under_first["per_code"] and "own_error" not in under_first["per_code"]
    for report in (under_first, under_second, pooled):
        complaint = report["per_code"]["complaint"]["percent_agreement"]
        assert (complaint["value"], complaint["n_units"]) == (0.75, 4)
    renamed = under_second["per_code"]["own_error"]["percent_agreement"]["value"]
    assert renamed == under_first["per_code"]["owner_error"]["percent_agreement"]["value"] == 1.0
