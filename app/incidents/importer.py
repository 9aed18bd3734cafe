"""Importing stories from an earlier study (JSON Lines or CSV), optionally with confirmed codes.

Every row is checked on its own: a bad row is reported by its line number and the good rows
around it are stored. Rows carry an import key (their `id`, or a hash of their content), so
running the same import twice stores nothing twice."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.codebooks.service import current_version, load_nlp_codebook
from app.config import Settings
from app.db import session_scope
from app.i18n import SUPPORTED_LANGUAGES
from app.incidents.redaction import redaction_columns
from app.incidents.service import ANSWER_FIELDS, VALENCES, CleanStory, parse_occurred_on
from app.models import Codebook, Incident, IncidentCode, Survey
from app.models.base import utcnow
from app.suggestions.queue import enqueue_suggestions

KNOWN_COLUMNS = {
    "id",
    "text",
    *ANSWER_FIELDS,
    "valence",
    "touchpoint",
    "channel",
    "submitted_at",
    "codes",
    "attributes",
    "language",
}
CHUNK = 500


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    coded: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class RowError(ValueError):
    pass


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(line number, row or the reason it cannot be read) for a .jsonl/.ndjson or .csv file."""
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            for row in reader:
                extra = row.pop(None, None)  # type: ignore[call-overload]
                if extra:
                    yield reader.line_num, RowError("more values than columns")
                    continue
                yield reader.line_num, {k: v for k, v in row.items() if v not in ("", None)}
        elif suffix in (".jsonl", ".ndjson", ".json"):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, RowError(f"not valid JSON ({exc.msg})")
                    continue
                if not isinstance(data, dict):
                    yield number, RowError("a line must hold a JSON object")
                    continue
                yield number, data
        else:
            raise ValueError(f"{path.name}: use a .jsonl, .ndjson or .csv file")


def count_rows(path: Path) -> int:
    with path.open(encoding="utf-8-sig") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(lines - 1, 0) if path.suffix.lower() == ".csv" else lines


@dataclass(frozen=True)
class PreparedRow:
    key: str
    story: CleanStory
    submitted_at: datetime | None
    attributes: dict[str, Any]
    codes: tuple[str, ...]
    language: str | None = None


