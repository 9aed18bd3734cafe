"""Inter-coder reliability read from the database: researchers' codings of the stories two or
more of them coded, and the model's suggestions against the final codes (figures computed by
app.reviews.agreement)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, String, cast, func, select
from sqlalchemy.orm import Session

from app.codebooks.vocabulary import Vocabulary, vocabulary
from app.errors import NotFound
from app.incidents.service import as_utc
from app.models import (
    AuditEvent,
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
    Incident,
    IncidentCode,
    Suggestion,
    User,
)
from app.reports.intervals import wilson_interval
from app.reviews import bootstrap
from app.reviews.agreement import (
    REASON_FEWER_THAN_2_CODERS,
    REASON_NO_PAIRABLE_UNIT,
    AgreementReport,
    Statistic,
    Table,
    agreement_report,
    binary_tables,
    coding_table,
    fleiss_kappa_from_counts,
    ir_statistic,
    is_missing,
    krippendorff_alpha_nominal,
    mean_statistic,
    pairwise_cohen_kappa,
    percent_agreement_table,
    scott_pi,
)
from app.reviews.schemas import (
    AdjudicationRead,
    AgreementFilters,
    AgreementReportRead,
    BootstrapRead,
    ExclusionAgreementRead,
    FiguresRead,
    IntervalRead,
    PairStatisticRead,
    ParentLevelRead,
    ReliabilitySection,
    ShareRead,
    SingleLabelRead,
    StatisticRead,
    StoryLevelRead,
    SuggestionSourceRead,
)
from app.reviews.service import ADJUDICATE
from nlp.codebook import parse_codebook

MODEL = "model"
FINAL = "final"

# {story id: {coder: set of codes, or None when that coder excluded the story}}
Codings = dict[int, dict[str, frozenset[str] | None]]


EXCLUDED = "(excluded)"
EXCLUSION_HANDLINGS = ("missing", "category")
ADJUDICATION_METHOD = (
    "an admin read every coding of a story the coders disagreed on and set its final codes "
    "(or excluded it); the admin's decision stands"
)


def reliability_report(
    session: Session,
    *,
    survey_id: int | None,
    codebook_version_id: int | None,
    submitted_from: datetime | None,
    submitted_to: datetime | None,
    exclusion: str = "missing",
    resamples: int = bootstrap.DEFAULT_RESAMPLES,
    seed: int = bootstrap.DEFAULT_SEED,
) -> dict[str, Any]:
    """Agreement per code (present/absent) and overall, for the researchers' codings and for
    the model against the final codes; JSON-ready (the shape of AgreementReportRead).

    `exclusion` = "missing": a coder who excluded a story contributes no codes for it, and how
    often coders agreed on excluding is counted apart; "category": an exclusion is one more
    code ("(excluded)") and the excluding coder gave none of the others. The overall figures
    are means over the codes of the codebook's current version that a coder used (retired and
    never-used codes are listed but left out). With `codebook_version_id` only codings (and
    final codes) made under that version count. Intervals are 95 %, seeded with `seed`.
    """
    if exclusion not in EXCLUSION_HANDLINGS:
        raise ValueError(f"exclusion must be one of {EXCLUSION_HANDLINGS}")
    stories = _story_conditions(survey_id, submitted_from, submitted_to)
    # Under one version: every coding of its codebook, mapped into that version (a codebook
    # change moves only the codings it touches to the new version's id).
    words = _words(session, codebook_version_id)
    codings, n_codings, excluded = _coder_codings(session, stories, words)
    model, final_versions, made_by = _model_and_final(session, stories, words)

    versions = _versions(session, codebook_version_id, _coding_versions(excluded), final_versions)
    content = _codebook_content(session, versions, codebook_version_id)
    active, k = _active_codes(content)
    scored = _with_exclusions(codings) if exclusion == "category" else codings
    codes, retired = _codes(active, scored, model)
    if exclusion == "category":
        codes.append(EXCLUDED)
    notes = _notes(versions, exclusion)
    options = _Options(resamples=resamples, seed=seed)

    coders_section = _section(scored, codes, k, sorted(_coders(codings)), retired, options)
    model_section = _section(model, codes, k, [MODEL, FINAL], retired, options)
    report = AgreementReportRead(
        available=coders_section.n_units > 0,
        reason=None if coders_section.n_units else "no story was coded by two or more researchers",
        filters=AgreementFilters(
            survey_id=survey_id,
            codebook_version_id=codebook_version_id,
            submitted_from=submitted_from,
            submitted_to=submitted_to,
        ),
        codebook_version_ids=[v.id for v in versions],
        codes=codes,
        k=k,
        n_codings=n_codings,
        exclusion_handling=exclusion,  # type: ignore[arg-type]
        exclusions=_exclusions(excluded),
        include_exclude=_include_exclude(codings, sorted(_coders(codings)), options),
        adjudication=_adjudication(session, stories),
        parent_level=_parent_level(codings, content, exclusion, k, options),
        bootstrap=BootstrapRead(
            seed=seed,
            resamples=resamples,
            alpha_resamples=bootstrap.ALPHA_RESAMPLES,
            alpha_method=bootstrap.HK_METHOD,
            method=bootstrap.UNITS_METHOD,
        ),
        model_vs_final=model_section,
        model_vs_final_made_by=made_by,
        notes=notes,
        **coders_section.model_dump(),
    )
    return report.model_dump(mode="json")


# Loading ----------------------------------------------------------------------------------------


def _words(session: Session, version_id: int | None) -> Vocabulary | None:
    if version_id is None:
        return None
    try:
        return vocabulary(session, version_id)
    except NotFound:  # an unknown version: no coding was made under it
        return Vocabulary(
            target_id=version_id, codebook_id=0, version_ids=[], target_codes=[], parents={}
        )


def _story_conditions(
    survey_id: int | None, submitted_from: datetime | None, submitted_to: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if survey_id is not None:
        conditions.append(Incident.survey_id == survey_id)
    if submitted_from is not None:
        conditions.append(Incident.submitted_at >= as_utc(submitted_from))
    if submitted_to is not None:
        conditions.append(Incident.submitted_at < as_utc(submitted_to))
    return conditions


# {story id: [(coder, excluded, codebook version id)]} for the exclusion figures and versions.
Excluded = dict[int, list[tuple[str, bool, int]]]


def _coder_codings(
    session: Session, stories: list[ColumnElement[bool]], words: Vocabulary | None
) -> tuple[Codings, int, Excluded]:
    """The codings of every story that two or more researchers coded (in two queries)."""
    version = [Coding.codebook_version_id.in_(words.version_ids)] if words is not None else []
    shared = (
        select(Coding.incident_id)
        .join(Incident, Incident.id == Coding.incident_id)
        .where(*stories, *version)
        .group_by(Coding.incident_id)
        .having(func.count(Coding.id) >= 2)
    )
    rows = session.execute(
        select(
            Coding.id,
            Coding.incident_id,
            User.name,
            Coding.excluded,
            Coding.codebook_version_id,
        )
        .join(User, User.id == Coding.coder_id)
        .where(Coding.incident_id.in_(shared), *version)
        .order_by(Coding.incident_id, Coding.id)
    ).all()
    given: dict[int, set[str]] = defaultdict(set)
    for coding_id, code, coding_version in session.execute(
        select(CodingCode.coding_id, CodingCode.code, Coding.codebook_version_id)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(
            Coding.incident_id.in_(shared),
            CodingCode.decision != "rejected",
            *version,
        )
    ):
        given[coding_id].update([code] if words is None else words.targets(coding_version, code))
    codings: Codings = defaultdict(dict)
    excluded: Excluded = defaultdict(list)
    for coding_id, incident_id, coder, is_excluded, coding_version in rows:
        codings[incident_id][coder] = None if is_excluded else frozenset(given[coding_id])
        excluded[incident_id].append((coder, is_excluded, coding_version))
    return dict(codings), len(rows), dict(excluded)


def _model_and_final(
    session: Session, stories: list[ColumnElement[bool]], words: Vocabulary | None
) -> tuple[Codings, set[int], list[SuggestionSourceRead]]:
    """Suggested codes against final codes, over the coded stories that have suggestions."""
    version = [IncidentCode.codebook_version_id.in_(words.version_ids)] if words is not None else []
    finals: dict[int, set[str]] = defaultdict(set)
    final_versions: set[int] = set()
    for incident_id, code, code_version in session.execute(
        select(IncidentCode.incident_id, IncidentCode.code, IncidentCode.codebook_version_id)
        .join(Incident, Incident.id == IncidentCode.incident_id)
        .join(Suggestion, Suggestion.incident_id == Incident.id)
        .where(Incident.status == "coded", *stories, *version)
    ):
        finals[incident_id].update([code] if words is None else words.targets(code_version, code))
        final_versions.add(code_version)
    suggested: dict[int, frozenset[str]] = {}
    sources: Counter[tuple[int | None, int]] = Counter()
    if finals:
        for incident_id, items, model_id, suggestion_version in session.execute(
            select(
                Suggestion.incident_id,
                Suggestion.items,
                Suggestion.model_id,
                Suggestion.codebook_version_id,
            ).where(Suggestion.incident_id.in_(list(finals)))
        ):
            suggested[incident_id] = frozenset(
                str(item["code"]) for item in items if item.get("suggested")
            )
            sources[(model_id, suggestion_version)] += 1
    made_by = [
        SuggestionSourceRead(model_id=m, codebook_version_id=v, n_stories=n)
        for (m, v), n in sorted(sources.items(), key=lambda item: (item[0][1], item[0][0] or 0))
    ]
    model: Codings = {
        incident_id: {MODEL: suggested.get(incident_id, frozenset()), FINAL: frozenset(codes)}
        for incident_id, codes in sorted(finals.items())
    }
    return model, final_versions, made_by


def _coding_versions(excluded: Excluded) -> set[int]:
    return {version for entries in excluded.values() for _, _, version in entries}


def _versions(
    session: Session, version_id: int | None, *used: Iterable[int]
) -> list[CodebookVersion]:
    wanted = {version_id} if version_id is not None else {v for ids in used for v in ids}
    if not wanted:
        return []
    return list(
        session.scalars(
            select(CodebookVersion)
            .where(CodebookVersion.id.in_(wanted))
            .order_by(CodebookVersion.id.desc())
        )
    )


def _codebook_content(
    session: Session, versions: Sequence[CodebookVersion], version_id: int | None
) -> dict[str, Any] | None:
    """The codebook the figures are read under: the filtered version, else the current version
    of the codebook the codings were made with (codebook changes map codings forward to it)."""
    if version_id is not None:
        return versions[0].content if versions else None
    codebook_ids = sorted({v.codebook_id for v in versions})
    if not codebook_ids:
        return None
    current = session.scalars(
        select(CodebookVersion)
        .join(Codebook, Codebook.id == CodebookVersion.codebook_id)
        .where(Codebook.id.in_(codebook_ids), CodebookVersion.number == Codebook.current_version)
        .order_by(CodebookVersion.id.desc())
    ).first()
    return current.content if current is not None else None


def _active_codes(content: Mapping[str, Any] | None) -> tuple[list[str], int]:
    """The codes a coder may apply under this codebook, and k (their number)."""
    if content is None:
        return [], 0
    codebook = parse_codebook(content)
    active = [code.key for code in codebook.active_codes]
    return active, len(active)


def _codes(active: list[str], *data: Codings) -> tuple[list[str], set[str]]:
    """The codes to report (the active ones, then any other code found in the data: retired,
    from a pooled older version) and which of them are not active."""
    codes: dict[str, None] = dict.fromkeys(active)
    for codings in data:
        for by_coder in codings.values():
            for given in by_coder.values():
                codes.update(dict.fromkeys(sorted(given or ())))
    return list(codes), {code for code in codes if code not in set(active)}


def _notes(versions: Sequence[CodebookVersion], exclusion: str) -> list[str]:
    notes: list[str] = []
    if len(versions) > 1:
        notes.append(
            f"codings of {len(versions)} codebook versions are pooled: every one was mapped to "
            "the codebook's current version when the codebook changed, and k is that version's "
            "number of codes; filter by codebook_version for one version"
        )
    notes.append(
        "overall figures are the plain means of the per-code values over the codes in "
        "overall_codes (active codes a coder used); overall Ir is the mean of per-code Ir "
        "(k = 2 each)"
    )
    if exclusion == "category":
        notes.append(
            f"an exclusion counts as one more category, {EXCLUDED!r}: the excluding coder gave "
            "none of the codes"
        )
    else:
        notes.append(
            "a coder who excluded a story is missing from its per-code figures; "
            "include_exclude scores the include/exclude decision itself"
        )
    return notes


def _with_exclusions(codings: Codings) -> Codings:
    return {
        unit: {
            coder: frozenset({EXCLUDED}) if given is None else given
            for coder, given in by_coder.items()
        }
        for unit, by_coder in codings.items()
    }


def _coders(codings: Codings) -> set[str]:
    return {coder for by_coder in codings.values() for coder in by_coder}


# Figures ----------------------------------------------------------------------------------------


def _stat(statistic: Statistic) -> StatisticRead:
    return StatisticRead(value=statistic.value, n_units=statistic.n_units, reason=statistic.reason)


def _pairs(kappas: Mapping[tuple[str, str], Statistic]) -> list[PairStatisticRead]:
    return [
        PairStatisticRead(coders=pair, value=s.value, n_units=s.n_units, reason=s.reason)
        for pair, s in kappas.items()
        if s.n_units > 0
    ]


def fleiss_kappa_any_raters(table: Table) -> Statistic:
    """Fleiss' kappa over the units with the most common number (>= 2) of ratings.

    Fleiss (1971) needs the same number of ratings per unit, not the same raters: with pairs of
    researchers rotating over the stories, every double-coded story counts, whoever coded it.
    """
    units = [[v for v in column if not is_missing(v)] for column in zip(*table, strict=True)]
    by_size = Counter(len(values) for values in units if len(values) >= 2)
    if not by_size:
        return Statistic(None, 0, REASON_NO_PAIRABLE_UNIT)
    size = max(by_size, key=lambda m: (by_size[m], m))
    rated = [values for values in units if len(values) == size]
    labels = list(dict.fromkeys(v for values in rated for v in values))
    index: dict[Hashable, int] = {label: i for i, label in enumerate(labels)}
    counts = []
    for values in rated:
        row = [0] * len(labels)
        for v in values:
            row[index[v]] += 1
        counts.append(row)
    return fleiss_kappa_from_counts(counts)


@dataclass(frozen=True)
class _Options:
    resamples: int
    seed: int


def _interval(found: bootstrap.Interval | None) -> IntervalRead | None:
    if found is None:
        return None
    return IntervalRead(
        low=found.low,
        high=found.high,
        method=found.method,
        resamples=found.resamples,
        seed=found.seed,
        prob_below=found.prob_below or None,
    )


def _with_ci(statistic: StatisticRead, found: bootstrap.Interval | None) -> StatisticRead:
    if statistic.value is None:
        return statistic
    return statistic.model_copy(update={"ci95": _interval(found)})


def _wilson(x: int, n: int) -> IntervalRead | None:
    bounds = wilson_interval(x, n) if n else None
    if bounds is None:
        return None
    return IntervalRead(low=bounds[0], high=bounds[1], method="Wilson score interval")


def _used(codings: Codings, coders: list[str]) -> set[str]:
    """Codes given by a coder on a story that two or more coders coded (and did not exclude):
    the stories a code's figures rest on."""
    used: set[str] = set()
    for by_coder in codings.values():
        if sum(1 for c in coders if by_coder.get(c) is not None) >= 2:
            for coder in coders:
                used.update(by_coder.get(coder) or ())
    return used


