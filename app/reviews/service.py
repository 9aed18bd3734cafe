"""Coding stories: a coder's independent coding, settling the final codes once every required
coding is in (agreement, or adjudication when coders disagree), and the admin's adjudication.

Nothing counts until a researcher has confirmed it: final codes (incident_codes) are written
here and only here (besides imports of earlier studies)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal
from app.codebooks.service import current_version, default_codebook, load_nlp_codebook
from app.errors import Conflict, Forbidden, NotFound
from app.incidents.redaction import TextViews, text_views
from app.incidents.schemas import IncidentPage, IncidentRead
from app.incidents.service import (
    IncidentFilters,
    View,
    etag,
    get_incident,
    list_incidents,
    load_codings,
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
    ReviewLease,
    Survey,
    User,
)
from app.models.base import utcnow
from app.reviews.errors import CodesInvalid, SpansInvalid, check_if_match
from app.reviews.notifications import unread
from app.reviews.schemas import AdjudicationUpdate, CodingUpdate, MyCoding
from app.webhooks import events as webhooks

FINAL_STATUSES = ("coded", "excluded")
SETTLED_STATUSES = {"coded", "excluded", "adjudication"}
ADJUDICATE = "incident.adjudicate"


def coders_required_for(incident_id: int, double_coding_share: int) -> int:
    """2 for a stable `double_coding_share` % of stories (by a hash of the id), else 1."""
    digest = hashlib.sha256(f"cit-double-coding:{incident_id}".encode()).digest()
    return 2 if int.from_bytes(digest[:8], "big") % 100 < double_coding_share else 1


def ensure_coders_required(session: Session, incident: Incident) -> int:
    """Decide, on first hand-out (or first coding), how many coders the story needs."""
    if incident.coders_required is None:
        share = session.scalar(
            select(Survey.double_coding_share).where(Survey.id == incident.survey_id)
        )
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


def _check_codes(
    version: CodebookVersion,
    given: dict[str, Sequence[str]],
    proposals: Mapping[str, int] | None = None,
) -> None:
    """Every code must be an active, codable code of the version; `proposals` (key -> id) are
    the caller's own open proposals, usable in `codes` only."""
    codebook = load_nlp_codebook(version)
    active = {code.key for code in codebook.active_codes}
    parents = {code.key for code in codebook.codes if not code.codable and not code.retired}
    for where, codes in given.items():
        usable = active | set(proposals or ()) if where == "codes" else active
        unknown = [code for code in codes if code not in usable]
        if unknown:
            raise CodesInvalid(unknown, where, version.id, not_codable=sorted(parents))


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


def _coding_snapshot(
    coding: Coding,
    decisions: Sequence[tuple[str, str]],
    spans: dict[str, list[Offsets]] | None = None,
) -> dict[str, Any]:
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
        session.scalar(
            select(
                exists().where(
                    AuditEvent.entity_type == "incident",
                    AuditEvent.entity_id == str(incident.id),
                    AuditEvent.action == ADJUDICATE,
                )
            )
        )
    )


def open_proposals_of(session: Session, codebook_id: int, user_id: int) -> dict[str, int]:
    """The caller's open code proposals for this codebook: key -> proposal id."""
    return {
        key: proposal_id
        for key, proposal_id in session.execute(
            select(CodeProposal.key, CodeProposal.id).where(
                CodeProposal.codebook_id == codebook_id,
                CodeProposal.proposed_by == user_id,
                CodeProposal.status == "proposed",
            )
        )
    }


