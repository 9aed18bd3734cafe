"""The researcher's workbench in Chromium: sign-in and sign-out, coding three stories with the
keyboard only, a span marked by selecting text and read back, a blind second coder, two tabs in
conflict losing nothing, adjudication, token revocation, hostile story text, and axe-core on
every page on the way. Two screenshots land in tests/browser/screenshots/ for the README."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from app.accounts import service as accounts
from app.auth import create_token
from app.codebooks.service import current_version, get_codebook, update_codebook
from app.db import session_scope
from app.models import Coding, CodingCode, Incident, IncidentCode, User, WebSession
from tests.workbench.conftest import (  # noqa: F401  (fixtures)
    PASSWORD,
    codebook_id,
    make_person,
    make_story,
    survey,
)

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).parent / "screenshots"


def _sign_in(page: Any, base: str, name: str, *, next_path: str = "/work") -> None:
    page.goto(f"{base}/sign-in?next={next_path}")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{next_path}*")


def _person(app: Any, settings: Any, name: str, role: str) -> str:
    make_person(app, settings, name, role)
    return name


def _tab_to(page: Any, text: str, limit: int = 60) -> None:
    """Press Tab until the focused element's text or label contains `text`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        label = page.evaluate(
            "() => { const e = document.activeElement; return (e.innerText || e.value || '') "
            "+ ' ' + (e.getAttribute('aria-label') || ''); }"
        )
        if text in label:
            return
    raise AssertionError(f"no focusable element with {text!r} after {limit} tabs")


