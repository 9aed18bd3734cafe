"""Importing stories from files (CSV, JSON Lines, xlsx): column mapping, defaults, a dry run,
and the run itself, from the CLI or as a queued job (the API upload).

Every record is checked on its own: a bad one is reported by its first line, the column and the
value, and the good ones around it are stored. Records carry an import key (their `id`, or a
hash of their content), so a run that is repeated or resumed after a failure stores nothing
twice. A story without a clear valence is stored as `neutral` or `unknown`: it lands in the
review queue to be coded or excluded (a CIT decision for researchers, not an import error)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.codebooks.service import current_version, load_nlp_codebook
from app.config import Settings
from app.db import session_scope
from app.i18n import SUPPORTED_LANGUAGES
from app.imports.files import FileUnreadable, RowProblem, TableFile, count_records, open_table, rows
from app.incidents.redaction import redaction_columns
from app.incidents.service import ANSWER_FIELDS, CleanStory, parse_occurred_on
from app.models import Codebook, ImportRun, Incident, IncidentCode, Survey
from app.models.base import utcnow
from app.models.incidents import STORED_VALENCES
from app.suggestions.queue import enqueue_suggestions

FIELDS = (
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
    "consent",
)
DEFAULTABLE = ("valence", "touchpoint", "channel", "language", "consent", "submitted_at")
CHUNK = 500
MAX_ERRORS_KEPT = 1000
PREVIEW_ROWS = 10
VALENCE_WORDS = {
    "satisfying": "satisfying",
    "positive": "satisfying",
    "pos": "satisfying",
    "favourable": "satisfying",
    "favorable": "satisfying",
    "good": "satisfying",
    "dissatisfying": "dissatisfying",
    "unsatisfying": "dissatisfying",
    "negative": "dissatisfying",
    "neg": "dissatisfying",
    "unfavourable": "dissatisfying",
    "unfavorable": "dissatisfying",
    "bad": "dissatisfying",
    "neutral": "neutral",
    "mixed": "neutral",
    "unknown": "unknown",
    "": "unknown",
}
CONSENT_YES = {"yes", "y", "true", "1", "given", "ja", "x", "consent provided"}
CONSENT_NO = {
    "no",
    "n",
    "false",
    "0",
    "refused",
    "withdrawn",
    "nein",
    "consent not provided",
    "consent withdrawn",
}
CONSENT_UNKNOWN = {"n/a", "na", "other", "unknown", "-"}


class ImportFailed(ValueError):
    """The run cannot start or go on (unreadable file, no story column, unknown survey)."""


@dataclass(frozen=True)
class RecordError:
    line: int
    message: str
    column: str | None = None
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "value": self.value,
            "message": self.message,
        }

    def __str__(self) -> str:
        if self.column and self.value is not None:
            where = f" [{self.column}: {self.value!r}]"
        else:
            where = f" [{self.column}]" if self.column else ""
        return f"line {self.line}: {self.message}{where}"


class RowError(ValueError):
    def __init__(self, message: str, column: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.column = column
        self.value = None if value is None else str(value)[:200]


@dataclass(frozen=True)
class ImportOptions:
    """`mapping`: source column -> field; `defaults`: field -> value for empty cells."""

    mapping: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    sheet: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"map": self.mapping, "defaults": self.defaults, "sheet": self.sheet}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportOptions:
        return cls(dict(data.get("map") or {}), dict(data.get("defaults") or {}), data.get("sheet"))


def parse_pairs(items: Iterable[str], what: str) -> dict[str, str]:
    """`--map 'Consumer complaint narrative=what_happened'` (the last `=` splits)."""
    pairs: dict[str, str] = {}
    for item in items:
        left, sep, right = item.rpartition("=")
        if not sep or not left.strip() or not right.strip():
            raise ImportFailed(f"{what} {item!r}: write it as NAME=VALUE")
        pairs[left.strip()] = right.strip()
    return pairs


def check_options(options: ImportOptions) -> None:
    for source, target in options.mapping.items():
        if target not in FIELDS and not target.startswith("attributes."):
            raise ImportFailed(
                f"--map {source}={target}: {target!r} is not a field; map to one of "
                f"{', '.join(FIELDS)} (or attributes.NAME)"
            )
    for name, value in options.defaults.items():
        if name not in DEFAULTABLE:
            raise ImportFailed(f"--default {name}: give defaults for {', '.join(DEFAULTABLE)}")
        if name == "valence" and value.strip().lower() not in VALENCE_WORDS:
            raise ImportFailed(f"--default valence={value}: one of {', '.join(STORED_VALENCES)}")


@dataclass(frozen=True)
class PreparedRow:
    key: str
    story: CleanStory
    submitted_at: datetime | None
    attributes: dict[str, Any]
    codes: tuple[str, ...]
    language: str | None
    consent: str

    def preview(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.story.answers.items()},
            "occurred_on": self.story.occurred_on.isoformat() if self.story.occurred_on else None,
            "submitted_at": self.submitted_at.isoformat() if self.submitted_at else None,
            "language": self.language,
            "consent": self.consent,
            "codes": list(self.codes),
            "attributes": self.attributes,
        }


def apply_mapping(row: dict[str, Any], options: ImportOptions) -> dict[str, Any]:
    if not options.mapping:
        out = dict(row)
    else:
        out = {}
        attributes: dict[str, Any] = {}
        for column, value in row.items():
            target = options.mapping.get(column, column)
            if target.startswith("attributes."):
                attributes[target.removeprefix("attributes.")] = value
            elif target in out and out[target] not in (None, ""):
                continue  # a mapped column wins over one that had the field's name already
            else:
                out[target] = value
        if attributes:
            given = out.get("attributes")
            out["attributes"] = {**(given if isinstance(given, dict) else {}), **attributes}
    for name, value in options.defaults.items():
        if out.get(name) in (None, ""):
            out[name] = value
    return out


def _valence(value: Any) -> str:
    if value is None:
        return "unknown"
    if not isinstance(value, str):
        raise RowError("valence: must be text", "valence", value)
    found = VALENCE_WORDS.get(value.strip().lower())
    if found is None:
        raise RowError(
            "valence: not one of satisfying, dissatisfying, neutral, unknown "
            "(or positive/negative)",
            "valence",
            value,
        )
    return found


def _consent(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "unknown"
    text = str(value).strip().lower()
    if text in CONSENT_YES:
        return "given"
    if text in CONSENT_UNKNOWN:
        return "unknown"
    if text in CONSENT_NO:
        raise RowError(
            "consent: the respondent did not consent; the story is not imported", "consent", value
        )
    raise RowError("consent: yes or no", "consent", value)


def prepare(row: dict[str, Any], codes: set[str], settings: Settings) -> PreparedRow:
    """Check one (mapped) row; raises RowError naming the column and the value."""
    answers: dict[str, str | None] = {}
    for name in ANSWER_FIELDS:
        value = row.get(name)
        column = name
        if name == "what_happened" and value in (None, ""):
            value, column = row.get("text"), "text"
        if value is not None and not isinstance(value, str):
            raise RowError(f"{name}: must be text", column, value)
        if value is not None and "\x00" in value:
            raise RowError(f"{name}: contains a NUL character", column)
        if value is not None and len(value) > settings.max_answer_chars:
            raise RowError(
                f"{name}: {len(value)} characters, longer than {settings.max_answer_chars}", column
            )
        answers[name] = value if value and value.strip() else None
    if answers["what_happened"] is None:
        raise RowError("what_happened (or text): the story is empty", "what_happened")
    valence = _valence(row.get("valence"))
    for name in ("touchpoint", "channel"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise RowError(f"{name}: must be text", name, row[name])
        if isinstance(row.get(name), str) and len(row[name]) > 200:
            raise RowError(f"{name}: longer than 200 characters", name, row[name])
    answers.update(valence=valence, touchpoint=row.get("touchpoint"), channel=row.get("channel"))

    submitted_at = None
    if row.get("submitted_at"):
        try:
            submitted_at = datetime.fromisoformat(
                str(row["submitted_at"]).strip().replace("Z", "+00:00")
            )
        except ValueError as exc:
            raise RowError(
                "submitted_at: not an ISO date or date-time", "submitted_at", row["submitted_at"]
            ) from exc
        if submitted_at.tzinfo is None:
            submitted_at = submitted_at.replace(tzinfo=UTC)

    raw_codes = row.get("codes") or []
    if isinstance(raw_codes, str):
        raw_codes = [c.strip() for c in raw_codes.replace(",", ";").split(";") if c.strip()]
    if not isinstance(raw_codes, list) or not all(isinstance(c, str) for c in raw_codes):
        raise RowError("codes: a list of code keys, or keys separated by ';'", "codes", raw_codes)
    unknown = sorted(set(raw_codes) - codes)
    if unknown:
        raise RowError(
            "codes: not active codes of the survey's codebook", "codes", ", ".join(unknown)
        )

    attributes = row.get("attributes") or {}
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except json.JSONDecodeError as exc:
            raise RowError(
                "attributes: not a JSON object", "attributes", row["attributes"]
            ) from exc
    if not isinstance(attributes, dict):
        raise RowError("attributes: must be an object", "attributes", attributes)
    attributes = {**{k: v for k, v in row.items() if k not in FIELDS}, **attributes}
    if row.get("id") is not None:
        attributes.setdefault("import_id", str(row["id"]))
        key = "import:" + hashlib.sha256(str(row["id"]).encode()).hexdigest()[:40]
    else:
        digest = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
        key = "import:" + hashlib.sha256(digest.encode()).hexdigest()[:40]
    language = row.get("language")
    if language is not None and language not in SUPPORTED_LANGUAGES:
        raise RowError(f"language: one of {', '.join(SUPPORTED_LANGUAGES)}", "language", language)
    story = CleanStory(answers, parse_occurred_on(answers["occurred"]))
    return PreparedRow(
        key,
        story,
        submitted_at,
        attributes,
        tuple(dict.fromkeys(raw_codes)),
        language,
        _consent(row.get("consent")),
    )


@dataclass
class ImportReport:
    table: TableFile | None = None
    rows_read: int = 0
    stored: int = 0
    duplicates: int = 0
    coded: int = 0
    error_count: int = 0
    errors: list[RecordError] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)
    import_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.error_count

    def add_error(self, error: RecordError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(error)


@dataclass(frozen=True)
class _SurveyInfo:
    id: int
    language: str
    version_id: int | None
    active: frozenset[str]


def _survey_info(factory: sessionmaker[Session], survey_id: int) -> _SurveyInfo:
    with session_scope(factory, write=False) as session:
        survey = session.get(Survey, survey_id)
        if survey is None:
            raise ImportFailed(f"survey {survey_id} does not exist")
        version_id, active = None, frozenset[str]()
        if survey.codebook_id is not None:
            codebook = session.get(Codebook, survey.codebook_id)
            assert codebook is not None
            version = current_version(session, codebook)
            version_id = version.id
            active = frozenset(c.key for c in load_nlp_codebook(version).active_codes)
        return _SurveyInfo(survey.id, survey.language, version_id, active)


def _check_story_column(table: TableFile, options: ImportOptions) -> None:
    if table.format == "jsonl" or not table.columns:
        return
    mapped = {options.mapping.get(c, c) for c in table.columns}
    if not mapped & {"what_happened", "text"}:
        raise ImportFailed(
            f"{table.path.name} has no story column (what_happened or text). Its columns: "
            f"{', '.join(table.columns[:40])}. "
            f"Map one, e.g. --map '{table.columns[0]}=what_happened'"
        )


def _records(
    table: TableFile,
    options: ImportOptions,
    survey: _SurveyInfo,
    settings: Settings,
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> Iterable[tuple[int, PreparedRow]]:
    for number, row in rows(table):
        report.rows_read += 1
        if progress is not None:
            progress(1)
        if isinstance(row, RowProblem):
            report.add_error(RecordError(number, row.message))
            continue
        try:
            prepared = prepare(apply_mapping(row, options), set(survey.active), settings)
            if prepared.codes and survey.version_id is None:
                raise RowError("codes: the survey has no codebook to check them against", "codes")
        except RowError as exc:
            report.add_error(RecordError(number, str(exc), exc.column, exc.value))
            continue
        yield number, prepared


def dry_run(
    factory: sessionmaker[Session],
    path: Path,
    survey_id: int,
    settings: Settings,
    options: ImportOptions,
    *,
    preview_rows: int = PREVIEW_ROWS,
) -> ImportReport:
    """Read and check everything, store nothing: the first rows as they would be stored, and
    every error."""
    check_options(options)
    survey = _survey_info(factory, survey_id)
    try:
        table = open_table(path, sheet=options.sheet)
        _check_story_column(table, options)
        report = ImportReport(table)
        for _number, prepared in _records(table, options, survey, settings, report, None):
            if len(report.preview) < preview_rows:
                report.preview.append(prepared.preview())
    except FileUnreadable as exc:
        raise ImportFailed(str(exc)) from exc
    return report


def create_run(
    session: Session,
    survey_id: int,
    file_name: str,
    table_format: str,
    options: ImportOptions,
    imported_by: str,
) -> ImportRun:
    run = ImportRun(
        survey_id=survey_id,
        file_name=file_name[:255],
        file_format=table_format,
        details={},
        options=options.as_dict(),
        imported_by=imported_by,
        status="queued",
        errors=[],
    )
    session.add(run)
    session.flush()
    return run


def import_file(
    factory: sessionmaker[Session],
    path: Path,
    survey_id: int,
    settings: Settings,
    options: ImportOptions,
    *,
    imported_by: str,
    file_name: str | None = None,
    run_id: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Store the file's good records in chunks, recording the run (`imports` row) with its
    progress as it goes; raises ImportFailed when the file cannot be read at all."""
    check_options(options)
    survey = _survey_info(factory, survey_id)
    name = file_name or path.name
    try:
        table = open_table(path, sheet=options.sheet)
        _check_story_column(table, options)
    except (FileUnreadable, ImportFailed) as exc:
        if run_id is not None:
            _finish(factory, run_id, ImportReport(), failure=str(exc))
        raise ImportFailed(str(exc)) from exc
    total = count_records(table)
    with session_scope(factory) as session:
        if run_id is None:
            run = create_run(session, survey_id, name, table.format, options, imported_by)
        else:
            found = session.get(ImportRun, run_id)
            assert found is not None
            run = found
        run.status, run.started_at = "running", utcnow()
        run.file_format, run.details, run.rows_total = table.format, table.details(), total
        run_id = run.id
    report = ImportReport(table, import_id=run_id)
    chunk: list[tuple[int, PreparedRow]] = []
    try:
        for item in _records(table, options, survey, settings, report, progress):
            chunk.append(item)
            if len(chunk) >= CHUNK:
                _store(factory, survey, run_id, chunk, imported_by, report)
                chunk = []
        _store(factory, survey, run_id, chunk, imported_by, report, final=True)
    except FileUnreadable as exc:
        _finish(factory, run_id, report, failure=str(exc))
        raise ImportFailed(str(exc)) from exc
    return report


