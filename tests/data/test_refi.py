"""REFI-QDA: .qdc and .qdpx exports validate against the standard's schemas, files shaped as
QualCoder, MAXQDA and ATLAS.ti write them import, and export -> import -> export gives the same
project."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import select

from app.models import (
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
    CodingSpan,
    Incident,
    IncidentCode,
    Survey,
)
from app.refi.xml import schema
from tests.data.conftest import Person, Review

FIXTURES = Path(__file__).parent / "refi"
P = "{urn:QDA-XML:project:1.0}"


def _valid(data: bytes, kind: str) -> etree._Element:
    root = etree.fromstring(data)
    validator = schema(kind)  # type: ignore[arg-type]
    assert validator.validate(root), validator.error_log
    return root


def _codes(db: Callable[[], Any], key: str) -> dict[str, dict[str, Any]]:
    with db() as session:
        book = session.scalar(select(Codebook).where(Codebook.key == key))
        version = session.scalar(
            select(CodebookVersion).where(
                CodebookVersion.codebook_id == book.id,
                CodebookVersion.number == book.current_version,
            )
        )
        return {c["key"]: c for c in version.content["codes"]}


def test_qdc_export_validates_and_imports_back_unchanged(
    client: TestClient, codebook_id: int, admin_person: Person, db: Callable[[], Any]
) -> None:
    response = client.get(f"/api/v1/codebooks/{codebook_id}/qdc", headers=admin_person.headers)
    assert response.status_code == 200, response.text
    root = _valid(response.content, "codebook")
    names = [c.get("name") for c in root.iter("{urn:QDA-XML:codebook:1.0}Code")]
    assert names == ["Complaint", "Special request", "Extra mile", "Customer error"]
    description = root.find(".//{urn:QDA-XML:codebook:1.0}Description").text
    assert "Inclusion criteria:" in description and "Examples:" in description
    # Into the same codebook: nothing changed, no new version.
    same = client.post(
        "/api/v1/codebooks/qdc",
        files={"file": ("book.qdc", response.content, "application/xml")},
        data={"key": "cit-service-encounters"},
        headers=admin_person.headers,
    )
    assert same.status_code == 201, same.text
    assert (same.json()["outcome"], same.json()["version"]) == ("unchanged", 1)
    # As a new codebook: the same codes with definitions, criteria and examples.
    copy = client.post(
        "/api/v1/codebooks/qdc",
        files={"file": ("copy.qdc", response.content, "application/xml")},
        data={"name": "Copy"},
        headers=admin_person.headers,
    )
    assert copy.status_code == 201, copy.text
    original, copied = _codes(db, "cit-service-encounters"), _codes(db, copy.json()["key"])
    assert list(copied) == list(original)
    for key, code in original.items():
        for field in ("label", "definition", "inclusion", "exclusion", "examples", "parent"):
            assert copied[key][field] == code[field], (key, field)
    again = client.get(
        f"/api/v1/codebooks/{copy.json()['codebook_id']}/qdc", headers=admin_person.headers
    )
    _valid(again.content, "codebook")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "qualcoder.qdc",
            {
                "service_failure": (None, False, "#F5A9A9"),
                "rude_staff": ("service_failure", True, "#FF0000"),
                "lost_luggage": ("service_failure", True, "#FF0000"),
                "extra_mile": (None, True, "#58ACFA"),
            },
        ),
        (
            "maxqda.qdc",
            {
                "complaint": (None, True, "#FF0000"),
                "refund_asked": ("complaint", True, "#FF8080"),
                "owner_error": (None, True, "#00FF00"),
            },
        ),
        (
            "atlasti.qdc",
            {"special_request": (None, True, None), "staff_praise": (None, True, None)},
        ),
    ],
)
def test_qdc_files_from_qda_programs_import(
    client: TestClient,
    admin_person: Person,
    db: Callable[[], Any],
    fixture: str,
    expected: dict[str, Any],
) -> None:
    data = (FIXTURES / fixture).read_bytes()
    response = client.post(
        "/api/v1/codebooks/qdc",
        files={"file": (fixture, data, "application/xml")},
        data={"name": f"From {fixture}"},
        headers=admin_person.headers,
    )
    assert response.status_code == 201, response.text
    codes = _codes(db, response.json()["key"])
    found = {k: (c.get("parent"), c.get("codable", True), c.get("color")) for k, c in codes.items()}
    assert found == expected
    if fixture == "maxqda.qdc":
        assert response.json()["sets_ignored"] == 1
    if fixture == "atlasti.qdc":
        assert codes["staff_praise"]["examples"] == ["The agent waited for me at the gate."]
        assert codes["staff_praise"]["label"] == "Staff: praise!"


def test_an_invalid_qdc_is_a_clear_problem(client: TestClient, admin_person: Person) -> None:
    broken = (
        b'<CodeBook xmlns="urn:QDA-XML:codebook:1.0">'
        b'<Codes><Code name="x" isCodable="true"/></Codes></CodeBook>'
    )
    response = client.post(
        "/api/v1/codebooks/qdc",
        files={"file": ("b.qdc", broken, "application/xml")},
        headers=admin_person.headers,
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "guid" in response.json()["detail"] and response.json()["errors"][0]["line"] == 1


def _qdpx(client: TestClient, survey_id: int, who: Person) -> tuple[bytes, zipfile.ZipFile]:
    response = client.get(
        f"/api/v1/surveys/{survey_id}/export", params={"format": "qdpx"}, headers=who.headers
    )
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    return archive.read("project.qde"), archive


def test_qdpx_export_validates_and_round_trips(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Callable[..., int],
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    db: Callable[[], Any],
) -> None:
    first = make_survey(title="Airport study", codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    agreed = make_story(
        first,
        what_happened="The agent waived the fee.",
        outcome="I was happy.",
        occurred=None,
        circumstances=None,
    )
    split = make_story(
        first, what_happened="They lost my bag but found it.", valence="dissatisfying"
    )
    waiting = make_story(first, what_happened="Nothing much.")
    review.code(alice, agreed, ["extra_mile"], note="clear case")
    review.code(bob, agreed, ["extra_mile"])
    review.code(alice, split, ["complaint"])
    review.code(bob, split, ["extra_mile"])
    review.code(alice, waiting, [], exclude="not an incident")
    with db() as session:
        session.get(Incident, agreed).attributes = {"segment": "gold"}

    qde, archive = _qdpx(client, first.id, admin_person)
    root = _valid(qde, "project")
    sources = root.findall(f"{P}Sources/{P}TextSource")
    assert len(sources) == 3
    users = {u.get("name") for u in root.iter(f"{P}User")}
    assert users == {"alice", "bob", "CIT final codes"}
    text = archive.read(sources[0].get("plainTextPath").replace("internal://", "Sources/")).decode()
    assert text == "What happened:\nThe agent waived the fee.\n\nOutcome:\nI was happy."
    final = [s for s in sources[0].iter(f"{P}PlainTextSelection")]
    assert {(s.get("startPosition"), s.get("endPosition")) for s in final} == {
        ("0", str(len(text)))
    }
    notes = {n.findtext(f"{P}PlainTextContent") for n in root.iter(f"{P}Note")}
    assert notes == {"clear case", "not an incident"}
    assert {v.get("name") for v in root.iter(f"{P}Variable")} >= {
        "valence",
        "touchpoint",
        "segment",
    }

    # Import into another survey with the same codebook, export again: the same project.
    second = make_survey(title="Airport study", codebook_id=codebook_id, double_coding_share=100)
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as out:
        for name in archive.namelist():
            out.writestr(name, archive.read(name))
    imported = client.post(
        f"/api/v1/surveys/{second.id}/qdpx",
        files={"file": ("airport.qdpx", data.getvalue(), "application/zip")},
        headers=admin_person.headers,
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["stories"] == 3 and imported.json()["codings"] == 5
    with db() as session:
        statuses = [
            i.status
            for i in session.scalars(
                select(Incident).where(Incident.survey_id == second.id).order_by(Incident.id)
            )
        ]
        assert statuses == ["coded", "adjudication", "in_review"]
    qde_again, archive_again = _qdpx(client, second.id, admin_person)
    assert qde_again == qde
    assert sorted(archive_again.namelist()) == sorted(archive.namelist())
    # Importing the same project again stores nothing twice.
    twice = client.post(
        f"/api/v1/surveys/{second.id}/qdpx",
        files={"file": ("airport.qdpx", data.getvalue(), "application/zip")},
        headers=admin_person.headers,
    )
    assert (twice.json()["stories"], twice.json()["duplicates"]) == (0, 3)


def test_a_qualcoder_project_imports_with_spans_memos_and_attributes(
    client: TestClient, survey: Survey, admin_person: Person, db: Callable[[], Any]
) -> None:
    data = (FIXTURES / "qualcoder.qdpx").read_bytes()
    response = client.post(
        f"/api/v1/surveys/{survey.id}/qdpx",
        files={"file": ("interviews.qdpx", data, "application/zip")},
        headers=admin_person.headers,
    )
    assert response.status_code == 201, response.text
    assert (response.json()["stories"], response.json()["codings"]) == (2, 4)
    with db() as session:
        first, second = session.scalars(
            select(Incident).where(Incident.survey_id == survey.id).order_by(Incident.id)
        ).all()
        assert first.what_happened.startswith("The gate agent shouted")
        assert first.valence == "dissatisfying" and second.valence == "unknown"
        assert first.attributes == {"gender": "female", "qda_name": "Interview 1"}
        assert first.source == "import" and first.import_id is not None
        # Both coders applied "Rude staff": agreement makes it final; story 2 disagrees.
        assert first.status == "coded" and second.status == "adjudication"
        finals = session.scalars(
            select(IncidentCode.code).where(IncidentCode.incident_id == first.id)
        ).all()
        assert finals == ["rude_staff"]
        spans = session.execute(
            select(CodingSpan.start, CodingSpan.end)
            .join(CodingCode, CodingCode.id == CodingSpan.coding_code_id)
            .join(Coding, Coding.id == CodingCode.coding_id)
            .where(Coding.incident_id == first.id)
        ).all()
        assert sorted(end - start for start, end in spans) == [13, 19]
        memo = session.scalar(
            select(Coding.note).where(Coding.incident_id == first.id, Coding.note.is_not(None))
        )
        assert memo == "The manager's apology matters too."
    # The category was merged into the survey's codebook as a code coders cannot apply.
    codes = _codes(db, "cit-service-encounters")
    assert (
        codes["service_failure"]["codable"] is False
        and codes["rude_staff"]["parent"] == "service_failure"
    )
    # Researchers read coded spans against the redacted text they see; the export still validates.
    qde, _archive = _qdpx(client, survey.id, admin_person)
    _valid(qde, "project")


def test_a_broken_qdpx_is_one_clear_problem(
    client: TestClient, survey: Survey, admin_person: Person
) -> None:
    response = client.post(
        f"/api/v1/surveys/{survey.id}/qdpx",
        files={"file": ("x.qdpx", b"not a zip", "application/zip")},
        headers=admin_person.headers,
    )
    assert response.status_code == 422 and "zip" in response.json()["detail"]
