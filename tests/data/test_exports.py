"""Exports: CSV (zip of tables or one table), JSONL (nested) and xlsx, role-aware like the API,
audited, with clear problems for formats nobody offers."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import AuditEvent, Incident, Survey
from tests.data.conftest import Person, Review

PII = "Write to anna.berg@example.com about it."


@pytest.fixture
def study(
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Callable[..., int],
    review: Review,
    person: Callable[..., Person],
    db: Callable[[], Any],
) -> dict[str, Any]:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    coded = make_story(
        survey, what_happened="The agent waived the fee. " + PII, suggested=("extra_mile",)
    )
    blind = make_story(survey, what_happened="They lost my bag.", suggested=("complaint",))
    plain = make_story(survey, what_happened="Nothing special happened.")
    review.code(alice, coded, ["extra_mile"], note="alice's memo")
    review.code(bob, coded, ["extra_mile"])
    review.code(alice, blind, ["complaint"], note="only alice so far")
    with db() as session:
        for incident_id, segment in ((coded, "gold"), (blind, "gold"), (plain, "basic")):
            session.get(Incident, incident_id).attributes = {"segment": segment}
    return {"survey": survey, "alice": alice, "bob": bob, "ids": (coded, blind, plain)}


def _zip_tables(content: bytes) -> dict[str, list[dict[str, str]]]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return {
        name.removesuffix(".csv"): list(
            csv.DictReader(io.StringIO(archive.read(name).decode("utf-8-sig")))
        )
        for name in archive.namelist()
    }


def test_csv_zip_has_every_table_and_admins_read_the_original(
    client: TestClient, study: dict[str, Any], admin_person: Person, db: Callable[[], Any]
) -> None:
    survey, (coded, blind, plain) = study["survey"], study["ids"]
    response = client.get(
        f"/api/v1/surveys/{survey.id}/export",
        params={"format": "csv"},
        headers=admin_person.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["x-total-count"] == "3"
    tables = _zip_tables(response.content)
    assert set(tables) == {"stories", "codings", "suggestions", "adjudications"}
    stories = {int(r["id"]): r for r in tables["stories"]}
    assert set(stories) == {coded, blind, plain}
    assert PII in stories[coded]["what_happened"]
    assert stories[coded]["final_codes"] == "extra_mile"
    assert stories[coded]["final_codes_codebook"] == "cit-service-encounters v1"
    assert stories[coded]["status"] == "coded" and stories[blind]["status"] == "in_review"
    assert stories[coded]["attribute.segment"] == "gold"
    assert stories[plain]["source"] == "form"
    # Admins see every coding, memos included.
    codings = [(int(r["incident_id"]), r["coder"], r["note"]) for r in tables["codings"]]
    assert sorted(codings) == sorted(
        [
            (coded, "alice", "alice's memo"),
            (coded, "bob", ""),
            (blind, "alice", "only alice so far"),
        ]
    )
    assert {r["layer"] for r in tables["suggestions"]} == {"rules"}
    assert len(tables["suggestions"]) == 8  # two scored stories x four codes
    with db() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "survey.export"))
        assert event is not None and event.actor_name == "the-admin"
        assert event.after["format"] == "csv" and event.after["stories"] == 3
        assert event.after["view"] == "original"


def test_researchers_get_redacted_text_and_blind_coding_holds(
    client: TestClient, study: dict[str, Any]
) -> None:
    survey, bob = study["survey"], study["bob"]
    coded, blind, _plain = study["ids"]
    response = client.get(
        f"/api/v1/surveys/{survey.id}/export", params={"format": "jsonl"}, headers=bob.headers
    )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["id"] for line in lines] == sorted(study["ids"])
    by_id = {line["id"]: line for line in lines}
    assert (
        "anna.berg@example.com" not in response.text and "[EMAIL]" in by_id[coded]["what_happened"]
    )
    # Bob has not coded `blind`: he sees neither alice's coding nor that it is in review.
    assert by_id[blind]["codings"] == [] and by_id[blind]["status"] == "new"
    assert {c["coder"] for c in by_id[coded]["codings"]} == {"alice", "bob"}
    assert by_id[coded]["final_codes"][0]["code"] == "extra_mile"
    suggested = by_id[coded]["suggestions"]
    assert suggested["codebook"] == "cit-service-encounters v1"
    assert {i["code"] for i in suggested["items"]} >= {"extra_mile"}
    assert {i["source"] for i in suggested["items"]} == {"rules"}
    assert by_id[coded]["attributes"] == {"segment": "gold"}
    # Researchers cannot ask for the original.
    refused = client.get(
        f"/api/v1/surveys/{survey.id}/export",
        params={"format": "jsonl", "view": "original"},
        headers=bob.headers,
    )
    assert refused.status_code == 403


def test_xlsx_has_one_sheet_per_table(
    client: TestClient, study: dict[str, Any], admin_person: Person
) -> None:
    survey = study["survey"]
    response = client.get(
        f"/api/v1/surveys/{survey.id}/export",
        headers={
            **admin_person.headers,
            "Accept": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        },
    )
    assert response.status_code == 200, response.text
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    assert workbook.sheetnames == ["stories", "codings", "suggestions", "adjudications"]
    rows = list(workbook["stories"].iter_rows(values_only=True))
    assert rows[0][:3] == ("id", "survey_id", "submitted_at")
    assert len(rows) == 4
    assert sorted(r[0] for r in rows[1:]) == sorted(study["ids"])  # numbers stay numbers


def test_one_table_as_plain_csv_and_format_problems(
    client: TestClient, study: dict[str, Any], admin_person: Person, token_for: Callable[..., Any]
) -> None:
    url = f"/api/v1/surveys/{study['survey'].id}/export"
    one = client.get(
        url, params={"format": "csv", "table": "codings"}, headers=admin_person.headers
    )
    assert one.status_code == 200 and one.headers["content-type"].startswith("text/csv")
    assert len(list(csv.DictReader(io.StringIO(one.content.decode("utf-8-sig"))))) == 3
    wrong = client.get(url, params={"format": "pdf"}, headers=admin_person.headers)
    assert wrong.status_code == 422
    assert wrong.headers["content-type"].startswith("application/problem+json")
    refused = client.get(url, headers={**admin_person.headers, "Accept": "application/pdf"})
    assert refused.status_code == 406
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.get(url, headers=token_for("viewer")).status_code == 403
    missing = client.get("/api/v1/surveys/999999/export", headers=admin_person.headers)
    assert missing.status_code == 404


def test_an_erased_story_is_in_no_export(
    client: TestClient, study: dict[str, Any], admin_person: Person
) -> None:
    coded = study["ids"][0]
    erased = client.delete(
        f"/api/v1/incidents/{coded}", params={"reason": "test"}, headers=admin_person.headers
    )
    assert erased.status_code == 200
    response = client.get(
        f"/api/v1/surveys/{study['survey'].id}/export",
        params={"format": "csv"},
        headers=admin_person.headers,
    )
    tables = _zip_tables(response.content)
    for name, rows in tables.items():
        key = "id" if name == "stories" else "incident_id"
        assert str(coded) not in {r[key] for r in rows}, name
    assert "alice's memo" not in {r["note"] for r in tables["codings"]}


def test_incident_list_as_csv_and_the_table_reports_as_csv(
    client: TestClient, study: dict[str, Any], admin_person: Person
) -> None:
    survey = study["survey"]
    listed = client.get(
        "/api/v1/incidents",
        params={"survey_id": survey.id, "format": "csv", "q": "bag"},
        headers=admin_person.headers,
    )
    assert listed.status_code == 200 and listed.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(listed.content.decode("utf-8-sig"))))
    assert [int(r["id"]) for r in rows] == [study["ids"][1]]  # the filters hold
    by_accept = client.get(
        "/api/v1/incidents",
        params={"survey_id": survey.id},
        headers={**admin_person.headers, "Accept": "text/csv"},
    )
    assert by_accept.headers["content-type"].startswith("text/csv")
    assert (
        client.get(
            "/api/v1/incidents", params={"format": "xml"}, headers=admin_person.headers
        ).status_code
        == 422
    )
    assert (
        client.get(
            "/api/v1/incidents", headers={**admin_person.headers, "Accept": "application/xml"}
        ).status_code
        == 406
    )
    assert client.get("/api/v1/incidents", headers=admin_person.headers).json()["items"]

    agreement = client.get(
        "/api/v1/reports/agreement",
        params={"survey_id": survey.id, "format": "csv"},
        headers=admin_person.headers,
    )
    assert agreement.status_code == 200, agreement.text
    table = list(csv.DictReader(io.StringIO(agreement.content.decode("utf-8-sig"))))
    overall = [r for r in table if r["section"] == "inter_coder" and r["code"] == "(overall)"]
    assert {r["statistic"] for r in overall} >= {"percent_agreement", "krippendorff_alpha"}
    assert all(r["n_units"] != "" for r in overall)
    study_csv = client.get(
        "/api/v1/reports/study",
        params={"survey_id": survey.id},
        headers={**admin_person.headers, "Accept": "text/csv"},
    )
    assert study_csv.status_code == 200 and study_csv.headers["content-type"].startswith("text/csv")
    items = {
        (r["section"], r["item"]): r["value"]
        for r in csv.DictReader(io.StringIO(study_csv.content.decode("utf-8-sig")))
    }
    assert any(section == "respondents" for section, _ in items)
    for url in ("/api/v1/reports/trends", "/api/v1/reports/agreement"):
        refused = client.get(url, headers={**admin_person.headers, "Accept": "application/pdf"})
        assert refused.status_code == 406, url


@pytest.mark.parametrize("who", ["admin", "researcher"])
def test_the_stories_table_is_the_flat_form_of_the_jsonl_lines(
    client: TestClient,
    study: dict[str, Any],
    admin_person: Person,
    db: Callable[[], Any],
    who: str,
) -> None:
    """Both are built by position from the same rows: every column of the stories CSV equals
    the JSONL line's field (lists joined by ';', missing values empty), in both views."""
    survey = study["survey"]
    coded, blind, _plain = study["ids"]
    with db() as session:  # an attribute with personal data: redacted for researchers
        session.get(Incident, coded).attributes = {"segment": "gold", "comment": PII}
    headers = admin_person.headers if who == "admin" else study["bob"].headers
    url = f"/api/v1/surveys/{survey.id}/export"
    table = client.get(url, params={"format": "csv", "table": "stories"}, headers=headers)
    lines = client.get(url, params={"format": "jsonl"}, headers=headers)
    assert table.status_code == lines.status_code == 200
    rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(table.content.decode("utf-8-sig")))}
    records = {r["id"]: r for r in map(json.loads, lines.text.splitlines())}
    assert sorted(rows) == sorted(records) == sorted(study["ids"])
    for incident_id, record in records.items():
        row = rows[incident_id]
        for name, value in record.items():
            if name in ("codings", "suggestions", "adjudications", "attributes"):
                continue
            if name == "final_codes":
                value = ";".join(c["code"] for c in value)
            expected = "" if value is None else str(value)
            assert row[name] == expected, (who, incident_id, name)
        for key, value in record["attributes"].items():
            assert row[f"attribute.{key}"] == value
    assert (PII in rows[coded]["attribute.comment"]) is (who == "admin")
    assert (PII in rows[coded]["what_happened"]) is (who == "admin")
    assert rows[blind]["status"] == ("in_review" if who == "admin" else "new")
    assert rows[coded]["final_codes_codebook"] == "cit-service-encounters v1"


