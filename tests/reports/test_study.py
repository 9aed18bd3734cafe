"""The CIT study report: the checklist filled from the data, in JSON, Markdown and HTML; the
saturation curve; suppression for viewers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.models import VALENCES, Coding, CodingCode, Incident, Invitation, User
from app.reports.study import study_report
from tests.reports.conftest import API, StorySpec

START = datetime(2025, 3, 1, 9, tzinfo=UTC)
# Position (1-based, in order of finalization) at which each code first appears.
FIRST_SEEN = {
    "complaint": 1,
    "extra_mile": 2,
    "owner_error": 10,
    "special_request": 60,
    "staff_attitude": 115,
}


def _codes_at(position: int) -> tuple[str, ...]:
    new = tuple(code for code, first in FIRST_SEEN.items() if first == position)
    return new or (("complaint",) if position % 2 else ("extra_mile",))


@pytest.fixture
def study(
    make_survey: Callable[..., Any],
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    token_for: Callable[..., dict[str, str]],
    db: Callable[[], Any],
) -> dict[str, Any]:
    """120 coded stories (new codes at FIRST_SEEN), 6 excluded (4 + 2 reasons), 3 pending."""
    survey = make_survey(title="Airline <study> & co")
    codes = (*FIRST_SEEN,)
    v1 = version_id(codes, number=1, note="First version", key="airline")
    v2 = version_id(codes, number=2, note="Added staff_attitude", key="airline")
    coded = [
        StorySpec(
            survey.id,
            date(2025, 2, 1) + timedelta(days=i % 20),
            "dissatisfying" if i % 3 else "satisfying",
            _codes_at(i + 1),
            status="coded",
            touchpoint="Check-in" if i % 4 else None,
            finalized_at=START + timedelta(minutes=i),
            occurred_on=date(2025, 1, 20) if i < 30 else None,
        )
        for i in range(120)
    ]
    ids = add_stories(coded[:60], v1) + add_stories(coded[60:], v2)
    reasons = ["not an interaction"] * 4 + ["too vague"] * 2
    add_stories(
        [
            StorySpec(survey.id, date(2025, 2, 3), status="excluded", exclusion_reason=r)
            for r in reasons
        ],
        v1,
    )
    pending = add_stories(
        [StorySpec(survey.id, date(2025, 2, 4), status="in_review") for _ in range(3)], v1
    )
    token_for("researcher", name="coder-a")
    token_for("researcher", name="coder-b")
    with db() as session:
        coders = list(session.scalars(select(User.id).where(User.name.in_(["coder-a", "coder-b"]))))
        for story in ids[:10]:
            for coder in coders:
                coding = Coding(incident_id=story, coder_id=coder, codebook_version_id=v1)
                session.add(coding)
                session.flush()
                session.add(
                    CodingCode(
                        coding_id=coding.id,
                        code=_codes_at(ids.index(story) + 1)[0],
                        decision="accepted",
                    )
                )
        invitations = [
            Invitation(
                survey_id=survey.id,
                nonce=f"n{i}",
                token_hash=f"hash-{i}",
                attributes={},
                used_at=START if i < 2 else None,
            )
            for i in range(3)
        ]
        session.add_all(invitations)
        session.flush()
        for story, invitation in zip(pending[:2], invitations, strict=False):
            session.execute(
                update(Incident).where(Incident.id == story).values(invitation_id=invitation.id)
            )
        # Respondent attributes (from invitations or imports): a characteristic, and an
        # identifier with too many distinct values to tabulate.
        for i, story in enumerate(ids[:30]):
            segment = "business" if i < 27 else "leisure"
            session.execute(
                update(Incident)
                .where(Incident.id == story)
                .values(attributes={"segment": segment, "customer": f"c-{i}"})
            )
    return {"survey_id": survey.id, "versions": (v1, v2)}


def test_study_report_content(
    study: dict[str, Any], client: TestClient, admin: dict[str, str]
) -> None:
    response = client.get(f"{API}/study", params={"survey_id": study["survey_id"]}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    report = response.json()
    assert "not prevalence" in report["note"]
    assert report["survey"]["title"] == "Airline <study> & co"
    assert report["suppression"]["applied"] is False

    fields = [q["field"] for q in report["questions"]]
    assert fields[:2] == ["prompt", "occurred"] and "what_happened" in fields
    assert all(q["text"] for q in report["questions"])
    assert report["respondents"] | {"note": None, "by_attribute": None} == {
        "stories": 129,
        "invitations_sent": 3,
        "invitations_used": 2,
        "stories_via_invitation": 2,
        "stories_via_open_link": 127,
        "stories_imported": 0,
        "note": None,
        "by_attribute": None,
    }
    by_attribute = {a["attribute"]: a for a in report["respondents"]["by_attribute"]}
    assert by_attribute["segment"]["values"] == [
        {"value": "business", "stories": 27},
        {"value": "leisure", "stories": 3},
    ]
    assert by_attribute["customer"]["tabulated"] is False
    assert by_attribute["customer"]["distinct_values"] == 30
    assert by_attribute["customer"]["values"] == []
    incidents = report["incidents"]
    assert (
        incidents["reported"],
        incidents["included"],
        incidents["excluded"],
        incidents["pending"],
    ) == (129, 120, 6, 3)
    assert incidents["by_status"] == {
        "new": 0,
        "in_review": 3,
        "adjudication": 0,
        "coded": 120,
        "excluded": 6,
    }
    assert incidents["exclusion_reasons"] == [
        {"reason": "not an interaction", "stories": 4},
        {"reason": "too vague", "stories": 2},
    ]
    assert report["valence"]["included"] == {"satisfying": 40, "dissatisfying": 80}
    assert report["valence"]["reported"] == {"satisfying": 40, "dissatisfying": 89}
    touchpoints = {e["value"]: e["stories"] for e in report["context"]["touchpoint"]}
    assert touchpoints == {"Check-in": 90, None: 39}
    since = {t["bucket"]: t["stories"] for t in report["time_since"]}
    assert since["unknown"] == 99 and sum(since.values()) == 129
    assert since["8-30 days"] + since["0-7 days"] + since["31-180 days"] == 30

    codes = {c["code"]: c for c in report["codes"]}
    assert set(codes) == set(FIRST_SEEN)
    assert codes["staff_attitude"]["stories"] == 1
    assert sum(c["stories"] for c in codes.values()) == 120  # one code per story here
    assert (
        codes["complaint"]["stories"]
        == codes["complaint"]["satisfying"] + codes["complaint"]["dissatisfying"]
    )

    versions = report["classification"]
    assert [(v["number"], v["change_note"], v["stories"]) for v in versions] == [
        (1, "First version", 60),
        (2, "Added staff_attitude", 60),
    ]
    assert [c["key"] for c in versions[0]["codes"]] == list(FIRST_SEEN)
    assert report["coders"] == {"coders": 2, "codings": 20, "double_coded_stories": 10}
    # From app.reviews.reliability: two coders agreed on all 10 double-coded stories.
    assert report["reliability"]["available"] is True
    assert report["reliability"]["n_units"] == 10

    checklist = {item["section"]: item["status"] for item in report["checklist"]}
    assert len(checklist) == 18
    # The cross-tabs over the whole study add up to the stories per code and valence.
    by_touchpoint = report["tables"]["crosstabs"]["touchpoint"]["tables"]
    summed: dict[tuple[str, str], int] = {}
    for part in by_touchpoint:
        for row in part["rows"]:
            if row["level"] == "code":
                key = (row["code"], part["valence"])
                summed[key] = summed.get(key, 0) + sum(c["count"] for c in row["cells"])
    expected = {(c["code"], v): c[v] for c in report["codes"] for v in VALENCES if c[v]}
    assert {k: v for k, v in summed.items() if v} == expected and expected
    for section in ("questions", "codes", "saturation", "reliability", "coders", "tables"):
        assert checklist[section] == "yes", section
    # Nothing the team did not write is reported: no built-in definition or criteria.
    for section in ("incident_definition", "inclusion_criteria", "exclusion_criteria"):
        assert checklist[section] == "missing", section
    assert report["study"]["incident_definition"] is None


def test_saturation_curve_and_flanagans_rule(study: dict[str, Any], db: Callable[[], Any]) -> None:
    with db() as session:
        saturation = study_report(session, study["survey_id"], suppress=False)["saturation"]
        every_50 = study_report(session, study["survey_id"], suppress=False, saturation_step=50)[
            "saturation"
        ]
    assert saturation["stories_coded"] == 120 and saturation["distinct_codes"] == 5
    assert saturation["step"] == 10
    curve = {p["stories_coded"]: p["distinct_codes"] for p in saturation["points"]}
    assert curve == {
        10: 3,
        20: 3,
        30: 3,
        40: 3,
        50: 3,
        60: 4,
        70: 4,
        80: 4,
        90: 4,
        100: 4,
        110: 4,
        120: 5,
    }
    assert [p["new_codes"] for p in saturation["points"]][:6] == [3, 0, 0, 0, 0, 1]
    # The last 100 stories (21-120) brought special_request and staff_attitude: 2 <= 3.
    assert saturation["new_codes_in_last_100"] == 2 and saturation["saturated"] is True
    assert [p["stories_coded"] for p in every_50["points"]] == [50, 100, 120]


def test_saturation_needs_more_than_100_stories(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    add_stories(
        [StorySpec(survey_id, date(2025, 1, 1), codes=(f"code_{i % 7}",)) for i in range(30)],
        version_id(),
    )
    with db() as session:
        saturation = study_report(session, survey_id, suppress=False)["saturation"]
    assert saturation["saturated"] is None and "more than 100" in saturation["reason"]
    assert saturation["distinct_codes"] == 7 and saturation["points"][-1] == {
        "stories_coded": 30,
        "distinct_codes": 7,
        "new_codes": 0,
    }


def test_saturation_not_reached(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    # 150 stories, a new code every 20: the last 100 add 5 new codes.
    specs = [
        StorySpec(
            survey_id,
            date(2025, 1, 1),
            codes=(f"code_{i // 20}",),
            finalized_at=START + timedelta(minutes=i),
        )
        for i in range(150)
    ]
    add_stories(specs, version_id())
    with db() as session:
        saturation = study_report(session, survey_id, suppress=False)["saturation"]
    assert saturation["new_codes_in_last_100"] == 5 and saturation["saturated"] is False


def test_viewers_get_small_counts_suppressed(
    study: dict[str, Any], client: TestClient, token_for: Callable[..., dict[str, str]]
) -> None:
    report = client.get(
        f"{API}/study", params={"survey_id": study["survey_id"]}, headers=token_for("viewer")
    ).json()
    assert report["suppression"] == report["suppression"] | {"applied": True, "min_cell": 5}
    reasons = {x["reason"]: x["stories"] for x in report["incidents"]["exclusion_reasons"]}
    # 4 and 2 are below 5: hidden, and neither can be recovered from the other.
    assert reasons == {"not an interaction": None, "too vague": None}
    by_status = report["incidents"]["by_status"]
    # in_review (3) is hidden; the smallest other positive status (excluded, 6) goes with it,
    # so the status breakdown still sums to the published 129 without giving either away.
    assert by_status == {
        "new": 0,
        "in_review": None,
        "adjudication": 0,
        "coded": 120,
        "excluded": None,
    }
    assert report["incidents"]["excluded"] is None and report["incidents"]["pending"] is None
    assert report["respondents"]["stories_via_invitation"] is None  # 2
    assert report["respondents"]["stories_via_open_link"] is None  # its complement
    segment = {a["attribute"]: a for a in report["respondents"]["by_attribute"]}["segment"]
    # 3 leisure stories are hidden, and so is business, which would give them away from 30.
    assert [v["stories"] for v in segment["values"]] == [None, None]
    assert all(v["stories"] is None for v in report["classification"])
    codes = {c["code"]: c for c in report["codes"]}
    assert codes["staff_attitude"]["stories"] is None
    assert report["incidents"]["reported"] == 129


def test_markdown_and_html(
    study: dict[str, Any], client: TestClient, admin: dict[str, str]
) -> None:
    params = {"survey_id": study["survey_id"]}
    markdown = client.get(f"{API}/study", params={**params, "format": "markdown"}, headers=admin)
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    by_accept = client.get(
        f"{API}/study", params=params, headers={**admin, "Accept": "text/markdown"}
    )
    assert by_accept.text == markdown.text
    text = markdown.text
    assert text.startswith("# CIT study report: Airline <study> & co")
    for needle in (
        "## Reporting checklist (Gremler 2004)",
        "not prevalence",
        "| Reported | 129 |",
        "| Included (coded) | 120 |",
        "| not an interaction | 4 |",
        "| satisfying | 40 | 40 |",
        "Change note: Added staff_attitude",
        "| segment | Stories |",
        "| business | 27 |",
        "Not tabulated: 30 distinct values",
        "Missing: the team has not entered the study's definition of a critical incident.",
        "| Definition of a critical incident | missing |",
        "| staff_attitude | 1 |",
        "2 coders, 20 codings, 10 stories coded independently",
        "- Coders: coder-a, coder-b; stories coded by two or more: 10",
        "| krippendorff_alpha | 1.000 [1.000, 1.000] |",
        "Saturation reached: the last 100 coded stories added 2 new codes",
        "| 120 | 5 | 1 |",
    ):
        assert needle in text, needle

    page = client.get(
        f"{API}/study", params=params, headers={**admin, "Accept": "text/html,*/*;q=0.8"}
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (
        client.get(f"{API}/study", params={**params, "format": "html"}, headers=admin).text
        == page.text
    )
    html = page.text
    assert "<h1>CIT study report: Airline &lt;study&gt; &amp; co</h1>" in html
    assert "<study>" not in html
    assert '<td>not an interaction</td><td class="num">4</td>' in html
    assert "Saturation reached" in html and "<h2>Reliability</h2>" in html
