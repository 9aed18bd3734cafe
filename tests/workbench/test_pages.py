"""The workbench pages over HTTP, as a browser without JavaScript uses them: the queue, coding
with sentence-chosen spans, refusals that keep every choice, the admin's view, surveys,
codebooks, reports, and the checks that hold on every form."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.codebooks.service import current_version, get_codebook, update_codebook
from app.models import Assignment, Coding, CodingSpan, Invitation, ReviewLease, Survey, User
from tests.workbench.conftest import Browser, csrf_of

ETAG_RE = re.compile(r'name="if_match" value="([^"]+)"')


def _story_form(page: str) -> dict[str, str]:
    found = ETAG_RE.search(page)
    assert found
    return {"csrf_token": csrf_of(page), "if_match": found.group(1).replace("&#34;", '"')}


def test_the_queue_hands_out_a_story_and_lists_held_and_assigned_ones(
    browser: Callable[..., Browser],
    survey: Any,
    make_story: Callable[..., int],
    db: Callable[[], Any],
) -> None:
    first, second = make_story(survey), make_story(survey)
    coder = browser("researcher", "nora")
    with db() as session:
        nora = session.scalars(select(User.id).where(User.name == "nora")).one()
        session.add(Assignment(incident_id=second, researcher_id=nora, assigned_by="admin"))
    home = coder.page("/work")
    assert "2 stories are waiting for you" in home
    assert f"Story #{second}</a> · Airline survey · submitted" in home  # assigned
    handed = coder.post("/work/next", {}, from_page="/work")
    assert handed.status_code == 303 and handed.headers["location"] == f"/work/stories/{second}"
    home = coder.page("/work")
    assert "Left half-done" in home and f'href="/work/stories/{second}"' in home
    assert "held until" in home
    released = coder.post(
        f"/work/stories/{second}/release", {}, from_page=f"/work/stories/{second}"
    )
    assert released.headers["location"] == f"/work?released={second}"
    with db() as session:
        assert session.scalars(select(ReviewLease)).all() == []
    assert first


def test_coding_without_javascript_sentences_as_spans_and_refusals_keep_everything(
    browser: Callable[..., Browser],
    survey: Any,
    make_story: Callable[..., int],
    db: Callable[[], Any],
) -> None:
    story = make_story(survey)
    coder = browser("researcher")
    page = coder.page(f"/work/stories/{story}")
    sentence = "She even walked me to the gate."
    value = f"extra_mile|what_happened|{STORY_WHAT.index(sentence)}|{len(STORY_WHAT)}"
    assert f'value="{value}"' in page
    # Neither a code nor an exclusion: refused, with the memo and the passage kept.
    refused = coder.client.post(
        f"/work/stories/{story}",
        data={**_story_form(page), "span": value, "note": "my memo", "action": "save"},
    )
    assert refused.status_code == 422
    assert (
        "Give at least one code, tick “No code applies”, or exclude the story with a reason."
        in refused.text
    )
    assert ">my memo</textarea>" in refused.text
    assert f'value="{value}" checked' in refused.text
    # Excluding without a reason: refused too.
    no_reason = coder.client.post(
        f"/work/stories/{story}",
        data={**_story_form(page), "exclude": "1", "code": "complaint", "action": "save"},
    )
    assert no_reason.status_code == 422 and "Exclusion_reason is required" in no_reason.text
    assert 'id="exclude" name="exclude" value="1" checked' in no_reason.text
    saved = coder.client.post(
        f"/work/stories/{story}",
        data={
            **_story_form(page),
            "code": "extra_mile",
            "span": value,
            "note": "my memo",
            "action": "save",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    with db() as session:
        span = session.scalars(select(CodingSpan)).one()
        assert (span.field, span.start, span.end) == (
            "what_happened",
            STORY_WHAT.index(sentence),
            len(STORY_WHAT),
        )
    back = coder.page(f"/work/stories/{story}")
    assert f'<span class="seg mine" data-ev="" data-mine="extra_mile">{sentence}</span>' in back
    assert "You saved a coding" in back
    # The old ETag is stale now: a second post is a conflict that keeps what it sent.
    stale = coder.client.post(
        f"/work/stories/{story}",
        data={**_story_form(page), "code": "complaint", "note": "other tab", "action": "save"},
    )
    assert stale.status_code == 409 and "Saved meanwhile somewhere else" in stale.text
    assert ">other tab</textarea>" in stale.text
    assert 'id="code-complaint" name="code" value="complaint" checked' in stale.text


STORY_WHAT = "The agent rebooked me without being asked. She even walked me to the gate."


def test_a_final_story_is_not_offered_to_another_coder(
    browser: Callable[..., Browser], survey: Any, make_story: Callable[..., int]
) -> None:
    story = make_story(survey)
    first = browser("researcher")
    page = first.page(f"/work/stories/{story}")
    first.client.post(
        f"/work/stories/{story}",
        data={**_story_form(page), "code": "complaint", "action": "save"},
    )
    other = browser("researcher").page(f"/work/stories/{story}")
    assert "This story is final already (coded)" in other and 'id="coding-form"' not in other


def test_admins_read_the_original_and_researchers_the_redacted_text(
    browser: Callable[..., Browser], survey: Any, make_story: Callable[..., int]
) -> None:
    story = make_story(survey, what_happened="Call me on +44 20 7946 0958, said the agent.")
    researcher = browser("researcher").page(f"/work/stories/{story}")
    assert "7946" not in researcher and "[PHONE]" in researcher
    admin = browser("admin")
    assert "+44 20 7946 0958" in admin.page(f"/work/stories/{story}")
    assert "7946" not in admin.page(f"/work/stories/{story}?view=redacted")
    researcher_client = browser("researcher")
    assert "7946" not in researcher_client.page(f"/work/stories/{story}?view=original", 403)


def test_pages_refuse_a_form_without_its_csrf_token(
    browser: Callable[..., Browser], survey: Any, make_story: Callable[..., int]
) -> None:
    story = make_story(survey)
    coder = browser("researcher")
    response = coder.client.post(f"/work/stories/{story}", data={"code": "complaint"})
    assert response.status_code == 403 and "CSRF" in response.text
    assert coder.client.post("/work/next", data={}).status_code == 403


def test_an_admin_creates_edits_opens_and_invites_through_the_survey_pages(
    browser: Callable[..., Browser], codebook_id: int, db: Callable[[], Any]
) -> None:
    admin = browser("admin")
    form = {
        "title": "Hotel stays",
        "slug": "hotel-stays",
        "introduction": "Tell us about a stay.",
        "consent_text": "",
        "language": "en",
        "touchpoints": "Reception\nRoom\n",
        "channels": "In person",
        "closes_at": "",
        "codebook_id": str(codebook_id),
        "double_coding_share": "150",
        "review_order": "least_certain",
        "q_what_happened": "What did the staff do?",
    }
    bad = admin.post("/work/surveys/new", form)
    assert bad.status_code == 422 and "double coding share" in bad.text
    assert 'value="Hotel stays"' in bad.text and "Reception\nRoom" in bad.text
    created = admin.post("/work/surveys/new", {**form, "double_coding_share": "20"})
    assert created.status_code == 303
    path = created.headers["location"].split("?")[0]
    with db() as session:
        survey = session.scalars(select(Survey).where(Survey.slug == "hotel-stays")).one()
        assert survey.double_coding_share == 20 and survey.status == "draft"
        assert survey.questions["what_happened"] == "What did the staff do?"
        assert survey.choices["touchpoints"] == ["Reception", "Room"]
    page = admin.page(path)
    assert "What did the staff do?" in page
    edited = admin.post(path, {**form, "double_coding_share": "50", "language": "de"})
    assert edited.status_code == 303
    with db() as session:
        survey = session.get(Survey, survey.id)
        assert survey is not None and survey.language == "de" and survey.double_coding_share == 50
        assert survey.questions["what_happened"] == "What did the staff do?"  # reworded: kept
    asked = {**form, "double_coding_share": "50", "language": "de"}
    asked |= {"contact_question": "May we contact you?", "case_codes": "owner_error\n"}
    assert admin.post(path, asked).status_code == 303
    with db() as session:
        survey = session.get(Survey, survey.id)
        assert survey is not None and survey.contact_question == "May we contact you?"
        assert survey.case_codes == ["owner_error"]
    assert 'value="May we contact you?"' in admin.page(path)
    assert admin.post(f"{path}/status", {"status": "open"}, from_page=path).status_code == 303
    invited = admin.post(
        f"{path}/invitations", {"count": "3", "segment": "business"}, from_page=path
    )
    assert invited.status_code == 303
    page = admin.page(path)
    assert "3 made, 0 used" in page
    csv_link = re.search(r'href="(/api/v1/surveys/\d+/invitations\?format=csv)"', page)
    assert csv_link
    download = admin.client.get(csv_link.group(1))
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert len(download.text.strip().splitlines()) == 4
    with db() as session:
        assert {i.attributes["segment"] for i in session.scalars(select(Invitation))} == {
            "business"
        }
    listing = admin.page("/work/surveys")
    assert "Hotel stays" in listing and f"/dashboard?survey_id={survey.id}" in listing
    assert f"/api/v1/reports/study?survey_id={survey.id}&amp;format=html" in listing
    assert browser("researcher").client.get("/work/surveys").status_code == 403


def test_codebook_pages_show_the_tree_the_versions_and_a_diff(
    browser: Callable[..., Browser], codebook_id: int, db: Callable[[], Any]
) -> None:
    with db() as session:
        codebook = get_codebook(session, codebook_id)
        content = copy.deepcopy(current_version(session, codebook).content)
        content["codes"][0]["definition"] = "A changed definition."
        content["codes"].append(
            {
                **copy.deepcopy(content["codes"][0]),
                "key": "late_delivery",
                "label": "Late",
                "parent": content["codes"][0]["key"],
            }
        )
        update_codebook(session, codebook, content, None, "Clarified complaints")
    coder = browser("researcher")
    page = coder.page(f"/work/codebooks/{codebook_id}")
    assert "A changed definition." in page and "Late" in page
    assert "Clarified complaints" in page
    assert re.search(
        r"<strong>Complaint</strong>.*?<ul>\s*<li>.*?<strong>Late</strong>", page, re.S
    )
    diff = coder.page(f"/work/codebooks/{codebook_id}/diff?before=1&after=2")
    assert "Added" in diff and "late_delivery" in diff
    assert "A changed definition." in diff and "Definition" in diff
    assert coder.page(f"/work/codebooks/{codebook_id}/versions/1").count("A changed") == 0


def test_the_study_report_opens_with_the_session_and_a_browser_without_one_signs_in(
    browser: Callable[..., Browser], survey: Any, client: Any
) -> None:
    url = f"/api/v1/reports/study?survey_id={survey.id}&format=html"
    anonymous = client.get(url, headers={"Accept": "text/html"}, follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/sign-in?next=%2Fapi%2Fv1%2Freports%2Fstudy")
    assert client.get(url).status_code == 401  # a script still gets problem+json
    viewer = browser("viewer")
    report = viewer.client.get(url)
    assert report.status_code == 200 and "CIT study report: Airline survey" in report.text
    assert 'aria-current="page">Reports' in report.text and "<style>" not in report.text
    assert "Cookie" in report.headers["vary"]
    reports = viewer.page("/work/reports")
    assert f"/api/v1/reports/study?survey_id={survey.id}&amp;format=html" in reports
    assert viewer.client.get("/work", follow_redirects=False).headers["location"] == "/work/reports"
    dashboard = viewer.page("/dashboard")
    assert 'data-signed-in="1"' in dashboard


def test_adjudication_pages_without_javascript(
    browser: Callable[..., Browser],
    make_survey: Callable[..., Any],
    codebook_id: int,
    make_story: Callable[..., int],
    db: Callable[[], Any],
) -> None:
    blind = make_survey(title="Blind", codebook_id=codebook_id, double_coding_share=100)
    story = make_story(blind)
    for code in ("complaint", "extra_mile"):
        coder = browser("researcher")
        page = coder.page(f"/work/stories/{story}")
        coder.client.post(
            f"/work/stories/{story}", data={**_story_form(page), "code": code, "action": "save"}
        )
    admin = browser("admin")
    listing = admin.page("/work/adjudication")
    assert f'href="/work/adjudication/{story}"' in listing
    page = admin.page(f"/work/adjudication/{story}")
    assert page.count('class="only"') == 2
    form = _story_form(page)
    # Neither codes nor an exclusion: refused, nothing decided.
    refused = admin.client.post(f"/work/adjudication/{story}", data=form)
    assert refused.status_code == 422
    decided = admin.client.post(
        f"/work/adjudication/{story}",
        data={**form, "code": ["complaint", "extra_mile"], "note": "both apply"},
        follow_redirects=False,
    )
    assert decided.status_code == 303 and decided.headers["location"].endswith(f"done={story}")
    with db() as session:
        assert session.scalars(select(Coding)).all()  # codings stay as they were
    done = admin.page(f"/work/adjudication/{story}")
    assert "final codes now: complaint, extra_mile" in done
    assert browser("researcher").client.get("/work/adjudication").status_code == 403


def test_progress_per_survey_follows_each_new_coding(
    browser: Callable[..., Browser],
    survey: Any,
    make_survey: Callable[..., Any],
    codebook_id: int,
    make_story: Callable[..., int],
) -> None:
    other = make_survey(title="Hotel stays", codebook_id=codebook_id)
    stories = [make_story(survey), make_story(other), make_story(other)]
    coder = browser("researcher")

    def progress() -> list[tuple[str, str]]:
        page = coder.page("/work")
        rows = re.findall(r"<td>([^<]+)</td><td>open</td><td class=\"num\">([\d,]+)</td>", page)
        return [(title, count) for title, count in rows]

    assert progress() == [("Airline survey", "0"), ("Hotel stays", "0")]
    for done, story in enumerate(stories, start=1):
        page = coder.page(f"/work/stories/{story}")
        coder.client.post(f"/work/stories/{story}", data={**_story_form(page), "code": "complaint"})
        expected = [("Airline survey", "1"), ("Hotel stays", str(done - 1))]
        assert progress() == expected
        assert f"You have coded {done} " in coder.page("/work")


def test_no_code_applies_is_a_choice_on_the_page(
    browser: Callable[..., Browser],
    survey: Any,
    make_story: Callable[..., int],
    db: Callable[[], Any],
) -> None:
    story = make_story(survey)
    coder = browser("researcher")
    page = coder.page(f"/work/stories/{story}")
    assert 'name="no_code_applies"' in page
    saved = coder.client.post(
        f"/work/stories/{story}",
        data={**_story_form(page), "no_code_applies": "1", "action": "save"},
    )
    # Saved: the page comes back (after its redirect) saying so, with no error.
    assert saved.status_code == 200 and f"saved={story}" in str(saved.url)
    assert 'id="form-errors"' not in saved.text
    with db() as session:
        coding = session.scalars(select(Coding).where(Coding.incident_id == story)).one()
        assert coding.no_code_applies and not coding.excluded
    assert 'id="no_code_applies" name="no_code_applies" value="1" checked' in coder.page(
        f"/work/stories/{story}"
    )
