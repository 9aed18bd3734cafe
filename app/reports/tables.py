"""The study's tables as the trends report reshaped: code x touchpoint / channel / segment, the
Bitner-style category table (group x valence) and code co-occurrence, per period and valence.

Each table is a trends report (app.reports.trends) read another way, so its figures and its
suppression are exactly the trends report's: a cell hidden there is hidden here, and the
protection across groupings and period lengths holds for these tables too. They read the
report's plain data (`trends_data`: the report's dump, without a model per row). A pair of codes
(co-occurrence) and a Bitner group are counted like a code: confirmed stories carrying both
codes / any code of the group, each story once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from app.errors import Invalid
from app.models import Codebook, CodebookVersion
from app.models.incidents import VALENCES
from app.reports.schemas import TrendsQueryRead
from app.reports.trends import TrendsQuery, trends_data
from app.surveys.service import get_survey

DIMENSIONS = ("touchpoint", "channel", "segment")
NOT_GIVEN = "(not given)"


Row = dict[str, Any]  # a TrendRow's dump (trends_data)


def _figure(row: Row | None) -> dict[str, Any]:
    if row is None:  # no confirmed story in the cell: a known zero
        return {"count": 0, "base": 0, "share": None, "suppressed": False}
    return {
        "count": row["count"],
        "base": row["base"],
        "share": row["share"],
        "ci_low": row["ci_low"],
        "ci_high": row["ci_high"],
        "suppressed": row["suppressed"],
    }


def _common(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "note": report["note"],
        "definitions": report["definitions"],
        # The query echo as its model writes it (one small model, not one per row).
        "query": TrendsQueryRead.model_validate(report["query"]).model_dump(mode="json"),
    }


def crosstab(
    session: Session, query: TrendsQuery, *, min_cell: int, suppress: bool
) -> dict[str, Any]:
    """Codes (rows) x the values of one dimension (columns), per period and valence."""
    if len(query.group_by) != 1 or query.group_by[0] not in DIMENSIONS:
        raise Invalid(f"cross-tabulate by one of {', '.join(DIMENSIONS)}")
    dimension = query.group_by[0]
    report = trends_data(session, query, min_cell=min_cell, suppress=suppress)
    columns: dict[tuple[date, str], list[str | None]] = {}
    bases: dict[tuple[date, str, str | None], dict[str, Any]] = {}
    for total in report["totals"]:
        value = total[dimension]
        columns.setdefault((total["period"], total["valence"]), []).append(value)
        bases[(total["period"], total["valence"], value)] = {
            "confirmed": total["confirmed"],
            "suppressed": total["confirmed"] is None,
        }
    cells: dict[tuple[date, str, str, str, str | None], Row] = {}
    codes: dict[tuple[str, str], None] = {}
    for row in report["rows"]:
        if row["level"] == "pair":
            continue
        code, level = row["code"], row["level"]
        cells[(row["period"], row["valence"], code, level, row[dimension])] = row
        codes[(code, level)] = None
    tables = []
    for (period, valence), values in columns.items():
        tables.append(
            {
                "period": period.isoformat(),
                "valence": valence,
                "columns": [
                    {
                        "value": v,
                        "label": v if v is not None else NOT_GIVEN,
                        **bases[(period, valence, v)],
                    }
                    for v in values
                ],
                "rows": [
                    {
                        "code": code,
                        "level": level,
                        "cells": [
                            {
                                "value": v,
                                **_figure(cells.get((period, valence, code, level, v))),
                            }
                            for v in values
                        ],
                    }
                    for code, level in codes
                ],
            }
        )
    return {**_common(report), "dimension": dimension, "tables": tables}


def crosstab_rows(table: dict[str, Any]) -> Iterator[list[Any]]:
    """Tidy rows of a cross-tab: period, valence, dimension value, code, level, figures."""
    for part in table["tables"]:
        for row in part["rows"]:
            for cell in row["cells"]:
                yield [
                    part["period"],
                    part["valence"],
                    cell["value"] if cell["value"] is not None else NOT_GIVEN,
                    row["code"],
                    row["level"],
                    cell["count"],
                    cell["base"],
                    cell["share"],
                    cell["suppressed"],
                ]


CROSSTAB_HEADER = [
    "period",
    "valence",
    "value",
    "code",
    "level",
    "count",
    "base",
    "share",
    "suppressed",
]


def version_for(session: Session, survey_id: int | None, version_id: int | None) -> int:
    """The codebook version a table is read under: the one asked for, else the current version
    of the survey's codebook."""
    if version_id is not None:
        return version_id
    if survey_id is None:
        raise Invalid("give codebook_version_id, or survey_id of a survey with a codebook")
    survey = get_survey(session, survey_id)
    if survey.codebook_id is None:
        raise Invalid("the survey has no codebook: give codebook_version_id")
    book = session.get(Codebook, survey.codebook_id)
    assert book is not None
    version = (
        session.query(CodebookVersion)
        .filter_by(codebook_id=book.id, number=book.current_version)
        .one()
    )
    return int(version.id)


