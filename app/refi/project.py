"""Projects as REFI-QDA `.qdpx`: a zip of `project.qde` and one text file per story.

Export: users are the coders (and "CIT final codes", who holds the final codes), the codebook,
variables (valence, touchpoint, channel, when, submitted, and each attribute), every story as a
TextSource with its answers under headings, each coder's coding and each final code as coded
selections over their spans (or the whole story), memos and exclusions as notes. GUIDs are
derived from what they name, so exporting twice gives the same project. The XML is written
incrementally (lxml `xmlfile`) into the zip: memory stays flat however many stories there are.

Import: a `.qdpx` from QualCoder, MAXQDA, ATLAS.ti or this service: its codes merge into the
survey's codebook, each text source becomes a story (submission key `qdpx:<guid>`, so importing
twice stores nothing twice), selections become codings with spans, "CIT final codes" selections
final codes."""

from __future__ import annotations

import io
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Principal
from app.codebooks import service as codebooks
from app.db import session_scope
from app.exports.formats import _Sink
from app.exports.service import (
    Batch,
    ExportSpec,
    _answers,
    _attributes,
    _spans_for_view,
    load_context,
    story_batches,
    utc_text,
)
from app.imports.service import ImportOptions, create_run
from app.incidents.redaction import redaction_columns
from app.incidents.service import ANSWER_FIELDS, parse_occurred_on
from app.models import (
    Codebook,
    Coding,
    CodingCode,
    CodingSpan,
    ImportRun,
    Incident,
    IncidentCode,
    Survey,
    User,
)
from app.models.base import utcnow
from app.models.incidents import STORED_VALENCES
from app.refi.codebook import code_elements, code_guid, merge, read_codes, slug
from app.refi.xml import PROJECT_NS, RefiInvalid, guid, normal_guid, parse
from app.suggestions.queue import enqueue_suggestions

FINAL_USER = "CIT final codes"
HEADINGS = {
    "occurred": "When it happened",
    "circumstances": "Circumstances",
    "what_happened": "What happened",
    "outcome": "Outcome",
}
_HEADING_RE = re.compile(
    r"(?:^|\n\n)(" + "|".join(re.escape(h) for h in HEADINGS.values()) + r"):\n"
)
_FIELD_OF = {v: k for k, v in HEADINGS.items()}
FIXED_VARIABLES = (
    ("valence", "Text"),
    ("touchpoint", "Text"),
    ("channel", "Text"),
    ("occurred", "Text"),
    ("submitted_at", "DateTime"),
    ("status", "Text"),
)
NAME_ATTRIBUTE = "qda_name"  # an imported source's own name, given back on export
SOURCE_KEY = "qdpx:"
P = f"{{{PROJECT_NS}}}"


def user_guid(name: str) -> str:
    return guid("user", name)


def _iso(moment: datetime | str | None) -> str | None:
    """xsd:dateTime in UTC, whole seconds; stored text (SQLite) or a datetime (PostgreSQL)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(utc_text(moment))
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compose(answers: dict[str, str | None]) -> tuple[str, dict[str, int]]:
    """The story's text with each answer under its heading, and where each answer starts."""
    parts: list[str] = []
    starts: dict[str, int] = {}
    position = 0
    for field, heading in HEADINGS.items():
        value = answers.get(field)
        if not value:
            continue
        if parts:
            position += 2
        head = f"{heading}:\n"
        starts[field] = position + len(head)
        parts.append(head + value)
        position += len(head) + len(value)
    return "\n\n".join(parts), starts


def decompose(text: str) -> tuple[dict[str, str], dict[str, int]]:
    """The inverse of `compose`; a text without our headings is all `what_happened`."""
    matches = list(_HEADING_RE.finditer(text))
    if not matches or matches[0].start() != 0:
        return {"what_happened": text}, {"what_happened": 0}
    answers: dict[str, str] = {}
    starts: dict[str, int] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        field = _FIELD_OF[match.group(1)]
        answers[field] = text[match.end() : end]
        starts[field] = match.end()
    return answers, starts