def _section(
    codings: Codings,
    codes: list[str],
    k: int,
    coders: list[str],
    retired: set[str],
    options: _Options,
) -> ReliabilitySection:
    used = _used(codings, coders)
    left_out = {
        code: "retired or not in the current codebook version"
        if code in retired
        else "no coder used it on a story two or more coders coded (and included)"
        for code in codes
        if code in retired or code not in used
    }
    overall_codes = [code for code in codes if code not in left_out]
    report: AgreementReport[str] = agreement_report(
        codings, codes, k=k, coders=coders, overall_codes=overall_codes
    )
    units = [u for u, by in codings.items() if sum(1 for c in coders if c in by) >= 2]
    pairable = {u: codings[u] for u in units}
    tables = binary_tables(pairable, codes, coders)
    fleiss = {code: fleiss_kappa_any_raters(table) for code, table in tables.items()}
    boot = bootstrap.UnitBootstrap(len(units), seed=options.seed, resamples=options.resamples)
    pairs = [(i, j) for i in range(len(coders)) for j in range(i + 1, len(coders))]
    alpha_runs: dict[str, np.ndarray] = {}
    kappa_runs: dict[tuple[str, int, int], np.ndarray] = {}
    if units:
        wanted: list[tuple[str, Any]] = [("alpha", table) for table in tables.values()]
        wanted += [("kappa", (table[i], table[j])) for table in tables.values() for i, j in pairs]
        runs = iter(boot.many(wanted))
        alpha_runs = {code: next(runs) for code in tables}
        kappa_runs = {(code, i, j): next(runs) for code in tables for i, j in pairs}

    def figures(code: str | None) -> FiguresRead:
        source = report.overall if code is None else report.per_code[code]
        if code is None:
            alpha_ci = boot.interval(
                bootstrap.nanmean_rows([alpha_runs[c] for c in overall_codes if c in alpha_runs])
            )
        else:
            alpha_ci = bootstrap.alpha_interval(tables[code], seed=options.seed) if units else None
        kappas = []
        for i, j in pairs:
            pair = (coders[i], coders[j])
            statistic = source.cohen_kappa.get(pair)
            if statistic is None or statistic.n_units == 0:
                continue
            runs = (
                bootstrap.nanmean_rows(
                    [kappa_runs[(c, i, j)] for c in overall_codes if (c, i, j) in kappa_runs]
                )
                if code is None
                else kappa_runs.get((code, i, j), np.array([]))
            )
            kappas.append(
                PairStatisticRead(
                    coders=pair,
                    value=statistic.value,
                    n_units=statistic.n_units,
                    reason=statistic.reason,
                    ci95=_interval(boot.interval(runs)) if statistic.value is not None else None,
                )
            )
        po = _stat(source.percent_agreement)
        if code is not None and po.value is not None:
            agreed = round(po.value * po.n_units)
            po = po.model_copy(update={"ci95": _wilson(agreed, po.n_units)})
        return FiguresRead(
            percent_agreement=po,
            cohen_kappa=kappas,
            fleiss_kappa=_stat(
                mean_statistic([fleiss[c] for c in overall_codes if c in fleiss])
                if code is None
                else fleiss[code]
            ),
            krippendorff_alpha=_with_ci(_stat(source.krippendorff_alpha), alpha_ci),
            perreault_leigh_ir=_stat(source.perreault_leigh_ir),
        )

    return ReliabilitySection(
        coders=list(coders),
        n_units=len(units),
        overall_codes=overall_codes,
        left_out_of_overall=left_out,
        overall=figures(None),
        per_code={code: figures(code) for code in codes},
        story_level=_story_level(codings, coders),
        single_label=_single_label(codings, k, coders, options),
    )


