"""People, passwords and sessions: the set-password link, sign-in (generic refusal, rate
limits), the session cookie on the JSON API with CSRF, sign-out, idle expiry, revocation,
the token list and revocation by id, and the security headers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.accounts.sessions import SESSION_COOKIE
from app.config import Settings
from app.main import create_app
from app.models import ApiToken, AuditEvent, PasswordLink, User, WebSession
from app.models.base import utcnow
from tests.workbench.conftest import PASSWORD, Browser, csrf_of, make_person, sign_in

PROBLEM = "application/problem+json"


def test_an_admin_creates_a_person_who_sets_a_password_and_signs_in(
    client: TestClient, admin: dict[str, str], db: Callable[[], Any]
) -> None:
    created = client.post(
        "/api/v1/people", json={"name": "rosa", "role": "researcher"}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["person"] == {
        **body["person"],
        "name": "rosa",
        "role": "researcher",
        "has_password": False,
        "disabled_at": None,
    }
    url = body["password_link"]["url"]
    assert url.startswith("http://testserver/account/password/")
    path = url.removeprefix("http://testserver")
    with db() as session:
        stored = session.scalars(select(PasswordLink)).one()
        assert stored.token_hash != path.rsplit("/", 1)[1]  # stored hashed

    form = client.get(path)
    assert form.status_code == 200 and "You sign in as <strong>rosa</strong>" in form.text
    too_short = client.post(
        path, data={"csrf_token": csrf_of(form.text), "password": "short", "confirm": "short"}
    )
    assert too_short.status_code == 422 and "at least 10 characters" in too_short.text
    mismatch = client.post(
        path,
        data={"csrf_token": csrf_of(form.text), "password": PASSWORD, "confirm": PASSWORD + "x"},
    )
    assert mismatch.status_code == 422 and "not the same" in mismatch.text
    done = client.post(
        path,
        data={"csrf_token": csrf_of(form.text), "password": PASSWORD, "confirm": PASSWORD},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/work?welcome=1"
    cookie = done.cookies.get(SESSION_COOKIE)
    assert cookie
    set_cookie = done.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    assert "secure" not in set_cookie  # http base URL; https turns it on
    with db() as session:
        user = session.scalars(select(User).where(User.name == "rosa")).one()
        assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
        assert session.scalars(select(WebSession)).one().token_hash != cookie

    # The link worked once.
    assert client.get(path).status_code == 410
    # The cookie authenticates the JSON API as rosa.
    me = client.get("/api/v1/tokens/me")
    assert me.status_code == 200 and me.json()["name"] == "rosa"


def test_sign_in_refuses_with_one_generic_message_and_keeps_the_name(
    app: FastAPI, settings: Settings
) -> None:
    make_person(app, settings, "ines", "researcher")
    with TestClient(app) as client:
        wrong = sign_in(client, "ines", "not the password")
        unknown = sign_in(client, "nobody-of-that-name", "not the password")
        for response in (wrong, unknown):
            assert response.status_code == 401
            assert "Wrong name or password." in response.text
        assert 'value="ines"' in wrong.text and "not the password" not in wrong.text
        assert SESSION_COOKIE not in client.cookies
        ok = sign_in(client, "ines")
        assert ok.status_code == 303 and ok.headers["location"] == "/work"


def test_sign_in_needs_the_forms_csrf_token(app: FastAPI, settings: Settings) -> None:
    make_person(app, settings, "jo", "researcher")
    with TestClient(app) as client:
        response = client.post("/sign-in", data={"name": "jo", "password": PASSWORD})
        assert response.status_code == 400 and SESSION_COOKIE not in client.cookies


def test_sign_in_is_rate_limited_per_account_and_per_client(
    app: FastAPI, settings: Settings
) -> None:
    make_person(app, settings, "kim", "researcher")
    make_person(app, settings, "lee", "researcher")
    with TestClient(app) as client:
        for _ in range(settings.signin_failures_per_account):
            assert sign_in(client, "kim", "wrong password!").status_code == 401
        blocked = sign_in(client, "kim")  # even the right password waits now
        assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
        assert int(blocked.headers["Retry-After"]) > 0
        # Another account from the same client still works (the client limit is higher)...
        assert sign_in(client, "lee").status_code == 303
        # ...until the client itself has failed too often.
        for _ in range(settings.signin_failures_per_client):
            sign_in(client, f"guess-{_}", "wrong password!")
        assert sign_in(client, "lee").status_code == 429


def test_a_session_authenticates_the_api_and_state_changes_need_the_csrf_token(
    browser: Callable[..., Browser], codebook_id: int
) -> None:
    admin = browser("admin")
    page = admin.page("/work/people")
    token = csrf_of(page)
    body = {"name": "new-person", "role": "viewer"}
    no_csrf = admin.client.post("/api/v1/people", json=body)
    assert no_csrf.status_code == 403 and no_csrf.headers["content-type"] == PROBLEM
    assert "CSRF" in no_csrf.json()["detail"]
    wrong = admin.client.post("/api/v1/people", json=body, headers={"X-CSRF-Token": "x" * 64})
    assert wrong.status_code == 403
    ok = admin.client.post("/api/v1/people", json=body, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    # A plain form post without the field is refused too (and nothing is created).
    form = admin.client.post("/work/people", data={"name": "other", "role": "viewer"})
    assert form.status_code == 403 and "other" not in admin.page("/work/people")
    # Reading needs no token.
    assert admin.client.get("/api/v1/people").status_code == 200


def test_sign_out_ends_the_session(browser: Callable[..., Browser], db: Callable[[], Any]) -> None:
    person = browser("researcher")
    cookie = person.client.cookies.get(SESSION_COOKIE)
    assert person.client.get("/api/v1/tokens/me").status_code == 200
    out = person.post("/sign-out", {}, from_page="/work/reports")
    assert out.status_code == 303 and out.headers["location"] == "/sign-in?signed_out=1"
    with db() as session:
        assert session.scalars(select(WebSession)).all() == []
    # The old cookie, replayed, is worthless.
    person.client.cookies.set(SESSION_COOKIE, cookie or "")
    assert person.client.get("/api/v1/tokens/me").status_code == 401
    # A page sends a signed-out browser to the sign-in form, and back afterwards.
    page = person.client.get("/work/people", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/sign-in?next=%2Fwork%2Fpeople"


def test_a_session_ends_after_inactivity_and_is_kept_alive_by_use(
    browser: Callable[..., Browser], db: Callable[[], Any], settings: Settings
) -> None:
    person = browser("viewer")
    idle = timedelta(minutes=settings.session_idle_minutes)
    with db() as session:
        session.execute(
            update(WebSession).values(last_seen_at=utcnow() - idle + timedelta(minutes=1))
        )
    assert person.client.get("/api/v1/tokens/me").status_code == 200  # used: touched
    with db() as session:
        seen = session.scalars(select(WebSession)).one().last_seen_at
        assert utcnow() - seen < timedelta(seconds=30)
        session.execute(
            update(WebSession).values(last_seen_at=utcnow() - idle - timedelta(seconds=1))
        )
    assert person.client.get("/api/v1/tokens/me").status_code == 401


def test_a_revoked_person_is_signed_out_at_once_and_their_tokens_stop(
    browser: Callable[..., Browser],
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
) -> None:
    admin_browser = browser("admin")
    victim = browser("researcher")
    token = client.post(
        "/api/v1/tokens", json={"name": victim.name, "role": "researcher"}, headers=admin
    ).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/tokens/me", headers=bearer).status_code == 200
    assert victim.client.get("/api/v1/tokens/me").status_code == 200
    with db() as session:
        victim_id = session.scalars(select(User.id).where(User.name == victim.name)).one()
    revoked = admin_browser.post(f"/work/people/{victim_id}/revoke", {}, from_page="/work/people")
    assert revoked.status_code == 303
    assert victim.client.get("/api/v1/tokens/me").status_code == 401
    assert client.get("/api/v1/tokens/me", headers=bearer).status_code == 401
    assert sign_in(victim.client, victim.name).status_code == 401  # password no longer works
    people = admin_browser.page("/work/people")
    assert "revoked" in people
    with db() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "person.revoke")
        ).one()
        assert event.after == {"name": victim.name, "sessions_ended": 1, "tokens_revoked": 1}
    # An admin cannot lock themselves out.
    with db() as session:
        own_id = session.scalars(select(User.id).where(User.name == admin_browser.name)).one()
    self_revoke = admin_browser.client.post(
        f"/api/v1/people/{own_id}/revoke", headers={"X-CSRF-Token": csrf_of(people)}
    )
    assert self_revoke.status_code == 403


def test_a_new_link_replaces_the_old_one_and_links_expire(
    client: TestClient, admin: dict[str, str], db: Callable[[], Any]
) -> None:
    first = client.post(
        "/api/v1/people", json={"name": "mo", "role": "viewer"}, headers=admin
    ).json()
    person_id = first["person"]["id"]
    second = client.post(f"/api/v1/people/{person_id}/password-link", headers=admin)
    assert second.status_code == 201
    old_path = first["password_link"]["url"].removeprefix("http://testserver")
    new_path = second.json()["url"].removeprefix("http://testserver")
    assert client.get(old_path).status_code == 410
    assert client.get(new_path).status_code == 200
    with db() as session:
        session.execute(update(PasswordLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get(new_path).status_code == 410
    duplicate = client.post("/api/v1/people", json={"name": "mo", "role": "viewer"}, headers=admin)
    assert duplicate.status_code == 409 and duplicate.headers["content-type"] == PROBLEM


def test_tokens_are_listed_with_their_last_use_and_revoked_by_id(
    client: TestClient, admin: dict[str, str], token_for: Callable[..., dict[str, str]]
) -> None:
    other = token_for("viewer", "script-bot")
    assert client.get("/api/v1/reports/surveys", headers=other).status_code == 200
    listed = client.get("/api/v1/tokens", headers=admin)
    assert listed.status_code == 200
    rows = {row["name"]: row for row in listed.json()}
    bot = rows["script-bot"]
    assert bot["role"] == "viewer" and bot["prefix"].startswith("cit_")
    assert bot["last_used_at"] is not None and bot["revoked_at"] is None
    assert other["Authorization"].removeprefix("Bearer ").startswith(bot["prefix"])
    assert "token" not in bot and "token_hash" not in bot
    gone = client.delete(f"/api/v1/tokens/by-id/{bot['id']}", headers=admin)
    assert gone.status_code == 200 and gone.json()["revoked_at"] is not None
    assert client.get("/api/v1/reports/surveys", headers=other).status_code == 401
    assert "script-bot" not in {
        r["name"] for r in client.get("/api/v1/tokens", headers=admin).json()
    }
    everything = client.get("/api/v1/tokens", params={"include_revoked": True}, headers=admin)
    assert "script-bot" in {r["name"] for r in everything.json()}
    assert client.delete("/api/v1/tokens/by-id/999999", headers=admin).status_code == 404
    assert client.get("/api/v1/tokens", headers=other).status_code == 401


def test_the_tokens_page_creates_shows_once_and_revokes(
    browser: Callable[..., Browser], db: Callable[[], Any]
) -> None:
    admin = browser("admin")
    created = admin.post("/work/tokens", {"name": "nightly-export", "role": "viewer"})
    assert created.status_code == 200 and "shown only now" in created.text
    token = created.text.split('id="new-token" class="copy" type="text" readonly value="')[1].split(
        '"'
    )[0]
    assert token.startswith("cit_")
    listing = admin.page("/work/tokens")
    assert "nightly-export" in listing and token not in listing
    with db() as session:
        token_id = session.scalars(
            select(ApiToken.id).join(User).where(User.name == "nightly-export")
        ).one()
    assert (
        admin.post(f"/work/tokens/{token_id}/revoke", {}, from_page="/work/tokens").status_code
        == 303
    )
    with db() as session:
        assert session.get(ApiToken, token_id).revoked_at is not None  # type: ignore[union-attr]


def test_roles_hold_on_pages(browser: Callable[..., Browser]) -> None:
    viewer = browser("viewer")
    response = viewer.client.get("/work/people")
    assert response.status_code == 403 and "text/html" in response.headers["content-type"]
    assert "needs the role admin" in response.text


def test_every_page_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/sign-in", "/dashboard", "/docs", "/redoc", "/no-such-page", "/healthz"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert (
            "script-src 'self';" in csp
            and "unsafe-inline' " not in csp.split("script-src")[1].split(";")[0]
        )
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    assert client.get("/no-such-page").status_code == 404
    assert "text/html" in client.get("/no-such-page").headers["content-type"]
    assert client.get("/api/v1/nothing").headers["content-type"] == PROBLEM


def test_docs_and_redoc_load_their_assets_from_this_service(client: TestClient) -> None:
    docs = client.get("/docs").text
    redoc = client.get("/redoc").text
    for page, assets in (
        (docs, ("swagger-ui-bundle.js", "swagger-ui.css", "api-docs.js")),
        (redoc, ("redoc.standalone.js", "api-redoc.js")),
    ):
        assert "cdn" not in page.lower() and "<script>" not in page
        for asset in assets:
            src = page.split(asset)[0].rsplit('"', 1)[1].removeprefix("http://testserver") + asset
            assert src.startswith("/"), src
            fetched = client.get(src)
            assert fetched.status_code == 200 and len(fetched.content) > 100, src


def test_the_session_cookie_is_secure_behind_an_https_base_url(
    settings: Settings, app: FastAPI
) -> None:
    # `app` empties the tables after the test; this second app shares its database.
    secure = create_app(settings.model_copy(update={"public_base_url": "https://cit.example"}))
    try:
        make_person(secure, settings, "https-user", "viewer")
        with TestClient(secure, base_url="https://testserver") as client:
            response = sign_in(client, "https-user")
            assert response.status_code == 303
            assert "secure" in response.headers["set-cookie"].lower()
    finally:
        secure.state.engine.dispose()
