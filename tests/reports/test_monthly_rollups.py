"""The monthly rollups (issue 12): month, quarter and whole-range reports read them, and every
response is identical to the same report read from the daily rollups, with deltas pending
(positive and negative), after a fold, after a rebuild, and after the migration that creates
them; the exact figures equal a GROUP BY over the base tables."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from app import migrate
from app.codebooks import service as codebooks
from app.db import create_db_engine
from app.erasure.service import erase_incident
from app.models import Incident, IncidentCode
from app.reports import rollups
from app.reports.trends import TrendsQuery, _fetch, _fetch_tied
from tests.db.test_migrations import scratch_url  # noqa: F401 (a fixture)
from tests.reports.conftest import API, StorySpec, expected_rollups, stored_rollups

TOUCHPOINTS = ("Check-in", "Gate", "On board", None)
# Month ends and starts side by side: a day's month must not slip.
DAYS = (
    date(2025, 1, 1),
    date(2025, 1, 31),
    date(2025, 2, 1),
    date(2025, 2, 14),
    date(2025, 3, 31),
    date(2025, 4, 1),
    date(2025, 5, 20),
    date(2025, 6, 30),
    date(2025, 7, 1),
)
MONTHLY_TABLES = (
    "report_story_months",
    "report_code_months",
    "report_story_months_by",
    "report_code_months_by",
    "report_story_months_detail",
    "report_code_months_detail",
    "report_story_groupings",
    "report_code_groupings",
)


def _version(db: Callable[[], Any]) -> int:
    """A codebook with a parent, children and Bitner groups (mapped reads, roll-ups)."""

    def code(key: str, **extra: Any) -> dict[str, Any]:
        return {"key": key, "label": key, "definition": key, **extra}

    with db() as session:
        version = codebooks.create_codebook(
            session,
            {
                "key": "monthly",
                "name": "Monthly",
                "codes": [
                    code("failure", bitner_group="1: service failure", codable=False),
                    code("slow", parent="failure"),
                    code("rude", parent="failure"),
                    code("extra_mile", bitner_group="3: unprompted"),
                ],
            },
            None,
        )
        return int(version.id)


def _seed(
    surveys: list[int], version: int, add: Callable[..., list[int]], seed: int = 3
) -> list[int]:
    rng = random.Random(seed)
    specs = []
    for day in DAYS:
        for touchpoint in TOUCHPOINTS:
            for _ in range(rng.choice((1, 3, 6, 9))):
                status = rng.choices(("coded", "excluded", "new"), (8, 1, 1))[0]
                codes = tuple(
                    c for c, p in (("slow", 0.5), ("rude", 0.3), ("extra_mile", 0.4))
                    if rng.random() < p
                )  # fmt: skip
                specs.append(
                    StorySpec(
                        rng.choice(surveys),
                        day,
                        rng.choice(("satisfying", "dissatisfying")),
                        codes if status == "coded" else (),
                        status=status,
                        touchpoint=touchpoint,
                        channel=rng.choice(("Phone", "Web", None)),
                        segment=rng.choice(("gold", "basic", None)),
                        exclusion_reason="not an interaction" if status == "excluded" else None,
                        hour=rng.choice((0, 12, 23)),
                    )
                )
    return add(specs, version)


def _paths(survey_id: int, version: int) -> list[tuple[str, dict[str, Any]]]:
    paths: list[tuple[str, dict[str, Any]]] = [
        ("trends", {"period": "month"}),
        ("trends", {"period": "quarter"}),
        ("trends", {"period": "month", "from": "2025-02-10", "to": "2025-05-03"}),
        ("trends", {"period": "quarter", "group_by": "survey"}),
        ("trends", {"period": "month", "group_by": "touchpoint,channel"}),
        ("trends", {"period": "quarter", "group_by": "channel,segment"}),
        ("trends", {"period": "all", "group_by": "survey,touchpoint,segment"}),
        ("trends", {"period": "month", "group_by": "touchpoint,channel,segment"}),
        # The grouping rollups (1205): a pair per month and quarter, all three per quarter, in
        # any order, with a survey, a survey filter and from/to inside quarters.
        ("trends", {"period": "quarter", "group_by": "segment,touchpoint,channel"}),
        ("trends", {"period": "month", "group_by": "segment,touchpoint", "survey_id": survey_id}),
        ("trends", {"period": "month", "group_by": "survey,channel,touchpoint"}),
        (
            "trends",
            {
                "period": "quarter",
                "group_by": "touchpoint,segment",
                "from": "2025-02-10",
                "to": "2025-05-03",
            },
        ),
        ("trends", {"period": "all", "group_by": "channel,segment"}),
        ("trends", {"period": "month", "group_by": "channel", "survey_id": survey_id}),
        ("trends", {"period": "quarter", "group_by": "segment", "codebook_version_id": version}),
        ("bitner", {"period": "quarter", "codebook_version_id": version}),
        ("cooccurrence", {"period": "quarter"}),
        ("crosstab", {"by": "touchpoint", "period": "all"}),
    ]
    for dimension in rollups.DIMENSIONS:
        paths += [
            ("trends", {"period": "month", "group_by": dimension}),
            ("crosstab", {"by": dimension, "period": "quarter"}),
        ]
    return paths


@pytest.fixture
def daily_reads(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """A context in which the reports read the daily rollups only (the path before 1203)."""

    class Daily:
        def __enter__(self) -> None:
            monkeypatch.setattr(rollups, "MONTHLY_READS", False)

        def __exit__(self, *_: object) -> None:
            monkeypatch.setattr(rollups, "MONTHLY_READS", True)

    return Daily


def _assert_same_reports(
    client: TestClient,
    paths: list[tuple[str, dict[str, Any]]],
    who: list[dict[str, str]],
    daily_reads: Callable[[], Any],
) -> None:
    """Every report, viewer (suppressed) and team (exact), byte for byte on both paths."""
    for path, params in paths:
        for headers in who:
            exact = {"suppress": "false"} if headers is who[-1] else {}
            url = f"{API}/{path}"
            monthly = client.get(url, params={**params, **exact}, headers=headers)
            with daily_reads():
                daily = client.get(url, params={**params, **exact}, headers=headers)
            assert monthly.status_code == 200, (path, params, monthly.text)
            assert monthly.content == daily.content, (path, params, exact)


def _quarter_counts_from_base(session: Session, dimension: str) -> Counter[tuple[Any, ...]]:
    """(quarter, code, valence, value) -> confirmed stories, and (quarter, valence, value,
    'base') -> confirmed stories, straight from the base tables."""
    counts: Counter[tuple[Any, ...]] = Counter()
    incidents = {i.id: i for i in session.scalars(select(Incident))}
    for incident in incidents.values():
        if incident.status != "coded":
            continue
        day = incident.submitted_at.astimezone(UTC).date()
        quarter = rollups.period_start(day, "quarter")
        value = (
            incident.attributes.get("segment")
            if dimension == "segment"
            else getattr(incident, dimension)
        )
        counts[(quarter, incident.valence, value, "base")] += 1
    for code in session.scalars(select(IncidentCode)):
        incident = incidents[code.incident_id]
        if incident.status != "coded":
            continue
        day = incident.submitted_at.astimezone(UTC).date()
        value = (
            incident.attributes.get("segment")
            if dimension == "segment"
            else getattr(incident, dimension)
        )
        counts[(rollups.period_start(day, "quarter"), code.code, incident.valence, value)] += 1
    return counts


def _assert_exact_equals_base(db: Callable[[], Any], client: TestClient, admin: Any) -> None:
    for dimension in rollups.DIMENSIONS:
        response = client.get(
            f"{API}/trends",
            params={"period": "quarter", "group_by": dimension, "suppress": "false"},
            headers=admin,
        )
        found: Counter[tuple[Any, ...]] = Counter()
        for row in response.json()["rows"]:
            key = (date.fromisoformat(row["period"]), row["valence"], row[dimension])
            if row["count"]:
                found[(key[0], row["code"], key[1], key[2])] = row["count"]
            found[(*key, "base")] = row["base"]
        with db() as session:
            expected = _quarter_counts_from_base(session, dimension)
        assert +found == +expected, dimension


def _change_with_signs(db: Callable[[], Any], ids: list[int]) -> None:
    """Changes whose deltas are negative as well as positive: a code deleted, a code renamed,
    a story re-dated across a month and a quarter end, one moved to another touchpoint, a
    confirmed story excluded, a new one confirmed, and one erased."""
    with db() as session:
        coded = list(
            session.scalars(
                select(Incident.id)
                .where(Incident.id.in_(ids), Incident.status == "coded")
                .order_by(Incident.id)
            )
        )
        fresh = session.scalar(
            select(Incident.id).where(Incident.status == "new").order_by(Incident.id)
        )
        first_code = session.scalar(
            select(IncidentCode.id)
            .where(IncidentCode.incident_id.in_(coded))
            .order_by(IncidentCode.id)
        )
        session.execute(delete(IncidentCode).where(IncidentCode.id == first_code))
        session.execute(
            update(IncidentCode)
            .where(IncidentCode.incident_id == coded[1], IncidentCode.code == "slow")
            .values(code="rude")
        )
        # 31 March, 23:00 UTC -> 1 April: another month and another quarter.
        story = session.get(Incident, coded[2])
        story.submitted_at = datetime(2025, 3, 31, 23, tzinfo=UTC) + timedelta(hours=2)
        session.execute(update(Incident).where(Incident.id == coded[3]).values(touchpoint="Lounge"))
        session.execute(
            update(Incident)
            .where(Incident.id == coded[4])
            .values(status="excluded", exclusion_reason="duplicate")
        )
        if fresh is not None:
            session.execute(
                update(Incident)
                .where(Incident.id == fresh)
                .values(status="coded", finalized_at=datetime.now(UTC))
            )
        erase_incident(session, coded[5], reason="the respondent asked", actor=None)


@pytest.mark.parametrize("scan_zeros_from", [rollups.SCAN_ZEROS_FROM, 0])
def test_month_and_quarter_reports_equal_the_daily_path_through_every_change(
    scan_zeros_from: int,
    monkeypatch: pytest.MonkeyPatch,
    db: Callable[[], Any],
    make_survey: Callable[..., Any],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
    daily_reads: Callable[[], Any],
    assert_rollups_match: Callable[[], None],
) -> None:
    # 0: the fold deletes the zero rows by a scan (a bulk fold's way: the grouping tables'
    # on SQLite, every table's on PostgreSQL).
    monkeypatch.setattr(rollups, "SCAN_ZEROS_FROM", scan_zeros_from)
    surveys = [make_survey().id, make_survey().id]
    version = _version(db)
    ids = _seed(surveys, version, add_stories)
    paths = _paths(surveys[0], version)
    who = [token_for("viewer"), admin]

    # Nothing folded yet: every figure comes from the pending deltas.
    _assert_same_reports(client, paths, who, daily_reads)
    _assert_exact_equals_base(db, client, admin)
    assert_rollups_match()  # folds: rollup tables alone, daily and monthly, equal the oracle
    _assert_same_reports(client, paths, who, daily_reads)

    _change_with_signs(db, ids)
    with db() as session:
        pending = session.scalar(text("SELECT count(*) FROM report_story_deltas WHERE stories < 0"))
        assert pending, "the changes should leave negative deltas pending"
    _assert_same_reports(client, paths, who, daily_reads)
    _assert_exact_equals_base(db, client, admin)
    assert_rollups_match()
    _assert_same_reports(client, paths, who, daily_reads)
    _assert_exact_equals_base(db, client, admin)

    with db() as session:
        before = stored_rollups(session)
        rollups.rebuild(session)
    with db() as session:
        after = stored_rollups(session)
        expected = expected_rollups(session)
    for table in MONTHLY_TABLES:
        assert +after[table] == +before[table] == expected[table], table
    _assert_same_reports(client, paths, who, daily_reads)


def test_month_reports_read_the_monthly_tables(
    db: Callable[[], Any],
    make_survey: Callable[..., Any],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
    daily_reads: Callable[[], Any],
) -> None:
    version = _version(db)
    _seed([make_survey().id], version, add_stories)
    with db() as session:
        rollups.fold(session)
    with db() as session:  # damage the monthly tables only: the month reports must show it
        for table in (
            "report_story_months_by",
            "report_story_months",
            "report_story_months_detail",
            "report_story_groupings",
        ):
            session.execute(
                text(f"UPDATE {table} SET stories = stories + 100, confirmed = confirmed + 100")
            )
    for path, params in (
        ("trends", {"period": "month", "group_by": "touchpoint"}),
        ("crosstab", {"by": "channel", "period": "quarter"}),
        ("trends", {"period": "quarter"}),
        ("trends", {"period": "month", "group_by": "touchpoint,channel"}),
        ("trends", {"period": "quarter", "group_by": "survey,channel,segment"}),
    ):
        url = f"{API}/{path}"
        exact = {**params, "suppress": "false"}
        monthly = client.get(url, params=exact, headers=admin)
        with daily_reads():
            daily = client.get(url, params=exact, headers=admin)
        assert monthly.status_code == daily.status_code == 200
        assert monthly.content != daily.content, (path, params)
    # Day and week reports read the daily tables, whatever the monthly ones hold.
    weekly = {"period": "week", "suppress": "false"}
    week = client.get(f"{API}/trends", params=weekly, headers=admin)
    with daily_reads():
        daily_week = client.get(f"{API}/trends", params=weekly, headers=admin)
    assert week.content == daily_week.content


def test_only_whole_months_read_the_monthly_tables() -> None:
    jan, jan_end, feb_mid = date(2025, 1, 1), date(2025, 1, 31), date(2025, 2, 14)
    assert rollups.monthly("month", None, None)
    assert rollups.monthly("quarter", jan, date(2025, 3, 31))
    assert rollups.monthly("all", None, date.max)
    assert rollups.monthly("month", jan, jan_end)
    assert not rollups.monthly("month", feb_mid, None)
    assert not rollups.monthly("quarter", jan, feb_mid)
    assert not rollups.monthly("day", None, None)
    assert not rollups.monthly("week", jan, jan_end)


@pytest.fixture
def scratch_engine(scratch_url: str) -> Iterator[tuple[str, Any]]:  # noqa: F811
    migrate.upgrade(scratch_url)
    engine = create_db_engine(scratch_url)
    yield scratch_url, engine
    engine.dispose()


def test_the_migration_fills_the_monthly_tables_from_the_daily_ones(
    scratch_engine: tuple[str, Any],
) -> None:
    """Upgrade from 1202 with stories folded and deltas pending: the monthly tables read
    exactly at once, and fold on from there."""
    url, engine = scratch_engine
    migrate.downgrade(url, "1202")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO surveys (slug, title, introduction, language, questions, choices, "
                "status, created_at, updated_at, version, double_coding_share, review_order) "
                "VALUES ('m', 'M', '', 'en', '{}', '{}', 'open', :now, :now, 1, 0, 'oldest')"
            ),
            {"now": datetime(2025, 1, 1, tzinfo=UTC)},
        )
        conn.execute(
            text(
                "INSERT INTO codebooks (key, name, created_at, current_version) "
                "VALUES ('m', 'M', :now, 1)"
            ),
            {"now": datetime(2025, 1, 1, tzinfo=UTC)},
        )
        conn.execute(
            text(
                "INSERT INTO codebook_versions (codebook_id, number, content, change_note, "
                "created_by, created_at) SELECT id, 1, '{}', '', 't', created_at FROM codebooks"
            )
        )
    with Session(engine) as session, session.begin():
        survey = int(session.scalar(text("SELECT id FROM surveys")))
        version = int(session.scalar(text("SELECT id FROM codebook_versions")))

    def add(day: date, touchpoint: str | None, codes: tuple[str, ...], key: str) -> None:
        with Session(engine) as session, session.begin():
            moment = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
            incident = Incident(
                survey_id=survey,
                submission_key=key,
                what_happened="At the gate.",
                valence="dissatisfying",
                touchpoint=touchpoint,
                language="en",
                attributes={"segment": "gold"},
                redacted={},
                redaction_spans={},
                submitted_at=moment,
                status="coded",
                finalized_at=moment,
            )
            session.add(incident)
            session.flush()
            session.add_all(
                IncidentCode(
                    incident_id=incident.id,
                    code=c,
                    codebook_version_id=version,
                    source="review",
                    confirmed_by="t",
                )
                for c in codes
            )

    for n, day in enumerate(DAYS):
        add(day, TOUCHPOINTS[n % 4], ("slow", "rude")[: 1 + n % 2], f"folded-{n}")
    # What 1202's fold did: the deltas into the daily tables (rebuild's daily part, here).
    with Session(engine) as session, session.begin():
        for statement in (
            "DELETE FROM report_story_deltas",
            "DELETE FROM report_code_deltas",
        ):
            session.execute(text(statement))
    with Session(engine) as session, session.begin():
        _daily_rebuild_1202(session)
    for n, day in enumerate(DAYS[::2]):  # left pending across the upgrade
        add(day, "Gate", ("slow",), f"pending-{n}")
    with Session(engine) as session:
        deleted = session.scalar(select(Incident.id).order_by(Incident.id).limit(1))
    with Session(engine) as session, session.begin():
        session.execute(delete(Incident).where(Incident.id == deleted))  # a negative delta

    migrate.upgrade(url)
    with Session(engine) as session:
        read, expected = stored_rollups(session, with_deltas=True), expected_rollups(session)
    for table in MONTHLY_TABLES:
        assert +read[table] == expected[table] and expected[table], table
    with Session(engine) as session, session.begin():
        assert rollups.fold(session) > 0
    with Session(engine) as session:
        stored, expected = stored_rollups(session), expected_rollups(session)
    for table in expected:
        assert +stored[table] == expected[table], table


def _daily_rebuild_1202(session: Session) -> None:
    """`rollups.rebuild` as revision 1202 knew it: the daily tables only."""
    dialect = session.get_bind().dialect.name
    month_free = [
        s
        for s in _rebuild_statements(session, dialect)
        if "_months" not in s
        and not s.startswith("DELETE FROM report_")
        and "report_generation" not in s  # 1402's, after 1202
    ]
    for statement in month_free:
        session.execute(text(statement))


def _rebuild_statements(session: Session, dialect: str) -> list[str]:
    executed: list[str] = []

    class Recorder:
        def execute(self, statement: Any, *args: Any) -> None:
            executed.append(str(statement))

        def flush(self) -> None:
            pass

        def get_bind(self) -> Any:
            return session.get_bind()

    rollups.rebuild(Recorder())  # type: ignore[arg-type]
    return executed


def _tied_queries(survey_id: int) -> list[TrendsQuery]:
    queries = []
    for period in ("quarter", "all"):
        for group_by in ((), ("touchpoint",), ("survey",), ("channel", "segment")):
            queries.append(TrendsQuery(period, group_by))  # type: ignore[arg-type]
    queries += [
        TrendsQuery("quarter", ("segment",), survey_id=survey_id),
        TrendsQuery("quarter", ("touchpoint",), date_from=date(2025, 2, 10)),
        TrendsQuery("all", ("channel",), date_from=date(2025, 2, 10), date_to=date(2025, 5, 3)),
    ]
    return queries


def test_suppressed_reports_sum_the_finer_period_they_read(
    db: Callable[[], Any],
    make_survey: Callable[..., Any],
    add_stories: Callable[..., list[int]],
    daily_reads: Callable[[], Any],
    assert_rollups_match: Callable[[], None],
) -> None:
    """A suppressed quarter (whole-range) report reads its months (quarters) anyway, and sums
    its own cells from them instead of reading the rollups again: the cells are those of its
    own GROUP BY, with deltas pending (negative too), folded, and on the daily path."""
    surveys = [make_survey().id, make_survey().id]
    version = _version(db)
    ids = _seed(surveys, version, add_stories)

    def check() -> None:
        for query in _tied_queries(surveys[0]):
            for reads in (daily_reads, None):
                with db() as session, reads() if reads else nullcontext():
                    direct = _fetch(session, query)
                    tied = _fetch_tied(session, query, {})
                assert tied.stories == direct.stories, query
                assert tied.codes == direct.codes, query
                assert tied.code_names == direct.code_names, query
                assert direct.codes, query

    check()
    _change_with_signs(db, ids)
    with db() as session:
        assert session.scalar(text("SELECT count(*) FROM report_code_deltas WHERE n < 0"))
    check()
    assert_rollups_match()  # folds
    check()


def test_a_grouping_report_reads_its_rollup_and_deltas_in_one_statement(
    db: Callable[[], Any],
    make_survey: Callable[..., Any],
    add_stories: Callable[..., list[int]],
    app: Any,
) -> None:
    """report_*_groupings and the pending deltas are read by one statement per measure (one
    snapshot): as two, on PostgreSQL's READ COMMITTED a fold committing between them moved
    deltas out of the second's sight after the first had read the rollup without them."""
    from sqlalchemy import event

    version = _version(db)
    _seed([make_survey().id], version, add_stories)
    with db() as session:
        rollups.fold(session)
    _seed([make_survey().id], version, add_stories)  # pending deltas beside the rollup
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    query = TrendsQuery("month", ("touchpoint", "channel"))  # type: ignore[arg-type]
    assert rollups.grouping_source(query.period, query.group_by) == ("touchpoint,channel", "month")
    engine = app.state.engine  # the one db() sessions use
    event.listen(engine, "before_cursor_execute", record)
    try:
        with db() as session:
            cells = _fetch(session, query)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    reads = [s for s in seen if "report_story_groupings" in s or "report_code_groupings" in s]
    assert len(reads) == 2, reads  # stories, codes
    assert all("report_story_deltas" in s or "report_code_deltas" in s for s in reads)
    assert cells.stories and cells.codes