def _progress_values(report: ImportReport) -> dict[str, Any]:
    return {
        "rows_read": report.rows_read,
        "stored": report.stored,
        "duplicates": report.duplicates,
        "coded": report.coded,
        "error_count": report.error_count,
        "errors": [e.as_dict() for e in report.errors],
    }


def _finish(
    factory: sessionmaker[Session], run_id: int, report: ImportReport, *, failure: str | None = None
) -> None:
    with session_scope(factory) as session:
        session.execute(
            update(ImportRun)
            .where(ImportRun.id == run_id)
            .values(
                **_progress_values(report),
                status="failed" if failure else "done",
                failure=failure,
                finished_at=utcnow(),
            )
        )


def _store(
    factory: sessionmaker[Session],
    survey: _SurveyInfo,
    run_id: int,
    chunk: list[tuple[int, PreparedRow]],
    imported_by: str,
    report: ImportReport,
    *,
    final: bool = False,
) -> None:
    """One chunk and the run's progress in one transaction: a crash loses no counted story."""
    with session_scope(factory) as session:
        keys = [p.key for _, p in chunk]
        seen = (
            set(
                session.scalars(
                    select(Incident.submission_key).where(
                        Incident.survey_id == survey.id, Incident.submission_key.in_(keys)
                    )
                )
            )
            if keys
            else set()
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
                        valence=answers["valence"] or "unknown",
                        touchpoint=answers["touchpoint"],
                        channel=answers["channel"],
                        language=prepared.language or survey.language,
                        attributes=prepared.attributes,
                        source="import",
                        consent=prepared.consent,
                        import_id=run_id,
                        **redaction_columns(answers),
                    )
                    if prepared.submitted_at is not None:
                        incident.submitted_at = prepared.submitted_at
                    session.add(incident)
                    session.flush()
                    for code in prepared.codes:
                        assert survey.version_id is not None
                        session.add(
                            IncidentCode(
                                incident_id=incident.id,
                                code=code,
                                codebook_version_id=survey.version_id,
                                source="import",
                                confirmed_by=imported_by,
                            )
                        )
                    if prepared.codes:
                        incident.status = "coded"
                        incident.finalized_at = utcnow()
                    session.flush()
            except Exception as exc:  # one broken row must not lose the others
                report.add_error(
                    RecordError(number, f"could not be stored ({exc.__class__.__name__})")
                )
                continue
            stored_ids.append(incident.id)
            report.stored += 1
            report.coded += bool(prepared.codes)
        enqueue_suggestions(session, stored_ids)
        values: dict[str, Any] = _progress_values(report)
        if final:
            values.update(status="done", finished_at=utcnow())
        session.execute(update(ImportRun).where(ImportRun.id == run_id).values(**values))
