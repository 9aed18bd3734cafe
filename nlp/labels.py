"""What coders decided about a story, as training and evaluation data for the suggester.

Every decision counts: a confirmed (final) story is positive for its codes and negative for the
others; an excluded story is negative for every code (and positive for "exclude"); a suggestion a
coder rejected is a negative for that code, a code a coder added by hand a positive, even before
the story is final. Codes a story says nothing about are unknown for it, not negative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EXCLUDE", "EXCLUDE_LABEL", "VALENCES", "LabelledStory", "as_labelled"]

EXCLUDE = "exclude"
"""The name under which the exclusion suggestion is measured and reported."""
EXCLUDE_LABEL = "cit:exclude"
"""The text classifier's label for exclusion (cannot clash with a code key)."""

VALENCES = ("satisfying", "dissatisfying")


@dataclass(frozen=True)
class LabelledStory:
    """One story and what is known about it.

    `labels` maps a code to True (present) or False (absent); codes missing from it are unknown.
    `excluded` is True (excluded by the coders), False (included) or None (unknown). Only `final`
    stories (confirmed codes or a confirmed exclusion) are used to measure the suggester; the
    others (a single coder's decisions on a story still in review, codebook examples) only train.
    """

    text: str
    labels: Mapping[str, bool] = field(default_factory=dict)
    valence: str | None = None
    excluded: bool | None = False
    final: bool = True
    source: str | None = None
    """Where the story comes from, for per-source figures (bench: airline, cfpb, banking77)."""

    def __hash__(self) -> int:
        return hash((self.text, tuple(sorted(self.labels.items())), self.valence, self.final))

    def label(self, code: str) -> bool | None:
        if code == EXCLUDE:
            return self.excluded
        return self.labels.get(code)

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(code for code, present in self.labels.items() if present)

    @classmethod
    def confirmed(
        cls,
        text: str,
        codes: Iterable[str],
        all_codes: Sequence[str],
        *,
        valence: str | None = None,
        source: str | None = None,
    ) -> LabelledStory:
        present = set(codes)
        return cls(
            text,
            {code: code in present for code in all_codes},
            valence=valence,
            excluded=False,
            source=source,
        )

    @classmethod
    def exclusion(
        cls,
        text: str,
        all_codes: Sequence[str],
        *,
        valence: str | None = None,
        source: str | None = None,
    ) -> LabelledStory:
        return cls(
            text,
            dict.fromkeys(all_codes, False),
            valence=valence,
            excluded=True,
            source=source,
        )


def as_labelled(examples: Iterable[Any], all_codes: Sequence[str]) -> list[LabelledStory]:
    """LabelledStory objects as they are; `(text, codes)` pairs as confirmed stories."""
    out: list[LabelledStory] = []
    for example in examples:
        if isinstance(example, LabelledStory):
            out.append(example)
        else:
            text, codes = example
            out.append(LabelledStory.confirmed(text, codes, all_codes))
    return out
