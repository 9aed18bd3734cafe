"""The CIT study report: Gremler's (2004) reporting checklist filled from one survey's data.

Every figure is a GROUP BY (over the base tables or the rollups); Python only arranges the
aggregates. Viewers see aggregates only, so for them counts below `min_cell` are suppressed
(with complementary suppression within each breakdown, see app.reports.suppression); admins and
researchers, who can read the stories themselves, get exact counts for their methods section.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from sqlalchemy import Date, Integer, String, and_, case, cast, distinct, func, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.models import (
    INCIDENT_STATUSES,
    VALENCES,
    Codebook,
    CodebookVersion,
    Coding,
    Incident,
    IncidentCode,
    Invitation,
)
from app.models.reports import ReportCodeMonth
from app.reports import tables
from app.reports.rollups import code_source
from app.reports.schemas import SHARES_NOTE
from app.reports.suppression import Line, primary, secondary
from app.reports.trends import TrendsQuery
from app.reviews.reliability import reliability_report
from app.surveys.schemas import QUESTION_KEYS
from app.surveys.service import get_survey
from nlp import redact

# Flanagan's stopping rule: a further 100 incidents add only two or three new categories.
SATURATION_WINDOW = 100
SATURATION_MAX_NEW = 3

# What the team fills per survey (app.surveys.schemas.StudyProtocol), in report order.
PROTOCOL_FIELDS = (
    "incident_definition",
    "inclusion_criteria",
    "exclusion_criteria",
    "data_collection_method",
    "interviewer_instructions",
    "respondent_instructions",
)
# An attribute with more distinct values than this is an identifier or free text, not a
# respondent characteristic: it is named, not tabulated.
MAX_ATTRIBUTE_VALUES = 20
TIME_SINCE_BUCKETS = (
    ("0-7 days", 0, 7),
    ("8-30 days", 8, 30),
    ("31-180 days", 31, 180),
    ("181-365 days", 181, 365),
    ("more than a year", 366, None),
)
CHECKLIST = (
    ("incident_definition", "Definition of a critical incident"),
    ("inclusion_criteria", "Criteria for including incidents"),
    ("exclusion_criteria", "Criteria for excluding incidents"),
    ("data_collection_method", "Data collection method"),
    ("instructions", "Instructions to interviewers or respondents"),
    ("questions", "The exact questions asked of respondents"),
    ("respondents", "Respondents: how many, how they were reached"),
    ("incidents", "Number of incidents: reported, included, excluded (with reasons)"),
    ("valence", "Favourable / unfavourable split"),
    ("context", "Context of the incidents (touchpoint, channel)"),
    ("time_since", "Time between the incident and its report"),
    ("classification", "Classification scheme: codebook versions, change notes, codes"),
    ("appendix", "Category definitions, criteria and an example of each"),
    ("codes", "Incidents per category (final codes)"),
    ("tables", "Category table (group x valence), co-occurrence, cross-tabs by context"),
    ("coders", "Number of judges (coders)"),
    ("reliability", "Inter-judge reliability: statistic and value"),
    ("saturation", "Saturation: new categories against incidents coded"),
)


def _days_since(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":  # date - date is a number of days
        return cast(func.timezone("UTC", Incident.submitted_at), Date) - Incident.occurred_on
    return cast(
        func.julianday(func.date(Incident.submitted_at)) - func.julianday(Incident.occurred_on),
        Integer,
    )


def _time_since_bucket(dialect: str) -> ColumnElement[str]:
    days = _days_since(dialect)
    whens: list[tuple[ColumnElement[bool], str]] = [(Incident.occurred_on.is_(None), "unknown")]
    for label, low, high in TIME_SINCE_BUCKETS:
        if high is None:
            whens.append((days >= low, label))
        else:
            whens.append((and_(days >= low, days <= high), label))
    return case(*whens, else_="after the report (date in the future)")


def _count_by(session: Session, survey_id: int, column: Any, *where: Any) -> list[tuple[Any, int]]:
    key = column.label("key")
    rows = session.execute(
        select(key, func.count().label("n"))
        .where(Incident.survey_id == survey_id, *where)
        .group_by(key)
        # By value, not by count: the order must not rank counts that are suppressed.
        .order_by(key)
    ).all()
    return [(row.key, int(row.n)) for row in rows]


def _saturation(session: Session, survey_id: int, step: int | None) -> dict[str, Any]:
    """Distinct final codes seen against stories coded, in order of finalization."""
    order = (Incident.finalized_at.is_(None), Incident.finalized_at, Incident.id)
    coded = (
        select(Incident.id.label("id"), func.row_number().over(order_by=order).label("pos"))
        .where(Incident.survey_id == survey_id, Incident.status == "coded")
        .subquery()
    )
    total = int(session.scalar(select(func.count()).select_from(coded)) or 0)
    first_seen = (
        select(IncidentCode.code, func.min(coded.c.pos).label("pos"))
        .join(coded, coded.c.id == IncidentCode.incident_id)
        .group_by(IncidentCode.code)
        .subquery()
    )
    new_at = [
        (int(pos), int(n))
        for pos, n in session.execute(
            select(first_seen.c.pos, func.count()).group_by(first_seen.c.pos).order_by("pos")
        )
    ]
    if step is None:
        step = 10 if total <= 1000 else math.ceil(total / 100)
    marks = list(range(step, total + 1, step))
    if total and (not marks or marks[-1] != total):
        marks.append(total)
    points, seen, index = [], 0, 0
    for mark in marks:
        before = seen
        while index < len(new_at) and new_at[index][0] <= mark:
            seen += new_at[index][1]
            index += 1
        points.append({"stories_coded": mark, "distinct_codes": seen, "new_codes": seen - before})
    distinct_codes = sum(n for _pos, n in new_at)
    result: dict[str, Any] = {
        "stories_coded": total,
        "distinct_codes": distinct_codes,
        "step": step,
        "points": points,
        "rule": (
            f"Flanagan: saturation when a further {SATURATION_WINDOW} incidents add at most "
            f"{SATURATION_MAX_NEW} new categories"
        ),
    }
    if total <= SATURATION_WINDOW:
        result |= {
            "new_codes_in_last_100": None,
            "saturated": None,
            "reason": f"needs more than {SATURATION_WINDOW} coded stories",
        }
    else:
        last = sum(n for pos, n in new_at if pos > total - SATURATION_WINDOW)
        result |= {"new_codes_in_last_100": last, "saturated": last <= SATURATION_MAX_NEW}
    return result


def _reliability(session: Session, survey_id: int) -> dict[str, Any]:
    """The review domain's reliability report for the whole survey."""
    return reliability_report(
        session,
        survey_id=survey_id,
        codebook_version_id=None,
        submitted_from=None,
        submitted_to=None,
    )


