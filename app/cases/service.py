"""Cases: opened by the worker for dissatisfying stories whose respondent left a contact (for
every such story, or only when its final codes include one of the survey's case codes), moved
open -> contacted -> resolved by case managers, with notes; every step in the audit trail.

Contacts are read here only, for admins and case managers (the routes check the role); each
read of a contact in clear is audited. Nothing here logs a contact or a note."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, cast, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import audit, encryption
from app.cases import crypto
from app.cases.schemas import (
    CaseNoteRead,
    CaseRead,
    CaseStatus,
    CaseStory,
    CaseSummary,
    ContactRead,
)
from app.config import Settings
from app.errors import Conflict, Invalid, NotFound
from app.incidents.redaction import gated_answers, required_redaction
from app.models import Case, CaseNote, Incident, IncidentCode, IncidentContact, Survey
from app.models.base import utcnow
from app.pagination import keyset_page

if TYPE_CHECKING:
    from app.auth import Principal

WORKER = "worker"


def due_cases(session: Session) -> list[tuple[int, int]]:
    """(incident id, survey id) of the stories that qualify for a case and have none: at once
    on surveys without case codes, once its final codes include one otherwise."""
    no_case = ~exists().where(Case.incident_id == IncidentContact.incident_id)
    base = (
        select(IncidentContact.incident_id, IncidentContact.survey_id)
        .join(Incident, Incident.id == IncidentContact.incident_id)
        .where(Incident.valence == "dissatisfying", no_case)
    )
    rules = session.execute(
        select(Survey.id, Survey.case_codes).where(
            Survey.id.in_(select(IncidentContact.survey_id).distinct())
        )
    ).all()
    always = [sid for sid, codes in rules if not codes]
    candidates: list[tuple[int, int]] = []
    if always:
        candidates += session.execute(base.where(IncidentContact.survey_id.in_(always))).all()  # type: ignore[arg-type]
    for survey_id, codes in rules:
        if not codes:
            continue
        has_code = exists().where(
            IncidentCode.incident_id == IncidentContact.incident_id, IncidentCode.code.in_(codes)
        )
        candidates += session.execute(  # type: ignore[arg-type]
            base.where(IncidentContact.survey_id == survey_id, Incident.status == "coded", has_code)
        ).all()
    return candidates


def open_due_cases(session: Session) -> list[int]:
    """Open a case for every story that `due_cases` finds. Run by the worker when a read
    transaction found one due (the contacts table holds only stories with a contact, so that
    reads few rows); returns the new cases' ids. Two workers opening the same case at once on
    PostgreSQL: the unique incident_id lets one of them, the other skips it."""
    candidates = due_cases(session)
    opened: list[int] = []
    now = utcnow()
    for incident_id, survey_id in candidates:
        case = Case(
            incident_id=incident_id,
            survey_id=survey_id,
            status="open",
            opened_at=now,
            updated_at=now,
            updated_by=WORKER,
        )
        try:
            with session.begin_nested():  # another worker opened it a moment ago: skip it
                session.add(case)
                session.flush()
        except IntegrityError:
            continue
        audit.record(
            session,
            None,
            "case.open",
            "case",
            case.id,
            after={"incident_id": incident_id, "survey_id": survey_id, "status": "open"},
            actor_name=WORKER,
        )
        opened.append(case.id)
    return opened


def _codes(session: Session, incident_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {i: [] for i in incident_ids}
    if incident_ids:
        for incident_id, code in session.execute(
            select(IncidentCode.incident_id, IncidentCode.code)
            .where(IncidentCode.incident_id.in_(incident_ids))
            .order_by(IncidentCode.code)
        ):
            found[incident_id].append(code)
    return found


def _notes(session: Session, case_ids: list[int]) -> dict[int, list[CaseNoteRead]]:
    found: dict[int, list[CaseNoteRead]] = {i: [] for i in case_ids}
    if case_ids:
        for note in session.scalars(
            select(CaseNote).where(CaseNote.case_id.in_(case_ids)).order_by(CaseNote.id)
        ):
            found[note.case_id].append(
                CaseNoteRead(
                    id=note.id, author=note.author, body=note.body, created_at=note.created_at
                )
            )
    return found


def _read(
    case: Case, codes: list[str], notes: list[CaseNoteRead], contact: ContactRead | None
) -> CaseRead:
    return CaseRead(
        id=case.id,
        incident_id=case.incident_id,
        survey_id=case.survey_id,
        status=case.status,  # type: ignore[arg-type]
        opened_at=case.opened_at,
        contacted_at=case.contacted_at,
        resolved_at=case.resolved_at,
        updated_at=case.updated_at,
        updated_by=case.updated_by,
        version=case.version,
        codes=codes,
        contact=contact,
        notes=notes,
    )


def list_cases(
    session: Session,
    *,
    survey_id: int | None = None,
    status: CaseStatus | None = None,
    code: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[CaseRead], str | None]:
    """Cases, oldest first (keyset pages), without contacts (those are read one case at a time,
    audited)."""
    query = select(Case)
    if survey_id is not None:
        query = query.where(Case.survey_id == survey_id)
    if status is not None:
        query = query.where(Case.status == status)
    if code is not None:
        query = query.where(
            exists().where(IncidentCode.incident_id == Case.incident_id, IncidentCode.code == code)
        )
    cases, next_cursor = keyset_page(session, query, Case.id, cursor, limit)
    codes = _codes(session, [c.incident_id for c in cases])
    notes = _notes(session, [c.id for c in cases])
    return [_read(c, codes[c.incident_id], notes[c.id], None) for c in cases], next_cursor


def _get(session: Session, case_id: int, *, lock: bool = False) -> Case:
    case = session.get(Case, case_id, with_for_update=lock)
    if case is None:
        raise NotFound(f"case {case_id} does not exist")
    return case


def read_contact(
    session: Session, settings: Settings, incident_id: int, reader: Principal | None
) -> ContactRead | None:
    """The story's contact in clear, with an audit event naming who read it (not the value)."""
    row = session.get(IncidentContact, incident_id)
    if row is None:
        return None
    audit.record(session, reader, "contact.read", "incident", incident_id, after={"kind": row.kind})
    return ContactRead(kind=row.kind, value=crypto.decrypt(settings, row.ciphertext))  # type: ignore[arg-type]


