"""The dashboard in Chromium shows a fired alert (any role; a viewer without the figures of a
suppressed cell) and, for a case manager, the case counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.alerts.service import fold_and_evaluate
from app.config import Settings
from app.models import Survey
from tests.alerts.test_alerts import RISE, add_month

pytestmark = pytest.mark.browser


def test_dashboard_shows_a_fired_alert(
    page: Any,
    live_server: str,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    token_for: Callable[..., dict[str, str]],
    settings: Settings,
    client: Any,
    admin: dict[str, str],
    artifacts: Path,
) -> None:
    survey = make_survey(title="Alerting survey")
    rule = client.post("/api/v1/alert-rules", json={**RISE, "survey_id": survey.id}, headers=admin)
    assert rule.status_code == 201
    add_month(db, survey.id, 1, stories=40, complaints=8)
    add_month(db, survey.id, 2, stories=40, complaints=24)
    with db() as session:
        assert fold_and_evaluate(session, settings)[1] == 1

    token = token_for("viewer")["Authorization"].removeprefix("Bearer ")
    page.goto(f"{live_server}/dashboard")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Use token").click()
    page.wait_for_selector("#alerts li.dash-alert")
    text = page.locator("#alerts li.dash-alert").first.inner_text()
    assert "2025-02-01" in text and "Complaints rising" in text and "complaint" in text
    assert "rise to 60.0% (24 of 40), from 20.0%" in text
    assert page.locator("#cases-panel").is_hidden()  # a viewer sees no cases
    page.screenshot(path=str(artifacts / "dashboard-alert.png"), full_page=True)
