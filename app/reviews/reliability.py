"""Inter-coder reliability read from the database: researchers' codings of the stories two or
more of them coded, and the model's suggestions against the final codes (figures computed by
app.reviews.agreement)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.codebooks.service import load_nlp_codebook
from app.incidents.service import as_utc
from app.models import (
    CodebookVersion,
    Coding,
    CodingCode,
    Incident,
    IncidentCode,
    Suggestion,
    User,
)
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
    AgreementFilters,
    AgreementReportRead,
    ExclusionAgreementRead,
    FiguresRead,
    PairStatisticRead,
    ReliabilitySection,
    SingleLabelRead,
    StatisticRead,
    SuggestionSourceRead,
)

MODEL = "model"
FINAL = "final"

# {story id: {coder: set of codes, or None when that coder excluded the story}}
Codings = dict[int, dict[str, frozenset[str] | None]]


def reliability_report(
    session: Session,
    *,
    survey_id: int | None,
    codebook_version_id: int | None,
    submitted_from: datetime | None,
    submitted_to: datetime | None,
) -> dict[str, Any]:
    """Agreement per code (present/absent) and overall, for the researchers' codings and for
    the model against the final codes; JSON-ready (the shape of AgreementReportRead).

    A coder who excluded a story contributes no codes for it (missing); how often coders
    agreed on excluding is counted apart. With `codebook_version_id` only codings (and final
    codes) made under that version count.
    """
    stories = _story_conditions(survey_id, submitted_from, submitted_to)
    codings, n_codings, excluded = _coder_codings(session, stories, codebook_version_id)
    model, final_versions, made_by = _model_and_final(session, stories, codebook_version_id)

    versions = _versions(session, codebook_version_id, _coding_versions(excluded), final_versions)
    codes, k, notes = _codes_and_k(versions, codings, model)

    coders_section = _section(codings, codes, k, coders=sorted(_coders(codings)))
    model_section = _section(model, codes, k, coders=[MODEL, FINAL])
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
        exclusions=_exclusions(excluded),
        model_vs_final=model_section,
        model_vs_final_made_by=made_by,
        notes=notes,
        **coders_section.model_dump(),
    )
    return report.model_dump(mode="json")


# Loading ----------------------------------------------------------------------------------------


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
    session: Session, stories: list[ColumnElement[bool]], version_id: int | None
) -> tuple[Codings, int, Excluded]:
    """The codings of every story that two or more researchers coded (in two queries)."""
    version = [Coding.codebook_version_id == version_id] if version_id is not None else []
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
    for coding_id, code in session.execute(
        select(CodingCode.coding_id, CodingCode.code)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(
            Coding.incident_id.in_(shared),
            CodingCode.decision != "rejected",
            *version,
        )
    ):
        given[coding_id].add(code)
    codings: Codings = defaultdict(dict)
    excluded: Excluded = defaultdict(list)
    for coding_id, incident_id, coder, is_excluded, coding_version in rows:
        codings[incident_id][coder] = None if is_excluded else frozenset(given[coding_id])
        excluded[incident_id].append((coder, is_excluded, coding_version))
    return dict(codings), len(rows), dict(excluded)


def _model_and_final(
    session: Session, stories: list[ColumnElement[bool]], version_id: int | None
) -> tuple[Codings, set[int], list[SuggestionSourceRead]]:
    """Suggested codes against final codes, over the coded stories that have suggestions."""
    version = [IncidentCode.codebook_version_id == version_id] if version_id is not None else []
    finals: dict[int, set[str]] = defaultdict(set)
    final_versions: set[int] = set()
    for incident_id, code, code_version in session.execute(
        select(IncidentCode.incident_id, IncidentCode.code, IncidentCode.codebook_version_id)
        .join(Incident, Incident.id == IncidentCode.incident_id)
        .join(Suggestion, Suggestion.incident_id == Incident.id)
        .where(Incident.status == "coded", *stories, *version)
    ):
        finals[incident_id].add(code)
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


def _codes_and_k(
    versions: Sequence[CodebookVersion], *data: Codings
) -> tuple[list[str], int, list[str]]:
    """The codes to report (active codes of the versions, newest version first, then any other
    code found in the data) and k = the newest version's number of active codes."""
    codes: dict[str, None] = {}
    k = 0
    notes: list[str] = []
    for index, version in enumerate(versions):
        active = [code.key for code in load_nlp_codebook(version).active_codes]
        if index == 0:
            k = len(active)
        codes.update(dict.fromkeys(active))
    if len(versions) > 1:
        notes.append(
            f"codings of {len(versions)} codebook versions are pooled; k is the newest version's "
            "number of codes; filter by codebook_version for one version"
        )
    for codings in data:
        for by_coder in codings.values():
            for given in by_coder.values():
                codes.update(dict.fromkeys(sorted(given or ())))
    if k < 2:
        k = max(len(codes), k)
    return list(codes), k, notes


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


def _section(codings: Codings, codes: list[str], k: int, coders: list[str]) -> ReliabilitySection:
    report: AgreementReport[str] = agreement_report(codings, codes, k=k, coders=coders)
    tables = binary_tables(codings, codes, coders)
    fleiss = {code: fleiss_kappa_any_raters(table) for code, table in tables.items()}

    def figures(code: str | None) -> FiguresRead:
        source = report.overall if code is None else report.per_code[code]
        return FiguresRead(
            percent_agreement=_stat(source.percent_agreement),
            cohen_kappa=_pairs(source.cohen_kappa),
            fleiss_kappa=_stat(
                mean_statistic(list(fleiss.values())) if code is None else fleiss[code]
            ),
            krippendorff_alpha=_stat(source.krippendorff_alpha),
            perreault_leigh_ir=_stat(source.perreault_leigh_ir),
        )

    return ReliabilitySection(
        coders=list(coders),
        n_units=sum(
            1 for by_coder in codings.values() if sum(1 for c in coders if c in by_coder) >= 2
        ),
        overall=figures(None),
        per_code={code: figures(code) for code in codes},
        single_label=_single_label(codings, k, coders),
    )


def _single_label(codings: Codings, k: int, coders: list[str]) -> SingleLabelRead:
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
    pi = (
        _stat(scott_pi(table[0], table[1]))
        if len(coders) == 2
        else StatisticRead(value=None, n_units=0, reason="Scott's pi is for two coders")
    )
    return SingleLabelRead(
        applicable=True,
        reason=None,
        percent_agreement=_stat(po),
        cohen_kappa=_pairs({(coders[i], coders[j]): s for (i, j), s in kappas.items()}),
        scott_pi=pi,
        fleiss_kappa=_stat(fleiss_kappa_any_raters(table)),
        krippendorff_alpha=_stat(krippendorff_alpha_nominal(table)),
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
