"""The triggers keep the rollups equal to a GROUP BY over the base tables, in the same
transaction, through inserts, deletes, moves and status changes (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, literal_column, select, text, update

from app.models import Incident, IncidentCode
from app.reports import rollups
from tests.reports.conftest import StorySpec, expected_rollups, stored_rollups

D1, D2 = date(2025, 1, 31), date(2025, 2, 3)


def _seed(
    survey_id: int,
    other_survey: int,
    version: int,
    add_stories: Callable[..., list[int]],
) -> list[int]:
    return add_stories(
        [
            StorySpec(
                survey_id,
                D1,
                "dissatisfying",
                ("complaint", "owner_error"),
                touchpoint="Check-in",
                channel="Phone",
                segment="business",
            ),
            StorySpec(
                survey_id,
                D1,
                "dissatisfying",
                ("complaint",),
                touchpoint="Check-in",
                channel="Phone",
                segment="business",
            ),
            StorySpec(survey_id, D1, "satisfying", ("extra_mile",), touchpoint=None, channel=None),
            StorySpec(survey_id, D1, "satisfying", (), status="new", touchpoint="On board"),
            StorySpec(
                survey_id,
                D2,
                "satisfying",
                (),
                status="excluded",
                exclusion_reason="not an interaction",
            ),
            StorySpec(other_survey, D2, "dissatisfying", ("special_request",), segment="leisure"),
            # late in the UTC day: still D2 (the day is the UTC date)
            StorySpec(survey_id, D2, "dissatisfying", ("complaint",), hour=23),
        ],
        version,
    )


def test_inserts_fill_the_rollups(
    make_survey: Callable[..., Any],
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    assert_rollups_match: Callable[[], None],
    db: Callable[[], Any],
) -> None:
    _seed(survey_id, make_survey().id, version_id(), add_stories)
    assert_rollups_match()
    with db() as session:
        stored = stored_rollups(session)
    # Spot checks against hand counts: D1 dissatisfying in the survey, 2 stories, both coded.
    assert stored["report_story_days"][(survey_id, D1, "dissatisfying", "stories")] == 2
    assert stored["report_story_days"][(survey_id, D1, "dissatisfying", "confirmed")] == 2
    assert stored["report_story_days"][(survey_id, D2, "satisfying", "excluded")] == 1
    key = (survey_id, D1, "dissatisfying", "Check-in", "Phone", "business")
    assert sum(v for k, v in stored["report_code_days_detail"].items() if k[:6] == key) == 3
    # NULL touchpoint/channel/segment are stored as ''.
    assert (
        stored["report_story_days_detail"][(survey_id, D1, "satisfying", "", "", "", "stories")]
        == 1
    )


def test_deletes_moves_and_status_changes_keep_them_equal(
    make_survey: Callable[..., Any],
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    assert_rollups_match: Callable[[], None],
    db: Callable[[], Any],
) -> None:
    other = make_survey().id
    version, version_2 = version_id(), version_id(number=2)
    ids = _seed(survey_id, other, version, add_stories)
    first, second, third, fresh, excluded, other_story, late = ids

    steps: list[tuple[str, Any]] = [
        (
            "delete one final code",
            delete(IncidentCode).where(
                IncidentCode.incident_id == first, IncidentCode.code == "owner_error"
            ),
        ),
        (
            "rename a code (UPDATE code)",
            update(IncidentCode)
            .where(IncidentCode.incident_id == second)
            .values(code="special_request"),
        ),
        (
            "move a code to another story",
            update(IncidentCode).where(IncidentCode.incident_id == third).values(incident_id=late),
        ),
        (
            "map codes to a new codebook version",
            update(IncidentCode)
            .where(IncidentCode.incident_id == first)
            .values(codebook_version_id=version_2),
        ),
        (
            "reopen a coded story (codes stop counting)",
            update(Incident).where(Incident.id == first).values(status="in_review"),
        ),
        (
            "confirm it again",
            update(Incident)
            .where(Incident.id == first)
            .values(status="coded", finalized_at=datetime(2025, 3, 1, tzinfo=UTC)),
        ),
        (
            "exclude a new story",
            update(Incident)
            .where(Incident.id == fresh)
            .values(status="excluded", exclusion_reason="not one episode"),
        ),
        (
            "include the excluded one",
            update(Incident)
            .where(Incident.id == excluded)
            .values(status="new", exclusion_reason=None),
        ),
        (
            "correct the valence",
            update(Incident).where(Incident.id == second).values(valence="satisfying"),
        ),
        (
            "correct touchpoint and channel",
            update(Incident).where(Incident.id == first).values(touchpoint="Gate", channel=None),
        ),
        (
            "change the segment",
            update(Incident)
            .where(Incident.id == other_story)
            .values(attributes={"segment": "business", "tier": 2}),
        ),
        (
            "move a story to another day",
            update(Incident)
            .where(Incident.id == late)
            .values(submitted_at=datetime(2025, 2, 10, 0, 30, tzinfo=UTC)),
        ),
        (
            "move a story to another survey",
            update(Incident).where(Incident.id == third).values(survey_id=other),
        ),
        (
            "an unrelated update fires nothing",
            update(Incident).where(Incident.id == third).values(version=Incident.version + 1),
        ),
        ("delete a coded story with its codes", delete(Incident).where(Incident.id == late)),
        ("delete an uncoded story", delete(Incident).where(Incident.id == fresh)),
    ]
    for name, statement in steps:
        with db() as session:
            session.execute(statement)
        try:
            assert_rollups_match()
        except AssertionError as error:  # name the step that broke the rollups
            raise AssertionError(f"after {name!r}: {error}") from error

    with db() as session:
        session.execute(delete(Incident))
    with db() as session:
        assert all(not +counter for counter in stored_rollups(session, with_deltas=True).values())
    assert_rollups_match()  # and, folded, no row is left


def test_codes_added_before_the_status_count_once_coded(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    assert_rollups_match: Callable[[], None],
    db: Callable[[], Any],
) -> None:
    # The review step may write the final codes first and set the status after, or the reverse.
    (story,) = add_stories(
        [StorySpec(survey_id, D1, codes=("complaint",), status="adjudication")], version_id()
    )
    with db() as session:
        assert not stored_rollups(session, with_deltas=True)["report_code_days"]
        session.execute(update(Incident).where(Incident.id == story).values(status="coded"))
        # Same transaction: what reports read (rollups + deltas) already holds the change.
        assert sum(stored_rollups(session, with_deltas=True)["report_code_days"].values()) == 1
    assert_rollups_match()


def test_rolled_back_change_leaves_no_trace(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    assert_rollups_match: Callable[[], None],
    db: Callable[[], Any],
) -> None:
    (story,) = add_stories([StorySpec(survey_id, D1, codes=("complaint",))], version_id())
    try:
        with db() as session:
            session.execute(delete(IncidentCode).where(IncidentCode.incident_id == story))
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    assert_rollups_match()
    with db() as session:
        assert sum(stored_rollups(session)["report_code_days"].values()) == 1


def test_rebuild_recomputes_the_same_tables(
    make_survey: Callable[..., Any],
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    assert_rollups_match: Callable[[], None],
    db: Callable[[], Any],
) -> None:
    _seed(survey_id, make_survey().id, version_id(), add_stories)
    with db() as session:
        before = stored_rollups(session, with_deltas=True)
        session.execute(text("DELETE FROM report_code_days"))
        session.execute(text("UPDATE report_story_days_detail SET stories = stories + 7"))
        rollups.rebuild(session)
    with db() as session:
        assert stored_rollups(session) == before == expected_rollups(session)
    assert_rollups_match()


def test_period_truncation_in_sql(db: Callable[[], Any]) -> None:
    days = [
        date(2024, 12, 30),
        date(2025, 1, 1),
        date(2025, 3, 31),
        date(2025, 4, 6),
        date(2025, 6, 15),
        date(2025, 12, 31),
        date(2024, 2, 29),
    ]
    with db() as session:
        dialect = session.get_bind().dialect.name
        for period in rollups.PERIODS:
            for day in days:
                literal = f"'{day}'" if dialect == "sqlite" else f"DATE '{day}'"
                expression = rollups.period_expression(dialect, literal_column(literal), period)
                found = rollups.as_date(session.scalar(select(expression)))
                assert found == rollups.period_start(day, period), (period, day)
                nxt = rollups.next_period(found, period)
                assert rollups.previous_period(nxt, period) == found
                assert found <= day < nxt
