"""Query-parameter and body field types shared by the routers."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

# Pydantic also reads a number as a Unix timestamp ("1700000000" is a date for it); the
# OpenAPI document says ISO 8601, so that is what these parameters take.
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


def _iso(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and not pattern.match(value.strip()):
            raise ValueError(f"use an ISO 8601 {what}")
        return value

    return check


IsoDate = Annotated[date, BeforeValidator(_iso(_ISO_DATE, "date (YYYY-MM-DD)"))]
IsoDateTime = Annotated[
    datetime,
    BeforeValidator(_iso(_ISO_DATETIME, "date or date and time (YYYY-MM-DD[THH:MM[:SS]][zone])")),
]


def _not_a_number(value: Any) -> Any:
    if isinstance(value, int | float):
        raise ValueError("use an ISO 8601 date and time with its zone (YYYY-MM-DDTHH:MM[:SS]Z)")
    return value


# A body's date and time (JSON): ISO 8601 with a zone, as the OpenAPI document says (format
# date-time), never a number read as a Unix timestamp (found by schemathesis: `closes_at: 0`).
IsoAwareDatetime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]
