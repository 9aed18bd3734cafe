"""Codebook JSON API: researchers read, admins import new versions and rename, merge or split."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.auth import RequireAdmin, RequireResearcher
from app.codebooks import service
from app.codebooks.schemas import (
    CodebookChange,
    CodebookRead,
    CodebookSummary,
    CodebookVersionRead,
    CodebookWrite,
)
from app.codebooks.service import CodebookInvalid
from app.db import SessionDep
from app.errors import Conflict, Forbidden, NotFound, problem_responses

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


@router.get("/{codebook_id}", response_model=CodebookRead, responses=problem_responses(NotFound))
def read_codebook(codebook_id: int, session: SessionDep, _user: RequireResearcher) -> CodebookRead:
    """The codebook with its current version."""
    codebook = service.get_codebook(session, codebook_id)
    return service.to_read(codebook, service.current_version(session, codebook))


@router.put(
    "/{codebook_id}",
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
    "/{codebook_id}/versions",
    response_model=list[CodebookVersionRead],
    responses=problem_responses(NotFound),
)
def list_versions(
    codebook_id: int, session: SessionDep, _user: RequireResearcher
) -> list[CodebookVersionRead]:
    codebook = service.get_codebook(session, codebook_id)
    return [service.version_read(codebook, v) for v in service.list_versions(session, codebook)]


@router.get(
    "/{codebook_id}/versions/{number}",
    response_model=CodebookVersionRead,
    responses=problem_responses(NotFound),
)
def read_version(
    codebook_id: int, number: int, session: SessionDep, _user: RequireResearcher
) -> CodebookVersionRead:
    codebook = service.get_codebook(session, codebook_id)
    return service.version_read(codebook, service.get_version(session, codebook.id, number))


@router.post(
    "/{codebook_id}/changes",
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
    "/{codebook_id}/export",
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


__all__ = ["router"]
