"""Coding stories: a coder's independent coding, settling the final codes once every required
coding is in (agreement, or adjudication when coders disagree), and the admin's adjudication.

Nothing counts until a researcher has confirmed it: final codes (incident_codes) are written
here and only here (besides imports of earlier studies)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    inspect,
    literal_column,
    select,
)
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal
from app.codebooks.service import (
    VersionRef,
    current_version,
    default_codebook,
    load_nlp_codebook,
    nlp_codebook_of,
    survey_version_ref,
)
from app.db import WriteBatch, insert_rows, written_by_core
from app.errors import Conflict, Forbidden, NotFound
from app.incidents.redaction import TextViews, text_views
from app.incidents.schemas import CodeDecisionRead, IncidentPage, IncidentRead
from app.incidents.service import (
    IncidentFilters,
    View,
    etag,
    etag_for,
    get_incident,
    list_incidents,
    load_codings,
    read_span,
    resolve_view,
    to_reads,
)
from app.models import (
    AuditEvent,
    Codebook,
    CodebookVersion,
    CodeProposal,
    Coding,
    CodingCode,
    CodingSpan,
    Incident,
    IncidentCode,
    Notification,
    ReviewLease,
    Survey,
    User,
)
from app.models.base import utcnow
from app.reviews.errors import CodesInvalid, SpansInvalid, check_if_match
from app.reviews.notifications import unread
from app.reviews.schemas import AdjudicationUpdate, CodingUpdate, MyCoding
from app.webhooks import events as webhooks
from nlp.codebook import Codebook as NlpCodebook

FINAL_STATUSES = ("coded", "excluded")
SETTLED_STATUSES = {"coded", "excluded", "adjudication"}
ADJUDICATE = "incident.adjudicate"


def coders_required_for(incident_id: int, double_coding_share: int) -> int:
    """2 for a stable `double_coding_share` % of stories (by a hash of the id), else 1."""
    digest = hashlib.sha256(f"cit-double-coding:{incident_id}".encode()).digest()
    return 2 if int.from_bytes(digest[:8], "big") % 100 < double_coding_share else 1


def decide_coders_required(incident: Incident, share: int | None) -> int:
    """Decide, on first hand-out (or first coding), how many coders the story needs, from
    the survey's double-coding share (which the caller read in a statement it runs anyway)."""
    if incident.coders_required is None:
        incident.coders_required = coders_required_for(incident.id, share or 0)
    return incident.coders_required


# Codebook ---------------------------------------------------------------------------------------


def codebook_version_for(session: Session, survey_id: int) -> CodebookVersion:
    """The current version of the survey's codebook (the default codebook when it has none)."""
    codebook_id = session.scalar(select(Survey.codebook_id).where(Survey.id == survey_id))
    codebook = session.get(Codebook, codebook_id) if codebook_id else default_codebook(session)
    if codebook is None:
        raise Conflict("there is no codebook to code this story with; load one first")
    return current_version(session, codebook)


def codebook_ref_for(session: Session, survey_id: int) -> tuple[VersionRef, NlpCodebook]:
    """`codebook_version_for` as the coding path needs it: the version's identity and its
    parsed codes, in one small statement when the survey names its codebook (the content is
    read and parsed once per process)."""
    ref = survey_version_ref(session, survey_id)
    if ref is not None:
        return ref, nlp_codebook_of(session, ref)
    version = codebook_version_for(session, survey_id)
    ref = VersionRef(version.id, version.codebook_id, version.number, version.created_at)
    return ref, load_nlp_codebook(version)


def _check_codes(
    version: CodebookVersion,
    given: dict[str, Sequence[str]],
    proposals: Mapping[str, int] | None = None,
) -> None:
    """Every code must be an active, codable code of the version; `proposals` (key -> id) are
    the caller's own open proposals, usable in `codes` only."""
    _check_parsed_codes(load_nlp_codebook(version), version.id, given, proposals)


def _check_parsed_codes(
    codebook: NlpCodebook,
    version_id: int,
    given: dict[str, Sequence[str]],
    proposals: Mapping[str, int] | None = None,
) -> None:
    active = {code.key for code in codebook.active_codes}
    parents = {code.key for code in codebook.codes if not code.codable and not code.retired}
    for where, codes in given.items():
        usable = active | set(proposals or ()) if where == "codes" else active
        unknown = [code for code in codes if code not in usable]
        if unknown:
            raise CodesInvalid(unknown, where, version_id, not_codable=sorted(parents))


# Reading ----------------------------------------------------------------------------------------


def _my_coding(session: Session, incident: Incident, coder_id: int) -> Coding | None:
    return session.scalar(
        select(Coding).where(Coding.incident_id == incident.id, Coding.coder_id == coder_id)
    )


def my_coding(
    session: Session, incident_id: int, user: Principal, view: View | None = None
) -> tuple[MyCoding, Incident]:
    incident = get_incident(session, incident_id)
    return _my_read(session, incident, user, resolve_view(user, view)), incident