def _share(stories: int, agreed: int, description: str) -> ShareRead:
    return ShareRead(
        stories=stories,
        agreed=agreed,
        share=agreed / stories if stories else None,
        ci95=_wilson(agreed, stories),
        description=description,
    )


def _story_level(codings: Codings, coders: list[str]) -> StoryLevelRead:
    """The figure most CIT papers print: the share of double-coded stories whose coders gave
    identical code sets; once over the stories every coder included, once with an exclusion
    counted as one more answer (two exclusions agree, whatever their reasons)."""
    included = agreed_included = everything = agreed_everything = 0
    for by_coder in codings.values():
        given = [by_coder[c] for c in coders if c in by_coder]
        if len(given) < 2:
            continue
        same = all(g == given[0] for g in given)
        everything += 1
        agreed_everything += same
        if all(g is not None for g in given):
            included += 1
            agreed_included += same
    return StoryLevelRead(
        exclusion_missing=_share(
            included,
            agreed_included,
            "stories every coder included, whose coders gave identical code sets",
        ),
        exclusion_as_category=_share(
            everything,
            agreed_everything,
            "stories coded by two or more, whose coders gave identical code sets or all "
            "excluded them",
        ),
    )


def _include_exclude(codings: Codings, coders: list[str], options: _Options) -> FiguresRead:
    """Agreement on the include / exclude decision itself (nominal, two values)."""
    decisions = {
        unit: {coder: "excluded" if given is None else "included" for coder, given in by.items()}
        for unit, by in codings.items()
        if sum(1 for c in coders if c in by) >= 2
    }
    table = coding_table(decisions, coders).rows
    po = percent_agreement_table(table) if table else Statistic(None, 0, REASON_NO_PAIRABLE_UNIT)
    boot = bootstrap.UnitBootstrap(len(decisions), seed=options.seed, resamples=options.resamples)
    kappas = []
    for (i, j), statistic in pairwise_cohen_kappa(table).items() if table else []:
        if statistic.n_units == 0:
            continue
        runs = boot.kappas(table[i], table[j])
        kappas.append(
            PairStatisticRead(
                coders=(coders[i], coders[j]),
                value=statistic.value,
                n_units=statistic.n_units,
                reason=statistic.reason,
                ci95=_interval(boot.interval(runs)) if statistic.value is not None else None,
            )
        )
    alpha = (
        krippendorff_alpha_nominal(table) if table else Statistic(None, 0, REASON_NO_PAIRABLE_UNIT)
    )
    agreed = round((po.value or 0) * po.n_units)
    return FiguresRead(
        percent_agreement=_stat(po).model_copy(update={"ci95": _wilson(agreed, po.n_units)})
        if po.value is not None
        else _stat(po),
        cohen_kappa=kappas,
        fleiss_kappa=_stat(fleiss_kappa_any_raters(table))
        if table
        else _stat(Statistic(None, 0, REASON_NO_PAIRABLE_UNIT)),
        krippendorff_alpha=_with_ci(
            _stat(alpha), bootstrap.alpha_interval(table, seed=options.seed) if table else None
        ),
        perreault_leigh_ir=_stat(ir_statistic(po, 2)),
    )


