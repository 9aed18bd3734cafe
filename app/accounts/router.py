"""People API (admins): create a person with a one-time set-password link, list people, issue
a new link, revoke a person (signed out at once, tokens revoked)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.accounts import service
from app.accounts.schemas import PasswordLinkRead, PersonCreate, PersonCreated, PersonRead
from app.auth import RequireAdmin
from app.config import Settings, app_settings
from app.db import SessionDep
from app.errors import Conflict, Forbidden, Invalid, NotFound, problem_responses

router = APIRouter(prefix="/api/v1/people", tags=["people"], responses=problem_responses(Forbidden))
SettingsDep = Annotated[Settings, Depends(app_settings)]


@router.get("", response_model=list[PersonRead])
def list_people(session: SessionDep, _user: RequireAdmin) -> list[PersonRead]:
    """Everyone who may use the service, with their role and state."""
    return service.list_people(session)


@router.post(
    "",
    status_code=201,
    response_model=PersonCreated,
    responses=problem_responses(Conflict, Invalid),
)
def create_person(
    data: PersonCreate, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> PersonCreated:
    """Create a person; the answer carries their one-time set-password link (shown once,
    expires after `CIT_PASSWORD_LINK_HOURS`)."""
    person, link = service.create_person(
        session, name=data.name, role=data.role, actor=user, settings=settings
    )
    return PersonCreated(person=service.person_read(session, person), password_link=link)


@router.post(
    "/{person_id:int}/password-link",
    status_code=201,
    response_model=PasswordLinkRead,
    responses=problem_responses(NotFound, Conflict),
)
def new_password_link(
    person_id: int, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> PasswordLinkRead:
    """A new one-time set-password link (a reset); the person's older unused links stop
    working."""
    person = service.get_person(session, person_id)
    return service.issue_password_link(session, person, actor=user, settings=settings)


@router.post(
    "/{person_id:int}/revoke", response_model=PersonRead, responses=problem_responses(NotFound)
)
def revoke_person(person_id: int, session: SessionDep, user: RequireAdmin) -> PersonRead:
    """Revoke a person: every browser session ends at once, every API token stops working."""
    person = service.get_person(session, person_id)
    service.revoke_person(session, person, user)
    return service.person_read(session, person)
