"""Codes recorded under any version of a codebook, expressed in the vocabulary of one version.

A codebook change (rename, merge, split) moves the final codes and codings it touches to the
new version and leaves the others where they were, so the rows of one codebook carry the ids of
several versions. A report "under version V" must therefore count every story of the codebook
under the mapping into V (one story counted once), not only the rows that happen to carry V's id.

- From an earlier version into V: the change mappings are composed forward (a rename gives the
  new key, a split every part, a merge the merged code).
- From a later version back into V: an unchanged code is itself, a renamed code gives its old
  key. A code that several old codes became (a merge, or a split into a code that existed
  already) cannot be told apart any more: it keeps its own key and is listed in `unresolved`.
  Codes added after V (an accepted proposal) are not in V's vocabulary and are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import CodebookVersion


@dataclass
class Vocabulary:
    """How (recorded version id, code) pairs of one codebook map into one target version."""

    target_id: int
    codebook_id: int
    version_ids: list[int]
    target_codes: list[str]
    # Codes of the target version whose parent is another code: child -> parent.
    parents: dict[str, str]
    # Code -> its Bitner group (Bitner, Booms & Tetreault 1990), where the codebook gives one.
    groups: dict[str, str] = field(default_factory=dict)
    _numbers: dict[int, int] = field(repr=False, default_factory=dict)
    _mappings: dict[int, dict[str, list[str]]] = field(repr=False, default_factory=dict)
    # Version number -> its active (not retired) codes.
    _active: dict[int, set[str]] = field(repr=False, default_factory=dict)
    unresolved: set[str] = field(default_factory=set)

    def targets(self, version_id: int, code: str) -> list[str]:
        """The codes of the target version that `code`, recorded under `version_id`, is."""
        start, end = self._numbers[version_id], self._numbers[self.target_id]
        codes = [code]
        if start < end:
            for number in range(start + 1, end + 1):
                step = self._mappings.get(number, {})
                codes = _unique(new for c in codes for new in step.get(c, [c]))
        elif start > end:
            for number in range(start, end, -1):
                step = self._mappings.get(number, {})
                back: list[str] = []
                before = self._active.get(number - 1, set())
                for c in codes:
                    origins = [old for old, new in step.items() if c in new]
                    if c in before and c not in step:
                        origins.append(c)  # it was a code of its own before the change
                    if len(origins) == 1:
                        back.append(origins[0])  # unchanged, a rename, or a new part of a split
                    elif not origins:
                        back.append(c)  # added later: dropped below unless in the target
                    else:
                        # Merged (or split into a code that existed): which it was is lost.
                        self.unresolved.add(c)
                        back.append(c)
                codes = _unique(back)
        known = set(self.target_codes) | self.unresolved
        return [c for c in codes if c in known]

    def pairs(self, recorded: Iterable[tuple[int, str]]) -> list[tuple[int, str, str]]:
        """(version id, code, target code) for each recorded pair in this codebook."""
        return [
            (version_id, code, target)
            for version_id, code in recorded
            if version_id in self._numbers
            for target in self.targets(version_id, code)
        ]

    def group(self, code: str) -> str | None:
        """The code's Bitner group, or the nearest ancestor's (a child inherits its parent's)."""
        for key in (code, *self.ancestors(code)):
            if key in self.groups:
                return self.groups[key]
        return None

    def ancestors(self, code: str) -> list[str]:
        """The code's parent, its parent's parent, ... in the target version."""
        chain: list[str] = []
        parent = self.parents.get(code)
        while parent is not None and parent not in chain:
            chain.append(parent)
            parent = self.parents.get(parent)
        return chain


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def vocabulary(session: Session, version_id: int) -> Vocabulary:
    """The mapping of every version of `version_id`'s codebook into that version."""
    target = session.get(CodebookVersion, version_id)
    if target is None:
        raise NotFound(f"codebook version {version_id} not found")
    versions = list(
        session.scalars(
            select(CodebookVersion)
            .where(CodebookVersion.codebook_id == target.codebook_id)
            .order_by(CodebookVersion.number)
        )
    )
    codes: list[dict[str, Any]] = [
        c for c in (target.content or {}).get("codes", []) if isinstance(c, dict)
    ]
    return Vocabulary(
        target_id=target.id,
        codebook_id=target.codebook_id,
        version_ids=[v.id for v in versions],
        target_codes=[str(c["key"]) for c in codes if "key" in c],
        parents={str(c["key"]): str(c["parent"]) for c in codes if c.get("parent")},
        groups={str(c["key"]): str(c["bitner_group"]) for c in codes if c.get("bitner_group")},
        _numbers={v.id: v.number for v in versions},
        _mappings={v.number: dict(v.code_mapping or {}) for v in versions},
        _active={
            v.number: {
                str(c["key"])
                for c in (v.content or {}).get("codes", [])
                if isinstance(c, dict) and "key" in c and not c.get("retired")
            }
            for v in versions
        },
    )
