"""Fixtures for data in and out (exports, REFI-QDA, imports, erasure): the review workflow's
fixtures (a survey with the default codebook, people, coding through the API) and the rollup
oracle of the report tests (rollups plus pending deltas, then folded, equal a GROUP BY)."""

from __future__ import annotations

from tests.reports.conftest import (  # noqa: F401  (a fixture, registered by import)
    assert_rollups_match,
)
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