def _focus_ring(page: Any) -> str:
    return str(page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle"))


def test_sign_in_and_sign_out(
    chromium: Any, live_server: str, app: Any, settings: Any, axe: Callable[..., None]
) -> None:
    name = _person(app, settings, "rita", "researcher")
    page = chromium().new_page()
    page.goto(f"{live_server}/work")
    page.wait_for_url("**/sign-in?next=%2Fwork")
    axe(page, "the sign-in page")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong name or password." in page.locator("[role=alert]").inner_text()
    assert page.get_by_label("Name").input_value() == name
    assert page.get_by_label("Password").input_value() == ""
    axe(page, "the sign-in page with an error")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/work")
    assert page.locator("h1").inner_text() == "Your queue"
    assert name in page.locator(".wb-who").inner_text()
    cookie = next(c for c in page.context.cookies() if c["name"] == "cit_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    axe(page, "the queue page")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/sign-in?signed_out=1")
    assert "You are signed out." in page.content()
    page.goto(f"{live_server}/work")
    page.wait_for_url("**/sign-in?next=%2Fwork")
    # A set-password link: the form, then straight into the workbench.
    with session_scope(app.state.sessionmaker) as session:
        user = session.scalars(select(User).where(User.name == name)).one()
        link = accounts.issue_password_link(session, user, actor=None, settings=settings)
    page.goto(link.url.replace(settings.public_base_url, live_server))
    axe(page, "the set-password page")
    page.get_by_label("New password").fill("a new long password")
    page.get_by_label("The same password again").fill("a new long password")
    page.get_by_role("button", name="Set password and sign in").click()
    page.wait_for_url("**/work?welcome=1")
    assert "Your password is set" in page.content()
    page.goto(link.url.replace(settings.public_base_url, live_server))
    assert page.locator("h1").inner_text() == "This link no longer works"
    axe(page, "a message page")


def test_a_researcher_codes_three_stories_with_the_keyboard_only(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    survey: Any,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    db: Callable[[], Any],
    axe: Callable[..., None],
) -> None:
    ids = [
        make_story(survey, suggested=("extra_mile",), evidence="walked me to the gate"),
        make_story(
            survey, what_happened="They lost my bag and nobody called back. I want a refund."
        ),
        make_story(survey, what_happened="I only wanted to say the coffee was fine."),
    ]
    name = _person(app, settings, "kai", "researcher")
    page = chromium(1280, 900).new_page()
    page.goto(f"{live_server}/sign-in")
    # The name field has autofocus, which Chromium applies after the load event (in a later
    # frame): keys typed before it are lost, as they would be for a person typing that fast.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'name'")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/work")
    _tab_to(page, "Code the next story")
    assert _focus_ring(page) != "none"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/work/stories/{ids[0]}")
    axe(page, "a story to code")
    assert page.locator(".seg.ev").first.inner_text() == "walked me to the gate"
    page.keyboard.press("?")
    assert page.locator("#keys-help").get_attribute("open") is not None
    page.keyboard.press("?")
    shortcut = page.locator("#code-extra_mile").get_attribute("data-shortcut")
    page.keyboard.press(shortcut)
    assert page.locator("#code-extra_mile").is_checked()
    assert _focus_ring(page) != "none"
    page.keyboard.press("n")
    page.wait_for_url(f"**/work/stories/{ids[1]}?saved={ids[0]}")
    assert f"Story #{ids[0]} saved." in page.locator("[role=status]").first.inner_text()
    page.keyboard.press(page.locator("#code-complaint").get_attribute("data-shortcut"))
    page.keyboard.press("n")
    page.wait_for_url(f"**/work/stories/{ids[2]}?saved={ids[1]}")
    page.keyboard.press("x")
    assert page.locator("#exclude").is_checked()
    page.keyboard.type("Not an incident: no episode with an employee.")  # the reason has focus
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    page.wait_for_url(f"**/work?saved={ids[2]}&empty=1")
    assert "Nothing is left for you to code" in page.content()
    axe(page, "the queue page, all done")

    with db() as session:
        rows = session.execute(
            select(
                Coding.incident_id,
                Coding.excluded,
                Coding.exclusion_reason,
                CodingCode.code,
                CodingCode.decision,
            )
            .outerjoin(CodingCode, CodingCode.coding_id == Coding.id)
            .order_by(Coding.incident_id, CodingCode.code)
        ).all()
    assert [tuple(r) for r in rows] == [
        (ids[0], False, None, "extra_mile", "accepted"),
        (ids[1], False, None, "complaint", "added"),
        (ids[2], True, "Not an incident: no episode with an employee.", None, None),
    ]


def test_a_span_marked_by_selecting_text_is_stored_and_read_back(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    survey: Any,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    db: Callable[[], Any],
    axe: Callable[..., None],
) -> None:
    story = make_story(
        survey,
        what_happened="I wrote to jane@example.com 🙂 and the agent called me back quickly.",
    )
    name = _person(app, settings, "sam", "researcher")
    page = chromium(1280, 900).new_page()
    _sign_in(page, live_server, name, next_path=f"/work/stories/{story}")
    text = page.locator("#text-what_happened").inner_text()
    assert "[EMAIL]" in text and "jane@" not in text
    phrase = "the agent called me back"
    page.locator('details.span-picker[data-code="extra_mile"] summary').click()
    # Select the phrase in the story (as a mouse drag would) and mark it for extra_mile.
    page.evaluate(
        """(phrase) => {
            const p = document.getElementById('text-what_happened');
            const node = p.firstChild;
            const at = node.data.indexOf(phrase);
            const range = document.createRange();
            range.setStart(node, at);
            range.setEnd(node, at + phrase.length);
            const sel = window.getSelection();
            sel.removeAllRanges();
            sel.addRange(range);
        }""",
        phrase,
    )
    page.get_by_role("button", name="Mark the selection for Extra mile").click()
    marked = page.locator('ul[data-marked-for="extra_mile"] li')
    assert marked.count() == 1 and phrase in marked.inner_text()
    assert page.locator("#code-extra_mile").is_checked()  # marking ticks the code
    axe(page, "a story with a marked passage")
    page.get_by_role("button", name="Save", exact=False).first.click()
    page.wait_for_url(f"**/work/stories/{story}?saved={story}")

    # Read back: highlighted in the text, listed under the code, and in the JSON API.
    assert page.locator(".answer-text .seg.mine").inner_text() == phrase
    assert phrase in page.locator('ul[data-marked-for="extra_mile"]').text_content()
    with db() as session:
        user_id = session.scalars(select(User.id).where(User.name == name)).one()
        _, token = create_token(session, name="span-reader", role="admin")
    api = httpx.get(
        f"{live_server}/api/v1/incidents/{story}",
        params={"view": "redacted"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    coding = next(c for c in api["codings"] if c["coder"] == name)
    span = coding["codes"][0]["spans"][0]
    assert span["text"] == phrase and span["field"] == "what_happened"
    assert api["what_happened"][span["start"] : span["end"]] == phrase  # code points, emoji too
    assert user_id


def test_a_blind_second_coder_never_sees_the_first_coding(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    make_survey: Callable[..., Any],
    codebook_id: int,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    axe: Callable[..., None],
) -> None:
    blind = make_survey(title="Blind survey", codebook_id=codebook_id, double_coding_share=100)
    story = make_story(blind)
    first, second = (
        _person(app, settings, "ana", "researcher"),
        _person(app, settings, "ben", "researcher"),
    )
    one = chromium(1280, 900).new_page()
    _sign_in(one, live_server, first)
    one.get_by_role("button", name="Code the next story").click()
    one.wait_for_url(f"**/work/stories/{story}")
    one.locator("#code-complaint").check()
    one.get_by_label("Memo").fill("ana's private memo")
    one.get_by_role("button", name="Save", exact=False).first.click()
    one.wait_for_url("**saved=*")

    two = chromium(1280, 900).new_page()
    _sign_in(two, live_server, second)
    assert "1 story is waiting" in two.content()
    two.get_by_role("button", name="Code the next story").click()
    two.wait_for_url(f"**/work/stories/{story}")
    html = two.content()
    for trace in ("ana", "private memo", "Other codings", "in review", "in_review"):
        assert trace not in html, trace
    assert "Status:</strong> new" in html
    assert not two.locator("#code-complaint").is_checked()
    axe(two, "a blind second coder's story page")
    two.locator("#code-extra_mile").check()
    two.get_by_role("button", name="Save", exact=False).first.click()
    two.wait_for_url("**saved=*")
    # Both codings are in (and they disagree): now each coder may see the other's.
    assert "Other codings" in two.content() and "ana" in two.content()
    assert "adjudication" in two.locator(".story-meta").inner_text()


def test_two_tabs_in_conflict_lose_nothing(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    survey: Any,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    make_survey: Callable[..., Any],
    db: Callable[[], Any],
    axe: Callable[..., None],
) -> None:
    story = make_story(survey)
    name = _person(app, settings, "tess", "researcher")
    context = chromium(1280, 900)
    tab1 = context.new_page()
    _sign_in(tab1, live_server, name, next_path=f"/work/stories/{story}")
    tab2 = context.new_page()
    tab2.goto(f"{live_server}/work/stories/{story}")

    tab1.locator("#code-complaint").check()
    tab1.get_by_label("Memo").fill("saved from the first tab")
    tab1.get_by_role("button", name="Save", exact=False).first.click()
    tab1.wait_for_url("**saved=*")

    tab2.locator("#code-extra_mile").check()
    tab2.get_by_label("Memo").fill("typed in the second tab, not to be lost")
    tab2.locator('details.span-picker[data-code="extra_mile"] summary').click()
    tab2.locator('details.span-picker[data-code="extra_mile"]').get_by_label(
        "She even walked me to the gate."
    ).check()
    tab2.get_by_role("button", name="Save", exact=False).first.click()
    tab2.wait_for_selector(".conflict")
    conflict = tab2.locator(".conflict").inner_text()
    assert "saved from the first tab" in conflict and "typed in the second tab" in conflict
    assert tab2.locator("#code-extra_mile").is_checked()
    assert not tab2.locator("#code-complaint").is_checked()
    assert tab2.get_by_label("Memo").input_value() == "typed in the second tab, not to be lost"
    assert (
        tab2.locator('details.span-picker[data-code="extra_mile"]')
        .get_by_label("She even walked me to the gate.")
        .is_checked()
    )
    axe(tab2, "the conflict page")
    tab2.get_by_role("button", name="Save", exact=False).first.click()
    tab2.wait_for_url("**saved=*")
    with db() as session:
        coding = session.scalars(select(Coding)).one()
        codes = session.scalars(
            select(CodingCode.code).where(CodingCode.coding_id == coding.id)
        ).all()
    assert coding.note == "typed in the second tab, not to be lost" and codes == ["extra_mile"]
    assert tab2.locator(".answer-text .seg.mine").inner_text() == "She even walked me to the gate."


def test_adjudication_takes_one_side(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    make_survey: Callable[..., Any],
    codebook_id: int,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    db: Callable[[], Any],
    axe: Callable[..., None],
) -> None:
    blind = make_survey(
        title="Double-coded survey", codebook_id=codebook_id, double_coding_share=100
    )
    story = make_story(blind)
    coders = [_person(app, settings, n, "researcher") for n in ("cleo", "dev")]
    for name, code, memo in (
        (coders[0], "extra_mile", "went beyond: walked me to the gate"),
        (coders[1], "special_request", "rebooking is a request"),
    ):
        page = chromium(1280, 900).new_page()
        _sign_in(page, live_server, name, next_path=f"/work/stories/{story}")
        page.locator(f"#code-{code}").check()
        page.get_by_label("Memo").fill(memo)
        if code == "extra_mile":
            page.locator('details.span-picker[data-code="extra_mile"] summary').click()
            page.locator('details.span-picker[data-code="extra_mile"]').get_by_label(
                "She even walked me to the gate."
            ).check()
        page.get_by_role("button", name="Save", exact=False).first.click()
        page.wait_for_url("**saved=*")

    admin = _person(app, settings, "ada", "admin")
    page = chromium(1280, 1000).new_page()
    _sign_in(page, live_server, admin, next_path="/work/adjudication")
    axe(page, "the adjudication list")
    page.get_by_role("link", name=f"Story #{story}").click()
    page.wait_for_url(f"**/work/adjudication/{story}")
    assert "disagree" in page.content()
    assert page.locator(".side").count() == 2
    assert page.locator(".side .only").count() == 2
    assert "“She even walked me to the gate.”" in page.locator(".side").first.inner_text()
    assert "rebooking is a request" in page.locator(".side").nth(1).inner_text()
    axe(page, "the adjudication page")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "adjudication.png"), full_page=False)
    page.get_by_role("button", name="Take cleo's decision").click()
    page.wait_for_url(f"**/work/adjudication?done={story}")
    with db() as session:
        finals = session.execute(
            select(IncidentCode.code, IncidentCode.source).where(IncidentCode.incident_id == story)
        ).all()
        status = session.get(Incident, story).status  # type: ignore[union-attr]
    assert [tuple(f) for f in finals] == [("extra_mile", "adjudication")] and status == "coded"


def test_an_admin_revokes_a_token_on_the_tokens_page(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    db: Callable[[], Any],
    axe: Callable[..., None],
) -> None:
    with db() as session:
        _, token = create_token(session, name="export-script", role="viewer")
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{live_server}/api/v1/reports/surveys", headers=bearer).status_code == 200
    admin = _person(app, settings, "tom", "admin")
    page = chromium(1280, 900).new_page()
    _sign_in(page, live_server, admin, next_path="/work/tokens")
    row = page.locator("tr", has_text="export-script")
    assert token[:10] in row.inner_text() and token not in page.content()
    assert "never" not in row.inner_text()  # its use above was recorded
    axe(page, "the tokens page")
    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_url("**/work/tokens")
    assert page.locator("tr", has_text="export-script").count() == 0
    assert httpx.get(f"{live_server}/api/v1/reports/surveys", headers=bearer).status_code == 401


HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_hostile_story_text_runs_no_script_and_every_page_passes_axe(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    make_survey: Callable[..., Any],
    codebook_id: int,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    db: Callable[[], Any],
    axe: Callable[..., None],
) -> None:
    hostile_survey = make_survey(
        title='Survey "><svg onload="window.__pwned=3">',
        codebook_id=codebook_id,
        double_coding_share=100,
    )
    story = make_story(
        hostile_survey,
        what_happened=f"The agent {HOSTILE} was rude.",
        circumstances='"><iframe src="javascript:window.__pwned=4"></iframe>',
        outcome="</p><script>window.__pwned=5</script>",
    )
    other = make_story(hostile_survey)
    with db() as session:
        book = get_codebook(session, codebook_id)
        content = dict(current_version(session, book).content)
        content["description"] = "Now with a <b>hostile</b> description"
        update_codebook(session, book, content, None, '<img src=x onerror="window.__pwned=7">')
    researcher = _person(app, settings, "ria", "researcher")
    admin = _person(app, settings, "abe", "admin")
    dialogs: list[str] = []
    coder = chromium(1280, 900).new_page()
    coder.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(coder, live_server, researcher, next_path=f"/work/stories/{story}")
    assert HOSTILE in coder.locator("#text-what_happened").inner_text()
    coder.locator("#code-complaint").check()
    coder.locator('details.span-picker[data-code="complaint"] summary').click()
    coder.locator('details.span-picker[data-code="complaint"] input[name=span]').first.check()
    coder.get_by_label("Memo").fill('<img src=x onerror="window.__pwned=6">')
    coder.get_by_role("button", name="Save", exact=False).first.click()
    coder.wait_for_url("**saved=*")
    pages = [
        (coder, "/work", "the queue"),
        (coder, f"/work/stories/{story}", "a story with hostile text"),
        (coder, "/work/codebooks", "the codebooks"),
        (coder, "/work/reports", "the reports list"),
    ]
    boss = chromium(1280, 900).new_page()
    boss.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(boss, live_server, admin, next_path=f"/work/stories/{story}")
    boss.locator("#code-extra_mile").check()
    boss.get_by_role("button", name="Save", exact=False).first.click()
    boss.wait_for_url("**saved=*")
    pages += [
        (boss, f"/work/stories/{story}", "a story, the admin's original view"),
        (boss, f"/work/stories/{story}?view=redacted", "a story, redacted view"),
        (boss, "/work/adjudication", "the adjudication list"),
        (boss, f"/work/adjudication/{story}", "adjudicating hostile text"),
        (boss, f"/work/codebooks/{codebook_id}", "a codebook"),
        (boss, f"/work/codebooks/{codebook_id}/versions/1", "a codebook version"),
        (boss, f"/work/codebooks/{codebook_id}/diff?before=1&after=2", "a codebook diff"),
        (boss, "/work/stories/99999999", "a page that does not exist"),
        (boss, "/work/surveys", "the surveys"),
        (boss, "/work/surveys/new", "a new survey"),
        (boss, f"/work/surveys/{hostile_survey.id}", "editing a survey"),
        (boss, "/work/people", "the people"),
        (boss, "/work/tokens", "the tokens"),
        (boss, "/dashboard", "the dashboard, signed in"),
        (
            boss,
            f"/api/v1/reports/study?survey_id={hostile_survey.id}&format=html",
            "the study report",
        ),
        (boss, f"/work/stories/{other}", "a plain story"),
    ]
    for page, path, what in pages:
        page.goto(f"{live_server}{path}")
        page.wait_for_load_state("networkidle")
        axe(page, what)
        assert page.evaluate("() => window.__pwned") is None, what
        assert page.locator("main").count() == 1 and page.locator("h1").count() == 1, what
        assert page.locator("html").get_attribute("lang") == "en", what
        assert page.locator("meta[name=viewport]").count() == 1, what
    assert dialogs == []
    story_page = boss
    story_page.goto(f"{live_server}/work/adjudication/{story}")
    assert story_page.locator(".answer-text script, .answer-text img, .side img").count() == 0


def test_the_respondent_form_the_dashboard_and_the_study_report_pass_axe(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    survey: Any,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    axe: Callable[..., None],
) -> None:
    make_story(survey)
    page = chromium().new_page()  # a phone
    page.goto(f"{live_server}/s/{survey.slug}")
    axe(page, "the respondent form")
    page.get_by_role("button", name="Send my story").click()
    page.wait_for_selector("#form-error")
    axe(page, "the respondent form with errors")
    page.goto(f"{live_server}/dashboard")
    axe(page, "the dashboard, asking for a token")
    viewer = _person(app, settings, "vic", "viewer")
    _sign_in(page, live_server, viewer, next_path="/dashboard")
    page.wait_for_selector("#table", state="attached")
    page.wait_for_load_state("networkidle")
    assert page.locator("#token-form").is_hidden()
    axe(page, "the dashboard, signed in")
    page.goto(f"{live_server}/api/v1/reports/study?survey_id={survey.id}&format=html")
    assert "CIT study report" in page.locator("h1").inner_text()
    axe(page, "the study report")
    page.goto(f"{live_server}/work/reports")
    axe(page, "the reports list, as a viewer")
    # The API documentation renders offline, started by external scripts under the CSP: no
    # script or style of theirs is refused (Redoc's one image from its CDN is, as it should).
    blocked: list[str] = []
    page.on(
        "console",
        lambda m: (
            blocked.append(m.text)
            if "Content Security Policy" in m.text
            and ("script-src" in m.text or "style-src" in m.text)
            else None
        ),
    )
    page.goto(f"{live_server}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "CIT service" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".opblock-tag").count() > 5
    page.goto(f"{live_server}/redoc")
    page.wait_for_function(
        "() => document.getElementById('redoc').innerText.includes('/api/v1/review/next')",
        timeout=20000,
    )
    assert blocked == [], blocked


def test_the_coding_page_screenshot_for_the_readme(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    survey: Any,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
) -> None:
    story = make_story(survey, suggested=("extra_mile",), evidence="walked me to the gate")
    name = _person(app, settings, "maria", "researcher")
    page = chromium(1280, 900).new_page()
    _sign_in(page, live_server, name, next_path=f"/work/stories/{story}")
    page.locator("#code-extra_mile").check()
    page.locator(".code[data-code=extra_mile] details summary").first.click()
    page.locator("#code-extra_mile").focus()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "coding.png"), full_page=False)


