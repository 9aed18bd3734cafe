"""API tokens (stored hashed), roles, and the CurrentUser / require_role dependencies: a caller
is known by a bearer token (scripts) or a browser session cookie (people who signed in); a
state-changing request on a session must carry its CSRF token."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import audit
from app.accounts import sessions as web_sessions
from app.config import Settings, app_settings
from app.db import DbGate, SessionDep, brief_read, end_session, new_session, session_scope
from app.errors import Conflict, Forbidden, Invalid, Unauthorized
from app.models import ROLES, ApiToken, User, WebSession
from app.models.base import utcnow

TOKEN_PREFIX = "cit_"
T = TypeVar("T")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the part of a user that request handlers need."""

    id: int
    name: str
    role: str


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough to make a stolen table useless.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, *, name: str, role: str, actor: Principal | None = None
) -> tuple[Principal, str]:
    """Create a token for the user `name` (creating the user); return it once, in clear."""
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > 100:
        raise Invalid("name must be 1 to 100 characters")
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role=role)
        session.add(user)
        session.flush()
    elif user.disabled_at is not None:
        raise Conflict(f"user {name!r} was revoked; a revoked person gets no token")
    elif user.role != role:
        raise Conflict(f"user {name!r} exists with role {user.role!r}, not {role!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10])
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "token.create",
        "api_token",
        row.id,
        after={"user": name, "role": role, "prefix": row.prefix},
    )
    return Principal(user.id, user.name, user.role), token


# A token's last_used_at is written at most this often.
TOKEN_TOUCH_EVERY = timedelta(seconds=60)


def authenticate(session: Session, token: str) -> Principal | None:
    principal, _ = _token_holder(session, token)
    return principal


# Built once: every request with a token runs it.
_TOKEN_HOLDER = (
    select(User.id, User.name, User.role, ApiToken.id, ApiToken.last_used_at)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        User.disabled_at.is_(None),
    )
)


def _token_holder(session: Session, token: str) -> tuple[Principal | None, int | None]:
    """The token's person, and the token's id when its last use is due to be written."""
    row = session.execute(_TOKEN_HOLDER, {"token_hash": hash_token(token)}).first()
    if row is None:
        return None, None
    stale = row[4] is None or utcnow() - row[4] > TOKEN_TOUCH_EVERY
    return Principal(row[0], row[1], row[2]), row[3] if stale else None


def revoke_token(session: Session, prefix: str, actor: Principal | None = None) -> int:
    rows = session.scalars(
        select(ApiToken).where(ApiToken.prefix == prefix, ApiToken.revoked_at.is_(None))
    ).all()
    for row in rows:
        row.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", "api_token", row.id, after={"prefix": prefix})
    session.flush()
    return len(rows)


