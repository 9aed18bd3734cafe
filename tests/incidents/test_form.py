"""The respondent's form: stores stories, keeps every word on errors, resists abuse."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import Incident, Survey

STORY = {
    "occurred": "2026-03-14",
    "circumstances": "My flight to Oslo was cancelled at the gate.",
    "what_happened": "The agent rebooked me and walked me to the lounge — she didn't have to.",
    "outcome": "I got home the same night. Satisfying because she cared.",
    "valence": "satisfying",
    "touchpoint": "Check-in",
    "channel": "In person",
}


def _hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


def _open_form(client: TestClient, path: str) -> dict[str, str]:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return {
        "csrf_token": _hidden(page.text, "csrf_token"),
        "submission_id": _hidden(page.text, "submission_id"),
    }


def _count(db: Callable[[], Any]) -> int:
    with db() as session:
        return int(session.scalar(select(func.count()).select_from(Incident)) or 0)


def test_form_renders_labelled_fields(
    client: TestClient, make_survey: Callable[..., Survey]
) -> None:
    survey = make_survey(introduction="Tell us about your trip.")
    page = client.get(f"/s/{survey.slug}")
    assert page.status_code == 200
    html = page.text
    for field in ("occurred", "circumstances", "what_happened", "outcome", "touchpoint", "channel"):
        assert f'<label for="{field}">' in html
        assert f'id="{field}"' in html
    assert 'name="viewport"' in html and "Tell us about your trip." in html
    assert "<script" not in html  # works without JavaScript
    assert "cit_csrf" in page.headers["set-cookie"]


def test_submission_is_stored_exactly_as_typed(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    survey = make_survey()
    form = {
        **_open_form(client, f"/s/{survey.slug}"),
        **STORY,
        "what_happened": "  Ünïcödé 🙂 text\nwith two lines  ",
    }
    response = client.post(f"/s/{survey.slug}", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/s/{survey.slug}/thanks"
    thanks = client.get(response.headers["location"])
    assert "Thank you" in thanks.text
    with db() as session:
        story = session.scalars(select(Incident)).one()
    assert story.what_happened == "  Ünïcödé 🙂 text\nwith two lines  "
    assert story.circumstances == STORY["circumstances"]
    assert story.occurred_text == "2026-03-14" and str(story.occurred_on) == "2026-03-14"
    assert (story.valence, story.touchpoint, story.channel) == (
        "satisfying",
        "Check-in",
        "In person",
    )
    assert story.language == "en"


def test_validation_error_keeps_every_word(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    survey = make_survey()
    typed = {**STORY, "what_happened": "", "valence": "", "outcome": 'Quotes "and" <tags> & more'}
    response = client.post(
        f"/s/{survey.slug}", data={**_open_form(client, f"/s/{survey.slug}"), **typed}
    )
    assert response.status_code == 422
    html = response.text
    assert "Please tell us what happened." in html
    assert "This question needs an answer." in html
    assert STORY["circumstances"] in html
    assert "Quotes &#34;and&#34; &lt;tags&gt; &amp; more" in html  # escaped, but all there
    assert 'value="Check-in" selected' in html
    assert _count(db) == 0


def test_too_long_answer_is_refused_with_the_text_kept(
    client: TestClient, make_survey: Callable[..., Survey], settings: Any
) -> None:
    survey = make_survey()
    long_text = "x" * (settings.max_answer_chars + 1)
    form = {**_open_form(client, f"/s/{survey.slug}"), **STORY, "outcome": long_text}
    response = client.post(f"/s/{survey.slug}", data=form)
    assert response.status_code == 422
    assert f"at most {settings.max_answer_chars} characters" in response.text
    assert long_text in response.text


def test_bad_choice_unknown_field_and_consent(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    survey = make_survey(consent_text="I agree to be quoted.")
    path = f"/s/{survey.slug}"
    bad = client.post(
        path, data={**_open_form(client, path), **STORY, "touchpoint": "Moon", "consent": "yes"}
    )
    assert bad.status_code == 422 and "Please choose one of the options." in bad.text
    no_consent = client.post(path, data={**_open_form(client, path), **STORY})
    assert no_consent.status_code == 422
    assert "Please give your consent" in no_consent.text
    unknown = client.post(
        path, data={**_open_form(client, path), **STORY, "consent": "yes", "age": "42"}
    )
    assert unknown.status_code == 400 and "age" in unknown.text
    assert STORY["what_happened"].replace("'", "&#39;") in unknown.text
    assert _count(db) == 0
    ok = client.post(
        path, data={**_open_form(client, path), **STORY, "consent": "yes"}, follow_redirects=False
    )
    assert ok.status_code == 303 and _count(db) == 1


def test_double_submission_stores_one_story(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    survey = make_survey()
    form = {**_open_form(client, f"/s/{survey.slug}"), **STORY}
    first = client.post(f"/s/{survey.slug}", data=form, follow_redirects=False)
    second = client.post(f"/s/{survey.slug}", data=form, follow_redirects=False)
    assert first.status_code == second.status_code == 303
    assert _count(db) == 1


def test_csrf_failure_rerenders_with_text(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    survey = make_survey()
    path = f"/s/{survey.slug}"
    form = {**_open_form(client, path), **STORY}
    client.cookies.clear()
    response = client.post(path, data=form)
    assert response.status_code == 400
    assert "session expired" in response.text and STORY["circumstances"] in response.text
    assert _count(db) == 0
    # The re-rendered form carries a fresh token pair, so sending again works.
    retry = {**form, "csrf_token": _hidden(response.text, "csrf_token")}
    assert client.post(path, data=retry, follow_redirects=False).status_code == 303
    assert _count(db) == 1


def test_honeypot_looks_successful_but_stores_nothing(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    survey = make_survey()
    form = {**_open_form(client, f"/s/{survey.slug}"), **STORY, "website": "http://spam"}
    response = client.post(f"/s/{survey.slug}", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert _count(db) == 0


def test_rate_limit(
    client: TestClient, app: FastAPI, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    app.state.submit_limiter.limit = 2
    survey = make_survey()
    path = f"/s/{survey.slug}"
    codes = [
        client.post(
            path, data={**_open_form(client, path), **STORY}, follow_redirects=False
        ).status_code
        for _ in range(3)
    ]
    assert codes == [303, 303, 429]
    assert _count(db) == 2


def test_request_size_limit(
    client: TestClient, make_survey: Callable[..., Survey], settings: Any
) -> None:
    survey = make_survey()
    big = {"what_happened": "y" * (settings.max_request_bytes + 10)}
    response = client.post(f"/s/{survey.slug}", data=big)
    assert response.status_code == 413


@pytest.mark.parametrize("state", ["unknown", "draft", "closed"])
def test_unavailable_surveys(
    client: TestClient, make_survey: Callable[..., Survey], state: str
) -> None:
    if state == "unknown":
        path, expected = "/s/no-such-survey", 404
    else:
        survey = make_survey(open=state == "closed")
        path, expected = f"/s/{survey.slug}", 404 if state == "draft" else 410
        if state == "closed":
            from app.surveys import service

            with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
                row = session.get(Survey, survey.id)
                service.set_status(session, row, "closed", None)
                session.commit()
    response = client.get(path)
    assert response.status_code == expected
    assert response.headers["content-type"].startswith("text/html")


def test_invitation_link_is_single_use_and_carries_attributes(
    client: TestClient,
    make_survey: Callable[..., Survey],
    admin: dict[str, str],
    db: Callable[[], Any],
) -> None:
    survey = make_survey()
    links = client.post(
        f"/api/v1/surveys/{survey.id}/invitations",
        headers=admin,
        json={"count": 1, "attributes": {"segment": "frequent"}},
    ).json()
    path = links[0]["link"].replace("http://testserver", "")
    page = client.get(path)
    assert page.status_code == 200
    form = {
        "csrf_token": _hidden(page.text, "csrf_token"),
        "submission_id": _hidden(page.text, "submission_id"),
        "invitation": _hidden(page.text, "invitation"),
        **STORY,
    }
    assert client.post(f"/s/{survey.slug}", data=form, follow_redirects=False).status_code == 303
    with db() as session:
        story = session.scalars(select(Incident)).one()
        assert story.attributes == {"segment": "frequent"} and story.invitation_id is not None
    used = client.get(path)
    assert used.status_code == 410 and "already been sent" in used.text
    # A second story through the same invitation (new form, new submission id) is refused.
    again = {**form, "submission_id": "another-submission-id"}
    assert client.post(f"/s/{survey.slug}", data=again).status_code == 410
    assert _count(db) == 1
    assert client.get("/i/not-a-token").status_code == 404


def test_expired_invitation(
    client: TestClient, make_survey: Callable[..., Survey], admin: dict[str, str]
) -> None:
    survey = make_survey()
    links = client.post(
        f"/api/v1/surveys/{survey.id}/invitations",
        headers=admin,
        json={"count": 1, "expires_at": "2020-01-01T00:00:00Z"},
    ).json()
    response = client.get(links[0]["link"].replace("http://testserver", ""))
    assert response.status_code == 410 and "expired" in response.text


def test_second_language(client: TestClient, make_survey: Callable[..., Survey]) -> None:
    survey = make_survey(language="de")
    html = client.get(f"/s/{survey.slug}").text
    assert 'lang="de"' in html and "Erlebnis absenden" in html and "Wie kam es dazu?" in html
    response = client.post(
        f"/s/{survey.slug}",
        data={**_open_form(client, f"/s/{survey.slug}"), "circumstances": "Verspätung"},
    )
    assert "Bitte erzählen Sie uns, was passiert ist." in response.text
    assert "Verspätung" in response.text


def test_rate_limiter_forgets_idle_clients_at_most_once_a_window() -> None:
    from app import protection

    now = [0.0]
    limiter = protection.RateLimiter(2, 60, clock=lambda: now[0])
    original = protection.MAX_TRACKED_CLIENTS
    protection.MAX_TRACKED_CLIENTS = 3
    try:
        for i in range(5):
            assert limiter.allow(f"10.0.0.{i}")
        assert len(limiter._hits) == 5  # within the first window nothing is pruned
        now[0] = 61.0
        assert limiter.allow("10.0.0.9")
        assert list(limiter._hits) == ["10.0.0.9"]  # the idle ones are forgotten
        assert limiter.allow("10.0.0.9") and not limiter.allow("10.0.0.9")
    finally:
        protection.MAX_TRACKED_CLIENTS = original
