"""The review queue: order, leases, double coding, assignments first, concurrency."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import Incident, ReviewLease, Survey
from app.models.base import utcnow
from app.reviews.queue import LEASE_MINUTES
from app.reviews.service import coders_required_for


def test_oldest_first_and_a_lease_keeps_others_away(
    review: Any, person: Callable[..., Any], survey: Survey, make_story: Any, db: Any
) -> None:
    newer = make_story(survey, age_minutes=10)
    oldest = make_story(survey, age_minutes=30)
    middle = make_story(survey, age_minutes=20)
    alice, bob, carol, dan = (person() for _ in range(4))

    item = review.next(alice)
    assert item is not None and item["incident"]["id"] == oldest
    expires = datetime.fromisoformat(item["lease_expires_at"])
    assert (
        timedelta(minutes=LEASE_MINUTES - 1)
        < expires - utcnow()
        <= timedelta(minutes=LEASE_MINUTES)
    )
    assert item["incident"]["coders_required"] == 1
    assert item["incident"]["view"] == "redacted"

    # Calling again hands alice the story she holds (lease renewed), not a second one.
    assert review.next_id(alice) == oldest
    assert review.next_id(bob) == middle
    assert review.next_id(carol) == newer
    assert review.next(dan) is None  # all held: 204
    with db() as session:
        assert session.scalar(select(func.count()).select_from(ReviewLease)) == 3

    # Coding releases the lease; the story is final and leaves the queue.
    review.code(alice, oldest, ["complaint"])
    assert review.next(dan) is None
    assert review.next(alice) is None  # she coded hers; the others are held


def test_an_expired_lease_returns_the_story(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Any,
    expire_leases: Callable[[], None],
) -> None:
    story = make_story(survey)
    alice, bob = person(), person()
    assert review.next_id(alice) == story
    assert review.next(bob) is None
    expire_leases()
    assert review.next_id(bob) == story
    assert review.next(alice) is None  # bob holds it now
    # The lease protects the single-coded story: alice cannot code it while bob holds it, and
    # is told who holds it until when.
    refused = review.put(alice, story, ["complaint"])
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["lease_holders"][0]["researcher"] == bob.name
    assert bob.name in problem["detail"] and "until" in problem["detail"]
    # Researchers cannot break another's lease; an admin can.
    url = f"/api/v1/review/leases/{story}"
    denied = client.delete(url, params={"researcher": bob.name}, headers=alice.headers)
    assert denied.status_code == 403
    admin = person("admin")
    leases = client.get("/api/v1/review/leases", headers=admin.headers).json()
    assert [(lease["incident_id"], lease["researcher"]) for lease in leases] == [(story, bob.name)]
    broken = client.delete(url, params={"researcher": bob.name}, headers=admin.headers)
    assert broken.status_code == 204
    assert client.get("/api/v1/review/leases", headers=admin.headers).json() == []
    review.code(alice, story, ["complaint"])
    # bob's later attempt finds it final.
    assert review.put(bob, story, ["complaint"]).status_code == 409
    assert review.next(bob) is None


def test_release_gives_a_story_back(
    client: TestClient, review: Any, person: Callable[..., Any], survey: Survey, make_story: Any
) -> None:
    story = make_story(survey)
    alice, bob = person(), person()
    assert review.next_id(alice) == story
    released = client.delete(f"/api/v1/review/leases/{story}", headers=alice.headers)
    assert released.status_code == 204
    assert review.next_id(bob) == story


def test_least_certain_first(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, review_order="least_certain")
    sure = make_story(survey, age_minutes=50, certainty=0.45)
    unscored = make_story(survey, age_minutes=60)
    unsure = make_story(survey, age_minutes=10, certainty=0.02)
    middling = make_story(survey, age_minutes=5, certainty=0.2)
    order = [review.next_id(person()) for _ in range(4)]
    assert order == [unsure, middling, sure, unscored]


def test_stories_assigned_to_the_caller_come_first(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Any,
    admin_person: Any,
) -> None:
    old = make_story(survey, age_minutes=60)
    mine = make_story(survey, age_minutes=10)
    theirs = make_story(survey, age_minutes=50)
    alice, bob, carol = person(name="alice"), person(name="bob"), person(name="carol")
    for name, ids in (("alice", [mine]), ("bob", [theirs])):
        response = client.post(
            "/api/v1/review/assignments",
            json={"researcher": name, "incident_ids": ids},
            headers=admin_person.headers,
        )
        assert response.status_code == 201
    assert review.next_id(alice) == mine
    # carol: unassigned stories before those assigned to somebody else
    assert review.next_id(carol) == old
    assert review.next_id(bob) == theirs


def test_skips_final_and_own_stories(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    single = make_survey(codebook_id=codebook_id)
    double = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob, carol = person(), person(), person()
    excluded = make_story(single, age_minutes=90)
    review.exclude(alice, excluded, "no interaction")
    coded = make_story(single, age_minutes=80)
    review.code(alice, coded, ["complaint"])
    halfway = make_story(double, age_minutes=70)
    review.code(alice, halfway, ["complaint"])
    fresh = make_story(single, age_minutes=60)

    assert review.next_id(alice) == fresh  # never her own coded story again
    assert review.next_id(bob) == halfway  # needs a second coder
    assert review.next(carol) is None  # halfway: one coding + bob's lease = 2
    # survey filter
    assert review.next(alice, survey_id=double.id) is None
    assert review.next_id(alice, survey_id=single.id) == fresh


def test_the_callers_own_expired_lease_is_dropped_and_the_story_comes_back(
    review: Any,
    db: Callable[[], Any],
    person: Callable[..., Any],
    survey: Survey,
    make_story: Any,
    expire_leases: Callable[[], None],
) -> None:
    story = make_story(survey)
    alice = person()
    assert review.next_id(alice) == story
    expire_leases()
    # Her expired lease goes before the queue looks (the story and coder pair is unique).
    item = review.next(alice)
    assert item is not None and item["incident"]["id"] == story
    assert datetime.fromisoformat(item["lease_expires_at"]) > utcnow()
    with db() as session:
        leases = session.execute(select(ReviewLease.expires_at)).scalars().all()
    assert len(leases) == 1 and leases[0] > utcnow()


def test_a_double_coded_story_goes_to_two_coders_never_twice_to_one(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    expire_leases: Callable[[], None],
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    story = make_story(survey)
    alice, bob, carol = person(), person(), person()
    item = review.next(alice)
    assert item is not None and item["incident"]["coders_required"] == 2
    assert review.next_id(bob) == story  # leased to two different coders at once
    assert review.next(carol) is None
    review.code(alice, story, ["complaint"])
    assert review.next(alice) is None  # coded by her: never handed to her again
    expire_leases()
    assert review.next_id(carol) == story  # bob's lease ran out
    review.code(carol, story, ["complaint"])
    assert review.next(bob) is None


def test_coders_required_follows_the_share(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=50)
    stories = [make_story(survey, age_minutes=100 - i) for i in range(40)]
    expected = {s: coders_required_for(s, 50) for s in stories}
    assert set(expected.values()) == {1, 2}  # the hash splits 40 ids both ways
    alice = person()
    seen: dict[int, int] = {}
    for _ in stories:
        item = review.next(alice)
        assert item is not None
        incident = item["incident"]
        seen[incident["id"]] = incident["coders_required"]
        review.code(alice, incident["id"], ["complaint"])
    assert seen == expected
    assert coders_required_for(stories[0], 0) == 1
    assert coders_required_for(stories[0], 100) == 2
    assert all(coders_required_for(i, 37) == coders_required_for(i, 37) for i in range(100))
    assert 600 <= sum(coders_required_for(i, 37) == 2 for i in range(1, 2001)) <= 880


@pytest.mark.parametrize("share", [0, 100])
def test_concurrent_next_calls_never_share_a_story(
    share: int,
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    threads: Callable[[int], Any],
    db: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=share)
    stories = [make_story(survey) for _ in range(12)]
    coders = [person() for _ in range(8)]
    counter = itertools.count()

    def work(coder: Any) -> list[int]:
        got: list[int] = []
        while True:
            response = client.post("/api/v1/review/next", headers=coder.headers)
            if response.status_code == 204:
                return got
            assert response.status_code == 200, response.text
            incident = response.json()["incident"]
            got.append(incident["id"])
            code = ["complaint", "extra_mile"][next(counter) % 2]
            saved = review.put(coder, incident["id"], [code], etag=response.headers["ETag"])
            if saved.status_code == 412:  # the other coder wrote first: read and retry
                saved = review.put(coder, incident["id"], [code])
            assert saved.status_code == 200, saved.text

    handed = list(threads(8).map(work, coders))
    per_story = Counter(story for got in handed for story in got)
    required = 2 if share == 100 else 1
    assert per_story == {story: required for story in stories}
    for got in handed:
        assert len(got) == len(set(got))  # never twice to one coder
    with db() as session:
        open_ = session.scalar(
            select(func.count()).where(Incident.status.in_(("new", "in_review")))
        )
        assert open_ == 0
