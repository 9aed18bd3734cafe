"""Proposed codes: a researcher proposes a code while coding (Flanagan's inductive category
building) and uses it at once in their own coding; an admin accepts it (a new codebook version,
the codings mapped to it), merges it into an existing code, or rejects it (the codings keep the
coder's other choices and the coder is told). A story whose coding holds an undecided proposed
code waits (in review) until the decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal
from app.codebooks.schemas import (
    ProposalAccept,
    ProposalCreate,
    ProposalMerge,
    ProposalRead,
    ProposalReject,
)
from app.codebooks.service import (
    CodebookInvalid,
    _add_version,
    current_version,
    get_codebook,
    parse_content,
)
from app.errors import Conflict, Invalid, NotFound
from app.incidents.redaction import redacted_answers
from app.incidents.service import get_incident
from app.models import CodeProposal, Coding, CodingCode, Incident, User
from app.models.base import utcnow
from app.reviews.notifications import notify
from app.reviews.service import codebook_version_for, resettle_open
from nlp.codebook import codebook_to_dict

EXAMPLE_MAX_CHARS = 2000


def _read(session: Session, proposals: Sequence[CodeProposal]) -> list[ProposalRead]:
    ids = [p.id for p in proposals]
    names = dict(
        session.execute(
            select(User.id, User.name).where(User.id.in_({p.proposed_by for p in proposals}))
        ).all()
    )
    uses = dict(
        session.execute(
            select(CodingCode.proposal_id, func.count())
            .where(CodingCode.proposal_id.in_(ids))
            .group_by(CodingCode.proposal_id)
        ).all()
    )
    return [
        ProposalRead(
            id=p.id,
            codebook_id=p.codebook_id,
            key=p.key,
            label=p.label,
            definition=p.definition,
            incident_id=p.incident_id,
            proposed_by=names.get(p.proposed_by, ""),
            status=p.status,  # type: ignore[arg-type]
            resolved_code=p.resolved_code,
            codebook_version_id=p.codebook_version_id,
            decided_by=p.decided_by,
            decided_at=p.decided_at,
            decision_note=p.decision_note,
            codings=int(uses.get(p.id, 0)),
            created_at=p.created_at,
        )
        for p in proposals
    ]


def get_proposal(session: Session, proposal_id: int, *, for_update: bool = False) -> CodeProposal:
    proposal = session.get(CodeProposal, proposal_id, with_for_update=for_update or None)
    if proposal is None:
        raise NotFound(f"code proposal {proposal_id} does not exist")
    return proposal


def read_one(session: Session, proposal: CodeProposal) -> ProposalRead:
    return _read(session, [proposal])[0]


def list_proposals(
    session: Session, *, codebook_id: int | None, status: str | None
) -> list[ProposalRead]:
    query = select(CodeProposal).order_by(CodeProposal.id)
    if codebook_id is not None:
        query = query.where(CodeProposal.codebook_id == codebook_id)
    if status is not None:
        query = query.where(CodeProposal.status == status)
    return _read(session, list(session.scalars(query.limit(1000))))


def propose(session: Session, data: ProposalCreate, user: Principal) -> CodeProposal:
    """A new code for the codebook the story is coded with."""
    incident = get_incident(session, data.incident_id)
    version = codebook_version_for(session, incident.survey_id)
    taken = {code["key"] for code in version.content.get("codes", [])}
    if data.key in taken:
        raise Conflict(
            f"code {data.key!r} is in the codebook already; use it (or a new key) instead"
        )
    proposal = CodeProposal(
        codebook_id=version.codebook_id,
        key=data.key,
        label=data.label,
        definition=data.definition,
        incident_id=incident.id,
        proposed_by=user.id,
        status="proposed",
    )
    try:
        with session.begin_nested():
            session.add(proposal)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"code {data.key!r} is proposed already; wait for the decision or pick another key"
        ) from exc
    audit.record(
        session,
        user,
        "code.propose",
        "code_proposal",
        proposal.id,
        after={"key": data.key, "label": data.label, "incident_id": incident.id},
    )
    return proposal


def _open(session: Session, proposal_id: int) -> CodeProposal:
    proposal = get_proposal(session, proposal_id, for_update=True)
    if proposal.status != "proposed":
        raise Conflict(f"code proposal {proposal.id} was {proposal.status} already")
    return proposal


def _map_codings(
    session: Session,
    proposal: CodeProposal,
    *,
    target: str | None,
    version_id: int | None,
    reason: str,
    note: str,
) -> list[int]:
    """Move the codings that use the proposal to `target` (None: drop the proposed code),
    recording what the coder had chosen in the coding's history. Returns the stories."""
    rows = session.execute(
        select(CodingCode, Coding)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(CodingCode.proposal_id == proposal.id)
        .order_by(CodingCode.id)
    ).all()
    now = utcnow().isoformat()
    incident_ids: list[int] = []
    for decision, coding in rows:
        before = session.execute(
            select(CodingCode.code, CodingCode.decision)
            .where(CodingCode.coding_id == coding.id)
            .order_by(CodingCode.id)
        ).all()
        coding.history = [
            *coding.history,
            {
                "at": now,
                "reason": reason,
                "note": note,
                "codebook_version_id": coding.codebook_version_id,
                "mapped_to_version_id": version_id,
                "codes": [{"code": c, "decision": d} for c, d in before],
            },
        ]
        if version_id is not None:
            coding.codebook_version_id = version_id
        coding.revision += 1
        existing = {c: d for c, d in before if c != decision.code}
        if target is None or target in existing:
            session.delete(decision)
            if target is not None and existing[target] == "rejected":
                session.execute(
                    update(CodingCode)
                    .where(CodingCode.coding_id == coding.id, CodingCode.code == target)
                    .values(decision=decision.decision)
                    .execution_options(synchronize_session=False)
                )
        else:
            decision.code = target
            decision.proposal_id = None
        incident_ids.append(coding.incident_id)
    session.flush()
    return sorted(set(incident_ids))


