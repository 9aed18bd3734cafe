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

from sqlalchemy import Date, Integer, and_, case, cast, distinct, func, select
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
from app.models.reports import ReportCodeDay
from app.reports.schemas import SHARES_NOTE
from app.reports.suppression import Line, primary, secondary
from app.reviews.reliability import reliability_report
from app.surveys.schemas import QUESTION_KEYS
from app.surveys.service import get_survey

# Flanagan's stopping rule: a further 100 incidents add only two or three new categories.
SATURATION_WINDOW = 100
SATURATION_MAX_NEW = 3

INCIDENT_DEFINITION = (
    "An observable episode of an interaction between a customer and the service (staff or "
    "self-service), complete enough to be judged, whose purpose and consequences are clear to "
    "the respondent, and that the respondent found particularly satisfying or dissatisfying "
    "(Flanagan 1954; Bitner, Booms & Tetreault 1990)."
)
INCLUSION_CRITERIA = [
    "The story involves an interaction between the customer and the service.",
    "It is clearly satisfying or dissatisfying from the customer's point of view.",
    "It is one discrete episode, not a general opinion or a series of events.",
    "It has enough detail for a judge to visualise and classify it.",
]
TIME_SINCE_BUCKETS = (
    ("0-7 days", 0, 7),
    ("8-30 days", 8, 30),
    ("31-180 days", 31, 180),
    ("181-365 days", 181, 365),
    ("more than a year", 366, None),
)
CHECKLIST = (
    ("incident_definition", "Definition of a critical incident"),
    ("inclusion_criteria", "Criteria for including and excluding incidents"),
    ("questions", "The exact questions asked of respondents"),
    ("respondents", "Respondents: how many, how they were reached"),
    ("incidents", "Number of incidents: reported, included, excluded (with reasons)"),
    ("valence", "Favourable / unfavourable split"),
    ("context", "Context of the incidents (touchpoint, channel)"),
    ("time_since", "Time between the incident and its report"),
    ("classification", "Classification scheme: codebook versions, change notes, codes"),
    ("codes", "Incidents per category (final codes)"),
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


def _codebook_versions(
    session: Session, survey_id: int, *, hide_counts: bool = False
) -> list[dict[str, Any]]:
    """The codebook versions the survey's final codes were made under, with their change notes;
    `hide_counts` (viewers) leaves out the per-version counts, which would give suppressed code
    and story counts away by subtraction."""
    used = (
        select(
            IncidentCode.codebook_version_id.label("version_id"),
            func.count(distinct(IncidentCode.incident_id)).label("stories"),
            func.count().label("codes"),
        )
        .join(Incident, Incident.id == IncidentCode.incident_id)
        .where(Incident.survey_id == survey_id, Incident.status == "coded")
        .group_by(IncidentCode.codebook_version_id)
        .subquery()
    )
    rows = session.execute(
        select(CodebookVersion, Codebook.key, Codebook.name, used.c.stories, used.c.codes)
        .join(used, used.c.version_id == CodebookVersion.id)
        .join(Codebook, Codebook.id == CodebookVersion.codebook_id)
        .order_by(Codebook.key, CodebookVersion.number)
    ).all()
    versions = []
    for version, key, name, stories, codes in rows:
        content_codes = version.content.get("codes", [])
        versions.append(
            {
                "id": version.id,
                "codebook": key,
                "codebook_name": name,
                "number": version.number,
                "created_by": version.created_by,
                "created_at": version.created_at.isoformat(),
                "change_note": version.change_note,
                "codes": [
                    {"key": c.get("key"), "label": c.get("label"), "retired": c.get("retired")}
                    for c in content_codes
                    if isinstance(c, dict)
                ],
                "stories": None if hide_counts else int(stories),
                "final_codes": None if hide_counts else int(codes),
            }
        )
    return versions


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

    code_rows = session.execute(
        select(ReportCodeDay.code, ReportCodeDay.valence, func.sum(ReportCodeDay.n))
        .where(ReportCodeDay.survey_id == survey_id)
        .group_by(ReportCodeDay.code, ReportCodeDay.valence)
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
        "incident_definition": INCIDENT_DEFINITION,
        "inclusion_criteria": INCLUSION_CRITERIA,
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
        "classification": _codebook_versions(session, survey_id, hide_counts=suppress),
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
    report["checklist"] = [
        {"item": label, "section": key, "reported": _reported(report, key)}
        for key, label in CHECKLIST
    ]
    return report


def _pending(get: Any, statuses: tuple[str, ...]) -> int | None:
    values = [get(("status", s)) for s in statuses if s not in ("coded", "excluded")]
    return None if any(v is None for v in values) else sum(values)


def _reported(report: dict[str, Any], key: str) -> bool:
    """Whether the data fill a checklist item (e.g. no reliability without double coding)."""
    section = report.get(key)
    if key == "reliability":
        return isinstance(section, dict) and section.get("available", True) is not False
    if key == "saturation":
        return isinstance(section, dict) and bool(section.get("stories_coded"))
    if key in ("classification", "codes", "questions"):
        return bool(section)
    if key == "coders":
        return isinstance(section, dict) and bool(section.get("coders"))
    return section is not None