def _my_read(session: Session, incident: Incident, user: Principal, view: View) -> MyCoding:
    codings = load_codings(session, [incident.id], view=view)[incident.id]
    mine = [c for c in codings if c.coder == user.name]
    if not mine:
        raise NotFound(f"you have not coded incident {incident.id}")
    return MyCoding(
        **mine[0].model_dump(),
        incident_status=incident.status,
        incident_version=incident.version,
        etag=etag(session, incident, user.id),
        notifications=unread(session, user.id, incident_id=incident.id),
    )


def adjudication_queue(
    session: Session, *, survey_id: int | None, cursor: str | None, limit: int, user: Principal
) -> IncidentPage:
    """Stories whose coders disagree, with every coding (admins only)."""
    return list_incidents(
        session,
        filters=IncidentFilters(survey_id=survey_id, status="adjudication"),
        cursor=cursor,
        limit=limit,
        view="original",
        viewer=user,
    )


# Writing a coding --------------------------------------------------------------------------------


Offsets = tuple[str, int, int]

_codings = cast(Table, Coding.__table__)
_decisions = cast(Table, CodingCode.__table__)
_spans = cast(Table, CodingSpan.__table__)
_leases = cast(Table, ReviewLease.__table__)
_users = cast(Table, User.__table__)
_proposals = cast(Table, CodeProposal.__table__)
_audit = cast(Table, AuditEvent.__table__)
_final = cast(Table, IncidentCode.__table__)

# The coding path's statements, built once: building and caching a statement cost more Python
# than the database needs to run it (bench/review_throughput.py).
_CODINGS_OF_STORY = (
    select(
        _codings.c.id,
        _codings.c.coder_id,
        _codings.c.codebook_version_id,
        _codings.c.excluded,
        _codings.c.exclusion_reason,
        _codings.c.no_code_applies,
        _codings.c.note,
        _codings.c.history,
        _codings.c.revision,
        _codings.c.created_at,
        _codings.c.updated_at,
        _users.c.name,
    )
    .select_from(_codings.join(_users, _users.c.id == _codings.c.coder_id))
    .where(_codings.c.incident_id == bindparam("incident_id"))
    .order_by(_codings.c.id)
)
_CODES_OF_CODINGS = (
    select(_decisions.c.coding_id, _decisions.c.code, _decisions.c.proposal_id)
    .where(
        _decisions.c.coding_id.in_(bindparam("coding_ids", expanding=True)),
        _decisions.c.decision != literal_column("'rejected'"),
    )
    .order_by(_decisions.c.id)
)
_DECISIONS_OF_CODING = (
    select(_decisions.c.code, _decisions.c.decision)
    .where(_decisions.c.coding_id == bindparam("coding_id"))
    .order_by(_decisions.c.id)
)
_ADJUDICATED = select(
    exists().where(
        _audit.c.entity_type == literal_column("'incident'"),
        _audit.c.entity_id == bindparam("entity_id"),
        _audit.c.action == literal_column(f"'{ADJUDICATE}'"),
    )
)
_OPEN_PROPOSALS = select(_proposals.c.key, _proposals.c.id).where(
    _proposals.c.codebook_id == bindparam("codebook_id"),
    _proposals.c.proposed_by == bindparam("user_id"),
    _proposals.c.status == literal_column("'proposed'"),
)
_LIVE_LEASES = (
    select(_users.c.name, _leases.c.expires_at)
    .select_from(_leases.join(_users, _users.c.id == _leases.c.coder_id))
    .where(
        _leases.c.incident_id == bindparam("incident_id"), _leases.c.expires_at > bindparam("now")
    )
    .order_by(_leases.c.expires_at, _leases.c.id)
)
_FINAL_CODES = (
    select(_final.c.code, _final.c.source, _final.c.codebook_version_id)
    .where(_final.c.incident_id == bindparam("incident_id"))
    .order_by(_final.c.code)
)
_CLEAR_FINAL = delete(_final).where(_final.c.incident_id == bindparam("incident_id"))
_INSERT_FINAL = insert(_final)
_INSERT_CODING = insert(_codings).returning(_codings.c.id)
_UPDATE_CODING = (
    _codings.update()
    .where(_codings.c.id == bindparam("coding_key"))
    .values(revision=_codings.c.revision + 1)
)
_CLEAR_DECISIONS = delete(_decisions).where(_decisions.c.coding_id == bindparam("coding_key"))
_INSERT_DECISIONS = insert(_decisions)
_INSERT_DECISIONS_IDS = insert(_decisions).returning(
    _decisions.c.id, _decisions.c.code, sort_by_parameter_order=True
)
_INSERT_SPANS = insert(_spans)
_END_LEASE = delete(_leases).where(
    _leases.c.incident_id == bindparam("incident_id"), _leases.c.coder_id == bindparam("coder_id")
)
_INSERT_AUDIT = insert(_audit)

_surveys = cast(Table, Survey.__table__)
_codebooks = cast(Table, Codebook.__table__)
_versions = cast(Table, CodebookVersion.__table__)
_notifications = cast(Table, Notification.__table__)
_incidents = cast(Table, Incident.__table__)
# PostgreSQL: the story's row lock, taken before `_STORY_TO_CODE` reads (see save_coding).
_LOCK_STORY = (
    select(_incidents.c.id).where(_incidents.c.id == bindparam("incident_id")).with_for_update()
)