_bearer = HTTPBearer(auto_error=False, description="An API token from `cit token create`")
_cookie = APIKeyCookie(
    name=web_sessions.SESSION_COOKIE,
    auto_error=False,
    description="The browser session of a person who signed in at /sign-in; state-changing "
    f"requests also send its CSRF token ({web_sessions.CSRF_HEADER} header or "
    f"{web_sessions.CSRF_FIELD} form field)",
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def submitted_csrf(request: Request) -> str | None:
    """The CSRF token a state-changing request carries: a header (scripts in the page) or the
    form field (plain HTML forms). Reading the form here caches it for the route."""
    if request.method in _SAFE_METHODS:
        return None
    header = request.headers.get(web_sessions.CSRF_HEADER)
    if header:
        return header
    if web_sessions.SESSION_COOKIE not in request.cookies or "authorization" in request.headers:
        return None
    if request.headers.get("content-type", "").startswith(_FORM_TYPES):
        value = (await request.form()).get(web_sessions.CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def _write_aside(request: Request, session: Session, statement: object) -> None:
    """Write a last-use time. A GET reads in a transaction of its own (on SQLite one that may
    not turn into a writer), so it writes in a short separate one; other methods hold the
    write lock already and write in theirs."""
    if request.method in _SAFE_METHODS:
        factory: sessionmaker[Session] = request.app.state.sessionmaker
        with session_scope(factory) as aside:
            aside.execute(statement)  # type: ignore[call-overload]
    else:
        session.execute(statement)  # type: ignore[call-overload]


_MISSING = "missing bearer token (Authorization: Bearer <token>) or session"


@dataclass(frozen=True)
class Credentials:
    """What a request presents to say who sends it, not yet checked (see `one_hop`)."""

    token: str | None
    cookie: str | None
    csrf: str | None


async def credentials(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
    csrf: Annotated[str | None, Depends(submitted_csrf)],
) -> Credentials:
    """The request's credentials, read on the event loop (no database): a request without any
    is refused here, before its body is validated (`current_user` and `one_hop` check them)."""
    if bearer is None and not cookie:
        raise Unauthorized(_MISSING)
    return Credentials(bearer.credentials if bearer else None, cookie, csrf)


CredentialsDep = Annotated[Credentials, Depends(credentials)]


def _principal(request: Request, session: Session, presented: Credentials) -> Principal:
    """Who sends this request: the holder of its bearer token, else of its session cookie
    (whose state-changing requests must carry the CSRF token). Runs on a worker thread."""
    # On SQLite the reads run in brief transactions of their own (no write lock): the
    # request's writes begin afresh at the endpoint's first statement. On PostgreSQL they are
    # the first statements of the request's transaction (see brief_read).
    # The app's settings (app_settings) read here, not as a dependency: a synchronous one costs
    # a worker-thread hop on every request.
    settings: Settings = request.app.state.settings
    token, cookie, csrf = presented.token, presented.cookie, presented.csrf
    if token is not None:
        with brief_read(session):
            principal, touch = _token_holder(session, token)
        if principal is None:
            raise Unauthorized("invalid or revoked token")
        if touch is not None:
            _write_aside(
                request,
                session,
                update(ApiToken).where(ApiToken.id == touch).values(last_used_at=utcnow()),
            )
        return principal
    if cookie:
        with brief_read(session):
            found = web_sessions.find_session(session, cookie, settings)
        if found is None:
            raise Unauthorized("your session has ended; sign in again")
        if request.method not in _SAFE_METHODS and not web_sessions.csrf_matches(
            settings, cookie, csrf
        ):
            raise Forbidden(
                "this form is out of date or did not come from this site (CSRF check): "
                "reload the page and try again"
            )
        if found.needs_touch:
            _write_aside(
                request,
                session,
                update(WebSession)
                .where(WebSession.id == found.session_id)
                .values(last_seen_at=utcnow()),
            )
        request.state.csrf_token = web_sessions.csrf_token(settings, cookie)
        return Principal(found.user_id, found.name, found.role)
    raise Unauthorized(_MISSING)


def current_user(request: Request, session: SessionDep, presented: CredentialsDep) -> Principal:
    return _principal(request, session, presented)


async def one_hop(
    request: Request,
    presented: Credentials,
    roles: frozenset[str],
    work: Callable[[Session, Principal], T],
) -> T:
    """Check the caller, do `work(session, caller)` and commit, in one worker-thread call.

    The same steps as `SessionDep` + `require_role` + a synchronous endpoint, which take three
    thread hops (the credentials' check, the endpoint, the commit) and a dependency tree per
    request: on the coding path that was a large share of the server's CPU (bench/README.md,
    Coding path). The commit comes before the answer is sent, as with `SessionDep`; a request
    whose client goes away still ends its transaction (the thread cannot be stopped, and the
    database slot stays taken until it has)."""
    gate: DbGate = request.app.state.db_gate
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    write = request.method not in _SAFE_METHODS

    def run() -> T:
        session = new_session(factory, write=write)
        try:
            caller = _principal(request, session, presented)
            check_role(caller, roles)
            result = work(session, caller)
        except BaseException:
            end_session(session, commit=False)
            raise
        end_session(session, commit=True)
        return result

    async with gate.slot():
        with anyio.CancelScope(shield=True):
            answer = await run_in_threadpool(run)
    return answer


def optional_user(
    request: Request,
    session: SessionDep,
    settings: Annotated[Settings, Depends(app_settings)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal | None:
    """The signed-in person on a page that anyone may open (the dashboard shell), or None."""
    if not cookie or request.method not in _SAFE_METHODS:
        return None
    found = web_sessions.find_session(session, cookie, settings)
    if found is None:
        return None
    request.state.csrf_token = web_sessions.csrf_token(settings, cookie)
    return Principal(found.user_id, found.name, found.role)


OptionalUser = Annotated[Principal | None, Depends(optional_user)]
CurrentUser = Annotated[Principal, Depends(current_user)]


def require_role(*roles: str):  # type: ignore[no-untyped-def]
    allowed = frozenset(roles)

    # async: a check this small runs on the event loop, not on a worker thread of its own.
    async def dependency(user: CurrentUser) -> Principal:
        check_role(user, allowed)
        return user

    return dependency


def check_role(user: Principal, allowed: frozenset[str]) -> None:
    if user.role not in allowed:
        raise Forbidden(
            f"this needs the role {' or '.join(sorted(allowed))}; your token has {user.role!r}"
        )


RequireAdmin = Annotated[Principal, Depends(require_role("admin"))]
RESEARCHERS = frozenset({"admin", "researcher"})
RequireResearcher = Annotated[Principal, Depends(require_role(*RESEARCHERS))]
# Cases and respondents' contacts: admins and case managers only, never researchers or viewers.
RequireCaseManager = Annotated[Principal, Depends(require_role("admin", "case_manager"))]
RequireAnyRole = Annotated[Principal, Depends(require_role(*ROLES))]
