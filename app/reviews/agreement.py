"""Inter-coder agreement statistics for CIT coding (Po, Cohen, Scott, Fleiss, Krippendorff, Ir)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Generic, TypeVar

# A coders x units table: one row per coder, one column per unit (story); None or a float
# nan marks a unit that coder did not code. Labels are any hashable values, compared nominally.
Table = Sequence[Sequence[Hashable | None]]

U = TypeVar("U", bound=Hashable)
C = TypeVar("C", bound=Hashable)

REASON_NO_COMMON_UNIT = "no unit was coded by both coders"
REASON_NO_PAIRABLE_UNIT = "no unit was coded by two or more coders"
REASON_COHEN_PE_1 = "expected agreement is 1: both coders used one and the same label"
REASON_ONE_LABEL = "expected agreement is 1: only one label was used"
REASON_ONE_VALUE = "expected disagreement is 0: only one value appears in the pairable units"
REASON_FEWER_THAN_2_CODERS = "fewer than two coders"


@dataclass(frozen=True)
class Statistic:
    """A statistic's value, the number of units it rests on, and why it is None when it is."""

    value: float | None
    n_units: int
    reason: str | None = None


def is_missing(value: object) -> bool:
    """True for None and float nan, the two spellings of "this coder did not code this unit"."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _n_units(table: Table) -> int:
    if not table:
        return 0
    n = len(table[0])
    for row in table:
        if len(row) != n:
            raise ValueError("every coder's row must have one entry per unit")
    return n


def _units(table: Table) -> Iterator[list[Hashable]]:
    """Yield, unit by unit, the non-missing values of the table's column."""
    _n_units(table)
    for column in zip(*table, strict=True):
        yield [v for v in column if not is_missing(v)]


def _pairs(
    a: Sequence[Hashable | None], b: Sequence[Hashable | None]
) -> list[tuple[Hashable, Hashable]]:
    if len(a) != len(b):
        raise ValueError("both coders' sequences must have one entry per unit")
    return [(x, y) for x, y in zip(a, b, strict=True) if not is_missing(x) and not is_missing(y)]


# --------------------------------------------------------------------------- building tables


@dataclass(frozen=True)
class CodingTable(Generic[U, C]):
    """A coders x units table with the ids of its rows (coders) and columns (units)."""

    coders: tuple[C, ...]
    units: tuple[U, ...]
    rows: tuple[tuple[Hashable | None, ...], ...]


def coders_of(codings: Mapping[U, Mapping[C, object]]) -> tuple[C, ...]:
    """The coders named anywhere in ``codings``, in order of first appearance."""
    seen: dict[C, None] = {}
    for by_coder in codings.values():
        for coder in by_coder:
            seen.setdefault(coder, None)
    return tuple(seen)


def coding_table(
    codings: Mapping[U, Mapping[C, Hashable | None]],
    coders: Sequence[C] | None = None,
) -> CodingTable[U, C]:
    """Build a coders x units table from ``{unit: {coder: label}}``.

    A coder absent from a unit's mapping, or mapped to None/nan, did not code it. ``coders`` fixes
    the row order and restricts the table to those coders (default: all, in first-seen order).
    """
    order = tuple(coders) if coders is not None else coders_of(codings)
    units = tuple(codings)
    rows = tuple(tuple(codings[u].get(c) for u in units) for c in order)
    return CodingTable(coders=order, units=units, rows=rows)


def binary_tables(
    codings: Mapping[U, Mapping[C, AbstractSet[str] | None]],
    codes: Sequence[str],
    coders: Sequence[C] | None = None,
) -> dict[str, list[list[int | None]]]:
    """One 0/1 coders x units table per code, for multi-label coding.

    ``codings[unit][coder]`` is the set of codes the coder gave the unit (an empty set is a
    valid "none of the codes"); None, or the coder's absence, means the coder did not code the
    unit, which is missing in every table. Rows follow ``coders`` (default: first-seen order).
    A code given but not listed in ``codes`` raises ValueError.
    """
    order = tuple(coders) if coders is not None else coders_of(codings)
    wanted = list(dict.fromkeys(codes))
    known = set(wanted)
    tables: dict[str, list[list[int | None]]] = {code: [[] for _ in order] for code in wanted}
    for by_coder in codings.values():
        for i, coder in enumerate(order):
            given = by_coder.get(coder)
            if given is not None:
                unknown = set(given) - known
                if unknown:
                    raise ValueError(f"codes not in the codebook: {sorted(unknown)}")
            for code in wanted:
                tables[code][i].append(None if given is None else int(code in given))
    return tables