def _decide(
    session: Session,
    proposal: CodeProposal,
    user: Principal,
    status: str,
    resolved: str | None,
    note: str,
    version_id: int | None = None,
) -> None:
    proposal.status = status
    proposal.resolved_code = resolved
    proposal.codebook_version_id = version_id
    proposal.decided_by = user.name
    proposal.decided_at = utcnow()
    proposal.decision_note = note or None
    session.flush()


def _example(session: Session, incident_id: int | None) -> list[str]:
    if incident_id is None:
        return []
    incident = session.get(Incident, incident_id)
    if incident is None:
        return []
    # Researchers read the codebook: the example is the story as they read it (redacted).
    text = (redacted_answers(incident).get("what_happened") or "").strip()
    return [text[:EXAMPLE_MAX_CHARS]] if text else []


def accept(
    session: Session, proposal_id: int, data: ProposalAccept, user: Principal
) -> CodeProposal:
    """Add the code to a new version of the codebook and map the codings that used it."""
    proposal = _open(session, proposal_id)
    codebook = get_codebook(session, proposal.codebook_id)
    current = current_version(session, codebook)
    key = data.key or proposal.key
    code: dict[str, Any] = {
        "key": key,
        "label": data.label or proposal.label,
        "parent": data.parent,
        "definition": data.definition if data.definition is not None else proposal.definition,
        "examples": _example(session, proposal.incident_id),
    }
    content = {**current.content, "codes": [*current.content["codes"], code]}
    try:
        parsed = parse_content(content)
    except CodebookInvalid as exc:
        raise CodebookInvalid(
            [(e["path"], e["message"]) for e in exc.errors], summary="cannot accept the code"
        ) from exc
    note = data.note or f"accepted proposed code {key!r} (proposal {proposal.id})"
    version = _add_version(session, codebook, codebook_to_dict(parsed), user, note, {})
    stories = _map_codings(
        session,
        proposal,
        target=key,
        version_id=version.id,
        reason="proposal_accepted",
        note=note,
    )
    _decide(session, proposal, user, "accepted", key, data.note, version.id)
    notify(
        session,
        proposal.proposed_by,
        "proposal_accepted",
        f"Your proposed code {proposal.key!r} was accepted as {key!r} "
        f"(codebook version {version.number}).",
        incident_id=proposal.incident_id,
        payload={"proposal_id": proposal.id, "code": key, "version": version.number},
    )
    audit.record(
        session,
        user,
        "code.proposal_accept",
        "code_proposal",
        proposal.id,
        after={"code": key, "version": version.number, "stories": stories},
    )
    resettle_open(session, stories, user)
    return proposal


def merge(session: Session, proposal_id: int, data: ProposalMerge, user: Principal) -> CodeProposal:
    """Map the codings that used the proposal to an existing active code."""
    proposal = _open(session, proposal_id)
    codebook = get_codebook(session, proposal.codebook_id)
    current = current_version(session, codebook)
    active = {c.key for c in parse_content(current.content).active_codes}
    if data.into not in active:
        raise Invalid(f"{data.into!r} is not an active, codable code of the codebook")
    stories = _map_codings(
        session,
        proposal,
        target=data.into,
        version_id=current.id,
        reason="proposal_merged",
        note=data.note,
    )
    _decide(session, proposal, user, "merged", data.into, data.note)
    notify(
        session,
        proposal.proposed_by,
        "proposal_merged",
        f"Your proposed code {proposal.key!r} was merged into {data.into!r}; your codings "
        "that used it now carry that code.",
        incident_id=proposal.incident_id,
        payload={"proposal_id": proposal.id, "code": data.into, "stories": stories},
    )
    audit.record(
        session,
        user,
        "code.proposal_merge",
        "code_proposal",
        proposal.id,
        after={"into": data.into, "stories": stories},
    )
    resettle_open(session, stories, user)
    return proposal


def reject(
    session: Session, proposal_id: int, data: ProposalReject, user: Principal
) -> CodeProposal:
    """Drop the proposed code from the codings that used it; each keeps the coder's other
    choices (a coding left with none waits for its coder), and the coder is told."""
    proposal = _open(session, proposal_id)
    stories = _map_codings(
        session,
        proposal,
        target=None,
        version_id=None,
        reason="proposal_rejected",
        note=data.note,
    )
    _decide(session, proposal, user, "rejected", None, data.note)
    reason = f": {data.note}" if data.note else ""
    for incident_id in stories or [i for i in [proposal.incident_id] if i is not None]:
        notify(
            session,
            proposal.proposed_by,
            "proposal_rejected",
            f"Your proposed code {proposal.key!r} was rejected{reason}. Your coding of story "
            f"{incident_id} keeps your other codes; if none is left, code it again.",
            incident_id=incident_id,
            payload={"proposal_id": proposal.id, "note": data.note},
        )
    session.execute(delete(CodingCode).where(CodingCode.proposal_id == proposal.id))
    audit.record(
        session,
        user,
        "code.proposal_reject",
        "code_proposal",
        proposal.id,
        after={"stories": stories, "note": data.note},
    )
    resettle_open(session, stories, user)
    return proposal