def source_guid(row: Any) -> str:
    key = str(getattr(row, "submission_key", "") or "")
    if key.startswith(SOURCE_KEY):
        return key.removeprefix(SOURCE_KEY)
    return guid("story", row.id)


# Export ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Selection:
    start: int
    end: int
    user: str
    code: str
    at: datetime | str | None


def _selections(
    row: Any, batch: Batch, spec: ExportSpec, text: str, starts: dict[str, int], codebook_key: str
) -> list[_Selection]:
    found: list[_Selection] = []
    for final in batch.final_codes.get(row.id, []):
        found.append(_Selection(0, len(text), FINAL_USER, final["code"], final["confirmed_at"]))
    for coding in batch.codings.get(row.id, []):
        for decision in coding.codes:
            spans = batch.spans.get((coding.id, decision.code))
            spans = _spans_for_view(row, spans, spec.view) if spans else None
            if not spans:
                found.append(
                    _Selection(0, len(text), coding.coder, decision.code, coding.updated_at)
                )
                continue
            for span in spans:
                base = starts.get(span["field"])
                if base is None:
                    continue
                found.append(
                    _Selection(
                        base + int(span["start"]),
                        base + int(span["end"]),
                        coding.coder,
                        decision.code,
                        coding.updated_at,
                    )
                )
    return sorted(found, key=lambda s: (s.start, s.end, s.user, s.code))


def _notes(row: Any, batch: Batch, source: str) -> list[tuple[str, str, str, str, datetime | None]]:
    """(guid, name, author, text, when) of a story's memos and exclusions."""
    notes = []
    if row.status == "excluded":
        notes.append(
            (
                guid("note", source, FINAL_USER, "exclusion"),
                "Exclusion",
                FINAL_USER,
                row.exclusion_reason or "",
                row.finalized_at,
            )
        )
    for coding in batch.codings.get(row.id, []):
        if coding.excluded:
            notes.append(
                (
                    guid("note", source, coding.coder, "exclusion"),
                    "Exclusion",
                    coding.coder,
                    coding.exclusion_reason or "",
                    coding.updated_at,
                )
            )
        if coding.note:
            notes.append(
                (
                    guid("note", source, coding.coder, "memo"),
                    "Memo",
                    coding.coder,
                    coding.note,
                    coding.updated_at,
                )
            )
    return notes


def _variable_value(xf: Any, variable: str, kind: str, value: Any) -> None:
    if value in (None, ""):
        return
    with xf.element(f"{P}VariableValue"):
        xf.write(etree.Element(f"{P}VariableRef", targetGUID=guid("variable", variable)))
        element = etree.Element(f"{P}{'DateTimeValue' if kind == 'DateTime' else 'TextValue'}")
        element.text = _iso(value) if kind == "DateTime" else str(value)
        xf.write(element)


def _users(session: Session, spec: ExportSpec) -> list[str]:
    """Everyone whose coding the export may show, and the final-codes user."""
    query = (
        select(User.name)
        .join(Coding, Coding.coder_id == User.id)
        .join(Incident, Incident.id == Coding.incident_id)
        .where(Incident.survey_id == spec.filters.survey_id)
        .distinct()
    )
    return sorted({FINAL_USER, *session.scalars(query)})


def project_chunks(
    factory: sessionmaker[Session], spec: ExportSpec, survey_id: int
) -> Iterator[bytes]:
    """The `.qdpx` bytes, written as they are produced."""
    sink = _Sink()
    with session_scope(factory, write=False) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        survey = session.get(Survey, survey_id)
        assert survey is not None
        context = load_context(session, spec)
        codebook = session.get(Codebook, survey.codebook_id) if survey.codebook_id else None
        nlp_codebook = (
            codebooks.load_nlp_codebook(codebooks.current_version(session, codebook))
            if codebook
            else None
        )
        users = _users(session, spec)
        with zipfile.ZipFile(
            sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
        ) as archive:
            with archive.open("project.qde", "w", force_zip64=True) as member:
                yield from _write_project(
                    session, member, sink, spec, survey, context, nlp_codebook, users
                )
            yield sink.take()
            for batch in story_batches(session, spec, codings=False):
                for row in batch.rows:
                    text, _starts = compose(_answers(row, spec.view, spec.redaction))
                    source = source_guid(row)
                    archive.writestr(f"Sources/{source}.txt", text.encode("utf-8"))
                yield sink.take()
    yield sink.take()