def _story_to_code() -> Any:
    """The story (locked), and in the same statement what saving a coding asks of the rest:
    how many codings it has and the caller's revision, the survey's double-coding share and
    the current version of its codebook, the other coders' live leases, and whether there is
    anything at all to read of the caller's open proposals, the final codes, an adjudication
    and the caller's unread notifications about it. Most saves then read nothing more: each of
    these was a statement of its own, a round trip each on PostgreSQL."""
    story = Incident.id
    caller: Any = bindparam("user_id")
    return (
        select(
            Incident,
            select(func.count())
            .select_from(_codings)
            .where(_codings.c.incident_id == story)
            .scalar_subquery()
            .label("n_codings"),
            select(_codings.c.revision)
            .where(_codings.c.incident_id == story, _codings.c.coder_id == caller)
            .scalar_subquery()
            .label("my_revision"),
            _surveys.c.double_coding_share,
            _versions.c.id.label("version_id"),
            _versions.c.codebook_id.label("version_codebook_id"),
            _versions.c.number.label("version_number"),
            _versions.c.created_at.label("version_created_at"),
            select(func.count())
            .select_from(_leases)
            .where(
                _leases.c.incident_id == story,
                _leases.c.coder_id != caller,
                _leases.c.expires_at > bindparam("now"),
            )
            .scalar_subquery()
            .label("others_leased"),
            exists()
            .where(
                _proposals.c.codebook_id == _versions.c.codebook_id,
                _proposals.c.proposed_by == caller,
                _proposals.c.status == literal_column("'proposed'"),
            )
            .label("has_proposals"),
            exists().where(_final.c.incident_id == story).label("has_final"),
            exists()
            .where(
                _audit.c.entity_type == literal_column("'incident'"),
                _audit.c.entity_id == bindparam("entity_id"),
                _audit.c.action == literal_column(f"'{ADJUDICATE}'"),
            )
            .label("adjudicated"),
            exists()
            .where(
                _notifications.c.user_id == caller,
                _notifications.c.read_at.is_(None),
                _notifications.c.incident_id == story,
            )
            .label("has_unread"),
        )
        .join(_surveys, _surveys.c.id == Incident.survey_id)
        .outerjoin(_codebooks, _codebooks.c.id == _surveys.c.codebook_id)
        .outerjoin(
            _versions,
            and_(
                _versions.c.codebook_id == _codebooks.c.id,
                _versions.c.number == _codebooks.c.current_version,
            ),
        )
        .where(Incident.id == bindparam("incident_id"))
        .with_for_update(of=Incident)
    )


_STORY_TO_CODE = _story_to_code()


def _coding_snapshot(
    coding: Any,
    decisions: Sequence[tuple[str, str]],
    spans: dict[str, list[Offsets]] | None = None,
) -> dict[str, Any]:
    """What the audit trail keeps of a coding; `coding` is a Coding or a row of its columns."""

    def entry(code: str, decision: str) -> dict[str, Any]:
        marked = (spans or {}).get(code)
        return {"code": code, "decision": decision, **({"spans": marked} if marked else {})}

    return {
        "coding_id": coding.id,
        "coder_id": coding.coder_id,
        "codebook_version_id": coding.codebook_version_id,
        "codes": [entry(c, d) for c, d in decisions],
        "no_code_applies": coding.no_code_applies,
        "excluded": coding.excluded,
        "exclusion_reason": coding.exclusion_reason,
        "note": coding.note,
    }


def _was_adjudicated(session: Session, incident: Incident) -> bool:
    return bool(
        session.connection().execute(_ADJUDICATED, {"entity_id": str(incident.id)}).scalar()
    )


def open_proposals_of(session: Session, codebook_id: int, user_id: int) -> dict[str, int]:
    """The caller's open code proposals for this codebook: key -> proposal id."""
    return {
        key: proposal_id
        for key, proposal_id in session.connection().execute(
            _OPEN_PROPOSALS, {"codebook_id": codebook_id, "user_id": user_id}
        )
    }


def live_leases(session: Session, incident_id: int, now: datetime) -> list[tuple[str, datetime]]:
    """(holder, until) of the story's leases that have not run out, soonest first."""
    return [
        (name, expires)
        for name, expires in session.connection().execute(
            _LIVE_LEASES, {"incident_id": incident_id, "now": now}
        )
    ]


def _check_leases(
    session: Session, incident: Incident, user: Principal, codings: int, required: int
) -> None:
    """A lease protects the story: nobody else may take the place a live lease holds (on a
    single-coded story, any other coder's lease). An admin may break the lease first."""
    now = utcnow()
    others = [
        (name, until) for name, until in live_leases(session, incident.id, now) if name != user.name
    ]
    if not others or codings + len(others) < required:
        return
    names = ", ".join(f"{name} until {until.isoformat()}" for name, until in others)
    raise Conflict(
        f"incident {incident.id} is held by {names}; wait for the lease to end or ask an admin "
        "to break it",
        extra={
            "lease_holders": [
                {"researcher": name, "until": until.isoformat()} for name, until in others
            ]
        },
    )