def test_an_export_of_a_date_range_holds_exactly_the_stories_in_it(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Callable[..., int],
    admin_person: Person,
    db: Callable[[], Any],
) -> None:
    """A date filter bounds the keyset loops by the last matching id: stories before, inside
    and after the range (and another survey's in between) land where they belong."""
    survey = make_survey(codebook_id=codebook_id)
    other = make_survey(codebook_id=codebook_id)
    days = {}
    for day in range(1, 8):
        days[day] = make_story(
            survey, what_happened=f"Story of day {day}.", suggested=("complaint",)
        )
        make_story(other, what_happened=f"Other survey, day {day}.")
    with db() as session:
        for day, incident_id in days.items():
            session.get(Incident, incident_id).submitted_at = datetime(2026, 3, day, 12, tzinfo=UTC)
    url = f"/api/v1/surveys/{survey.id}/export"
    window = {"submitted_from": "2026-03-03T00:00:00Z", "submitted_to": "2026-03-06T00:00:00Z"}
    for params in ({"format": "jsonl"}, {"format": "csv", "table": "suggestions"}):
        response = client.get(url, params={**params, **window}, headers=admin_person.headers)
        assert response.status_code == 200, response.text
        if params["format"] == "jsonl":
            found = {json.loads(line)["id"] for line in response.text.splitlines()}
        else:
            text = response.content.decode("utf-8-sig")
            found = {int(r["incident_id"]) for r in csv.DictReader(io.StringIO(text))}
        assert found == {days[3], days[4], days[5]}, params
