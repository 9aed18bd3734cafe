"""The API's report cache: finished report bodies kept per process, keyed by the query and by
the state of the report's inputs in the database, so that a dashboard pulling the same report
again gets it (or a 304) without its computation.

A trends report or table is a function of its query, `suppress`, `CIT_MIN_CELL`, and of what the
database holds in three places:
- the rollups plus the pending delta rows (every read takes both; the triggers append a delta row
  with every change of a story or a final code, in the writing transaction);
- the codebook versions, for a report under `codebook_version_id` (the mapping of every recorded
  code into that version is read at read time, app.codebooks.vocabulary);
- nothing else inside the computation: the survey a report filters on is checked, and the
  Bitner table's default version resolved, by the route before the lookup, on every request.
`input_state` reads, in one statement, `report_generation` (raised by the fold and `rebuild`,
which move or drop delta rows, and by trigger on any write of `codebook_versions`, migration
1402) and the count and highest id of each delta table. Between two raises, delta rows are only
ever added, so a changed set of pending deltas is a changed count: the key moves with every
committed change, and a report stays exact as soon as the change commits, as without the cache.
A submission writes no shared row for it (issue 11): it appends its delta rows as before.

The key is read before the report is computed, so a body is never older than its key (on
PostgreSQL a change committing in between makes the body newer than its key, which only the
requests that read the older key can get). Each process keeps its own least-recently-used
entries, bounded in bytes and in number (`CIT_REPORT_CACHE_MB`, `CIT_REPORT_CACHE_ENTRIES`;
0 MB turns it off); the state lives in the database, so any number of API processes agree.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

# One statement, one snapshot: the generation and the pending deltas as the same moment saw them.
_STATE = text(
    "SELECT (SELECT generation FROM report_generation WHERE id = 1), "
    "(SELECT count(*) FROM report_story_deltas), (SELECT max(id) FROM report_story_deltas), "
    "(SELECT count(*) FROM report_code_deltas), (SELECT max(id) FROM report_code_deltas)"
)
# Puts the row back if it is missing (a test emptying every table), else raises it.
_BUMP = text(
    "INSERT INTO report_generation (id, generation) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET generation = report_generation.generation + 1"
)

InputState = tuple[int | None, ...]


def input_state(session: Session) -> InputState:
    """What a report's inputs are now, as a key: the generation, and per delta table the number
    of pending rows and the highest id."""
    row = session.connection().execute(_STATE).one()
    return tuple(None if value is None else int(value) for value in row)


def bump(session: Session) -> None:
    """Raise the generation, in the caller's transaction (a write that changes a report's inputs
    other than by appending delta rows)."""
    session.execute(_BUMP)


@dataclass(frozen=True)
class Answer:
    """A finished report response: its bytes, their ETag, media type and extra headers."""

    body: bytes
    etag: str
    media_type: str
    headers: tuple[tuple[str, str], ...] = ()


class _Flight:
    """A computation of one key under way, which requests missing the same key wait for."""

    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Answer | None = None


class ReportCache:
    """Least-recently-used answers, at most `max_bytes` of bodies and `max_entries` of them;
    an answer larger than `max_bytes` is not kept. Thread-safe (the report routes run in the
    thread pool).

    `answer` computes a missing key once however many requests miss it at the same moment (a
    fold moves the key of every dashboard's report at once): the others wait for that answer
    instead of each computing it, up to `FLIGHT_WAIT_SECONDS`, then compute it themselves; so
    they do too if that computation fails."""

    FLIGHT_WAIT_SECONDS = 30.0

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._answers: OrderedDict[Hashable, Answer] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def answer(self, key: Hashable, compute: Callable[[], Answer]) -> Answer:
        """The kept answer to `key`, else `compute()`'s (kept), computed once at a time."""
        found = self.get(key)
        if found is not None:
            return found
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            if flight.done.wait(self.FLIGHT_WAIT_SECONDS) and flight.answer is not None:
                return flight.answer
            return compute()
        try:
            flight.answer = compute()
            self.put(key, flight.answer)
            return flight.answer
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.max_entries > 0

    def get(self, key: Hashable) -> Answer | None:
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                self.misses += 1
                return None
            self._answers.move_to_end(key)
            self.hits += 1
            return answer

    def put(self, key: Hashable, answer: Answer) -> None:
        size = len(answer.body)
        if not self.enabled or size > self.max_bytes:
            return
        with self._lock:
            old = self._answers.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            self._answers[key] = answer
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._answers) > self.max_entries:
                _key, dropped = self._answers.popitem(last=False)
                self._bytes -= len(dropped.body)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def size_bytes(self) -> int:
        return self._bytes
