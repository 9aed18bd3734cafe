"""Fixtures for data in and out (exports, REFI-QDA, imports, erasure): the review workflow's
fixtures (a survey with the default codebook, people, coding through the API) and the rollup
oracle of the report tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.reports.conftest import expected_rollups, stored_rollups, zero_rows
from tests.reviews.conftest import (  # noqa: F401  (fixtures, registered by import)
    Person,
    Review,
    admin_person,
    codebook_id,
    make_story,
    person,
    review,
    survey,
)


@pytest.fixture
def assert_rollups_match(db: Callable[[], Any]) -> Callable[[], None]:
    """The rollup tables equal a direct GROUP BY over the stories and final codes."""

    def check() -> None:
        with db() as session:
            stored, expected = stored_rollups(session), expected_rollups(session)
            assert zero_rows(session) == 0
        for table in expected:
            assert +stored[table] == expected[table], table

    return check
