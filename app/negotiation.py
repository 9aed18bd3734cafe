"""Choosing a response format from `format=` or the Accept header; never silently JSON.

A `format` the endpoint does not offer is a 422 problem; an Accept header that names no offered
media type (and no wildcard) is a 406 problem. No header, or `*/*`, gives the first offered."""

from __future__ import annotations

from fastapi import Request

from app.errors import AppError

MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "markdown": "text/markdown",
    "html": "text/html",
    "qdpx": "application/vnd.refi-qda.qdpx+zip",
    "qdc": "application/vnd.refi-qda.qdc+xml",
    "yaml": "application/yaml",
    "zip": "application/zip",
}
# Other names clients send for the same formats.
ALIASES = {
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "application/xml": "qdc",
    "text/xml": "qdc",
}


class NotAcceptable(AppError):
    status = 406
    title = "Not acceptable"
    type_slug = "not-acceptable"


class UnknownFormat(AppError):
    status = 422
    title = "Validation failed"
    type_slug = "validation"


def _ranges(accept: str) -> list[tuple[str, float]]:
    found = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        quality = 1.0
        for field in fields[1:]:
            name, _, value = field.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        found.append((fields[0].lower(), quality))
    return found


def negotiate(request: Request, asked: str | None, offered: tuple[str, ...]) -> str:
    """The format named by `format=`, else the best offered match of Accept, else the first."""
    if asked is not None:
        if asked not in offered:
            raise UnknownFormat(
                f"format must be one of {', '.join(offered)}, not {asked!r}",
                extra={
                    "errors": [
                        {
                            "loc": ["query", "format"],
                            "msg": f"one of {', '.join(offered)}",
                            "type": "enum",
                        }
                    ]
                },
            )
        return asked
    header = request.headers.get("accept", "").strip()
    if not header:
        return offered[0]
    best, best_quality = None, 0.0
    for media_range, quality in _ranges(header):
        if quality <= 0:
            continue
        for position, name in enumerate(offered):
            media_type = MEDIA_TYPES[name]
            if media_range == "*/*":
                matches = position == 0
            elif media_range.endswith("/*"):
                matches = media_type.startswith(media_range[:-1])
            else:
                matches = media_range == media_type or ALIASES.get(media_range) == name
            if matches and quality > best_quality:
                best, best_quality = name, quality
    if best is None:
        raise NotAcceptable(
            f"cannot answer with {header!r}; this endpoint offers "
            + ", ".join(f"{MEDIA_TYPES[n]} (format={n})" for n in offered)
        )
    return best