def prepare(row: dict[str, Any], codes: set[str], settings: Settings) -> PreparedRow:
    """Check one row; raises RowError naming the field."""
    answers: dict[str, str | None] = {}
    for name in ANSWER_FIELDS:
        value = row.get(name)
        if name == "what_happened" and value is None:
            value = row.get("text")
        if value is not None and not isinstance(value, str):
            raise RowError(f"{name}: must be text")
        if value is not None and "\x00" in value:
            raise RowError(f"{name}: contains a NUL character")
        if value is not None and len(value) > settings.max_answer_chars:
            raise RowError(f"{name}: longer than {settings.max_answer_chars} characters")
        answers[name] = value if value and value.strip() else None
    if answers["what_happened"] is None:
        raise RowError("what_happened (or text): the story is empty")
    valence = row.get("valence")
    if valence not in VALENCES:
        raise RowError(f"valence: must be one of {', '.join(VALENCES)}, not {valence!r}")
    for name in ("touchpoint", "channel"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise RowError(f"{name}: must be text")
    answers.update(valence=valence, touchpoint=row.get("touchpoint"), channel=row.get("channel"))

    submitted_at = None
    if row.get("submitted_at"):
        try:
            submitted_at = datetime.fromisoformat(str(row["submitted_at"]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise RowError("submitted_at: not an ISO date or date-time") from exc
        if submitted_at.tzinfo is None:
            submitted_at = submitted_at.replace(tzinfo=UTC)

    raw_codes = row.get("codes") or []
    if isinstance(raw_codes, str):
        raw_codes = [c.strip() for c in raw_codes.replace(",", ";").split(";") if c.strip()]
    if not isinstance(raw_codes, list) or not all(isinstance(c, str) for c in raw_codes):
        raise RowError("codes: a list of code keys, or keys separated by ';'")
    unknown = sorted(set(raw_codes) - codes)
    if unknown:
        raise RowError(f"codes: not active codes of the survey's codebook: {', '.join(unknown)}")

    attributes = row.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise RowError("attributes: must be an object")
    attributes = {**{k: v for k, v in row.items() if k not in KNOWN_COLUMNS}, **attributes}
    if row.get("id") is not None:
        attributes.setdefault("import_id", str(row["id"]))
        key = "import:" + hashlib.sha256(str(row["id"]).encode()).hexdigest()[:40]
    else:
        digest = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
        key = "import:" + hashlib.sha256(digest.encode()).hexdigest()[:40]
    language = row.get("language")
    if language is not None and language not in SUPPORTED_LANGUAGES:
        raise RowError(f"language: one of {', '.join(SUPPORTED_LANGUAGES)}, not {language!r}")
    story = CleanStory(answers, parse_occurred_on(answers["occurred"]))
    return PreparedRow(
        key, story, submitted_at, attributes, tuple(dict.fromkeys(raw_codes)), language
    )


def import_incidents(
    factory: sessionmaker[Session],
    path: Path,
    survey_id: int,
    settings: Settings,
    *,
    imported_by: str,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    with session_scope(factory, write=False) as session:
        survey = session.get(Survey, survey_id)
        if survey is None:
            raise ValueError(f"survey {survey_id} does not exist")
        session.expunge(survey)
        version_id, active = None, set()
        if survey.codebook_id is not None:
            codebook = session.get(Codebook, survey.codebook_id)
            assert codebook is not None
            version = current_version(session, codebook)
            version_id = version.id
            active = {c.key for c in load_nlp_codebook(version).active_codes}

    chunk: list[tuple[int, PreparedRow]] = []
    for number, row in read_rows(path):
        if progress is not None:
            progress(1)
        if isinstance(row, RowError):
            report.errors.append((number, str(row)))
            continue
        try:
            prepared = prepare(row, active, settings)
            if prepared.codes and version_id is None:
                raise RowError("codes: the survey has no codebook to check them against")
        except RowError as exc:
            report.errors.append((number, str(exc)))
            continue
        chunk.append((number, prepared))
        if len(chunk) >= CHUNK:
            _store(factory, survey, version_id, chunk, imported_by, report)
            chunk = []
    if chunk:
        _store(factory, survey, version_id, chunk, imported_by, report)
    return report


def _store(
    factory: sessionmaker[Session],
    survey: Survey,
    version_id: int | None,
    chunk: list[tuple[int, PreparedRow]],
    imported_by: str,
    report: ImportReport,
) -> None:
    with session_scope(factory) as session:
        keys = [p.key for _, p in chunk]
        seen = set(
            session.scalars(
                select(Incident.submission_key).where(
                    Incident.survey_id == survey.id, Incident.submission_key.in_(keys)
                )
            )
        )
        stored_ids = []
        for number, prepared in chunk:
            if prepared.key in seen:
                report.duplicates += 1
                continue
            seen.add(prepared.key)
            answers = prepared.story.answers
            try:
                with session.begin_nested():
                    incident = Incident(
                        survey_id=survey.id,
                        submission_key=prepared.key,
                        occurred_text=answers["occurred"],
                        occurred_on=prepared.story.occurred_on,
                        circumstances=answers["circumstances"],
                        what_happened=answers["what_happened"] or "",
                        outcome=answers["outcome"],
                        valence=answers["valence"] or "",
                        touchpoint=answers["touchpoint"],
                        channel=answers["channel"],
                        language=prepared.language or survey.language,
                        attributes=prepared.attributes,
                        **redaction_columns(answers),
                    )
                    if prepared.submitted_at is not None:
                        incident.submitted_at = prepared.submitted_at
                    session.add(incident)
                    session.flush()
                    for code in prepared.codes:
                        assert version_id is not None
                        session.add(
                            IncidentCode(
                                incident_id=incident.id,
                                code=code,
                                codebook_version_id=version_id,
                                source="import",
                                confirmed_by=imported_by,
                            )
                        )
                    if prepared.codes:
                        incident.status = "coded"
                        incident.finalized_at = utcnow()
                    session.flush()
            except Exception as exc:  # one broken row must not lose the others
                report.errors.append((number, f"could not be stored: {exc.__class__.__name__}"))
                continue
            stored_ids.append(incident.id)
            report.stored += 1
            report.coded += bool(prepared.codes)
        enqueue_suggestions(session, stored_ids)
