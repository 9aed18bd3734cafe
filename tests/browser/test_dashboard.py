"""The reports dashboard in Chromium: a viewer enters a token and sees the shares drawn as SVG
(one chart per valence, one series per code, one point per period) with the table below."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.models import Codebook, CodebookVersion, Incident, IncidentCode, Survey

pytestmark = pytest.mark.browser

MONTHS = (1, 2, 3)
COMPLAINTS = {1: 5, 2: 7, 3: 9}  # of 14 stories per month and valence; the rest are extra_mile
STORIES_PER_CELL = 14


def _seed(db: Callable[[], Any], survey: Survey) -> None:
    with db() as session:
        book = Codebook(key="dash", name="Dashboard codebook")
        session.add(book)
        session.flush()
        version = CodebookVersion(
            codebook_id=book.id,
            number=1,
            content={"key": "dash", "name": "Dashboard codebook", "codes": []},
            created_by="admin",
        )
        session.add(version)
        session.flush()
        serial = 0
        for month in MONTHS:
            for valence in ("satisfying", "dissatisfying"):
                for i in range(STORIES_PER_CELL):
                    serial += 1
                    moment = datetime(2025, month, 1 + i, 10, tzinfo=UTC)
                    story = Incident(
                        survey_id=survey.id,
                        submission_key=f"dash-{serial}",
                        what_happened="A story.",
                        valence=valence,
                        language="en",
                        attributes={},
                        redacted={},
                        redaction_spans={},
                        submitted_at=moment,
                        status="coded",
                        finalized_at=moment,
                    )
                    session.add(story)
                    session.flush()
                    code = "complaint" if i < COMPLAINTS[month] else "extra_mile"
                    session.add(
                        IncidentCode(
                            incident_id=story.id,
                            code=code,
                            codebook_version_id=version.id,
                            source="review",
                            confirmed_by="coder",
                        )
                    )


def test_viewer_sees_the_chart_and_the_table(
    page: Any,
    live_server: str,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    token_for: Callable[..., dict[str, str]],
    artifacts: Path,
) -> None:
    survey = make_survey(title="Dashboard survey")
    _seed(db, survey)
    token = token_for("viewer")["Authorization"].removeprefix("Bearer ")

    page.goto(f"{live_server}/dashboard")
    assert page.title() == "CIT reports dashboard"
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Use token").click()

    points = "svg.chart g.series circle.point"
    page.wait_for_function(
        f"() => document.querySelectorAll('{points}').length === {len(MONTHS) * 2 * 2}"
    )
    charts = page.locator("svg.chart")
    assert charts.count() == 2
    for valence in ("satisfying", "dissatisfying"):
        chart = page.locator(f'svg.chart[data-valence="{valence}"]')
        series = chart.locator("g.series")
        assert series.count() == 2  # complaint, extra_mile
        for code in ("complaint", "extra_mile"):
            one = chart.locator(f'g.series[data-code="{code}"]')
            assert one.locator("circle.point").count() == len(MONTHS)
            assert one.locator("polyline").count() == 1
    # The complaint line rises (5, 7, 9 of 14): SVG y falls.
    ys = [
        float(c.get_attribute("cy"))
        for c in page.locator(
            'svg.chart[data-valence="dissatisfying"] g.series[data-code="complaint"] circle'
        ).all()
    ]
    assert ys[0] > ys[1] > ys[2]

    rows = page.locator("#table tbody tr")
    assert rows.count() == len(MONTHS) * 2 * 2
    first = rows.first.locator("td").all_inner_texts()
    assert first[:6] == ["2025-01-01", "complaint", "satisfying", "5", "14", "35.7%"]
    assert "not prevalence" in page.locator("#note").inner_text()
    assert page.evaluate("() => sessionStorage.getItem('cit-report-token')") == token
    assert page.locator("#survey option").all_inner_texts() == ["All surveys", "Dashboard survey"]
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    # Filters: one quarter, so one point per series and no line.
    page.get_by_label("Period", exact=True).select_option("quarter")
    page.get_by_label("Survey", exact=True).select_option(str(survey.id))
    page.get_by_role("button", name="Show").click()
    page.wait_for_function(f"() => document.querySelectorAll('{points}').length === 4")
    assert page.locator("svg.chart polyline").count() == 0
    assert page.locator("#table tbody tr").count() == 4
    page.screenshot(path=str(artifacts / "dashboard-quarter.png"), full_page=True)


def test_a_wrong_token_is_asked_again(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/dashboard")
    page.get_by_label("API token").fill("cit_not-a-token")
    page.get_by_role("button", name="Use token").click()
    page.wait_for_selector("#status.error")
    assert "not accepted" in page.locator("#status").inner_text()
    assert page.locator("#token-form").is_visible()
    assert page.evaluate("() => sessionStorage.getItem('cit-report-token')") is None