def _write_project(
    session: Session,
    member: Any,
    sink: _Sink,
    spec: ExportSpec,
    survey: Survey,
    context: Any,
    nlp_codebook: Any,
    users: list[str],
) -> Iterator[bytes]:
    with etree.xmlfile(member, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element(
            f"{P}Project", nsmap={None: PROJECT_NS}, name=survey.title, origin="CIT service"
        ):
            with xf.element(f"{P}Users"):
                for name in users:
                    xf.write(etree.Element(f"{P}User", guid=user_guid(name), name=name))
            if nlp_codebook is not None and nlp_codebook.codes:
                book = etree.Element(f"{P}CodeBook")
                codes = etree.SubElement(book, f"{P}Codes")
                code_elements(codes, PROJECT_NS, nlp_codebook)
                xf.write(book)
            variables = [
                *FIXED_VARIABLES,
                *((k, "Text") for k in context.attribute_keys if k != NAME_ATTRIBUTE),
            ]
            with xf.element(f"{P}Variables"):
                for name, kind in variables:
                    xf.write(
                        etree.Element(
                            f"{P}Variable",
                            guid=guid("variable", name),
                            name=name,
                            typeOfVariable=kind,
                        )
                    )
            codebook_key = nlp_codebook.key if nlp_codebook is not None else ""
            notes_seen = False
            with xf.element(f"{P}Sources"):
                for batch in story_batches(session, spec, codings=True):
                    for row in batch.rows:
                        answers = _answers(row, spec.view, spec.redaction)
                        text, starts = compose(answers)
                        source = source_guid(row)
                        attributes = _attributes(row, spec, context)
                        name = str(attributes.get(NAME_ATTRIBUTE) or f"story-{row.id}")
                        element = etree.Element(
                            f"{P}TextSource",
                            guid=source,
                            name=name,
                            plainTextPath=f"internal://{source}.txt",
                        )
                        if row.submitted_at is not None:
                            element.set("creationDateTime", _iso(row.submitted_at) or "")
                        with xf.element(element.tag, dict(element.attrib)):
                            for sel in _selections(row, batch, spec, text, starts, codebook_key):
                                selection_guid = guid(
                                    "selection", source, sel.user, sel.code, sel.start, sel.end
                                )
                                with xf.element(
                                    f"{P}PlainTextSelection",
                                    guid=selection_guid,
                                    startPosition=str(sel.start),
                                    endPosition=str(sel.end),
                                    creatingUser=user_guid(sel.user),
                                ):
                                    coding = etree.Element(
                                        f"{P}Coding",
                                        guid=guid("coding", selection_guid),
                                        creatingUser=user_guid(sel.user),
                                    )
                                    if sel.at is not None:
                                        coding.set("creationDateTime", _iso(sel.at) or "")
                                    etree.SubElement(
                                        coding,
                                        f"{P}CodeRef",
                                        targetGUID=code_guid(codebook_key, sel.code),
                                    )
                                    xf.write(coding)
                            for note in _notes(row, batch, source):
                                notes_seen = True
                                xf.write(etree.Element(f"{P}NoteRef", targetGUID=note[0]))
                            values = {
                                "valence": row.valence,
                                "touchpoint": row.touchpoint,
                                "channel": row.channel,
                                "occurred": answers.get("occurred"),
                                "submitted_at": row.submitted_at,
                                "status": batch_status(row, batch, spec),
                                **{k: v for k, v in attributes.items() if k != NAME_ATTRIBUTE},
                            }
                            for variable, kind in variables:
                                value = values.get(variable)
                                if isinstance(value, dict | list):
                                    value = str(value)
                                _variable_value(xf, variable, kind, value)
                        xf.flush()
                    yield sink.take()
            if notes_seen:
                with xf.element(f"{P}Notes"):
                    for batch in story_batches(session, spec, codings=True):
                        for row in batch.rows:
                            source = source_guid(row)
                            for note_guid, name, author, text, when in _notes(row, batch, source):
                                note = etree.Element(
                                    f"{P}Note",
                                    guid=note_guid,
                                    name=name,
                                    creatingUser=user_guid(author),
                                )
                                if when is not None:
                                    note.set("creationDateTime", _iso(when) or "")
                                etree.SubElement(note, f"{P}PlainTextContent").text = text
                                xf.write(note)
                        xf.flush()
                        yield sink.take()


def batch_status(row: Any, batch: Batch, spec: ExportSpec) -> str:
    from app.exports.service import _status

    return _status(row, batch, spec.viewer)


# Import ----------------------------------------------------------------------------------------


@dataclass
class QdpxImport:
    import_id: int
    stories: int
    duplicates: int
    codings: int
    final_codes: int
    codebook_version: int | None
    skipped_sources: int


def _read_zip(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise RefiInvalid("the .qdpx file is not a zip archive") from exc
    names = archive.namelist()
    project = next((n for n in names if n.lower().endswith(".qde")), None)
    if project is None:
        raise RefiInvalid("the .qdpx file holds no project.qde")
    files = {Path(n).name.lower(): archive.read(n) for n in names if n.lower().endswith(".txt")}
    return archive.read(project), files


def _source_text(element: etree._Element, files: dict[str, bytes]) -> str | None:
    inline = element.find(f"{P}PlainTextContent")
    if inline is not None and inline.text is not None:
        return inline.text
    path = element.get("plainTextPath") or ""
    if not path:
        return None
    data = files.get(Path(re.sub(r"^internal://", "", path, flags=re.I)).name.lower())
    if data is None:
        return None
    return data.decode("utf-8-sig", errors="replace")


def _values(element: etree._Element, variables: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for value in element.findall(f"{P}VariableValue"):
        ref = value.find(f"{P}VariableRef")
        name = variables.get(normal_guid(ref.get("targetGUID") if ref is not None else None))
        if name is None:
            continue
        for child in value:
            if child.tag != f"{P}VariableRef" and child.text is not None:
                found[name] = child.text
    return found


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _user_id(session: Session, name: str, cache: dict[str, int]) -> int:
    if name not in cache:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name[:100], role="researcher")
            session.add(user)
            session.flush()
        cache[name] = user.id
    return cache[name]


def import_qdpx(
    session: Session,
    data: bytes,
    survey_id: int,
    *,
    file_name: str,
    actor: Principal | None,
) -> QdpxImport:
    """Stories, codes and codings of a project made elsewhere, in the caller's transaction
    (all or nothing)."""
    from app.reviews.service import settle

    qde, files = _read_zip(data)
    root = parse(qde, "project", "project.qde")
    survey = session.get(Survey, survey_id)
    if survey is None:
        raise RefiInvalid(f"survey {survey_id} does not exist")
    actor_name = actor.name if actor else "cli"
    users = {
        normal_guid(u.get("guid")): (u.get("name") or u.get("id") or "coder").strip()
        for u in root.iterfind(f"{P}Users/{P}User")
    }
    foreign = read_codes(root.find(f"{P}CodeBook/{P}Codes"), PROJECT_NS)
    mapping: dict[str, str] = {}
    version_number: int | None = None
    if foreign:
        book = session.get(Codebook, survey.codebook_id) if survey.codebook_id else None
        current = codebooks.current_version(session, book).content if book else None
        key = book.key if book else slug(root.get("name") or "project").replace("_", "-")
        content, mapping = merge(current, foreign, key=key, name=root.get("name") or key)
        note = f"codes of a REFI-QDA project ({root.get('origin') or 'unknown program'})"
        if book is None:
            version = codebooks.create_codebook(session, content, actor, note)
            survey.codebook_id = version.codebook_id
        else:
            version = codebooks.update_codebook(session, book, content, actor, note)
        version_id, version_number = version.id, version.number
    else:
        version_id = None
    variables = {
        normal_guid(v.get("guid")): v.get("name") or ""
        for v in root.iterfind(f"{P}Variables/{P}Variable")
    }
    notes = {normal_guid(n.get("guid")): n for n in root.iterfind(f"{P}Notes/{P}Note")}
    case_values: dict[str, dict[str, Any]] = defaultdict(dict)
    for case in root.iterfind(f"{P}Cases/{P}Case"):
        values = _values(case, variables)
        for ref in case.iterfind(f"{P}SourceRef"):
            case_values[normal_guid(ref.get("targetGUID"))].update(values)

    run = create_run(session, survey_id, file_name, "qdpx", ImportOptions(), actor_name)
    run.status, run.started_at = "running", utcnow()
    result = QdpxImport(run.id, 0, 0, 0, 0, version_number, 0)
    user_ids: dict[str, int] = {}
    stored_ids: list[int] = []
    for element in root.iterfind(f"{P}Sources/{P}TextSource"):
        source = normal_guid(element.get("guid"))
        key = f"{SOURCE_KEY}{source}"
        if session.scalar(
            select(Incident.id).where(
                Incident.survey_id == survey_id, Incident.submission_key == key
            )
        ):
            result.duplicates += 1
            continue
        text = _source_text(element, files)
        if not text or not text.strip():
            result.skipped_sources += 1
            continue
        answers, starts = decompose(text)
        values = {**case_values.get(source, {}), **_values(element, variables)}
        occurred = values.pop("occurred", None) or answers.get("occurred")
        valence = str(values.pop("valence", "") or "unknown").strip().lower()
        if valence not in STORED_VALENCES:
            valence = "unknown"
        submitted = _when(values.pop("submitted_at", None)) or _when(
            element.get("creationDateTime")
        )
        status = values.pop("status", None)
        touchpoint, channel = values.pop("touchpoint", None), values.pop("channel", None)
        name = element.get("name")
        attributes = {**values, **({NAME_ATTRIBUTE: name} if name else {})}
        clean = {f: (answers.get(f) or None) for f in ANSWER_FIELDS}
        clean["occurred"] = occurred
        incident = Incident(
            survey_id=survey_id,
            submission_key=key,
            occurred_text=clean["occurred"],
            occurred_on=parse_occurred_on(clean["occurred"]),
            circumstances=clean["circumstances"],
            what_happened=clean["what_happened"] or "",
            outcome=clean["outcome"],
            valence=valence,
            touchpoint=touchpoint,
            channel=channel,
            language=survey.language,
            attributes=attributes,
            source="import",
            consent="unknown",
            import_id=run.id,
            **redaction_columns(clean),
        )
        if submitted is not None:
            incident.submitted_at = submitted
        session.add(incident)
        session.flush()
        result.stories += 1
        stored_ids.append(incident.id)

        # (user, code) -> spans (None: the whole story), and when
        applied: dict[tuple[str, str], list[dict[str, Any]] | None] = {}
        applied_at: dict[tuple[str, str], datetime | None] = {}
        for selection in element.iterfind(f"{P}PlainTextSelection"):
            start = int(selection.get("startPosition") or 0)
            end = int(selection.get("endPosition") or 0)
            for coding in selection.iterfind(f"{P}Coding"):
                ref = coding.find(f"{P}CodeRef")
                code = mapping.get(normal_guid(ref.get("targetGUID") if ref is not None else None))
                if code is None:
                    continue
                user = users.get(
                    normal_guid(coding.get("creatingUser") or selection.get("creatingUser")),
                    "coder",
                )
                span = _span(start, end, starts, answers, len(text))
                held = applied.get((user, code), [])
                applied[(user, code)] = None if span is None or held is None else [*held, span]
                applied_at.setdefault((user, code), _when(coding.get("creationDateTime")))
        for coding in element.iterfind(f"{P}Coding"):  # codes applied to the source itself
            ref = coding.find(f"{P}CodeRef")
            code = mapping.get(normal_guid(ref.get("targetGUID") if ref is not None else None))
            if code is not None:
                user = users.get(normal_guid(coding.get("creatingUser")), "coder")
                applied[(user, code)] = None
                applied_at.setdefault((user, code), _when(coding.get("creationDateTime")))
        memos: dict[str, dict[str, Any]] = defaultdict(dict)
        for ref in element.iterfind(f"{P}NoteRef"):
            found_note = notes.get(normal_guid(ref.get("targetGUID")))
            if found_note is None:
                continue
            author = users.get(normal_guid(found_note.get("creatingUser")), "coder")
            kind = "exclusion" if (found_note.get("name") or "").lower() == "exclusion" else "memo"
            memos[author][kind] = found_note.findtext(f"{P}PlainTextContent") or ""
            memos[author][f"{kind}_at"] = _when(found_note.get("creationDateTime"))
        final = {c for (u, c) in applied if u == FINAL_USER}
        coders = sorted(
            {u for (u, _c) in applied if u != FINAL_USER} | {a for a in memos if a != FINAL_USER}
        )
        for coder in coders:
            codes = sorted(c for (u, c) in applied if u == coder)
            mine = memos.get(coder, {})
            moment = (
                _latest(applied_at.get((coder, c)) for c in codes)
                or mine.get("memo_at")
                or mine.get("exclusion_at")
                or utcnow()
            )
            if version_id is None:
                continue
            row = Coding(
                incident_id=incident.id,
                coder_id=_user_id(session, coder, user_ids),
                codebook_version_id=version_id,
                excluded="exclusion" in mine and not codes,
                exclusion_reason=mine.get("exclusion")
                if "exclusion" in mine and not codes
                else None,
                note=mine.get("memo"),
                created_at=moment,
                updated_at=moment,
            )
            session.add(row)
            session.flush()
            chosen = [CodingCode(coding_id=row.id, code=c, decision="added") for c in codes]
            session.add_all(chosen)
            session.flush()
            session.add_all(
                CodingSpan(coding_code_id=cc.id, field=s["field"], start=s["start"], end=s["end"])
                for cc in chosen
                for s in applied[(coder, cc.code)] or ()
            )
            result.codings += 1
        if final and version_id is not None:
            moment = _latest(applied_at.get((FINAL_USER, c)) for c in final) or utcnow()
            session.add_all(
                IncidentCode(
                    incident_id=incident.id,
                    code=c,
                    codebook_version_id=version_id,
                    source="import",
                    confirmed_by=actor_name,
                    confirmed_at=moment,
                )
                for c in sorted(final)
            )
            incident.status, incident.finalized_at = "coded", moment
            incident.coders_required = max(len(coders), 1)
            result.final_codes += len(final)
        elif "exclusion" in memos.get(FINAL_USER, {}):
            incident.status = "excluded"
            incident.exclusion_reason = memos[FINAL_USER]["exclusion"] or None
            incident.finalized_at = memos[FINAL_USER].get("exclusion_at") or utcnow()
            incident.coders_required = max(len(coders), 1)
        elif coders and version_id is not None:
            # Our own export says whether the story still waited for another coder.
            waiting = status in ("new", "in_review")
            incident.coders_required = len(coders) + (1 if waiting else 0)
            session.flush()
            settle(session, incident, cast(Principal, actor))
        session.flush()
    enqueue_suggestions(session, stored_ids)
    run.status, run.finished_at = "done", utcnow()
    run.rows_total = run.rows_read = result.stories + result.duplicates + result.skipped_sources
    run.stored, run.duplicates, run.coded = result.stories, result.duplicates, result.final_codes
    session.flush()
    return result


def _latest(moments: Iterable[datetime | None]) -> datetime | None:
    return max((m for m in moments if m is not None), default=None)


def _span(
    start: int, end: int, starts: dict[str, int], answers: dict[str, str], length: int
) -> dict[str, Any] | None:
    """A selection as a span in one answer; None when it covers the whole story."""
    if start <= 0 and end >= length:
        return None
    for field, base in sorted(starts.items(), key=lambda item: item[1]):
        stop = base + len(answers.get(field, ""))
        if base <= start < stop or (start < base and end > base):
            lo, hi = max(start, base), min(end, stop)
            return {"field": field, "start": lo - base, "end": hi - base}
    return {"field": "what_happened", "start": max(start, 0), "end": max(end, start)}


__all__ = ["ImportRun", "import_qdpx", "project_chunks"]
