"""Problems specific to the review workflow (rendered as problem+json like every AppError)."""

from __future__ import annotations

from app.errors import AppError, PreconditionFailed


class PreconditionRequired(AppError):
    """A write that must say which version it changes (RFC 6585): no If-Match header."""

    status = 428
    title = "Precondition required"
    type_slug = "precondition-required"


class CodesInvalid(AppError):
    """Codes that are not active codes of the story's current codebook version."""

    status = 422
    title = "Validation failed"
    type_slug = "validation"

    def __init__(
        self,
        unknown: list[str],
        where: str,
        version_id: int,
        not_codable: list[str] | None = None,
    ) -> None:
        parents = set(not_codable or ())
        errors = [
            {
                "loc": ["body", where],
                "msg": f"{code!r} is a parent category, not codable: code one of its sub-codes"
                if code in parents
                else f"{code!r} is not an active code",
                "type": "code",
            }
            for code in unknown
        ]
        super().__init__(
            f"not active codes of codebook version {version_id}: {', '.join(unknown)}",
            extra={"errors": errors, "unknown_codes": unknown},
        )


def check_if_match(if_match: str | None, current: str) -> None:
    """Optimistic concurrency: the write must name the story's ETag as the caller read it."""
    if if_match is None or not if_match.strip():
        raise PreconditionRequired(
            f"send If-Match: {current} (the ETag of the story you read) to change it",
            headers={"ETag": current},
        )
    # If-Match compares strongly: a weak tag (W/"3") never matches.
    tags = [tag.strip() for tag in if_match.split(",")]
    if "*" in tags or current in tags:
        return
    raise PreconditionFailed(
        f"the story has changed since you read it (now {current}); read it again",
        headers={"ETag": current},
    )


class SpansInvalid(AppError):
    """Spans that do not fit the text the coder reads (unknown field, offsets past the end)."""

    status = 422
    title = "Validation failed"
    type_slug = "validation"

    def __init__(self, errors: list[dict[str, object]]) -> None:
        super().__init__(
            "spans do not fit the story's text: " + "; ".join(str(e["msg"]) for e in errors),
            extra={"errors": errors},
        )