def _mapping_entries(mapping: dict[str, list[str]] | None) -> list[dict[str, Any]]:
    """A version's code mapping as rename / merge / split entries."""
    if not mapping:
        return []
    into: dict[str, list[str]] = {}
    for old, new in mapping.items():
        if len(new) == 1:
            into.setdefault(new[0], []).append(old)
    entries = []
    for old, new in mapping.items():
        if len(new) > 1:
            entries.append({"kind": "split", "from": [old], "to": list(new)})
        elif len(into[new[0]]) == 1:
            entries.append({"kind": "rename", "from": [old], "to": list(new)})
    entries += [
        {"kind": "merge", "from": olds, "to": [target]}
        for target, olds in into.items()
        if len(olds) > 1
    ]
    return entries


def _codebook_history(
    session: Session, survey: Any, *, hide_counts: bool = False
) -> list[dict[str, Any]]:
    """Every version of the survey's codebook (and of any other codebook its final codes were
    made under), with change notes, the rename / merge / split mapping, retired codes marked,
    and the stories and final codes per version; `hide_counts` (viewers) leaves the counts
    out, which would give suppressed code and story counts away by subtraction."""
    used = {
        int(version_id): (int(stories), int(codes))
        for version_id, stories, codes in session.execute(
            select(
                IncidentCode.codebook_version_id,
                func.count(distinct(IncidentCode.incident_id)),
                func.count(),
            )
            .join(Incident, Incident.id == IncidentCode.incident_id)
            .where(Incident.survey_id == survey.id, Incident.status == "coded")
            .group_by(IncidentCode.codebook_version_id)
        )
    }
    codebook_ids = set(
        session.scalars(
            select(CodebookVersion.codebook_id).where(CodebookVersion.id.in_(list(used)))
        )
    )
    if survey.codebook_id is not None:
        codebook_ids.add(survey.codebook_id)
    rows = session.execute(
        select(CodebookVersion, Codebook.key, Codebook.name, Codebook.current_version)
        .join(Codebook, Codebook.id == CodebookVersion.codebook_id)
        .where(Codebook.id.in_(sorted(codebook_ids)))
        .order_by(Codebook.key, CodebookVersion.number)
    ).all()
    versions = []
    for version, key, name, current in rows:
        stories, codes = used.get(version.id, (0, 0))
        versions.append(
            {
                "id": version.id,
                "codebook": key,
                "codebook_name": name,
                "number": version.number,
                "current": version.number == current,
                "created_by": version.created_by,
                "created_at": version.created_at.isoformat(),
                "change_note": version.change_note,
                "mapping": _mapping_entries(version.code_mapping),
                "codes": [
                    {
                        "key": c.get("key"),
                        "label": c.get("label"),
                        "parent": c.get("parent"),
                        "retired": bool(c.get("retired")),
                        "codable": c.get("codable", True) is not False,
                    }
                    for c in version.content.get("codes", [])
                    if isinstance(c, dict)
                ],
                "stories": None if hide_counts else stories,
                "final_codes": None if hide_counts else codes,
            }
        )
    return versions