# --------------------------------------------------------------------------- two coders


def percent_agreement(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> Statistic:
    """Share of the units coded by both coders on which they gave the same label."""
    pairs = _pairs(a, b)
    if not pairs:
        return Statistic(None, 0, REASON_NO_COMMON_UNIT)
    agree = sum(1 for x, y in pairs if x == y)
    return Statistic(agree / len(pairs), len(pairs))


def _kappa(n: int, agree: int, c1: Counter[Hashable], c2: Counter[Hashable]) -> Statistic:
    if n == 0:
        return Statistic(None, 0, REASON_NO_COMMON_UNIT)
    # kappa = (Po - Pe) / (1 - Pe) with Po = agree / n and Pe = sum_k c1k c2k / n^2, in integers.
    chance = sum(count * c2[label] for label, count in c1.items())
    if chance == n * n:
        return Statistic(None, n, REASON_COHEN_PE_1)
    return Statistic((n * agree - chance) / (n * n - chance), n)


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> Statistic:
    """Cohen's kappa over the units both coders coded; None (never 1) when Pe is 1."""
    pairs = _pairs(a, b)
    agree = sum(1 for x, y in pairs if x == y)
    return _kappa(len(pairs), agree, Counter(x for x, _ in pairs), Counter(y for _, y in pairs))


def scott_pi(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> Statistic:
    """Scott's pi (pooled marginals) over the units both coders coded."""
    pairs = _pairs(a, b)
    n = len(pairs)
    if n == 0:
        return Statistic(None, 0, REASON_NO_COMMON_UNIT)
    agree = sum(1 for x, y in pairs if x == y)
    pooled = Counter(x for x, _ in pairs) + Counter(y for _, y in pairs)
    # Pe = sum_k (t_k / 2n)^2; pi = (4n agree - sum t^2) / (4n^2 - sum t^2).
    squares = sum(t * t for t in pooled.values())
    if squares == 4 * n * n:
        return Statistic(None, n, REASON_ONE_LABEL)
    return Statistic((4 * n * agree - squares) / (4 * n * n - squares), n)


def pairwise_cohen_kappa(table: Table) -> dict[tuple[int, int], Statistic]:
    """Cohen's kappa for every pair (i, j), i < j, of the table's rows, keyed by row indices.

    One pass over the units, costing sum over units of (coders of the unit)^2.
    """
    m = len(table)
    n: dict[tuple[int, int], int] = {}
    agree: dict[tuple[int, int], int] = {}
    c1: dict[tuple[int, int], Counter[Hashable]] = {}
    c2: dict[tuple[int, int], Counter[Hashable]] = {}
    _n_units(table)
    for column in zip(*table, strict=True):
        present = [(i, v) for i, v in enumerate(column) if not is_missing(v)]
        for p, (i, x) in enumerate(present):
            for j, y in present[p + 1 :]:
                key = (i, j)
                if key not in n:
                    n[key], agree[key], c1[key], c2[key] = 0, 0, Counter(), Counter()
                n[key] += 1
                agree[key] += x == y
                c1[key][x] += 1
                c2[key][y] += 1
    result: dict[tuple[int, int], Statistic] = {}
    for i in range(m):
        for j in range(i + 1, m):
            key = (i, j)
            if key in n:
                result[key] = _kappa(n[key], agree[key], c1[key], c2[key])
            else:
                result[key] = Statistic(None, 0, REASON_NO_COMMON_UNIT)
    return result


# --------------------------------------------------------------------------- many coders


def percent_agreement_table(table: Table) -> Statistic:
    """Share of the units coded by two or more coders on which all of that unit's coders agree.

    With two coders this is the usual percent agreement Po.
    """
    n = agree = 0
    for values in _units(table):
        if len(values) >= 2:
            n += 1
            agree += all(v == values[0] for v in values)
    if n == 0:
        return Statistic(None, 0, REASON_NO_PAIRABLE_UNIT)
    return Statistic(agree / n, n)


def fleiss_kappa_from_counts(counts: Sequence[Sequence[int]]) -> Statistic:
    """Fleiss' kappa from a subjects x categories table of rating counts.

    Every subject must have the same number n >= 2 of ratings; otherwise the value is None with
    a reason. Malformed input (ragged rows, negative counts) raises ValueError.
    """
    n_subjects = len(counts)
    if n_subjects == 0:
        return Statistic(None, 0, "no subject")
    width = len(counts[0])
    for row in counts:
        if len(row) != width:
            raise ValueError("every subject must have one count per category")
        if any(c < 0 for c in row):
            raise ValueError("counts must not be negative")
    raters = {sum(row) for row in counts}
    if len(raters) != 1:
        return Statistic(
            None, n_subjects, f"subjects have different numbers of ratings: {sorted(raters)}"
        )
    r = raters.pop()
    if r < 2:
        return Statistic(None, n_subjects, "fewer than two ratings per subject")
    # Pbar = A / (N r (r-1)), Pe = B / (N r)^2; kappa = (A N r - B (r-1)) / ((r-1)((N r)^2 - B)).
    same = sum(c * (c - 1) for row in counts for c in row)
    totals = [sum(col) for col in zip(*counts, strict=True)]
    squares = sum(t * t for t in totals)
    all_ratings = n_subjects * r
    if squares == all_ratings * all_ratings:
        return Statistic(None, n_subjects, REASON_ONE_LABEL)
    numerator = same * all_ratings - squares * (r - 1)
    denominator = (r - 1) * (all_ratings * all_ratings - squares)
    return Statistic(numerator / denominator, n_subjects)


def fleiss_kappa(table: Table) -> Statistic:
    """Fleiss' kappa over the units rated by every coder of the table (n_units says how many)."""
    n_coders = len(table)
    if n_coders < 2:
        return Statistic(None, 0, REASON_FEWER_THAN_2_CODERS)
    complete = [values for values in _units(table) if len(values) == n_coders]
    if not complete:
        return Statistic(None, 0, f"no unit was coded by all {n_coders} coders")
    labels = list(dict.fromkeys(v for values in complete for v in values))
    index = {label: k for k, label in enumerate(labels)}
    counts: list[list[int]] = []
    for values in complete:
        row = [0] * len(labels)
        for v in values:
            row[index[v]] += 1
        counts.append(row)
    return fleiss_kappa_from_counts(counts)


def krippendorff_alpha_nominal(table: Table) -> Statistic:
    """Krippendorff's alpha for nominal data; missing values allowed, units with < 2 values ignored.

    alpha = 1 - (n - 1) * D_o / D_e, where D_o = sum_u (m_u^2 - sum_k c_uk^2) / (m_u - 1) is the
    off-diagonal total of the coincidence matrix and D_e = n^2 - sum_k n_k^2.
    """
    label_totals: Counter[Hashable] = Counter()
    disagreeing_by_m: dict[int, int] = {}  # m_u -> sum over such units of (m_u^2 - sum c_uk^2)
    n_units = 0
    for values in _units(table):
        m = len(values)
        if m < 2:
            continue
        n_units += 1
        counts = Counter(values)
        label_totals.update(counts)
        off = m * m - sum(c * c for c in counts.values())
        disagreeing_by_m[m] = disagreeing_by_m.get(m, 0) + off
    if n_units == 0:
        return Statistic(None, 0, REASON_NO_PAIRABLE_UNIT)
    n = sum(label_totals.values())
    expected = n * n - sum(t * t for t in label_totals.values())
    if expected == 0:
        return Statistic(None, n_units, REASON_ONE_VALUE)
    observed = math.fsum(s / (m - 1) for m, s in disagreeing_by_m.items())
    return Statistic(1.0 - (n - 1) * observed / expected, n_units)


def perreault_leigh_ir(po: float, k: int) -> float:
    """Perreault & Leigh's Ir = sqrt((Po - 1/k) k / (k - 1)) when Po >= 1/k, else 0.

    ``k`` is the number of categories the coders chose from (in this service: the number of codes
    in the codebook version used, or 2 for a per-code present/absent decision).
    """
    if k < 2:
        raise ValueError("Ir needs k >= 2 categories")
    if not 0.0 <= po <= 1.0:
        raise ValueError("Po must lie in [0, 1]")
    if po < 1.0 / k:
        return 0.0
    return math.sqrt(max(0.0, (po - 1.0 / k) * k / (k - 1)))


# --------------------------------------------------------------------------- multi-label report


@dataclass(frozen=True)
class CodeAgreement(Generic[C]):
    """Agreement figures for one code (or their means over the codes, for ``overall``)."""

    percent_agreement: Statistic
    cohen_kappa: dict[tuple[C, C], Statistic]
    fleiss_kappa: Statistic
    krippendorff_alpha: Statistic
    perreault_leigh_ir: Statistic


@dataclass(frozen=True)
class AgreementReport(Generic[C]):
    """Per-code agreement on the binary present/absent decision, and the mean over the codes.

    ``overall`` holds, for each statistic, the mean of the per-code values that are not None
    (n_units is the largest per-code n_units); Ir too: overall Ir is the mean of the per-code
    Ir values, each with k = 2 (present / absent). ``k`` (the number of codes in the codebook
    version) is for single-label coding, where one story gets exactly one code.
    """

    coders: tuple[C, ...]
    k: int
    per_code: dict[str, CodeAgreement[C]]
    overall: CodeAgreement[C]


def ir_statistic(po: Statistic, k: int) -> Statistic:
    """Perreault & Leigh's Ir from a percent-agreement statistic, with its units and reason."""
    if po.value is None:
        return Statistic(None, po.n_units, po.reason)
    if k < 2:
        return Statistic(None, po.n_units, "Ir needs k >= 2 categories")
    return Statistic(perreault_leigh_ir(po.value, k), po.n_units)


def mean_statistic(stats: Sequence[Statistic]) -> Statistic:
    """The mean over codes, skipping undefined values (with a reason when all are)."""
    n_units = max((s.n_units for s in stats), default=0)
    values = [s.value for s in stats if s.value is not None]
    if not values:
        first = next((s.reason for s in stats if s.reason), None)
        reason = "undefined for every code" + (f" ({first})" if first else "")
        return Statistic(None, n_units, reason)
    return Statistic(math.fsum(values) / len(values), n_units)


def agreement_report(
    codings: Mapping[U, Mapping[C, AbstractSet[str] | None]],
    codes: Sequence[str],
    k: int | None = None,
    coders: Sequence[C] | None = None,
    overall_codes: Sequence[str] | None = None,
) -> AgreementReport[C]:
    """Agreement per code (present/absent per unit) and overall, for multi-label coding.

    ``codings[unit][coder]`` is the set of codes given (None or absent: not coded). ``k`` is
    the number of codes in the codebook version used (default: the number of distinct ``codes``).
    ``overall_codes`` are the codes the overall means run over (default: all ``codes``); a
    report leaves out retired codes and codes nobody used, whose Po of 1 would inflate them.
    """
    order = tuple(coders) if coders is not None else coders_of(codings)
    kk = len(dict.fromkeys(codes)) if k is None else k
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
    per_code: dict[str, CodeAgreement[C]] = {}
    for code, table in binary_tables(codings, codes, order).items():
        po = percent_agreement_table(table)
        kappas = pairwise_cohen_kappa(table)
        per_code[code] = CodeAgreement(
            percent_agreement=po,
            cohen_kappa={(order[i], order[j]): s for (i, j), s in kappas.items()},
            fleiss_kappa=fleiss_kappa(table),
            krippendorff_alpha=krippendorff_alpha_nominal(table),
            perreault_leigh_ir=ir_statistic(po, 2),
        )
    means_over = list(per_code) if overall_codes is None else list(dict.fromkeys(overall_codes))
    figures = [per_code[code] for code in means_over if code in per_code]
    overall = CodeAgreement(
        percent_agreement=mean_statistic([f.percent_agreement for f in figures]),
        cohen_kappa={
            pair: mean_statistic([f.cohen_kappa[pair] for f in figures]) for pair in pairs
        },
        fleiss_kappa=mean_statistic([f.fleiss_kappa for f in figures]),
        krippendorff_alpha=mean_statistic([f.krippendorff_alpha for f in figures]),
        perreault_leigh_ir=mean_statistic([f.perreault_leigh_ir for f in figures]),
    )
    return AgreementReport(coders=order, k=kk, per_code=per_code, overall=overall)