def live_leases(session: Session, incident_id: int, now: datetime) -> list[tuple[str, datetime]]:
    """(holder, until) of the story's leases that have not run out, soonest first."""
    return [
        (name, expires)
        for name, expires in session.execute(
            select(User.name, ReviewLease.expires_at)
            .join(User, User.id == ReviewLease.coder_id)
            .where(ReviewLease.incident_id == incident_id, ReviewLease.expires_at > now)
            .order_by(ReviewLease.expires_at, ReviewLease.id)
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
    for code, field, start, end in session.execute(
        select(CodingCode.code, CodingSpan.field, CodingSpan.start, CodingSpan.end)
        .join(CodingCode, CodingCode.id == CodingSpan.coding_code_id)
        .where(CodingCode.coding_id == coding_id)
        .order_by(CodingSpan.id)
    ):
        found.setdefault(code, []).append((field, start, end))
    return found


def save_coding(
    session: Session,
    incident_id: int,
    data: CodingUpdate,
    user: Principal,
    if_match: str | None,
    view: View | None = None,
) -> MyCoding:
    """Create or revise the caller's coding, then settle the story's final codes. Span offsets
    are read in `view` (the caller's default view unless given)."""
    chosen = resolve_view(user, view)
    incident = get_incident(session, incident_id, for_update=True)
    check_if_match(if_match, etag(session, incident, user.id))
    coding = _my_coding(session, incident, user.id)
    if coding is None:
        if incident.status in FINAL_STATUSES:
            raise Conflict(f"incident {incident.id} is final ({incident.status}) already")
        required = ensure_coders_required(session, incident)
        count = session.scalar(
            select(func.count(Coding.id)).where(Coding.incident_id == incident.id)
        )
        if (count or 0) >= required:
            raise Conflict(f"incident {incident.id} has every coding it needs ({required})")
        _check_leases(session, incident, user, count or 0, required)
    elif _was_adjudicated(session, incident):
        raise Conflict(f"incident {incident.id} was adjudicated; an admin's decision stands")
    version = codebook_version_for(session, incident.survey_id)
    proposals = open_proposals_of(session, version.codebook_id, user.id)
    _check_codes(
        version,
        {"codes": [c.code for c in data.codes], "rejected_suggestions": data.rejected_suggestions},
        proposals,
    )
    spans = (
        _checked_spans(text_views(incident), chosen, data)
        if any(c.spans for c in data.codes)
        else {}
    )

    before: dict[str, Any] | None = None
    if coding is None:
        coding = Coding(incident_id=incident.id, coder_id=user.id, codebook_version_id=version.id)
        session.add(coding)
    else:
        old = session.execute(
            select(CodingCode.code, CodingCode.decision)
            .where(CodingCode.coding_id == coding.id)
            .order_by(CodingCode.id)
        ).all()
        before = _coding_snapshot(
            coding, [(c, d) for c, d in old], _stored_spans(session, coding.id)
        )
        coding.updated_at = utcnow()
        coding.revision += 1
    coding.codebook_version_id = version.id
    coding.excluded = data.exclude
    coding.exclusion_reason = data.exclusion_reason if data.exclude else None
    coding.no_code_applies = data.no_code_applies
    coding.note = data.note
    session.flush()
    decisions = [(c.code, "accepted" if c.origin == "suggestion" else "added") for c in data.codes]
    decisions += [(code, "rejected") for code in data.rejected_suggestions]
    session.execute(delete(CodingCode).where(CodingCode.coding_id == coding.id))
    rows = [
        CodingCode(coding_id=coding.id, code=c, decision=d, proposal_id=proposals.get(c))
        for c, d in decisions
    ]
    session.add_all(rows)
    if spans:
        session.flush()
        session.add_all(
            CodingSpan(coding_code_id=row.id, field=field, start=start, end=end)
            for row in rows
            for field, start, end in spans.get(row.code, [])
        )
    # The lease did its job: the coder has answered.
    session.execute(
        delete(ReviewLease).where(
            ReviewLease.incident_id == incident.id, ReviewLease.coder_id == user.id
        )
    )
    session.flush()
    audit.record(
        session,
        user,
        "coding.create" if before is None else "coding.update",
        "incident",
        incident.id,
        before=before,
        after=_coding_snapshot(coding, decisions, spans),
    )
    webhooks.publish(
        session,
        webhooks.CODING_SAVED,
        {
            "story_id": incident.id,
            "survey_id": incident.survey_id,
            "coding_id": coding.id,
            "coder_id": user.id,
            "revision": coding.revision,
            "codebook_version_id": version.id,
            "codes": [c.code for c in data.codes],
            "rejected_suggestions": list(data.rejected_suggestions),
            "excluded": coding.excluded,
            "no_code_applies": coding.no_code_applies,
        },
        survey_id=incident.survey_id,
        story_id=incident.id,
    )
    settle(session, incident, user)
    session.flush()
    return _my_read(session, incident, user, chosen)


def _publish_final(session: Session, incident: Incident, state: dict[str, Any]) -> None:
    """story.final: the story's final codes (or its exclusion), ids and codes only."""
    webhooks.publish(
        session,
        webhooks.STORY_FINAL,
        {
            "story_id": incident.id,
            "survey_id": incident.survey_id,
            "status": state["status"],
            "final_codes": state["final_codes"],
            "source": state["source"],
            "excluded": state["status"] == "excluded",
        },
        survey_id=incident.survey_id,
        story_id=incident.id,
    )


# Final codes ------------------------------------------------------------------------------------


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
    before = _state(session, incident)
    rows = session.execute(
        select(Coding, User.name)
        .join(User, User.id == Coding.coder_id)
        .where(Coding.incident_id == incident.id)
        .order_by(Coding.id)
    ).all()
    given: dict[int, set[str]] = {coding.id: set() for coding, _ in rows}
    waiting: set[int] = set()
    for coding_id, code, proposal_id in session.execute(
        select(CodingCode.coding_id, CodingCode.code, CodingCode.proposal_id).where(
            CodingCode.coding_id.in_(list(given)), CodingCode.decision != "rejected"
        )
    ):
        given[coding_id].add(code)
        if proposal_id is not None:
            waiting.add(coding_id)  # a proposed code: the story waits for the admin's decision
    for coding, _ in rows:
        if not coding.excluded and not coding.no_code_applies and not given[coding.id]:
            waiting.add(coding.id)  # nothing left (a rejected proposal): the coder revises it
    decisions = [None if c.excluded else frozenset(given[c.id]) for c, _ in rows]
    required = incident.coders_required or 1

    if len(rows) < required or waiting:
        incident.status = "in_review" if rows else "new"
        incident.exclusion_reason = None
        incident.finalized_at = None
        _clear_final(session, incident)
    elif all(d == decisions[0] for d in decisions):
        agreed = decisions[0]
        reasons = dict.fromkeys(c.exclusion_reason or "" for c, _ in rows)
        _decide(
            session,
            incident,
            None if agreed is None else sorted(agreed),
            exclusion_reason=" / ".join(r for r in reasons if r) or None,
            source="agreement" if len(rows) >= 2 else "review",
            confirmed_by=", ".join(name for _, name in rows),
            version_id=max(c.codebook_version_id for c, _ in rows),
        )
    else:
        incident.status = "adjudication"
        incident.exclusion_reason = None
        incident.finalized_at = None
        _clear_final(session, incident)
    session.flush()
    after = _state(session, incident)
    if after != before:
        if incident.status in FINAL_STATUSES:
            incident.finalized_at = utcnow()
        # Settling (final, excluded, adjudication, or back) changes the story for everyone;
        # new <-> in_review does not, so that a blind coder is not told the other has answered.
        if {before["status"], after["status"]} & SETTLED_STATUSES or (
            before["final_codes"] != after["final_codes"]
        ):
            incident.version += 1
        audit.record(
            session,
            actor,
            f"incident.{incident.status}",
            "incident",
            incident.id,
            before=before,
            after=after,
        )
        if incident.status in FINAL_STATUSES:
            _publish_final(session, incident, after)


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