def get_case(
    session: Session, settings: Settings, case_id: int, reader: Principal | None
) -> CaseRead:
    case = _get(session, case_id)
    contact = read_contact(session, settings, case.incident_id, reader)
    read = _read(
        case,
        _codes(session, [case.incident_id])[case.incident_id],
        _notes(session, [case.id])[case.id],
        contact,
    )
    read.story = _story(session, settings, case.incident_id)
    return read


def _story(session: Session, settings: Settings, incident_id: int) -> CaseStory | None:
    """The case's story in the redacted view, held back (like the incident API does) until the
    configured redaction has run on it."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        return None
    answers, pending = gated_answers(incident, required_redaction(settings.nlp_pipeline))
    return CaseStory(
        submitted_at=incident.submitted_at,
        valence=incident.valence,
        touchpoint=incident.touchpoint,
        channel=incident.channel,
        occurred=answers["occurred"],
        circumstances=answers["circumstances"],
        what_happened=answers["what_happened"],
        outcome=answers["outcome"],
        redaction_pending=pending,
    )


def set_status(
    session: Session,
    settings: Settings,
    case_id: int,
    status: CaseStatus,
    actor: Principal | None,
    *,
    expected_version: int | None = None,
) -> CaseRead:
    case = _get(session, case_id, lock=True)
    if expected_version is not None and expected_version != case.version:
        raise Conflict(f"case {case_id} changed meanwhile (version {case.version}); reload it")
    before = case.status
    if status != before:
        now = utcnow()
        case.status = status
        if status == "contacted" and case.contacted_at is None:
            case.contacted_at = now
        if status == "resolved":
            case.resolved_at = now
        if status == "open":
            case.resolved_at = None
        case.updated_at = now
        case.updated_by = actor.name if actor else audit.CLI_ACTOR
        case.version += 1
        session.flush()
        audit.record(
            session,
            actor,
            "case.status",
            "case",
            case.id,
            before={"status": before},
            after={"status": status, "incident_id": case.incident_id},
        )
    return _read(
        case,
        _codes(session, [case.incident_id])[case.incident_id],
        _notes(session, [case.id])[case.id],
        None,
    )


def add_note(session: Session, case_id: int, body: str, actor: Principal | None) -> CaseNoteRead:
    case = _get(session, case_id, lock=True)
    author = actor.name if actor else audit.CLI_ACTOR
    note = CaseNote(case_id=case.id, author=author, body=body)
    session.add(note)
    case.updated_at = utcnow()
    case.updated_by = author
    case.version += 1
    session.flush()
    # The trail says who wrote a note and when; the note's text stays in case_notes (it may
    # quote the respondent, and goes with the story when it is erased).
    audit.record(
        session,
        actor,
        "case.note",
        "case",
        case.id,
        after={"note_id": note.id, "chars": len(body), "incident_id": case.incident_id},
    )
    return CaseNoteRead(id=note.id, author=author, body=note.body, created_at=note.created_at)


def _hours(dialect: str) -> Any:
    if dialect == "postgresql":
        return func.extract("epoch", Case.resolved_at - Case.opened_at) / 3600.0
    return (func.julianday(Case.resolved_at) - func.julianday(Case.opened_at)) * 24.0


def summary(session: Session, *, survey_id: int | None = None) -> CaseSummary:
    """Case counts by status and time to resolution, in SQL."""
    where = [Case.survey_id == survey_id] if survey_id is not None else []
    counts = dict(
        session.execute(select(Case.status, func.count()).where(*where).group_by(Case.status)).all()  # type: ignore[arg-type]
    )
    hours = cast(_hours(session.get_bind().dialect.name), Float)
    resolved = [*where, Case.resolved_at.is_not(None)]
    mean = session.scalar(select(func.avg(hours)).where(*resolved))
    n = int(counts.get("resolved", 0))
    median: float | None = None
    if n:
        middle = session.scalars(
            select(hours).where(*resolved).order_by(hours).offset((n - 1) // 2).limit(2 - n % 2)
        ).all()
        median = sum(float(v) for v in middle) / len(middle) if middle else None
    return CaseSummary(
        open=int(counts.get("open", 0)),
        contacted=int(counts.get("contacted", 0)),
        resolved=n,
        median_hours_to_resolution=median,
        mean_hours_to_resolution=float(mean) if mean is not None else None,
    )


def rotate_keys(session: Session, settings: Settings) -> int:
    """Re-encrypt every contact with the first key of CIT_CONTACT_KEYS; returns how many. All
    or nothing: when no key opens some contact, nothing is written and the error names the
    stories (Invalid)."""
    rows = list(
        session.scalars(
            select(IncidentContact).order_by(IncidentContact.incident_id).with_for_update()
        )
    )
    rotated: dict[int, str] = {}
    for row in rows:
        with contextlib.suppress(encryption.CannotDecrypt):
            rotated[row.incident_id] = crypto.rotate(settings, row.ciphertext)
    unopened = [row.incident_id for row in rows if row.incident_id not in rotated]
    if unopened:
        raise Invalid(
            f"no key of {encryption.CONTACTS.env} (nor the one derived from CIT_SECRET_KEY) "
            f"opens the contact of story(ies) {', '.join(map(str, unopened))}; nothing was "
            "re-encrypted: put back the key they were encrypted with"
        )
    for row in rows:
        row.ciphertext = rotated[row.incident_id]
    session.flush()
    return len(rows)
