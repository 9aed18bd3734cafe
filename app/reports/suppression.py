"""Small-cell suppression: primary (counts below `min_cell`) and secondary (complementary).

Primary: a count from 1 to min_cell - 1 is not published (null, `suppressed: true`), nor is any
figure computed from it (share, interval, change). Zeros are published.

Secondary: published counts are tied by additive *lines*: a total and the parts that sum to it
(e.g. the confirmed stories of a period and valence are the sum over the groups of a grouped
report). If exactly one member of a line is hidden, it is the total minus the others, so the
rule is: **no line may have exactly one hidden member**. While some line has exactly one, hide
one more of its parts: the smallest positive visible one (ties: first in report order), else a
visible zero, else the line's total if the caller allows hiding it. Repeat until no line has
exactly one hidden member (each round hides a cell, so it ends).

The report's lines form a tree (period total -> valence totals -> group cells, and per code
and valence: the all-groups count -> group cells), and on a tree "no line with exactly one
hidden member" means no hidden cell is determined by the published figures: a hidden cell can
always be traded +1/-1 against another hidden member of each of its lines, down to the leaves
or up to the root. `tests/reports/test_suppression.py` checks this by solving the published
equations.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    """`total` = sum of `parts` (keys into the values being protected)."""

    total: Hashable
    parts: tuple[Hashable, ...]


def is_small(value: int, min_cell: int) -> bool:
    return 0 < value < min_cell


def primary(values: Mapping[Hashable, int], min_cell: int) -> set[Hashable]:
    return {key for key, value in values.items() if is_small(value, min_cell)}


def secondary(
    values: Mapping[Hashable, int],
    hidden: set[Hashable],
    lines: Sequence[Line],
    *,
    may_hide: Callable[[Hashable], bool] = lambda _key: True,
) -> set[Hashable]:
    """Grow `hidden` (in place, and returned) until no line has exactly one hidden member.

    `may_hide(key)` says whether a key may be hidden here: a total that another report
    publishes (and hides only when it is itself small) must not be, or that report would give
    it away."""
    order = {key: index for index, key in enumerate(values)}
    by_member: dict[Hashable, list[int]] = {}
    for index, line in enumerate(lines):
        for key in (line.total, *line.parts):
            by_member.setdefault(key, []).append(index)

    pending = list(range(len(lines)))
    queued = set(pending)
    while pending:
        index = pending.pop()
        queued.discard(index)
        line = lines[index]
        members = (line.total, *line.parts)
        if sum(1 for key in members if key in hidden) != 1:
            continue
        pick = _complement(values, hidden, line, order, may_hide)
        if pick is None:
            continue  # nothing else may be hidden: cannot happen with the report's lines
        hidden.add(pick)
        for other in by_member.get(pick, ()):
            if other not in queued:
                queued.add(other)
                pending.append(other)
    return hidden


def _complement(
    values: Mapping[Hashable, int],
    hidden: set[Hashable],
    line: Line,
    order: Mapping[Hashable, int],
    may_hide: Callable[[Hashable], bool],
) -> Hashable | None:
    candidates = [key for key in line.parts if key not in hidden and may_hide(key)]
    if candidates:
        return min(candidates, key=lambda key: (values[key] == 0, values[key], order.get(key, 0)))
    if line.total not in hidden and may_hide(line.total):
        return line.total
    return None


def unrecoverable(hidden: Iterable[Hashable], lines: Sequence[Line]) -> bool:
    """True when no line has exactly one hidden member (the invariant `secondary` keeps)."""
    hidden_set = set(hidden)
    return all(
        sum(1 for key in (line.total, *line.parts) if key in hidden_set) != 1 for line in lines
    )
