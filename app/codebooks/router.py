"""Codebook JSON API: researchers read, admins import new versions and rename, merge or split."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.auth import RequireAdmin, RequireResearcher
from app.codebooks import proposals, service
from app.codebooks.schemas import (
    CodebookChange,
    CodebookRead,
    CodebookSummary,
    CodebookVersionRead,
    CodebookWrite,
    ProposalAccept,
    ProposalCreate,
    ProposalMerge,
    ProposalRead,
    ProposalReject,
)
from app.codebooks.service import CodebookInvalid
from app.db import SessionDep
from app.errors import Conflict, Forbidden, Invalid, NotFound, problem_responses

router = APIRouter(
    prefix="/api/v1/codebooks", tags=["codebooks"], responses=problem_responses(Forbidden)
)

YAML = "application/yaml"


@router.get("", response_model=list[CodebookSummary])
def list_codebooks(session: SessionDep, _user: RequireResearcher) -> list[CodebookSummary]:
    return service.summaries(session)


@router.post(
    "",
    status_code=201,
    response_model=CodebookRead,
    responses=problem_responses(Conflict, CodebookInvalid),
)
def create_codebook(data: CodebookWrite, session: SessionDep, user: RequireAdmin) -> CodebookRead:
    """Import a codebook (the format of codebooks/*.yaml, as JSON) as its version 1."""
    version = service.create_codebook(session, data.content, user, data.change_note)
    return service.to_read(service.get_codebook(session, version.codebook_id), version)


@router.get(
    "/{codebook_id:int}", response_model=CodebookRead, responses=problem_responses(NotFound)
)
def read_codebook(codebook_id: int, session: SessionDep, _user: RequireResearcher) -> CodebookRead:
    """The codebook with its current version."""
    codebook = service.get_codebook(session, codebook_id)
    return service.to_read(codebook, service.current_version(session, codebook))


@router.put(
    "/{codebook_id:int}",
    response_model=CodebookRead,
    responses=problem_responses(NotFound, Conflict, CodebookInvalid),
)
def update_codebook(
    codebook_id: int, data: CodebookWrite, session: SessionDep, user: RequireAdmin
) -> CodebookRead:
    """Store the content as a new version (none when nothing changed). A code in use cannot be
    removed, only retired; rename, merge and split go through /changes."""
    codebook = service.get_codebook(session, codebook_id)
    version = service.update_codebook(session, codebook, data.content, user, data.change_note)
    return service.to_read(codebook, version)


@router.get(
    "/{codebook_id:int}/versions",
    response_model=list[CodebookVersionRead],
    responses=problem_responses(NotFound),
)
def list_versions(
    codebook_id: int, session: SessionDep, _user: RequireResearcher
) -> list[CodebookVersionRead]:
    codebook = service.get_codebook(session, codebook_id)
    return [service.version_read(codebook, v) for v in service.list_versions(session, codebook)]


@router.get(
    "/{codebook_id:int}/versions/{number:int}",
    response_model=CodebookVersionRead,
    responses=problem_responses(NotFound),
)
def read_version(
    codebook_id: int, number: int, session: SessionDep, _user: RequireResearcher
) -> CodebookVersionRead:
    codebook = service.get_codebook(session, codebook_id)
    return service.version_read(codebook, service.get_version(session, codebook.id, number))


@router.post(
    "/{codebook_id:int}/changes",
    response_model=CodebookRead,
    responses=problem_responses(NotFound, Conflict, CodebookInvalid),
)
def change_codes(
    codebook_id: int, data: CodebookChange, session: SessionDep, user: RequireAdmin
) -> CodebookRead:
    """Rename, merge or split codes in one new version; the stories' final codes are mapped
    forward (recorded in the version's code_mapping), suggestions of the old codes dropped."""
    codebook = service.get_codebook(session, codebook_id)
    version = service.apply_changes(session, codebook, data.operations, user, data.change_note)
    return service.to_read(codebook, version)


@router.get(
    "/{codebook_id:int}/export",
    response_class=Response,
    responses={**problem_responses(NotFound), 200: {"content": {YAML: {}}}},
)
def export_codebook(
    codebook_id: int,
    session: SessionDep,
    _user: RequireResearcher,
    version: Annotated[int | None, Query(ge=1, description="default: the current one")] = None,
) -> Response:
    """The codebook as a YAML file, the format `cit codebook import` and codebooks/ use."""
    codebook = service.get_codebook(session, codebook_id)
    row = service.get_version(session, codebook.id, version or codebook.current_version)
    return Response(
        service.export_yaml(row),
        media_type=YAML,
        headers={
            "Content-Disposition": f'attachment; filename="{codebook.key}-v{row.number}.yaml"'
        },
    )


# Proposed codes -----------------------------------------------------------------------------------

proposals_router = APIRouter(
    prefix="/api/v1/code-proposals", tags=["codebooks"], responses=problem_responses(Forbidden)
)


@proposals_router.post(
    "",
    status_code=201,
    response_model=ProposalRead,
    responses=problem_responses(NotFound, Conflict),
)
def propose_code(
    data: ProposalCreate, session: SessionDep, user: RequireResearcher
) -> ProposalRead:
    """Propose a new code while coding a story (name, definition; the story is its first
    example). Use its key in your own coding of any story at once; it shows as `proposed`, and
    the story waits until an admin accepts, merges or rejects it."""
    return proposals.read_one(session, proposals.propose(session, data, user))


@proposals_router.get("", response_model=list[ProposalRead])
def list_proposals(
    session: SessionDep,
    _user: RequireResearcher,
    codebook_id: int | None = None,
    status: Annotated[Literal["proposed", "accepted", "merged", "rejected"] | None, Query()] = None,
) -> list[ProposalRead]:
    return proposals.list_proposals(session, codebook_id=codebook_id, status=status)


@proposals_router.get(
    "/{proposal_id:int}", response_model=ProposalRead, responses=problem_responses(NotFound)
)
def read_proposal(proposal_id: int, session: SessionDep, _user: RequireResearcher) -> ProposalRead:
    return proposals.read_one(session, proposals.get_proposal(session, proposal_id))


@proposals_router.post(
    "/{proposal_id:int}/accept",
    response_model=ProposalRead,
    responses=problem_responses(NotFound, Conflict, CodebookInvalid),
)
def accept_proposal(
    proposal_id: int, data: ProposalAccept, session: SessionDep, user: RequireAdmin
) -> ProposalRead:
    """Add the code to a new codebook version (key, label, definition, parent editable); the
    codings that used it carry the accepted code, and their stories are settled."""
    return proposals.read_one(session, proposals.accept(session, proposal_id, data, user))


@proposals_router.post(
    "/{proposal_id:int}/merge",
    response_model=ProposalRead,
    responses=problem_responses(NotFound, Conflict, Invalid),
)
def merge_proposal(
    proposal_id: int, data: ProposalMerge, session: SessionDep, user: RequireAdmin
) -> ProposalRead:
    """Map the codings that used the proposed code to an existing code."""
    return proposals.read_one(session, proposals.merge(session, proposal_id, data, user))


@proposals_router.post(
    "/{proposal_id:int}/reject",
    response_model=ProposalRead,
    responses=problem_responses(NotFound, Conflict),
)
def reject_proposal(
    proposal_id: int, data: ProposalReject, session: SessionDep, user: RequireAdmin
) -> ProposalRead:
    """Drop the proposed code from the codings that used it (they keep the coder's other
    codes); the coder gets a notification on their progress and coding reads."""
    return proposals.read_one(session, proposals.reject(session, proposal_id, data, user))


__all__ = ["proposals_router", "router"]