def _appendix(session: Session, survey: Any) -> list[dict[str, Any]]:
    """Each code of the current codebook version: definition, criteria and an example."""
    if survey.codebook_id is None:
        return []
    version = session.scalar(
        select(CodebookVersion)
        .join(Codebook, Codebook.id == CodebookVersion.codebook_id)
        .where(
            Codebook.id == survey.codebook_id,
            CodebookVersion.number == Codebook.current_version,
        )
    )
    if version is None:
        return []
    return [
        {
            "key": c["key"],
            "label": c.get("label"),
            "parent": c.get("parent"),
            "bitner_group": c.get("bitner_group"),
            "definition": c.get("definition") or None,
            "inclusion": list(c.get("inclusion") or []),
            "exclusion": list(c.get("exclusion") or []),
            "example": (c.get("examples") or [None])[0],
            "retired": bool(c.get("retired")),
            "codable": c.get("codable", True) is not False,
        }
        for c in version.content.get("codes", [])
    ]


def _protocol(survey: Any) -> dict[str, Any]:
    """The team's own text; a field nobody filled is None (the checklist says "missing")."""
    given = survey.study_protocol or {}
    protocol: dict[str, Any] = {}
    for name in PROTOCOL_FIELDS:
        value = given.get(name)
        if isinstance(value, list):
            value = [item for item in value if isinstance(item, str) and item.strip()] or None
        elif not (isinstance(value, str) and value.strip()):
            value = None
        protocol[name] = value
    return protocol