def test_choices_survive_a_session_that_ended_while_coding(
    chromium: Any,
    live_server: str,
    app: Any,
    settings: Any,
    survey: Any,  # noqa: F811
    make_story: Callable[..., int],  # noqa: F811
    db: Callable[[], Any],
) -> None:
    story = make_story(survey)
    name = _person(app, settings, "uma", "researcher")
    page = chromium(1280, 900).new_page()
    _sign_in(page, live_server, name, next_path=f"/work/stories/{story}")
    page.locator("#code-owner_error").check()
    page.get_by_label("Memo").fill("a long memo typed while the session ran out")
    with db() as session:
        session.execute(delete(WebSession))  # the session ends (idle, or signed out elsewhere)
    page.get_by_role("button", name="Save", exact=False).first.click()
    page.wait_for_url("**/sign-in?next=*")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/work/stories/{story}")
    assert page.get_by_label("Memo").input_value() == ""
    page.get_by_role("button", name="Restore them").click()
    assert page.get_by_label("Memo").input_value() == "a long memo typed while the session ran out"
    assert page.locator("#code-owner_error").is_checked()
    page.get_by_role("button", name="Save", exact=False).first.click()
    page.wait_for_url(f"**saved={story}")
    assert page.locator("#draft-offer").is_hidden()
    with db() as session:
        assert session.scalars(select(Coding.note)).one() == (
            "a long memo typed while the session ran out"
        )
