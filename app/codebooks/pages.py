"""Codebook pages for coders: the codes as a tree with definitions, criteria and examples
(retired codes marked), the versions with their change notes, and a diff of two versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.auth import RequireResearcher
from app.codebooks import service
from app.db import SessionDep
from app.errors import Invalid
from app.pages import render
from app.reviews.workbench import parsed_codebook
from nlp.codebook import CodeSpec

router = APIRouter(include_in_schema=False)

# Fields of a code compared by the diff, with their labels.
DIFF_FIELDS = (
    ("label", "Label"),
    ("parent", "Parent"),
    ("definition", "Definition"),
    ("inclusion", "Include when"),
    ("exclusion", "Do not use when"),
    ("examples", "Examples"),
    ("retired", "Retired"),
)


def _tree(codes: tuple[CodeSpec, ...]) -> list[tuple[CodeSpec, list[Any]]]:
    keys = {c.key for c in codes}
    children: dict[str | None, list[CodeSpec]] = {}
    for code in codes:
        children.setdefault(code.parent if code.parent in keys else None, []).append(code)

    def build(parent: str | None) -> list[tuple[CodeSpec, list[Any]]]:
        return [(code, build(code.key)) for code in children.get(parent, [])]

    return build(None)


@router.get("/work/codebooks", response_class=HTMLResponse)
def codebooks(request: Request, session: SessionDep, user: RequireResearcher) -> Response:
    return render(
        request,
        "wb_codebooks.html",
        {"codebooks": service.summaries(session)},
        user=user,
        current="/work/codebooks",
    )


def _version_page(
    request: Request,
    session: SessionDep,
    user: RequireResearcher,
    codebook_id: int,
    number: int | None,
) -> Response:
    codebook = service.get_codebook(session, codebook_id)
    version = (
        service.current_version(session, codebook)
        if number is None
        else service.get_version(session, codebook_id, number)
    )
    parsed = parsed_codebook(version)
    return render(
        request,
        "wb_codebook.html",
        {
            "codebook": codebook,
            "version": version,
            "parsed": parsed,
            "tree": _tree(parsed.codes),
            "versions": service.list_versions(session, codebook),
        },
        user=user,
        current="/work/codebooks",
    )


@router.get("/work/codebooks/{codebook_id:int}", response_class=HTMLResponse)
def codebook(
    codebook_id: int, request: Request, session: SessionDep, user: RequireResearcher
) -> Response:
    return _version_page(request, session, user, codebook_id, None)


@router.get("/work/codebooks/{codebook_id:int}/versions/{number:int}", response_class=HTMLResponse)
def version(
    codebook_id: int, number: int, request: Request, session: SessionDep, user: RequireResearcher
) -> Response:
    return _version_page(request, session, user, codebook_id, number)


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"• {v}" for v in value)
    if value is None:
        return "(none)"
    return str(value)


@router.get("/work/codebooks/{codebook_id:int}/diff", response_class=HTMLResponse)
def diff(
    codebook_id: int,
    request: Request,
    session: SessionDep,
    user: RequireResearcher,
    before: int | None = None,
    after: int | None = None,
) -> Response:
    codebook = service.get_codebook(session, codebook_id)
    after = after or codebook.current_version
    before = before or max(1, after - 1)
    if before == after:
        raise Invalid("choose two different versions to compare")
    old = service.get_version(session, codebook_id, before)
    new = service.get_version(session, codebook_id, after)
    changes = service.diff_codes(old.content, new.content)
    old_codes = {c["key"]: c for c in old.content.get("codes", [])}
    new_codes = {c["key"]: c for c in new.content.get("codes", [])}
    changed: list[tuple[str, list[tuple[str, str, str]]]] = []
    for key in [*changes["changed"], *changes["retired"], *changes["unretired"]]:
        if any(key == k for k, _ in changed):
            continue
        fields = [
            (label, _as_text(old_codes[key].get(name)), _as_text(new_codes[key].get(name)))
            for name, label in DIFF_FIELDS
            if old_codes[key].get(name) != new_codes[key].get(name)
        ]
        changed.append((key, fields))
    between = [
        v
        for v in service.list_versions(session, codebook)
        if min(before, after) < v.number <= max(before, after)
    ]
    return render(
        request,
        "wb_codebook_diff.html",
        {
            "codebook": codebook,
            "old": old,
            "new": new,
            "changes": changes,
            "changed": changed,
            "old_codes": old_codes,
            "new_codes": new_codes,
            "between": between,
            "versions": service.list_versions(session, codebook),
        },
        user=user,
        current="/work/codebooks",
    )