def _checked_spans(views: TextViews, view: View, data: CodingUpdate) -> dict[str, list[Offsets]]:
    """Each code's spans in original offsets, after checking them against the text the coder
    reads; every misfit is reported with its place."""
    errors: list[dict[str, object]] = []
    found: dict[str, list[Offsets]] = {}
    for i, choice in enumerate(data.codes):
        for j, span in enumerate(choice.spans):
            text = views.text(view, span.field)
            where = ["body", "codes", i, "spans", j]
            if text is None:
                errors.append(
                    {"loc": where, "msg": f"the story has no {span.field}", "type": "span"}
                )
            elif span.end > len(text):
                errors.append(
                    {
                        "loc": where,
                        "msg": f"{span.field} is {len(text)} characters long; the span ends at "
                        f"{span.end}",
                        "type": "span",
                    }
                )
            else:
                start, end = views.to_original(view, span.field, span.start, span.end)
                marked = found.setdefault(choice.code, [])
                if (span.field, start, end) not in marked:
                    marked.append((span.field, start, end))
    if errors:
        raise SpansInvalid(errors)
    return found


def _stored_spans(session: Session, coding_id: int) -> dict[str, list[Offsets]]:
    found: dict[str, list[Offsets]] = {}
    for code, field_name, start, end in session.execute(
        select(CodingCode.code, CodingSpan.field, CodingSpan.start, CodingSpan.end)
        .join(CodingCode, CodingCode.id == CodingSpan.coding_code_id)
        .where(CodingCode.coding_id == coding_id)
        .order_by(CodingSpan.id)
    ):
        found.setdefault(code, []).append((field_name, start, end))
    return found


