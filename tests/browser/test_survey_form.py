"""A respondent fills the form in Chromium: one validation round trip, then a stored story."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.models import Incident, Survey

pytestmark = pytest.mark.browser

CIRCUMSTANCES = "Our flight was cancelled at 11 pm — 200 people at one desk. Ünïcode 🙂"
WHAT = "The agent, Maria, found us two seats on a partner airline and printed the passes."


def test_fill_fix_and_submit(
    page: Any,
    live_server: str,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    artifacts: Path,
) -> None:
    survey = make_survey(consent_text="I agree that my story may be quoted anonymously.")
    page.goto(f"{live_server}/s/{survey.slug}")
    assert page.title() == "Test survey"

    page.get_by_label("When did it happen?").fill("last March")
    page.get_by_label("What circumstances led up to it?").fill(CIRCUMSTANCES)
    page.get_by_label("Satisfying", exact=True).check()
    page.get_by_label("Where did it happen?").select_option("Check-in")
    page.get_by_role("button", name="Send my story").click()

    # The story field was left empty: the form comes back with a message and every word kept.
    page.wait_for_selector("#form-error")
    assert "Please tell us what happened." in page.locator("#what_happened-error").inner_text()
    assert page.get_by_label("What circumstances led up to it?").input_value() == CIRCUMSTANCES
    assert page.get_by_label("When did it happen?").input_value() == "last March"
    assert page.get_by_label("Satisfying", exact=True).is_checked()
    assert page.get_by_label("Where did it happen?").input_value() == "Check-in"
    page.screenshot(path=str(artifacts / "survey-form-error.png"), full_page=True)

    page.get_by_label("Exactly what did the employee").fill(WHAT)
    page.get_by_label("I agree").check()
    page.get_by_role("button", name="Send my story").click()
    page.wait_for_url(f"**/s/{survey.slug}/thanks")
    assert "Thank you" in page.locator("h1").inner_text()

    page.screenshot(path=str(artifacts / "survey-form-thanks.png"))
    with db() as session:
        stories = session.scalars(select(Incident)).all()
    assert len(stories) == 1
    assert stories[0].circumstances == CIRCUMSTANCES and stories[0].what_happened == WHAT
    assert stories[0].occurred_text == "last March" and stories[0].touchpoint == "Check-in"
