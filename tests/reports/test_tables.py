"""Cross-tabs, the Bitner category table and code co-occurrence: counts against plain SQL
over the base tables, and the very suppression of the trends report."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from app.codebooks import service
from tests.reports.conftest import API, StorySpec

TOUCHPOINTS = ("Check-in", "Gate", "On board", None)


def _seed(survey_id: int, version: int, add: Callable[..., list[int]], seed: int = 7) -> None:
    rng = random.Random(seed)
    specs = []
    for month in (1, 2, 4):
        for touchpoint in TOUCHPOINTS:
            for valence in ("satisfying", "dissatisfying"):
                for _ in range(rng.choice((0, 2, 5, 9, 13))):
                    codes = tuple(
                        c
                        for c, p in (("complaint", 0.6), ("extra_mile", 0.4), ("owner_error", 0.2))
                        if rng.random() < p
                    )
                    specs.append(
                        StorySpec(
                            survey_id,
                            date(2025, month, rng.randint(1, 28)),
                            valence,
                            codes,
                            status="coded",
                            touchpoint=touchpoint,
                            channel=rng.choice(("Phone", "Web")),
                            segment=rng.choice(("gold", "basic")),
                        )
                    )
    add(specs, version)


def _get(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(f"{API}/{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _quarter(column: str) -> str:
    month = f"CAST(strftime('%m', {column}) AS INTEGER)"
    return f"strftime('%Y', {column}) || '-' || printf('%02d', ({month} - 1) / 3 * 3 + 1) || '-01'"


def test_crosstab_counts_equal_a_plain_sql_count(
    db: Callable[[], Any],
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
) -> None:
    _seed(survey_id, version_id(), add_stories)
    table = _get(client, "crosstab", admin, by="touchpoint", suppress="false", survey_id=survey_id)
    got = {
        (part["period"], part["valence"], cell["value"], row["code"]): cell["count"]
        for part in table["tables"]
        for row in part["rows"]
        for cell in row["cells"]
        if cell["count"]
    }
    with db() as session:
        dialect = session.get_bind().dialect.name
        quarter = (
            "to_char(date_trunc('quarter', i.submitted_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"
            if dialect == "postgresql"
            else _quarter("i.submitted_at")
        )
        rows = session.execute(
            text(
                f"SELECT {quarter} AS q, i.valence, i.touchpoint, c.code, COUNT(*) "
                "FROM incidents i JOIN incident_codes c ON c.incident_id = i.id "
                "WHERE i.status = 'coded' AND i.survey_id = :s "
                "GROUP BY 1, 2, 3, 4"
            ),
            {"s": survey_id},
        ).all()
    expected = {(q, v, t, code): n for q, v, t, code, n in rows}
    assert got == expected and len(expected) > 10
    # Bases: confirmed stories of each column.
    first = table["tables"][0]
    assert all(isinstance(c["confirmed"], int) for c in first["columns"])
    assert {c["label"] for c in first["columns"]} <= {*(t for t in TOUCHPOINTS if t), "(not given)"}
    csv_text = client.get(
        f"{API}/crosstab",
        params={"by": "segment", "suppress": "false", "format": "csv"},
        headers=admin,
    ).text
    lines = list(csv.reader(io.StringIO(csv_text.lstrip("\ufeff"))))
    assert lines[0] == [
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
    assert {line[2] for line in lines[1:]} == {"gold", "basic"}


def test_crosstab_cells_are_hidden_as_the_grouped_trends_hide_them(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
) -> None:
    _seed(survey_id, version_id(), add_stories, seed=3)
    viewer = token_for("viewer")
    table = _get(client, "crosstab", viewer, by="touchpoint", period="month")
    trends = _get(client, "trends", viewer, group_by="touchpoint", period="month")
    from_trends = {
        (r["period"], r["valence"], r["touchpoint"], r["code"]): r["count"] for r in trends["rows"]
    }
    from_table = {
        (part["period"], part["valence"], cell["value"], row["code"]): cell["count"]
        for part in table["tables"]
        for row in part["rows"]
        for cell in row["cells"]
        if (part["period"], part["valence"], cell["value"], row["code"]) in from_trends
    }
    assert from_table == from_trends
    assert any(v is None for v in from_table.values()), "the seed should hide some cells"
    assert all(v is None or v == 0 or v >= 5 for v in from_table.values())


def test_bitner_table_rolls_children_into_their_parents_group_once(
    db: Callable[[], Any],
    survey_id: int,
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
) -> None:
    def code(key: str, **extra: Any) -> dict[str, Any]:
        return {
            "key": key,
            "label": key,
            "definition": f"Definition of {key}",
            "indicators": {"phrases": [f"phrase {key}"]},
            **extra,
        }

    with db() as session:
        version = service.create_codebook(
            session,
            {
                "key": "bitner",
                "name": "Bitner",
                "codes": [
                    code("failure", bitner_group="1: service failure", codable=False),
                    code("slow", parent="failure"),
                    code("rude", parent="failure"),
                    code("extra_mile", bitner_group="3: unprompted"),
                ],
            },
            None,
        )
        version_id = version.id
    day = date(2025, 1, 10)
    add_stories([StorySpec(survey_id, day, codes=("slow", "rude")) for _ in range(6)], version_id)
    add_stories([StorySpec(survey_id, day, codes=("slow",)) for _ in range(5)], version_id)
    add_stories(
        [StorySpec(survey_id, day, "satisfying", ("extra_mile",)) for _ in range(7)], version_id
    )
    table = _get(client, "bitner", admin, codebook_version_id=version_id, suppress="false")
    assert table["groups"] == ["1: service failure", "3: unprompted"]
    rows = {r["group"]: r for r in table["tables"][0]["rows"]}
    failure = rows["1: service failure"]["dissatisfying"]
    assert (failure["count"], failure["base"], failure["share"]) == (11, 11, 1.0)
    assert rows["3: unprompted"]["satisfying"]["count"] == 7
    assert rows["3: unprompted"]["dissatisfying"]["count"] == 0
    pairs = _get(client, "cooccurrence", admin, codebook_version_id=version_id, suppress="false")
    part = next(p for p in pairs["tables"] if p["valence"] == "dissatisfying")
    codes = part["codes"]
    matrix = part["matrix"]
    assert matrix[codes.index("slow")][codes.index("rude")] == 6
    assert matrix[codes.index("rude")][codes.index("slow")] == 6
    assert matrix[codes.index("slow")][codes.index("slow")] == 11
    refused = client.get(f"{API}/bitner", params={}, headers=admin)
    assert refused.status_code == 400


def test_cooccurrence_equals_a_plain_sql_self_join(
    db: Callable[[], Any],
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
) -> None:
    _seed(survey_id, version_id(), add_stories, seed=11)
    table = _get(client, "cooccurrence", admin, period="quarter", suppress="false")
    got = {}
    for part in table["tables"]:
        codes = part["codes"]
        for i, a in enumerate(codes):
            for j, b in enumerate(codes):
                if i < j and part["matrix"][i][j]:
                    got[(part["period"][:7], part["valence"], a, b)] = part["matrix"][i][j]
    with db() as session:
        rows = session.execute(
            text(
                "SELECT i.submitted_at, i.valence, a.code, b.code FROM incidents i "
                "JOIN incident_codes a ON a.incident_id = i.id "
                "JOIN incident_codes b ON b.incident_id = i.id AND a.code < b.code "
                "WHERE i.status = 'coded'"
            )
        ).all()
    expected: dict[tuple[str, str, str, str], int] = {}
    for submitted, valence, a, b in rows:
        moment = submitted if not isinstance(submitted, str) else date.fromisoformat(submitted[:10])
        quarter = f"{moment.year}-{(moment.month - 1) // 3 * 3 + 1:02d}"
        key = (quarter, valence, a, b)
        expected[key] = expected.get(key, 0) + 1
    assert got == expected and expected
    viewer = _get(client, "cooccurrence", token_for("viewer"), period="quarter")
    for part in viewer["tables"]:
        for line, hidden in zip(part["matrix"], part["suppressed"], strict=True):
            for value, flag in zip(line, hidden, strict=True):
                assert (value is None) == flag
                assert value is None or value == 0 or value >= 5


def test_the_study_report_prints_the_tables_and_never_none(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    admin: dict[str, str],
) -> None:
    _seed(survey_id, version_id(), add_stories, seed=5)
    for who in (token_for("viewer"), admin):
        response = client.get(
            f"{API}/study", params={"survey_id": survey_id, "format": "markdown"}, headers=who
        )
        assert response.status_code == 200, response.text
        body = response.text
        assert "Codes by touchpoint" in body and "Code co-occurrence" in body
        assert "Stories imported from a file" in body
        assert "None" not in body
    viewer_json = _get(client, "study", token_for("viewer"), survey_id=survey_id)
    crosstab = viewer_json["tables"]["crosstabs"]["channel"]["tables"]
    counts = [c["count"] for t in crosstab for r in t["rows"] for c in r["cells"]]
    assert all(v is None or v == 0 or v >= 5 for v in counts) and None in counts
