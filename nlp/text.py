"""Compose one story text from the CIT answer fields and map character spans back to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FIELD_SEPARATOR", "ComposedStory", "FieldSegment", "compose_story"]

FIELD_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class FieldSegment:
    """Where one field's (stripped) answer sits in the composed text."""

    field: str
    start: int
    end: int
    offset_in_field: int
    """Characters of leading whitespace stripped from the field's value."""


@dataclass(frozen=True)
class ComposedStory:
    """The text the suggester reads, and the fields it came from."""

    text: str
    segments: tuple[FieldSegment, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(segment.field for segment in self.segments)

    def locate(self, start: int, end: int) -> tuple[str, int, int]:
        """Map a span of `text` to `(field, start_in_field, end_in_field)`.

        Offsets are into the field's original value (leading whitespace included). A span that
        reaches beyond one field (a token pattern with a wildcard can match across the blank line
        between two answers) is clipped to the first field it overlaps. Raises `ValueError` for an
        empty or out-of-range span, or one that lies wholly in a separator.
        """
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"span {start}:{end} is empty or outside the text")
        for segment in self.segments:
            if segment.end <= start:
                continue
            if segment.start >= end:
                break
            shift = segment.offset_in_field - segment.start
            return (
                segment.field,
                max(start, segment.start) + shift,
                min(end, segment.end) + shift,
            )
        raise ValueError(f"span {start}:{end} is not inside a field")


def compose_story(fields: Mapping[str, str | None]) -> ComposedStory:
    """Join the non-blank answer fields, in the mapping's order, with a blank line between them.

    Each value is stripped of surrounding whitespace; blank and missing values are left out.
    """
    parts: list[str] = []
    segments: list[FieldSegment] = []
    position = 0
    for name, value in fields.items():
        if value is None or not value.strip():
            continue
        stripped = value.strip()
        if parts:
            position += len(FIELD_SEPARATOR)
        leading = len(value) - len(value.lstrip())
        segments.append(FieldSegment(name, position, position + len(stripped), leading))
        parts.append(stripped)
        position += len(stripped)
    return ComposedStory(FIELD_SEPARATOR.join(parts), tuple(segments))
