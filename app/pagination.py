"""Keyset pagination: an opaque cursor that carries the last id seen."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.config import app_settings
from app.errors import Invalid


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "id":
            raise ValueError(kind)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("the cursor is not one this API handed out") from exc


def keyset_page(
    session: Session, query: Select[Any], id_column: Any, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """One page of the entities `query` selects, ordered by `id_column` (their `id`), and the
    cursor of the next page (None on the last)."""
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(id_column > after)
    rows = list(session.scalars(query.order_by(id_column).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id)


def page_size(
    request: Request,
    limit: Annotated[
        int | None, Query(ge=1, description="Page size (capped by the server)")
    ] = None,
) -> int:
    """The `limit` query parameter, defaulted and capped by the settings."""
    settings = app_settings(request)
    return min(limit or settings.page_size_default, settings.page_size_max)


PageSize = Annotated[int, Depends(page_size)]