def bitner_table(
    session: Session, query: TrendsQuery, *, min_cell: int, suppress: bool
) -> dict[str, Any]:
    """Bitner group x valence per period: confirmed stories carrying any code of the group
    (a child code counts in its parent's group), each story once; with the codes per group."""
    report = trends_data(session, query, min_cell=min_cell, suppress=suppress)
    in_groups = [r for r in report["rows"] if r["level"] == "bitner_group"]
    groups = sorted({r["code"] for r in in_groups})
    cells = {(r["period"], r["valence"], r["code"]): r for r in in_groups}
    tables = []
    for period in report["periods"]:
        day = period["period"]
        tables.append(
            {
                "period": day.isoformat(),
                "confirmed": {v: period["valences"][v]["confirmed"] for v in VALENCES},
                "rows": [
                    {
                        "group": group,
                        **{v: _figure(cells.get((day, v, group))) for v in VALENCES},
                    }
                    for group in groups
                ],
            }
        )
    return {**_common(report), "groups": groups, "tables": tables}


def bitner_rows(table: dict[str, Any]) -> Iterator[list[Any]]:
    for part in table["tables"]:
        for row in part["rows"]:
            for valence in VALENCES:
                cell = row[valence]
                yield [
                    part["period"],
                    row["group"],
                    valence,
                    cell["count"],
                    cell["base"],
                    cell["share"],
                    cell["suppressed"],
                ]


BITNER_HEADER = ["period", "group", "valence", "count", "base", "share", "suppressed"]


def cooccurrence(
    session: Session, query: TrendsQuery, *, min_cell: int, suppress: bool
) -> dict[str, Any]:
    """Per period and valence: for each pair of codes, the confirmed stories carrying both
    (the diagonal: carrying the code), each story once."""
    report = trends_data(session, query, min_cell=min_cell, suppress=suppress)
    codes = report["codes"]
    cells: dict[tuple[date, str, str, str], Row] = {}
    for row in report["rows"]:
        period, valence = row["period"], row["valence"]
        if row["level"] == "code":
            cells[(period, valence, row["code"], row["code"])] = row
        elif row["level"] == "pair":
            first, second = row["code"].split("&", 1)
            cells[(period, valence, first, second)] = row
            cells[(period, valence, second, first)] = row
    keys = sorted({(r["period"], r["valence"]) for r in report["rows"]})
    tables = [
        {
            "period": period.isoformat(),
            "valence": valence,
            "codes": codes,
            "matrix": [
                [_figure(cells.get((period, valence, a, b)))["count"] for b in codes] for a in codes
            ],
            "suppressed": [
                [_figure(cells.get((period, valence, a, b)))["suppressed"] for b in codes]
                for a in codes
            ],
            "base": next(
                (
                    r["base"]
                    for r in report["rows"]
                    if (r["period"], r["valence"]) == (period, valence)
                ),
                None,
            ),
        }
        for period, valence in keys
    ]
    return {**_common(report), "codes": codes, "tables": tables}


def cooccurrence_rows(table: dict[str, Any]) -> Iterator[list[Any]]:
    for part in table["tables"]:
        for i, first in enumerate(part["codes"]):
            for j, second in enumerate(part["codes"]):
                if j < i:
                    continue
                yield [
                    part["period"],
                    part["valence"],
                    first,
                    second,
                    part["matrix"][i][j],
                    part["base"],
                    part["suppressed"][i][j],
                ]


COOCCURRENCE_HEADER = ["period", "valence", "code_a", "code_b", "stories", "base", "suppressed"]