def _adjudication(session: Session, stories: list[ColumnElement[bool]]) -> AdjudicationRead:
    """How many stories an admin adjudicated (and to what), and how many wait for it."""
    adjudicated = (
        select(AuditEvent.entity_id)
        .where(AuditEvent.entity_type == "incident", AuditEvent.action == ADJUDICATE)
        .distinct()
    )
    rows = session.execute(
        select(Incident.status, func.count())
        .where(*stories, cast(Incident.id, String).in_(adjudicated))
        .group_by(Incident.status)
    ).all()
    by_status = {status: int(n) for status, n in rows}
    pending = session.scalar(
        select(func.count()).where(*stories, Incident.status == "adjudication")
    )
    return AdjudicationRead(
        adjudicated=sum(by_status.values()),
        adjudicated_coded=by_status.get("coded", 0),
        adjudicated_excluded=by_status.get("excluded", 0),
        pending=int(pending or 0),
        method=ADJUDICATION_METHOD,
    )


def _roots(content: Mapping[str, Any]) -> dict[str, str]:
    """Each code's top-level ancestor (itself for a top-level code)."""
    parents = {code["key"]: code.get("parent") for code in content.get("codes", [])}
    roots: dict[str, str] = {}
    for key in parents:
        node, seen = key, set()
        while parents.get(node) and node not in seen:
            seen.add(node)
            node = parents[node]
        roots[key] = node
    return roots


