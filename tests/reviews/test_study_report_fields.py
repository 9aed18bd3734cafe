"""The study report rendered for a study with every field missing and with every field present
(team's protocol, codebook history with rename/merge/split, double coding, adjudication,
attributes), as JSON, Markdown and HTML, for the team and for a viewer: no Python None."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.models import Incident, Survey
from tests.reviews.conftest import Person, Review

STUDY = "/api/v1/reports/study"
PROTOCOL = {
    "incident_definition": "An episode a passenger remembers as unusually good or bad.",
    "inclusion_criteria": ["Involves staff", "One discrete episode"],
    "exclusion_criteria": ["General opinion of the airline"],
    "data_collection_method": "Online questionnaire sent after the flight",
    "interviewer_instructions": "Read the questions as written | no prompting",
    "respondent_instructions": "Think of one flight",
}
NONE_WORD = re.compile(r"\bNone\b")


def _render(client: TestClient, who: Person, survey_id: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fmt in ("json", "markdown", "html"):
        response = client.get(
            STUDY, params={"survey_id": survey_id, "format": fmt}, headers=who.headers
        )
        assert response.status_code == 200, response.text
        out[fmt] = response.json() if fmt == "json" else response.text
        if fmt != "json":
            assert not NONE_WORD.search(response.text), NONE_WORD.search(response.text)
    return out


def test_every_field_missing(
    client: TestClient,
    person: Callable[..., Person],
    make_survey: Callable[..., Survey],
) -> None:
    survey = make_survey()  # no codebook, no stories, no protocol
    admin, viewer = person("admin"), person("viewer")
    for who in (admin, viewer):
        report = _render(client, who, survey.id)
        statuses = {item["section"]: item["status"] for item in report["json"]["checklist"]}
        for section in (
            "incident_definition",
            "inclusion_criteria",
            "exclusion_criteria",
            "data_collection_method",
            "instructions",
            "appendix",
            "reliability",
            "codes",
        ):
            assert statuses[section] == "missing", section
        assert "| Data collection method | missing |" in report["markdown"]
        assert "Missing: no inclusion criteria entered." in report["markdown"]
        assert '<p class="missing">Missing: the data-collection method' in report["html"]


def test_every_field_present(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    db: Callable[[], Any],
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100, study=PROTOCOL)
    alice, bob = person(name="alice"), person(name="bob")
    stories = [make_story(survey, occurred_on=None) for _ in range(8)]
    with db() as session:
        for i, story in enumerate(stories):
            session.execute(
                update(Incident)
                .where(Incident.id == story)
                .values(attributes={"segment": "business" if i < 6 else "leisure"})
            )
    for story in stories[:5]:
        review.code(alice, story, ["complaint"])
        review.code(bob, story, ["complaint"])
    review.code(alice, stories[5], ["special_request"])
    review.code(bob, stories[5], ["extra_mile"])
    adjudicated = review.adjudicate(admin_person, stories[5], {"codes": ["extra_mile"]})
    assert adjudicated.status_code == 200, adjudicated.text
    review.exclude(alice, stories[6], "not an interaction")
    review.exclude(bob, stories[6], "not an interaction")
    content = client.get(f"/api/v1/codebooks/{codebook_id}", headers=alice.headers).json()
    content = content["version"]["content"]
    for key in ("delay", "rudeness"):
        content["codes"].append({"key": key, "label": key.title(), "definition": f"A {key}"})
    added = client.put(
        f"/api/v1/codebooks/{codebook_id}",
        json={"content": content, "change_note": "failure kinds"},
        headers=admin_person.headers,
    )
    assert added.status_code == 200, added.text
    changes = client.post(
        f"/api/v1/codebooks/{codebook_id}/changes",
        json={
            "operations": [
                {"op": "rename", "from": "owner_error", "to": "customer_error"},
                {"op": "merge", "from": ["special_request", "customer_error"], "into": "request"},
                {
                    "op": "split",
                    "from": "complaint",
                    "into": ["delay", "rudeness"],
                    "assign": {str(s): ["delay"] for s in stories[:5]},
                },
            ],
            "change_note": "finer failure codes",
        },
        headers=admin_person.headers,
    )
    assert changes.status_code == 200, changes.text

    report = _render(client, admin_person, survey.id)
    data = report["json"]
    statuses = {item["section"]: item["status"] for item in data["checklist"]}
    assert set(statuses.values()) == {"yes"}, statuses
    assert data["study"] == PROTOCOL
    history = data["classification"]
    assert [(v["number"], v["change_note"]) for v in history] == [
        (1, "loaded from cit-service-encounters.yaml"),
        (2, "failure kinds"),
        (3, "finer failure codes"),
    ]
    assert history[1]["mapping"] == []
    assert history[2]["mapping"] == [
        {"kind": "split", "from": ["complaint"], "to": ["delay", "rudeness"]},
        {"kind": "merge", "from": ["owner_error", "special_request"], "to": ["request"]},
    ]
    retired = {c["key"] for c in history[2]["codes"] if c["retired"]}
    assert retired == {"complaint", "owner_error", "customer_error", "special_request"}
    appendix = {c["key"]: c for c in data["appendix"]}
    assert appendix["extra_mile"]["definition"] and appendix["extra_mile"]["example"]
    assert appendix["complaint"]["retired"] is True
    reliability = data["reliability"]
    assert reliability["adjudication"]["adjudicated"] == 1
    assert reliability["story_level"]["exclusion_as_category"]["agreed"] == 6
    assert "delay" in reliability["overall_codes"]
    assert "complaint" not in reliability["overall_codes"]  # retired: mapped to delay

    markdown, html = report["markdown"], report["html"]
    assert PROTOCOL["incident_definition"] in markdown
    assert "To interviewers: Read the questions as written \\| no prompting" in markdown
    assert "split complaint into delay, rudeness" in markdown
    assert "merged owner_error, special_request into request" in markdown
    assert "complaint (Complaint) [retired]" in markdown
    assert "### extra_mile (Extra mile)" in markdown
    assert "Adjudicated: 1 stories (1 coded, 0 excluded)" in markdown
    assert "<li>One discrete episode</li>" in html

    viewer = _render(client, person("viewer"), survey.id)
    assert "suppressed" in viewer["markdown"] and "suppressed" in viewer["html"]
    assert "counts per version withheld (suppression)" in viewer["markdown"]
    assert "None stories" not in viewer["markdown"]
