"""Trends under one codebook version: every story of the codebook mapped into that version,
counted once, and parents rolling up their children."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.codebooks import service
from app.models import Codebook, CodebookVersion, IncidentCode
from tests.reports.conftest import API, StorySpec


def _content(codes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "key": "q1-study",
        "name": "Q1 study",
        "codes": [
            {
                "label": c["key"].replace("_", " "),
                "definition": f"Definition of {c['key']}",
                "indicators": {"phrases": [f"phrase {c['key']}"]},
                **c,
            }
            for c in codes
        ],
    }


def _change(db: Callable[[], Any], codebook_id: int, *ops: dict[str, Any]) -> int:
    with db() as session:
        codebook = session.get(Codebook, codebook_id)
        assert codebook is not None
        return int(service.apply_changes(session, codebook, list(ops), None, "change").id)


def _complaint_shares(client: TestClient, admin: dict[str, str], **params: Any) -> dict[str, Any]:
    report = client.get(f"{API}/trends", params={"period": "quarter", **params}, headers=admin)
    assert report.status_code == 200, report.text
    return {
        (r["code"], r["level"]): (r["count"], r["base"], r["share"])
        for r in report.json()["rows"]
        if r["valence"] == "dissatisfying"
    }


def test_q1_complaints_are_100_percent_under_every_version(
    db: Callable[[], Any],
    survey_id: int,
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
) -> None:
    """The issue's example: 7 Q1 complaints confirmed under three versions (3, 2, 2) came out as
    43 %, 29 % and 29 % under the version filter; every version must say 100 %."""
    with db() as session:
        v1 = service.create_codebook(
            session,
            _content([{"key": k} for k in ("complaint", "owner_error", "extra_mile")]),
            None,
        )
        codebook_id, v1_id = v1.codebook_id, v1.id
    add_stories(
        [StorySpec(survey_id, date(2025, 1, 10), codes=("complaint",)) for _ in range(3)], v1_id
    )
    # Renaming another code leaves the complaint rows under version 1.
    v2_id = _change(db, codebook_id, {"op": "rename", "from": "owner_error", "to": "own_error"})
    add_stories(
        [StorySpec(survey_id, date(2025, 2, 10), codes=("complaint",)) for _ in range(2)], v2_id
    )
    v3_id = _change(db, codebook_id, {"op": "merge", "from": ["extra_mile"], "into": "beyond"})
    add_stories(
        [StorySpec(survey_id, date(2025, 3, 10), codes=("complaint",)) for _ in range(2)], v3_id
    )
    with db() as session:
        recorded = sorted(
            session.execute(select(IncidentCode.codebook_version_id, IncidentCode.code)).all()
        )
    # The rows really are spread over the three versions (what made the old filter wrong).
    assert {v for v, _c in recorded} == {v1_id, v2_id, v3_id}

    for version in (v1_id, v2_id, v3_id):
        shares = _complaint_shares(client, admin, codebook_version_id=version)
        assert shares[("complaint", "code")] == (7, 7, 1.0), version
    assert _complaint_shares(client, admin)[("complaint", "code")] == (7, 7, 1.0)


def test_a_renamed_code_counts_under_the_name_of_the_version_asked_for(
    db: Callable[[], Any],
    survey_id: int,
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
) -> None:
    with db() as session:
        v1 = service.create_codebook(
            session, _content([{"key": "complaint"}, {"key": "owner_error"}]), None
        )
        codebook_id, v1_id = v1.codebook_id, v1.id
    add_stories(
        [StorySpec(survey_id, date(2025, 1, 10), codes=("owner_error",)) for _ in range(6)], v1_id
    )
    v2_id = _change(db, codebook_id, {"op": "rename", "from": "owner_error", "to": "own_error"})
    add_stories(
        [StorySpec(survey_id, date(2025, 2, 10), codes=("own_error",)) for _ in range(5)], v2_id
    )
    later = _complaint_shares(client, admin, codebook_version_id=v2_id)
    assert later[("own_error", "code")] == (11, 11, 1.0)
    assert ("owner_error", "code") not in later
    # Read back into version 1, the new name is the old one.
    earlier = _complaint_shares(client, admin, codebook_version_id=v1_id)
    assert earlier[("owner_error", "code")] == (11, 11, 1.0)
    assert ("own_error", "code") not in earlier


def test_parents_roll_up_their_children_each_story_once(
    db: Callable[[], Any],
    survey_id: int,
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
) -> None:
    with db() as session:
        version = service.create_codebook(
            session,
            _content(
                [
                    {"key": "service_failure", "codable": False},
                    {"key": "slow", "parent": "service_failure"},
                    {"key": "rude", "parent": "service_failure"},
                    {"key": "extra_mile"},
                ]
            ),
            None,
        )
        version_id = version.id
        stored = session.get(CodebookVersion, version_id)
        assert stored is not None
        parents = {c["key"]: c.get("parent") for c in stored.content["codes"]}
        assert parents["slow"] == "service_failure"
    day = date(2025, 1, 10)
    add_stories([StorySpec(survey_id, day, codes=("slow",)) for _ in range(5)], version_id)
    add_stories([StorySpec(survey_id, day, codes=("rude",)) for _ in range(6)], version_id)
    # Both children on one story: the roll-up counts it once (a sum of the rows would say 2).
    add_stories([StorySpec(survey_id, day, codes=("slow", "rude")) for _ in range(7)], version_id)
    add_stories([StorySpec(survey_id, day, codes=("extra_mile",)) for _ in range(8)], version_id)
    report = client.get(
        f"{API}/trends",
        params={"codebook_version_id": version_id, "period": "quarter"},
        headers=admin,
    ).json()
    rows = {(r["code"], r["level"]): r["count"] for r in report["rows"]}
    assert rows[("slow", "code")] == 12 and rows[("rude", "code")] == 13
    assert rows[("service_failure", "rollup")] == 18
    assert ("extra_mile", "rollup") not in rows and rows[("extra_mile", "code")] == 8
    assert report["rollups"] == {"service_failure": ["rude", "service_failure", "slow"]}
    csv = client.get(
        f"{API}/trends",
        params={"codebook_version_id": version_id, "period": "quarter", "format": "csv"},
        headers=admin,
    ).text
    assert "level" in csv.splitlines()[0] and ",rollup," in csv