def _audit_row(
    actor: Principal | None,
    action: str,
    incident_id: int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> dict[str, Any]:
    """An audit event as `audit.record` writes it, for one INSERT of several events."""
    return {
        "at": utcnow(),
        "actor_id": actor.id if actor else None,
        "actor_name": actor.name if actor else audit.CLI_ACTOR,
        "action": action,
        "entity_type": "incident",
        "entity_id": str(incident_id),
        "before": before,
        "after": after,
    }


def save_coding(
    session: Session,
    incident_id: int,
    data: CodingUpdate,
    user: Principal,
    if_match: str | None,
    view: View | None = None,
) -> MyCoding:
    """Create or revise the caller's coding, then settle the story's final codes. Span offsets
    are read in `view` (the caller's default view unless given).

    The hot path of coding (bench/review_throughput.py): the story's codings are read once and
    serve the ETag, the checks, settling and the answer; writes are Core statements built once;
    the answer is made from what was written instead of read back."""
    chosen = resolve_view(user, view)
    conn = session.connection()
    key = {"incident_id": incident_id}
    if conn.dialect.name == "postgresql":
        # The row lock first, in a statement of its own: under READ COMMITTED the subqueries
        # of the next one then see every coding and lease committed before we held the lock
        # (a statement that waits for a row lock keeps the snapshot it started with). SQLite
        # holds the write lock since BEGIN IMMEDIATE.
        conn.execute(_LOCK_STORY, key)
    found = session.execute(
        _STORY_TO_CODE,
        {**key, "user_id": user.id, "now": utcnow(), "entity_id": str(incident_id)},
    ).first()
    if found is None:
        raise NotFound(f"incident {incident_id} does not exist")
    incident: Incident = found[0]
    check_if_match(if_match, etag_for(incident, found.my_revision))
    rows = conn.execute(_CODINGS_OF_STORY, key).all() if found.n_codings else []
    mine = next((row for row in rows if row.coder_id == user.id), None)
    if mine is None:
        if incident.status in FINAL_STATUSES:
            raise Conflict(f"incident {incident.id} is final ({incident.status}) already")
        required = decide_coders_required(incident, found.double_coding_share)
        if len(rows) >= required:
            raise Conflict(f"incident {incident.id} has every coding it needs ({required})")
        if found.others_leased and len(rows) + found.others_leased >= required:
            _check_leases(session, incident, user, len(rows), required)
    elif found.adjudicated:
        raise Conflict(f"incident {incident.id} was adjudicated; an admin's decision stands")
    if found.version_id is not None:
        version = VersionRef(
            found.version_id,
            found.version_codebook_id,
            found.version_number,
            found.version_created_at,
        )
        codebook = nlp_codebook_of(session, version)
        proposals = (
            open_proposals_of(session, version.codebook_id, user.id) if found.has_proposals else {}
        )
    else:  # the survey names no codebook: the default one
        version, codebook = codebook_ref_for(session, incident.survey_id)
        proposals = open_proposals_of(session, version.codebook_id, user.id)
    _check_parsed_codes(
        codebook,
        version.id,
        {"codes": [c.code for c in data.codes], "rejected_suggestions": data.rejected_suggestions},
        proposals,
    )
    views = text_views(incident) if any(c.spans for c in data.codes) else None
    spans = _checked_spans(views, chosen, data) if views is not None else {}

    now = utcnow()
    exclusion_reason = data.exclusion_reason if data.exclude else None
    values: dict[str, Any] = {
        "codebook_version_id": version.id,
        "excluded": data.exclude,
        "exclusion_reason": exclusion_reason,
        "no_code_applies": data.no_code_applies,
        "note": data.note,
        "updated_at": now,
    }
    # Settling needs the other codings' codes (a read of its own only when there are any).
    held = [
        _Held(
            id=row.id,
            name=row.name,
            excluded=row.excluded,
            no_code_applies=row.no_code_applies,
            exclusion_reason=row.exclusion_reason,
            codebook_version_id=row.codebook_version_id,
        )
        for row in rows
        if row.coder_id != user.id
    ]
    if held:
        by_id = {h.id: h for h in held}
        for held_id, code, proposal_id in conn.execute(
            _CODES_OF_CODINGS, {"coding_ids": list(by_id)}
        ):
            by_id[held_id].codes.add(code)
            by_id[held_id].proposed = by_id[held_id].proposed or proposal_id is not None

    # From here on, writes that need nothing back go through `writes`: on PostgreSQL they
    # are sent as one statement at the end (app.db.WriteBatch).
    writes = WriteBatch(conn)
    before: dict[str, Any] | None = None
    if mine is None:
        history: list[dict[str, Any]] = []
        coding_id = conn.execute(
            _INSERT_CODING,
            {
                **values,
                "incident_id": incident.id,
                "coder_id": user.id,
                "history": history,
                "revision": 1,
                "created_at": now,
            },
        ).scalar_one()
        created_at, revision = now, 1
    else:
        old = conn.execute(_DECISIONS_OF_CODING, {"coding_id": mine.id}).all()
        before = _coding_snapshot(mine, [(c, d) for c, d in old], _stored_spans(session, mine.id))
        mine_id = mine.id
        writes.add(
            _codings,
            lambda: (
                _codings.update()
                .where(_codings.c.id == mine_id)
                .values(**values, revision=_codings.c.revision + 1)
            ),
            _UPDATE_CODING,
            {**values, "coding_key": mine_id},
        )
        writes.add(
            _decisions,
            lambda: delete(_decisions).where(_decisions.c.coding_id == mine_id),
            _CLEAR_DECISIONS,
            {"coding_key": mine_id},
        )
        coding_id, created_at, revision = mine.id, mine.created_at, mine.revision + 1
        history = mine.history
    decisions = [(c.code, "accepted" if c.origin == "suggestion" else "added") for c in data.codes]
    decisions += [(code, "rejected") for code in data.rejected_suggestions]
    code_rows = [
        {"coding_id": coding_id, "code": c, "decision": d, "proposal_id": proposals.get(c)}
        for c, d in decisions
    ]
    if spans:
        writes.flush()
        inserted = conn.execute(_INSERT_DECISIONS_IDS, code_rows).all()
        span_rows = [
            {"coding_code_id": row_id, "field": name, "start_offset": start, "end_offset": end}
            for row_id, code in inserted
            for name, start, end in spans.get(code, [])
        ]
        if span_rows:
            conn.execute(_INSERT_SPANS, span_rows)
    elif code_rows:
        writes.add(
            _decisions, lambda: insert_rows(_decisions, code_rows), _INSERT_DECISIONS, code_rows
        )
    # The lease did its job: the coder has answered.
    story_id, coder_id = incident.id, user.id
    writes.add(
        _leases,
        lambda: delete(_leases).where(
            _leases.c.incident_id == story_id, _leases.c.coder_id == coder_id
        ),
        _END_LEASE,
        {"incident_id": story_id, "coder_id": coder_id},
    )
    after_coding = _SavedCoding(coding_id, user.id, **values)
    events = [
        _audit_row(
            user,
            "coding.create" if before is None else "coding.update",
            incident.id,
            before,
            _coding_snapshot(after_coding, decisions, spans),
        )
    ]

    # Settle on the codings as they now are: the others' as stored, the caller's as written.
    codes_given = [c for c, d in decisions if d != "rejected"]
    held.append(
        _Held(
            id=coding_id,
            name=user.name,
            excluded=data.exclude,
            no_code_applies=data.no_code_applies,
            exclusion_reason=exclusion_reason,
            codebook_version_id=version.id,
            codes=set(codes_given),
            proposed=any(proposals.get(c) is not None for c in codes_given),
        )
    )
    held.sort(key=lambda h: h.id)
    published: list[tuple[str, dict[str, Any], int | None, int | None]] = [
        (
            webhooks.CODING_SAVED,
            {
                "story_id": incident.id,
                "survey_id": incident.survey_id,
                "coding_id": coding_id,
                "coder_id": user.id,
                "revision": revision,
                "codebook_version_id": version.id,
                "codes": codes_given,
                "rejected_suggestions": list(data.rejected_suggestions),
                "excluded": data.exclude,
                "no_code_applies": data.no_code_applies,
            },
            incident.survey_id,
            incident.id,
        )
    ]
    current = conn.execute(_FINAL_CODES, key).all() if found.has_final else []
    _settle(session, incident, user, held, current, events, published, writes)
    writes.add(_audit, lambda: insert_rows(_audit, events), _INSERT_AUDIT, events)
    # coding.saved and, when the story became final, story.final.
    outbox = webhooks.outbox_rows(published)
    writes.add(
        webhooks.events_table,
        lambda: insert_rows(webhooks.events_table, outbox),
        webhooks.INSERT_EVENTS,
        outbox,
    )
    # The story's new state as a Core UPDATE with the rest (PostgreSQL: in the same statement),
    # not by the ORM's flush after: its unit of work was a third of this function's time.
    changed = _changed_columns(incident)
    if changed:
        writes.add(
            _incidents,
            lambda: _incidents.update().where(_incidents.c.id == story_id).values(changed),
        )
    writes.flush()
    # (py-spy: walking the unit of work for the written story was a tenth of the save's
    # SQLAlchemy time.) Its attributes stay loaded for the answer below.
    written_by_core(session, incident, changed)
    session.flush()

    if views is None and spans:
        views = text_views(incident)
    return MyCoding(
        id=coding_id,
        incident_id=incident.id,
        coder=user.name,
        codebook_version_id=version.id,
        codes=[
            CodeDecisionRead(
                code=c,
                origin="suggestion" if d == "accepted" else "manual",
                proposed=proposals.get(c) is not None,
                proposal_id=proposals.get(c),
                spans=[
                    read_span(views, chosen, name, start, end)
                    for name, start, end in spans.get(c, [])
                ]
                if views is not None
                else [],
            )
            for c, d in decisions
            if d != "rejected"
        ],
        rejected_suggestions=[c for c, d in decisions if d == "rejected"],
        excluded=data.exclude,
        exclusion_reason=exclusion_reason,
        no_code_applies=data.no_code_applies,
        note=data.note,
        history=history,
        created_at=created_at,
        updated_at=now,
        incident_status=incident.status,
        incident_version=incident.version,
        etag=etag_for(incident, revision),
        notifications=unread(session, user.id, incident_id=incident.id) if found.has_unread else [],
    )


def _changed_columns(incident: Incident) -> dict[str, Any]:
    """The story's columns changed in this session and not yet flushed (column -> value)."""
    state = inspect(incident)
    return {
        attribute.key: attribute.value
        for attribute in state.attrs
        if attribute.history.has_changes()
    }


@dataclass(frozen=True)
class _SavedCoding:
    """A coding as just written (for its audit snapshot)."""

    id: int
    coder_id: int
    codebook_version_id: int
    excluded: bool
    exclusion_reason: str | None
    no_code_applies: bool
    note: str | None
    updated_at: datetime


def _publish_final(
    session: Session,
    incident: Incident,
    state: dict[str, Any],
    published: list[tuple[str, dict[str, Any], int | None, int | None]] | None = None,
) -> None:
    """story.final: the story's final codes (or its exclusion), ids and codes only; appended
    to `published` when given (the caller writes them), else written at once."""
    event = (
        webhooks.STORY_FINAL,
        {
            "story_id": incident.id,
            "survey_id": incident.survey_id,
            "status": state["status"],
            "final_codes": state["final_codes"],
            "source": state["source"],
            "excluded": state["status"] == "excluded",
        },
        incident.survey_id,
        incident.id,
    )
    if published is not None:
        published.append(event)
    else:
        webhooks.publish_many(session, [event])


# Final codes ------------------------------------------------------------------------------------


@dataclass
class _Held:
    """What settling needs of one coding."""

    id: int
    name: str
    excluded: bool
    no_code_applies: bool
    exclusion_reason: str | None
    codebook_version_id: int
    codes: set[str] = field(default_factory=set)  # its codes, rejected suggestions left out
    proposed: bool = False  # one of them is a proposal (waits for the admin's decision)


def _state(session: Session, incident: Incident) -> dict[str, Any]:
    codes = session.execute(
        select(IncidentCode.code, IncidentCode.source)
        .where(IncidentCode.incident_id == incident.id)
        .order_by(IncidentCode.code)
    ).all()
    return {
        "status": incident.status,
        "final_codes": [code for code, _ in codes],
        "source": codes[0][1] if codes else None,
        "exclusion_reason": incident.exclusion_reason,
    }


def _state_of(incident: Incident, final: Sequence[Any]) -> dict[str, Any]:
    """`_state` from final codes already read (code, source, version), in the database's order."""
    return {
        "status": incident.status,
        "final_codes": [row[0] for row in final],
        "source": final[0][1] if final else None,
        "exclusion_reason": incident.exclusion_reason,
    }


def _set_final(
    session: Session,
    incident: Incident,
    codes: Sequence[str],
    *,
    source: str,
    confirmed_by: str,
    version_id: int,
) -> None:
    """Replace the story's final codes, unless they are already exactly these."""
    current = session.execute(
        select(IncidentCode.code, IncidentCode.source, IncidentCode.codebook_version_id).where(
            IncidentCode.incident_id == incident.id
        )
    ).all()
    wanted = sorted((code, source, version_id) for code in set(codes))
    if sorted((c, s, v) for c, s, v in current) == wanted:
        return
    session.execute(delete(IncidentCode).where(IncidentCode.incident_id == incident.id))
    session.flush()
    now = utcnow()
    session.add_all(
        IncidentCode(
            incident_id=incident.id,
            code=code,
            codebook_version_id=version_id,
            source=source,
            confirmed_by=confirmed_by[:100],
            confirmed_at=now,
        )
        for code in dict.fromkeys(codes)
    )
    session.flush()


def _replace_final(
    writes: WriteBatch,
    incident: Incident,
    current: Sequence[Any],
    codes: Sequence[str],
    *,
    source: str = "",
    confirmed_by: str = "",
    version_id: int = 0,
) -> Sequence[Any]:
    """`_set_final` (or, without codes, `_clear_final`) on final codes already read; returns
    the final codes as they now are, in the database's order."""
    wanted = sorted((code, source, version_id) for code in set(codes))
    if sorted((c, s, v) for c, s, v in current) == wanted:
        return current
    story_id = incident.id
    if current:
        writes.add(
            _final,
            lambda: delete(_final).where(_final.c.incident_id == story_id),
            _CLEAR_FINAL,
            {"incident_id": story_id},
        )
    if not codes:
        return []
    now = utcnow()
    rows = [
        {
            "incident_id": story_id,
            "code": code,
            "codebook_version_id": version_id,
            "source": source,
            "confirmed_by": confirmed_by[:100],
            "confirmed_at": now,
        }
        for code in dict.fromkeys(codes)
    ]
    writes.add(_final, lambda: insert_rows(_final, rows), _INSERT_FINAL, rows)
    if len(wanted) == 1:
        return [wanted[0]]
    # The order the state is recorded in is the database's collation (as `_state` reads it).
    writes.flush()
    return writes.connection.execute(_FINAL_CODES, {"incident_id": story_id}).all()


def _clear_final(session: Session, incident: Incident) -> None:
    session.execute(delete(IncidentCode).where(IncidentCode.incident_id == incident.id))


def _decide(
    session: Session,
    incident: Incident,
    codes: Sequence[str] | None,
    *,
    exclusion_reason: str | None,
    source: str,
    confirmed_by: str,
    version_id: int,
) -> None:
    """Make a decision final: these codes (status coded), or None for an exclusion."""
    if codes is None:
        incident.status = "excluded"
        incident.exclusion_reason = exclusion_reason
        _clear_final(session, incident)
        return
    incident.status = "coded"
    incident.exclusion_reason = None
    _set_final(
        session, incident, codes, source=source, confirmed_by=confirmed_by, version_id=version_id
    )


def settle(session: Session, incident: Incident, actor: Principal | None) -> None:
    """Bring status and final codes in line with the codings: too few codings (or one waiting
    for a decision on a proposed code) -> in_review; all coders agree (same codes, "no code
    applies" alike, or all excluded) -> coded / excluded; else adjudication."""
    rows = session.execute(
        select(Coding, User.name)
        .join(User, User.id == Coding.coder_id)
        .where(Coding.incident_id == incident.id)
        .order_by(Coding.id)
    ).all()
    held = [
        _Held(
            id=coding.id,
            name=name,
            excluded=coding.excluded,
            no_code_applies=coding.no_code_applies,
            exclusion_reason=coding.exclusion_reason,
            codebook_version_id=coding.codebook_version_id,
        )
        for coding, name in rows
    ]
    by_id = {h.id: h for h in held}
    if by_id:
        for coding_id, code, proposal_id in session.connection().execute(
            _CODES_OF_CODINGS, {"coding_ids": list(by_id)}
        ):
            by_id[coding_id].codes.add(code)
            by_id[coding_id].proposed = by_id[coding_id].proposed or proposal_id is not None
    current = session.connection().execute(_FINAL_CODES, {"incident_id": incident.id}).all()
    _settle(session, incident, actor, held, current)
    session.flush()


def _settle(
    session: Session,
    incident: Incident,
    actor: Principal | None,
    held: Sequence[_Held],
    current: Sequence[Any],
    events: list[dict[str, Any]] | None = None,
    published: list[tuple[str, dict[str, Any], int | None, int | None]] | None = None,
    writes: WriteBatch | None = None,
) -> None:
    """`settle` on the codings (in id order) and final codes already read; the audit event
    goes to `events` when given (the caller inserts them), else to `audit.record`, the
    webhook event to `published` when given, and the final codes' writes to `writes` (the
    caller flushes it; by default they are written at once)."""
    if writes is None:
        writes = WriteBatch(session.connection(), combine=False)
    before = _state_of(incident, current)
    # A proposed code waits for the admin's decision; a coding with nothing left (a rejected
    # proposal) waits for its coder to revise it.
    waiting = any(
        h.proposed or (not h.excluded and not h.no_code_applies and not h.codes) for h in held
    )
    decisions = [None if h.excluded else frozenset(h.codes) for h in held]
    required = incident.coders_required or 1

    final: Sequence[Any]
    if len(held) < required or waiting:
        incident.status = "in_review" if held else "new"
        incident.exclusion_reason = None
        incident.finalized_at = None
        final = _replace_final(writes, incident, current, [])
    elif all(d == decisions[0] for d in decisions):
        agreed = decisions[0]
        reasons = dict.fromkeys(h.exclusion_reason or "" for h in held)
        if agreed is None:
            incident.status = "excluded"
            incident.exclusion_reason = " / ".join(r for r in reasons if r) or None
            final = _replace_final(writes, incident, current, [])
        else:
            incident.status = "coded"
            incident.exclusion_reason = None
            final = _replace_final(
                writes,
                incident,
                current,
                sorted(agreed),
                source="agreement" if len(held) >= 2 else "review",
                confirmed_by=", ".join(h.name for h in held),
                version_id=max(h.codebook_version_id for h in held),
            )
    else:
        incident.status = "adjudication"
        incident.exclusion_reason = None
        incident.finalized_at = None
        final = _replace_final(writes, incident, current, [])
    after = _state_of(incident, final)
    if after != before:
        if incident.status in FINAL_STATUSES:
            incident.finalized_at = utcnow()
        # Settling (final, excluded, adjudication, or back) changes the story for everyone;
        # new <-> in_review does not, so that a blind coder is not told the other has answered.
        if {before["status"], after["status"]} & SETTLED_STATUSES or (
            before["final_codes"] != after["final_codes"]
        ):
            incident.version += 1
        action = f"incident.{incident.status}"
        if events is not None:
            events.append(_audit_row(actor, action, incident.id, before, after))
        else:
            audit.record(
                session, actor, action, "incident", incident.id, before=before, after=after
            )
        if incident.status in FINAL_STATUSES:
            _publish_final(session, incident, after, published)


def resettle_open(
    session: Session, incident_ids: Sequence[int], actor: Principal | None
) -> list[int]:
    """Settle again the given stories that are not final nor adjudicated (after their codings
    were mapped to new codes); returns those whose status changed."""
    changed: list[int] = []
    if not incident_ids:
        return changed
    for incident in session.scalars(
        select(Incident)
        .where(Incident.id.in_(list(incident_ids)), Incident.status.not_in(FINAL_STATUSES))
        .order_by(Incident.id)
        .with_for_update()
    ):
        if _was_adjudicated(session, incident):
            continue
        before = incident.status
        settle(session, incident, actor)
        if incident.status != before:
            changed.append(incident.id)
    session.flush()
    return changed


def break_lease(
    session: Session, incident_id: int, holder: str | None, user: Principal
) -> list[str]:
    """Release a story held by another researcher (admins), or one's own lease; returns whose
    leases were removed."""
    get_incident(session, incident_id)
    if holder is not None and holder != user.name and user.role != "admin":
        raise Forbidden("only admins break another researcher's lease")
    query = select(ReviewLease, User.name).join(User, User.id == ReviewLease.coder_id)
    query = query.where(ReviewLease.incident_id == incident_id)
    if holder is not None:
        query = query.where(User.name == holder)
    elif user.role != "admin":
        query = query.where(ReviewLease.coder_id == user.id)
    removed = []
    for lease, name in session.execute(query).all():
        removed.append(name)
        session.delete(lease)
    session.flush()
    if removed and (user.role == "admin" and removed != [user.name]):
        audit.record(
            session,
            user,
            "review.lease_break",
            "incident",
            incident_id,
            before={"holders": removed},
        )
    return removed


def adjudicate(
    session: Session,
    incident_id: int,
    data: AdjudicationUpdate,
    user: Principal,
    if_match: str | None,
    view: View,
) -> IncidentRead:
    """An admin's final decision: codes (source "adjudication") or an exclusion."""
    incident = get_incident(session, incident_id, for_update=True)
    check_if_match(if_match, etag(session, incident, user.id))
    if incident.status not in ("adjudication", *FINAL_STATUSES):
        raise Conflict(
            f"incident {incident.id} is {incident.status}: it waits for its codings, "
            "there is nothing to adjudicate yet"
        )
    version = codebook_version_for(session, incident.survey_id)
    _check_codes(version, {"codes": data.codes})
    before = _state(session, incident)
    _decide(
        session,
        incident,
        None if data.exclude else ([] if data.no_code_applies else data.codes),
        exclusion_reason=data.exclusion_reason,
        source="adjudication",
        confirmed_by=user.name,
        version_id=version.id,
    )
    incident.finalized_at = utcnow()
    incident.version += 1
    session.flush()
    after = _state(session, incident)
    audit.record(
        session,
        user,
        ADJUDICATE,
        "incident",
        incident.id,
        before=before,
        after={**after, "note": data.note},
    )
    _publish_final(session, incident, after)
    return to_reads(session, [incident], view, user)[0]