def _attribute_rows(session: Session, survey_id: int) -> list[tuple[str, str, int]]:
    """(attribute, value, stories) over the stories' attributes (from invitations and imports),
    grouped in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        pairs: Any = func.jsonb_each_text(Incident.attributes).table_valued("key", "value")
        key, value = pairs.c.key, pairs.c.value
    else:
        pairs = func.json_each(Incident.attributes).table_valued("key", "value")
        key, value = pairs.c.key, cast(pairs.c.value, String)
    rows = session.execute(
        select(key.label("key"), value.label("value"), func.count().label("n"))
        .select_from(Incident)
        .join(pairs, true())
        .where(Incident.survey_id == survey_id, value.is_not(None))
        .group_by(key, value)
        .order_by(key, value)
    ).all()
    return [(str(row.key), str(row.value), int(row.n)) for row in rows]


class _Counts:
    """Counts of the report with their suppression: registered, then protected at once."""

    def __init__(self) -> None:
        self.values: dict[Hashable, int] = {}
        self.lines: list[Line] = []
        self.hidden: set[Hashable] = set()

    def add(self, key: Hashable, value: int) -> Hashable:
        self.values[key] = value
        return key

    def breakdown(self, total: Hashable, parts: list[Hashable]) -> None:
        self.lines.append(Line(total, tuple(parts)))

    def protect(self, min_cell: int) -> None:
        self.hidden = primary(self.values, min_cell)
        secondary(self.values, self.hidden, self.lines)

    def get(self, key: Hashable) -> int | None:
        return None if key in self.hidden else self.values[key]


def study_report(
    session: Session,
    survey_id: int,
    *,
    suppress: bool,
    min_cell: int = 5,
    saturation_step: int | None = None,
) -> dict[str, Any]:
    """The checklist as a JSON-ready dict (rendered as Markdown and HTML by app.reports.render)."""
    survey = get_survey(session, survey_id)
    dialect = session.get_bind().dialect.name
    counts = _Counts()
    protocol = _protocol(survey)

    by_status_valence = {
        (status, valence): int(n)
        for status, valence, n in session.execute(
            select(Incident.status, Incident.valence, func.count())
            .where(Incident.survey_id == survey_id)
            .group_by(Incident.status, Incident.valence)
        )
    }
    total = counts.add("stories", sum(by_status_valence.values()))
    status_keys = [
        counts.add(("status", s), sum(n for (st, _v), n in by_status_valence.items() if st == s))
        for s in INCIDENT_STATUSES
    ]
    counts.breakdown(total, status_keys)
    valence_keys = [
        counts.add(("valence", v), sum(n for (_s, va), n in by_status_valence.items() if va == v))
        for v in VALENCES
    ]
    counts.breakdown(total, valence_keys)
    included_keys = [
        counts.add(("included_valence", v), by_status_valence.get(("coded", v), 0))
        for v in VALENCES
    ]
    counts.breakdown(("status", "coded"), included_keys)

    reasons = _count_by(
        session,
        survey_id,
        func.coalesce(Incident.exclusion_reason, ""),
        Incident.status == "excluded",
    )
    reason_keys = [counts.add(("reason", reason), n) for reason, n in reasons]
    counts.breakdown(("status", "excluded"), reason_keys)

    context: dict[str, list[tuple[Any, Hashable]]] = {}
    for name, column in (("touchpoint", Incident.touchpoint), ("channel", Incident.channel)):
        rows = _count_by(session, survey_id, func.coalesce(column, ""))
        context[name] = [(value or None, counts.add((name, value), n)) for value, n in rows]
        counts.breakdown(total, [key for _value, key in context[name]])
    time_rows = dict(_count_by(session, survey_id, _time_since_bucket(dialect)))
    time_labels = ["unknown", *(label for label, _low, _high in TIME_SINCE_BUCKETS)]
    time_labels += [label for label in time_rows if label not in time_labels]
    time_keys = [
        counts.add(("time_since", label), time_rows.get(label, 0)) for label in time_labels
    ]
    counts.breakdown(total, time_keys)

    code_days = code_source(ReportCodeMonth, dialect).c
    code_rows = session.execute(
        select(code_days.code, code_days.valence, func.sum(code_days.n))
        .where(code_days.survey_id == survey_id)
        .group_by(code_days.code, code_days.valence)
    ).all()
    code_names = sorted({code for code, _v, _n in code_rows})
    by_code = {(code, valence): int(n) for code, valence, n in code_rows}
    for code in code_names:
        parts = [counts.add(("code", code, v), by_code.get((code, v), 0)) for v in VALENCES]
        counts.add(("code", code), sum(by_code.get((code, v), 0) for v in VALENCES))
        counts.breakdown(("code", code), parts)

    invitations = session.execute(
        select(func.count(), func.count(Invitation.used_at)).where(
            Invitation.survey_id == survey_id
        )
    ).one()
    via_invitation, imported = session.execute(
        select(
            func.count(Incident.invitation_id),
            func.count().filter(Incident.source == "import"),
        ).where(Incident.survey_id == survey_id)
    ).one()
    via_keys = [
        counts.add("stories_via_invitation", int(via_invitation)),
        counts.add("stories_via_open_link", counts.values[total] - via_invitation - imported),
        counts.add("stories_imported", int(imported)),
    ]
    counts.breakdown(total, via_keys)
    attributes: dict[str, list[tuple[str, Hashable]]] = {}
    for name, value, n in _attribute_rows(session, survey_id):
        attributes.setdefault(name, []).append((value, ("attribute", name, value)))
        counts.add(("attribute", name, value), n)
    wide = {
        name: len(values)
        for name, values in attributes.items()
        if len(values) > MAX_ATTRIBUTE_VALUES
    }
    for name, values in attributes.items():
        if name in wide:
            continue
        keys = [key for _value, key in values]
        counts.add(("attribute_total", name), sum(counts.values[k] for k in keys))
        counts.breakdown(("attribute_total", name), keys)
    coder_stats = session.execute(
        select(func.count(distinct(Coding.coder_id)), func.count())
        .join(Incident, Incident.id == Coding.incident_id)
        .where(Incident.survey_id == survey_id)
    ).one()
    per_story = (
        select(Coding.incident_id)
        .join(Incident, Incident.id == Coding.incident_id)
        .where(Incident.survey_id == survey_id)
        .group_by(Coding.incident_id)
        .having(func.count() >= 2)
        .subquery()
    )
    double_coded = int(session.scalar(select(func.count()).select_from(per_story)) or 0)

    if suppress:
        counts.protect(min_cell)
    get = counts.get

    report: dict[str, Any] = {
        "note": SHARES_NOTE,
        "survey": {
            "id": survey.id,
            "title": survey.title,
            "slug": survey.slug,
            "language": survey.language,
            "status": survey.status,
            "created_at": survey.created_at.isoformat(),
            "closes_at": survey.closes_at.isoformat() if survey.closes_at else None,
        },
        "suppression": {
            "applied": suppress,
            "min_cell": min_cell if suppress else None,
            "rule": "counts below min_cell, and one more in any breakdown that would give a "
            "hidden count away, are null (viewers only)",
        },
        "study": protocol,
        "questions": [
            {"field": key, "text": survey.questions[key]}
            for key in QUESTION_KEYS
            if survey.questions.get(key)
        ],
        "respondents": {
            "stories": get(total),
            "invitations_sent": int(invitations[0]),
            # Each used invitation carries one story: the same count, suppressed alike.
            "invitations_used": get("stories_via_invitation") if suppress else int(invitations[1]),
            "stories_via_invitation": get("stories_via_invitation"),
            "stories_via_open_link": get("stories_via_open_link"),
            # One entry per respondent attribute (from invitations and imports).
            "by_attribute": [
                {
                    "attribute": name,
                    "tabulated": name not in wide,
                    "distinct_values": len(values),
                    "stories": None if name in wide else get(("attribute_total", name)),
                    "values": []
                    if name in wide
                    else [
                        {"value": redact(value).text, "stories": get(key)} for value, key in values
                    ],
                }
                for name, values in attributes.items()
            ],
            "stories_imported": get("stories_imported"),
            "note": "Respondents are not identified across submissions: each submitted form "
            "is one story.",
        },
        "incidents": {
            "reported": get(total),
            "by_status": {s: get(("status", s)) for s in INCIDENT_STATUSES},
            "included": get(("status", "coded")),
            "excluded": get(("status", "excluded")),
            "pending": _pending(get, INCIDENT_STATUSES),
            "exclusion_reasons": [
                {"reason": reason or None, "stories": get(("reason", reason))}
                for reason, _n in reasons
            ],
        },
        "valence": {
            "reported": {v: get(("valence", v)) for v in VALENCES},
            "included": {v: get(("included_valence", v)) for v in VALENCES},
        },
        "context": {
            name: [{"value": value, "stories": get(key)} for value, key in entries]
            for name, entries in context.items()
        },
        "time_since": [
            {"bucket": label, "stories": get(("time_since", label))} for label in time_labels
        ],
        "classification": _codebook_history(session, survey, hide_counts=suppress),
        "appendix": _appendix(session, survey),
        "codes": [
            {
                "code": code,
                "stories": get(("code", code)),
                **{v: get(("code", code, v)) for v in VALENCES},
            }
            for code in code_names
        ],
        "coders": {
            "coders": int(coder_stats[0]),
            "codings": int(coder_stats[1]),
            "double_coded_stories": double_coded,
        },
        "reliability": _reliability(session, survey_id),
        "saturation": _saturation(session, survey_id, saturation_step),
    }
    if suppress:
        # The curve's last point and its total are the number of coded stories: publish them
        # only as the suppressed count allows (the points at whole steps give bounds only).
        saturation = report["saturation"]
        saturation["stories_coded"] = get(("status", "coded"))
        step = saturation["step"]
        saturation["points"] = [p for p in saturation["points"] if p["stories_coded"] % step == 0]
    report["tables"] = _tables(session, survey, suppress=suppress, min_cell=min_cell)
    report["checklist"] = [
        {
            "item": label,
            "section": key,
            "reported": _reported(report, key),
            "status": "yes" if _reported(report, key) else "missing",
        }
        for key, label in CHECKLIST
    ]
    return report


def _tables(session: Session, survey: Any, *, suppress: bool, min_cell: int) -> dict[str, Any]:
    """The study's tables over its whole range (app.reports.tables, period "all"): the Bitner
    category table, co-occurrence and the cross-tabs by touchpoint, channel and segment, under
    the current version of the survey's codebook; suppressed exactly as the trends (whose
    quarters, months and days they are tied to) when the report is."""
    version_id = None
    if survey.codebook_id is not None:
        version_id = tables.version_for(session, survey.id, None)

    def query(**extra: Any) -> TrendsQuery:
        return TrendsQuery(
            period="all", survey_id=survey.id, codebook_version_id=version_id, **extra
        )

    def strip(table: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in table.items() if k not in ("note", "definitions", "query")}

    options: dict[str, Any] = {"min_cell": min_cell, "suppress": suppress}
    result: dict[str, Any] = {
        "codebook_version_id": version_id,
        "bitner": None,
        "cooccurrence": strip(tables.cooccurrence(session, query(cooccurrence=True), **options)),
        "crosstabs": {
            by: strip(tables.crosstab(session, query(group_by=(by,)), **options))
            for by in tables.DIMENSIONS
        },
    }
    if version_id is not None:
        bitner = strip(tables.bitner_table(session, query(bitner_groups=True), **options))
        result["bitner"] = bitner if bitner["groups"] else None
    return result


def _pending(get: Any, statuses: tuple[str, ...]) -> int | None:
    values = [get(("status", s)) for s in statuses if s not in ("coded", "excluded")]
    return None if any(v is None for v in values) else sum(values)


def _reported(report: dict[str, Any], key: str) -> bool:
    """Whether the team's text or the data fill a checklist item: nothing built into the
    service counts (no default definition), and no reliability without double coding."""
    study = report["study"]
    if key in ("incident_definition", "inclusion_criteria", "exclusion_criteria"):
        return study.get(key) is not None
    if key == "data_collection_method":
        return study.get(key) is not None
    if key == "instructions":
        return (
            study.get("interviewer_instructions") is not None
            or study.get("respondent_instructions") is not None
        )
    if key == "appendix":
        return any(code.get("definition") for code in report.get("appendix", []))
    section = report.get(key)
    if key == "reliability":
        return isinstance(section, dict) and section.get("available", True) is not False
    if key == "saturation":
        return isinstance(section, dict) and bool(section.get("stories_coded"))
    if key in ("classification", "codes", "questions"):
        return bool(section)
    if key == "tables":
        return isinstance(section, dict) and any(
            part["tables"] for part in section["crosstabs"].values()
        )
    if key == "coders":
        return isinstance(section, dict) and bool(section.get("coders"))
    return section is not None