def _parent_level(
    codings: Codings,
    content: Mapping[str, Any] | None,
    exclusion: str,
    k: int,
    options: _Options,
) -> ParentLevelRead:
    """Agreement on the top-level categories: a coder "gave" a parent when they gave it or
    any code below it (Bitner's groups above the categories)."""
    if content is None or not any(code.get("parent") for code in content.get("codes", [])):
        return ParentLevelRead(available=False, reason="the codebook has no hierarchy")
    roots = _roots(content)
    rolled: Codings = {
        unit: {
            coder: None if given is None else frozenset(roots.get(c, c) for c in given)
            for coder, given in by.items()
        }
        for unit, by in codings.items()
    }
    active = [code["key"] for code in content["codes"] if not code.get("retired")]
    parents = list(dict.fromkeys(roots[key] for key in active))
    children = {p: [c for c in active if roots[c] == p and c != p] for p in parents}
    scored = _with_exclusions(rolled) if exclusion == "category" else rolled
    codes, retired = _codes(parents, scored)
    if exclusion == "category":
        codes.append(EXCLUDED)
    section = _section(scored, codes, k, sorted(_coders(codings)), retired, options)
    return ParentLevelRead(available=True, reason=None, children=children, section=section)


def _single_label(
    codings: Codings, k: int, coders: list[str], options: _Options
) -> SingleLabelRead:
    """Nominal figures over the code itself: only when every (not excluded) coding carries
    exactly one code, as in a classic one-category-per-incident CIT classification."""
    if len(coders) < 2:
        return SingleLabelRead(applicable=False, reason=REASON_FEWER_THAN_2_CODERS)
    labels: dict[int, dict[str, Hashable | None]] = {}
    for unit, by_coder in codings.items():
        labels[unit] = {}
        for coder, given in by_coder.items():
            if given is None:
                continue
            if len(given) != 1:
                return SingleLabelRead(
                    applicable=False, reason="some codings carry more or fewer than one code"
                )
            labels[unit][coder] = next(iter(given))
    table = coding_table(labels, coders).rows
    po = percent_agreement_table(table)
    if po.value is None:
        return SingleLabelRead(applicable=False, reason=po.reason)
    kappas = pairwise_cohen_kappa(table)
    boot = bootstrap.UnitBootstrap(len(labels), seed=options.seed, resamples=options.resamples)
    pi = (
        _stat(scott_pi(table[0], table[1]))
        if len(coders) == 2
        else StatisticRead(value=None, n_units=0, reason="Scott's pi is for two coders")
    )
    return SingleLabelRead(
        applicable=True,
        reason=None,
        percent_agreement=_stat(po),
        cohen_kappa=[
            PairStatisticRead(
                coders=(coders[i], coders[j]),
                value=s.value,
                n_units=s.n_units,
                reason=s.reason,
                ci95=_interval(boot.interval(boot.kappas(table[i], table[j])))
                if s.value is not None
                else None,
            )
            for (i, j), s in kappas.items()
            if s.n_units > 0
        ],
        scott_pi=pi,
        fleiss_kappa=_stat(fleiss_kappa_any_raters(table)),
        krippendorff_alpha=_with_ci(
            _stat(krippendorff_alpha_nominal(table)),
            bootstrap.alpha_interval(table, seed=options.seed),
        ),
        perreault_leigh_ir=_stat(ir_statistic(po, k)),
    )


def _exclusions(excluded: Excluded) -> ExclusionAgreementRead:
    units = all_excluded = none_excluded = 0
    for entries in excluded.values():
        if len(entries) < 2:
            continue
        units += 1
        flags = [is_excluded for _, is_excluded, _ in entries]
        all_excluded += all(flags)
        none_excluded += not any(flags)
    split = units - all_excluded - none_excluded
    return ExclusionAgreementRead(
        units=units,
        all_excluded=all_excluded,
        none_excluded=none_excluded,
        split=split,
        agreement=(all_excluded + none_excluded) / units if units else None,
    )
