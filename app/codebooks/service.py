"""Codebook versions: validated on write, never changed; rename/merge/split carry codings forward.

Validation is nlp.parse_codebook's; every place it finds wrong is one entry of the 422 problem."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Table, and_, bindparam, delete, func, select, true, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal
from app.codebooks.schemas import (
    CodebookRead,
    CodebookSummary,
    CodebookVersionRead,
    CodeOperation,
    Merge,
    Rename,
    Split,
)
from app.errors import AppError, Conflict, NotFound
from app.models import (
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
    IncidentCode,
    Suggestion,
    Survey,
)
from app.models.base import utcnow
from app.suggestions.queue import enqueue_rescoring, enqueue_suggestions
from nlp.codebook import Codebook as NlpCodebook
from nlp.codebook import (
    CodebookError,
    codebook_to_dict,
    codebook_to_yaml,
    load_codebook_file,
    parse_codebook,
)

DEFAULT_CODEBOOK_KEY = "cit-service-encounters"
DEFAULT_CODEBOOK_FILE = (
    Path(__file__).resolve().parents[2] / "codebooks" / "cit-service-encounters.yaml"
)

Problem = tuple[str, str]  # (path in the codebook or request, message)


class CodebookInvalid(AppError):
    """A codebook (or a change to one) that cannot be used; `errors` names every place."""

    status = 422
    title = "Invalid codebook"
    type_slug = "invalid-codebook"

    def __init__(self, problems: Sequence[Problem], summary: str = "invalid codebook") -> None:
        self.errors = [{"path": path, "message": message} for path, message in problems]
        places = "; ".join(f"{path or '(codebook)'}: {message}" for path, message in problems)
        count = len(problems)
        super().__init__(
            f"{summary} ({count} problem{'s' if count != 1 else ''}): {places}",
            extra={"errors": self.errors},
        )


def _actor_name(actor: Principal | None) -> str:
    return actor.name if actor else audit.CLI_ACTOR


def parse_content(content: Mapping[str, Any]) -> NlpCodebook:
    """Validate a codebook mapping; every problem found becomes one entry of the 422 error."""
    try:
        return parse_codebook(content)
    except CodebookError as exc:
        raise CodebookInvalid([(p.path, p.message) for p in exc.problems]) from exc


# Reading ---------------------------------------------------------------------------------------


def get_codebook(session: Session, codebook_id: int) -> Codebook:
    codebook = session.get(Codebook, codebook_id)
    if codebook is None:
        raise NotFound(f"codebook {codebook_id} does not exist")
    return codebook


def find_codebook(session: Session, key: str) -> Codebook | None:
    return session.scalar(select(Codebook).where(Codebook.key == key))


def list_codebooks(session: Session) -> list[Codebook]:
    return list(session.scalars(select(Codebook).order_by(Codebook.id)))


def get_version(session: Session, codebook_id: int, number: int) -> CodebookVersion:
    version = session.scalar(
        select(CodebookVersion).where(
            CodebookVersion.codebook_id == codebook_id, CodebookVersion.number == number
        )
    )
    if version is None:
        raise NotFound(f"codebook {codebook_id} has no version {number}")
    return version


def current_version(session: Session, codebook: Codebook) -> CodebookVersion:
    return get_version(session, codebook.id, codebook.current_version)


def list_versions(session: Session, codebook: Codebook) -> list[CodebookVersion]:
    return list(
        session.scalars(
            select(CodebookVersion)
            .where(CodebookVersion.codebook_id == codebook.id)
            .order_by(CodebookVersion.number)
        )
    )


def default_codebook(session: Session) -> Codebook | None:
    """The shipped default codebook when loaded, else the oldest one (None without codebooks)."""
    return find_codebook(session, DEFAULT_CODEBOOK_KEY) or session.scalar(
        select(Codebook).order_by(Codebook.created_at, Codebook.id).limit(1)
    )


_PARSED: OrderedDict[tuple[Any, ...], NlpCodebook] = OrderedDict()
_PARSED_LOCK = threading.Lock()


def _cached_parse(key: tuple[Any, ...], content: Callable[[], Mapping[str, Any]]) -> NlpCodebook:
    with _PARSED_LOCK:
        found = _PARSED.get(key)
        if found is not None:
            _PARSED.move_to_end(key)
            return found
    parsed = parse_codebook(content())
    with _PARSED_LOCK:
        _PARSED[key] = parsed
        while len(_PARSED) > 64:
            _PARSED.popitem(last=False)
    return parsed


def load_nlp_codebook(version: CodebookVersion) -> NlpCodebook:
    """The nlp library's view of a stored version (validated when it was written).

    Versions never change once written, so each is parsed once per process (parsing a full
    codebook cost more than the rest of saving a coding). The key includes the creation time,
    so a database emptied and refilled (tests) cannot hand back another version's codes."""
    key = (version.id, version.codebook_id, version.number, version.created_at)
    return _cached_parse(key, lambda: version.content)


@dataclass(frozen=True)
class VersionRef:
    """A codebook version by its identity, without its content (read only on a cache miss)."""

    id: int
    codebook_id: int
    number: int
    created_at: datetime


_versions = cast(Table, CodebookVersion.__table__)
_codebooks = cast(Table, Codebook.__table__)
_surveys = cast(Table, Survey.__table__)
# The survey's codebook's current version in one statement (built once: the coding path asks
# for it on every save).
_SURVEY_VERSION = (
    select(_versions.c.id, _versions.c.codebook_id, _versions.c.number, _versions.c.created_at)
    .select_from(
        _surveys.join(_codebooks, _codebooks.c.id == _surveys.c.codebook_id).join(
            _versions,
            and_(
                _versions.c.codebook_id == _codebooks.c.id,
                _versions.c.number == _codebooks.c.current_version,
            ),
        )
    )
    .where(_surveys.c.id == bindparam("survey_id"))
)
_VERSION_CONTENT = select(_versions.c.content).where(_versions.c.id == bindparam("version_id"))


def survey_version_ref(session: Session, survey_id: int) -> VersionRef | None:
    """The current version of the survey's own codebook; None when it has none (the caller
    falls back to the default codebook)."""
    row = session.connection().execute(_SURVEY_VERSION, {"survey_id": survey_id}).first()
    return VersionRef(*row) if row is not None else None


def nlp_codebook_of(session: Session, ref: VersionRef) -> NlpCodebook:
    """`load_nlp_codebook` for a version known by its identity: its content is read only when
    this process has not parsed it yet."""

    def content() -> Mapping[str, Any]:
        loaded: Mapping[str, Any] = (
            session.connection().execute(_VERSION_CONTENT, {"version_id": ref.id}).scalar_one()
        )
        return loaded

    return _cached_parse((ref.id, ref.codebook_id, ref.number, ref.created_at), content)


def export_yaml(version: CodebookVersion) -> str:
    header = (
        f"# {version.content.get('key')} version {version.number}, "
        f"{version.created_at:%Y-%m-%d} by {version.created_by}\n"
    )
    return header + codebook_to_yaml(load_nlp_codebook(version))


def _n_active(content: Mapping[str, Any]) -> int:
    return sum(1 for code in content.get("codes", []) if not code.get("retired"))


def to_summary(codebook: Codebook, version: CodebookVersion) -> CodebookSummary:
    return CodebookSummary(
        id=codebook.id,
        key=codebook.key,
        name=codebook.name,
        current_version=codebook.current_version,
        created_at=codebook.created_at,
        n_codes=_n_active(version.content),
    )


def version_read(codebook: Codebook, version: CodebookVersion) -> CodebookVersionRead:
    return CodebookVersionRead(
        codebook_id=codebook.id,
        key=codebook.key,
        number=version.number,
        content=version.content,
        change_note=version.change_note,
        code_mapping=version.code_mapping,
        created_by=version.created_by,
        created_at=version.created_at,
    )


def to_read(codebook: Codebook, version: CodebookVersion) -> CodebookRead:
    return CodebookRead(
        **to_summary(codebook, version).model_dump(), version=version_read(codebook, version)
    )


def summaries(session: Session) -> list[CodebookSummary]:
    rows = session.execute(
        select(Codebook, CodebookVersion)
        .join(
            CodebookVersion,
            and_(
                CodebookVersion.codebook_id == Codebook.id,
                CodebookVersion.number == Codebook.current_version,
            ),
        )
        .order_by(Codebook.id)
    ).all()
    return [to_summary(codebook, version) for codebook, version in rows]


def _version_ids(codebook: Codebook) -> Any:
    return select(CodebookVersion.id).where(CodebookVersion.codebook_id == codebook.id)


def _suggestion_items(session: Session, codebook: Codebook) -> tuple[Any, Any, Any]:
    """(select_from, code, suggested): one row per item of the stored suggestions of this
    codebook's stories (`suggestions.items` is a JSON list, one entry per code)."""
    joined: Any
    code: Any
    suggested: Any
    if session.get_bind().dialect.name == "postgresql":
        joined = (
            func.jsonb_array_elements(Suggestion.items)
            .table_valued("value")
            .render_derived(name="item")
        )
        code = joined.c.value.op("->>")("code")
        suggested = joined.c.value.op("->>")("suggested") == "true"
    else:
        joined = func.json_each(Suggestion.items).table_valued("value").alias("item")
        code = func.json_extract(joined.c.value, "$.code")
        suggested = func.json_extract(joined.c.value, "$.suggested") == 1
    source = (
        select(
            Suggestion.id, Suggestion.incident_id, code.label("code"), suggested.label("suggested")
        )
        .select_from(Suggestion)
        .join(joined, true())
        .where(Suggestion.codebook_version_id.in_(_version_ids(codebook)))
        .subquery()
    )
    return source, source.c.code, source.c.suggested


def used_codes(session: Session, codebook: Codebook, keys: Iterable[str]) -> dict[str, int]:
    """Code -> number of stories using it under this codebook: as a final code, or as a code the
    service suggested to coders. Scores below the threshold (suggested = false) are not a use."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    items, item_code, suggested = _suggestion_items(session, codebook)
    uses = union_all(
        select(
            IncidentCode.code.label("code"), IncidentCode.incident_id.label("incident_id")
        ).where(
            IncidentCode.code.in_(wanted),
            IncidentCode.codebook_version_id.in_(_version_ids(codebook)),
        ),
        select(item_code, items.c.incident_id).where(item_code.in_(wanted), suggested),
    ).subquery()
    rows = session.execute(
        select(uses.c.code, func.count(func.distinct(uses.c.incident_id)))
        .group_by(uses.c.code)
        .order_by(uses.c.code)
    ).all()
    return {code: count for code, count in rows}


# Writing ---------------------------------------------------------------------------------------


def create_codebook(
    session: Session, content: Mapping[str, Any], actor: Principal | None, change_note: str = ""
) -> CodebookVersion:
    """A new codebook from its YAML-format content, stored (normalised) as version 1."""
    parsed = parse_content(content)
    if find_codebook(session, parsed.key) is not None:
        raise Conflict(f"a codebook with the key {parsed.key!r} exists already")
    codebook = Codebook(key=parsed.key, name=parsed.name, current_version=1)
    try:
        with session.begin_nested():
            session.add(codebook)
            session.flush()
    except IntegrityError as exc:  # created by a concurrent request since the check above
        raise Conflict(f"a codebook with the key {parsed.key!r} exists already") from exc
    version = CodebookVersion(
        codebook_id=codebook.id,
        number=1,
        content=codebook_to_dict(parsed),
        change_note=change_note,
        code_mapping=None,
        created_by=_actor_name(actor),
    )
    session.add(version)
    session.flush()
    audit.record(
        session,
        actor,
        "codebook.create",
        "codebook",
        codebook.id,
        after={
            "key": parsed.key,
            "name": parsed.name,
            "version": 1,
            "codes": list(parsed.code_keys),
            "change_note": change_note,
        },
    )
    # Surveys created before any codebook existed adopt the first one, so that every story
    # has a codebook to be scored and coded with.
    adopted = session.execute(
        update(Survey).where(Survey.codebook_id.is_(None)).values(codebook_id=codebook.id)
    )
    if getattr(adopted, "rowcount", 0):
        enqueue_rescoring(session, codebook_id=codebook.id)
    return version


def _add_version(
    session: Session,
    codebook: Codebook,
    content: dict[str, Any],
    actor: Principal | None,
    change_note: str,
    code_mapping: dict[str, list[str]] | None = None,
) -> CodebookVersion:
    number = codebook.current_version + 1
    # Conditional bump: of two concurrent writers, the second finds no row and gets a 409
    # instead of a duplicate version number.
    result = session.execute(
        update(Codebook)
        .where(Codebook.id == codebook.id, Codebook.current_version == number - 1)
        .values(current_version=number, name=content["name"])
    )
    if getattr(result, "rowcount", 0) != 1:
        raise Conflict("the codebook was changed at the same time; reload it and try again")
    version = CodebookVersion(
        codebook_id=codebook.id,
        number=number,
        content=content,
        change_note=change_note,
        code_mapping=code_mapping,
        created_by=_actor_name(actor),
    )
    session.add(version)
    session.flush()
    # Stories not yet coded are re-scored under the new version (editing the codebook changes
    # suggestions with no code change).
    enqueue_rescoring(session, codebook_id=codebook.id)
    return version


def _codes_by_key(content: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {code["key"]: code for code in content.get("codes", [])}


def diff_codes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[str]]:
    """Which code keys a new version adds, removes, retires, brings back or otherwise changes."""
    old, new = _codes_by_key(before), _codes_by_key(after)

    def body(code: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in code.items() if k != "retired"}

    both = [key for key in new if key in old]
    return {
        "added": [key for key in new if key not in old],
        "removed": [key for key in old if key not in new],
        "retired": [k for k in both if new[k]["retired"] and not old[k]["retired"]],
        "unretired": [k for k in both if old[k]["retired"] and not new[k]["retired"]],
        "changed": [k for k in both if body(new[k]) != body(old[k])],
    }


def _drop_suggestions(session: Session, codebook: Codebook, codes: Iterable[str]) -> int:
    """Drop the stored suggestions that score codes now gone or retired, and queue those stories
    to be scored again under the new version; returns how many were dropped."""
    keys = sorted(set(codes))
    if not keys:
        return 0
    items, item_code, _suggested = _suggestion_items(session, codebook)
    stale = session.execute(
        select(items.c.id, items.c.incident_id).where(item_code.in_(keys)).distinct()
    ).all()
    if not stale:
        return 0
    session.execute(
        delete(Suggestion)
        .where(Suggestion.id.in_(sorted({row.id for row in stale})))
        .execution_options(synchronize_session=False)
    )
    enqueue_suggestions(session, sorted({row.incident_id for row in stale}))
    return len(stale)


def update_codebook(
    session: Session,
    codebook: Codebook,
    content: Mapping[str, Any],
    actor: Principal | None,
    change_note: str = "",
) -> CodebookVersion:
    """A new version with this content; the current one when nothing changed. A code in use may
    be retired (`retired: true`) but never removed."""
    parsed = parse_content(content)
    if parsed.key != codebook.key:
        raise CodebookInvalid(
            [("key", f"must stay {codebook.key!r}, not {parsed.key!r}: import a new codebook")]
        )
    current = current_version(session, codebook)
    normalised = codebook_to_dict(parsed)
    if normalised == current.content:
        return current
    changes = diff_codes(current.content, normalised)
    used = used_codes(session, codebook, changes["removed"])
    if used:
        raise CodebookInvalid(
            [
                (
                    "codes",
                    f"code {code!r} is used by {count} stor{'y' if count == 1 else 'ies'} and "
                    "cannot be removed; keep it with `retired: true` instead "
                    "(a used code is retired, never deleted)",
                )
                for code, count in used.items()
            ],
            summary="used codes cannot be removed",
        )
    _drop_suggestions(session, codebook, changes["removed"])
    version = _add_version(session, codebook, normalised, actor, change_note)
    audit.record(
        session,
        actor,
        "codebook.update",
        "codebook",
        codebook.id,
        before={"version": current.number},
        after={"version": version.number, **changes, "change_note": change_note},
    )
    return version


# Rename, merge and split -----------------------------------------------------------------------

_operations = TypeAdapter(list[CodeOperation])

Operation = Rename | Merge | Split


def _validated_operations(operations: Sequence[Operation | Mapping[str, Any]]) -> list[Operation]:
    if all(isinstance(op, Rename | Merge | Split) for op in operations):
        return [op for op in operations if isinstance(op, Rename | Merge | Split)]
    raw = [
        op.model_dump(by_alias=True) if isinstance(op, Rename | Merge | Split) else op
        for op in operations
    ]
    try:
        return _operations.validate_python(raw)
    except ValidationError as exc:
        raise CodebookInvalid(
            [
                (
                    "operations"
                    + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]),
                    e["msg"],
                )
                for e in exc.errors()
            ],
            summary="invalid change",
        ) from exc


# (incident id, {code: decision}) of one coding, decision as in coding_codes.
CodingState = tuple[int, dict[str, str]]


def _move_decision(decisions: dict[str, str], source: str, targets: Sequence[str]) -> None:
    """Move one coding's decision on `source` to `targets`; a code chosen (accepted or added)
    wins over the same code rejected."""
    decision = decisions.pop(source, None)
    if decision is None:
        return
    for target in targets:
        existing = decisions.get(target)
        if existing is None or existing == "rejected":
            decisions[target] = decision


class _Plan:
    """The operations simulated on a copy of the codes and of the stories' final codes, so that
    every one is checked before anything is written."""

    def __init__(
        self,
        content: Mapping[str, Any],
        stories: dict[int, dict[str, int]],
        codings: dict[int, CodingState] | None = None,
    ) -> None:
        self.original_keys = {code["key"] for code in content["codes"]}
        self.codes: list[dict[str, Any]] = copy.deepcopy(list(content["codes"]))
        # incident id -> {code: id of the incident_codes row it comes from}
        self.stories = stories
        # coding id -> (incident id, {code: decision}): each coder's codings move along too.
        self.codings: dict[int, CodingState] = codings or {}
        self.problems: list[Problem] = []
        self.mapping: dict[str, list[str]] = {}
        self.retired: list[str] = []

    def find(self, key: str) -> dict[str, Any] | None:
        return next((code for code in self.codes if code["key"] == key), None)

    def _need(self, key: str, where: str, *, active: bool) -> dict[str, Any] | None:
        code = self.find(key)
        if code is None:
            self.problems.append((where, f"unknown code {key!r}"))
        elif active and code["retired"]:
            self.problems.append((where, f"code {key!r} is retired"))
        return code

    def _new_code(self, source: dict[str, Any], key: str, label: str | None) -> None:
        code = {**copy.deepcopy(source), "key": key, "retired": False}
        if label:
            code["label"] = label
        self.codes.insert(self.codes.index(source) + 1, code)

    def _retire(self, source: dict[str, Any], successor: str | None) -> None:
        source["retired"] = True
        self.retired.append(source["key"])
        if successor is None:
            return
        # Sub-codes follow their parent to its successor.
        for code in self.codes:
            if code["parent"] == source["key"]:
                code["parent"] = source["parent"] if code["key"] == successor else successor

    def _map(self, source: str, targets: list[str]) -> None:
        # Compose with earlier operations of the same change: keys are those of the old version.
        for old, new in self.mapping.items():
            if source in new:
                replaced: list[str] = []
                for key in new:
                    for item in targets if key == source else [key]:
                        if item not in replaced:
                            replaced.append(item)
                self.mapping[old] = replaced
        if source in self.original_keys and source not in self.mapping:
            self.mapping[source] = list(targets)

    def rename(self, op: Rename, where: str) -> None:
        before = len(self.problems)
        source = self._need(op.from_, f"{where}.from", active=True)
        if self.find(op.to) is not None:
            self.problems.append(
                (f"{where}.to", f"code {op.to!r} exists already; merge into it instead")
            )
        if len(self.problems) > before or source is None:
            return
        self._new_code(source, op.to, op.label)
        self._retire(source, op.to)
        for codes in self.stories.values():
            if op.from_ in codes:
                codes.setdefault(op.to, codes.pop(op.from_))
        for _incident_id, decisions in self.codings.values():
            _move_decision(decisions, op.from_, [op.to])
        self._map(op.from_, [op.to])

    def merge(self, op: Merge, where: str) -> None:
        before = len(self.problems)
        sources = [
            self._need(key, f"{where}.from[{i}]", active=False) for i, key in enumerate(op.from_)
        ]
        target = self.find(op.into)
        if target is not None and target["retired"]:
            self.problems.append(
                (f"{where}.into", f"code {op.into!r} is retired; merge into an active code")
            )
        if len(self.problems) > before:
            return
        if target is None:
            first = sources[0]
            assert first is not None
            self._new_code(first, op.into, op.label)
        elif op.label:
            target["label"] = op.label
        for source in sources:
            assert source is not None
            self._retire(source, op.into)
        for codes in self.stories.values():
            origins = [codes.pop(key) for key in op.from_ if key in codes]
            if origins:
                codes.setdefault(op.into, origins[0])
        for _incident_id, decisions in self.codings.values():
            for key in op.from_:
                _move_decision(decisions, key, [op.into])
        for key in op.from_:
            self._map(key, [op.into])

    def split(self, op: Split, where: str) -> None:
        before = len(self.problems)
        source = self._need(op.from_, f"{where}.from", active=True)
        for i, key in enumerate(op.into):
            self._need(key, f"{where}.into[{i}]", active=True)
        carriers = sorted(
            {i for i, codes in self.stories.items() if op.from_ in codes}
            | {
                i
                for i, decisions in self.codings.values()
                if decisions.get(op.from_) not in (None, "rejected")
            }
        )
        missing = [i for i in carriers if not op.assign.get(i)]
        if missing:
            self.problems.append(
                (
                    f"{where}.assign",
                    f"stories carrying {op.from_!r} need an assignment to one or more of "
                    f"{', '.join(op.into)}; missing for: {', '.join(map(str, missing))}",
                )
            )
        strangers = sorted(i for i in op.assign if i not in carriers)
        if strangers:
            self.problems.append(
                (
                    f"{where}.assign",
                    f"these stories do not carry {op.from_!r}: {', '.join(map(str, strangers))}",
                )
            )
        for incident_id, keys in sorted(op.assign.items()):
            for key in keys:
                if key not in op.into:
                    self.problems.append(
                        (f"{where}.assign.{incident_id}", f"code {key!r} is not one of 'into'")
                    )
        if len(self.problems) > before or source is None:
            return
        self._retire(source, None)
        for incident_id in carriers:
            codes = self.stories.get(incident_id, {})
            if op.from_ in codes:
                origin = codes.pop(op.from_)
                for key in op.assign[incident_id]:
                    codes.setdefault(key, origin)
        for incident_id, decisions in self.codings.values():
            # A rejected suggestion of the old code rejects each of its parts; a chosen one
            # becomes the parts the story was assigned.
            targets = (
                list(op.into)
                if decisions.get(op.from_) == "rejected"
                else list(op.assign.get(incident_id, []))
            )
            _move_decision(decisions, op.from_, targets)
        self._map(op.from_, list(op.into))


def _involved_codes(operations: Sequence[Operation]) -> set[str]:
    keys: set[str] = set()
    for op in operations:
        if isinstance(op, Rename):
            keys.update((op.from_, op.to))
        elif isinstance(op, Merge):
            keys.update((*op.from_, op.into))
        else:
            keys.update((op.from_, *op.into))
    return keys


def apply_changes(
    session: Session,
    codebook: Codebook,
    operations: Sequence[Operation | Mapping[str, Any]],
    actor: Principal | None,
    change_note: str = "",
) -> CodebookVersion:
    """Rename, merge or split codes in one new version, moving the stories' final codes along.

    All operations are checked (in order, each seeing the ones before it) before anything is
    written; a problem anywhere leaves the codebook and the codings as they were."""
    ops = _validated_operations(operations)
    current = current_version(session, codebook)
    rows = list(
        session.scalars(
            select(IncidentCode)
            .where(
                IncidentCode.code.in_(sorted(_involved_codes(ops))),
                IncidentCode.codebook_version_id.in_(_version_ids(codebook)),
            )
            .order_by(IncidentCode.id)
        )
    )
    stories: dict[int, dict[str, int]] = {}
    for row in rows:
        stories.setdefault(row.incident_id, {})[row.code] = row.id
    codings = _involved_codings(session, codebook, _involved_codes(ops))
    plan = _Plan(current.content, copy.deepcopy(stories), copy.deepcopy(codings))
    for index, op in enumerate(ops):
        where = f"operations[{index}]"
        if isinstance(op, Rename):
            plan.rename(op, where)
        elif isinstance(op, Merge):
            plan.merge(op, where)
        else:
            plan.split(op, where)
    if plan.problems:
        raise CodebookInvalid(plan.problems, summary="the changes cannot be applied")
    parsed = parse_content({**current.content, "codes": plan.codes})
    version = _add_version(
        session, codebook, codebook_to_dict(parsed), actor, change_note, plan.mapping
    )
    mapped, removed = _move_codings(session, rows, plan.stories, version)
    coder_codings = _move_coder_codings(session, codings, plan.codings, version, change_note)
    dropped = _drop_suggestions(session, codebook, plan.retired)
    audit.record(
        session,
        actor,
        "codebook.change",
        "codebook",
        codebook.id,
        before={"version": current.number},
        after={
            "version": version.number,
            "operations": [op.model_dump(mode="json", by_alias=True) for op in ops],
            "code_mapping": plan.mapping,
            "codings_mapped": mapped,
            "codings_removed": removed,
            "coder_codings_mapped": len(coder_codings),
            "suggestions_dropped": dropped,
            "change_note": change_note,
        },
    )
    _resettle(session, coder_codings, actor)
    return version


def _involved_codings(
    session: Session, codebook: Codebook, keys: Iterable[str]
) -> dict[int, CodingState]:
    """Every coder's decisions, in the codings made with this codebook that name one of the
    codes an operation touches: coding id -> (incident id, {code: decision})."""
    involved = (
        select(CodingCode.coding_id)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(
            CodingCode.code.in_(sorted(set(keys))),
            Coding.codebook_version_id.in_(_version_ids(codebook)),
        )
    )
    found: dict[int, CodingState] = {}
    for coding_id, incident_id, code, decision in session.execute(
        select(Coding.id, Coding.incident_id, CodingCode.code, CodingCode.decision)
        .join(CodingCode, CodingCode.coding_id == Coding.id)
        .where(Coding.id.in_(involved), CodingCode.proposal_id.is_(None))
        .order_by(Coding.id, CodingCode.id)
    ):
        found.setdefault(coding_id, (incident_id, {}))[1][code] = decision
    return found


def _move_coder_codings(
    session: Session,
    before: dict[int, CodingState],
    after: dict[int, CodingState],
    version: CodebookVersion,
    change_note: str,
) -> list[int]:
    """Write each coder's mapped decisions; what they had chosen, and under which version,
    goes to the coding's history. Returns the ids of the codings that changed."""
    changed = [cid for cid in sorted(before) if before[cid][1] != after[cid][1]]
    if not changed:
        return []
    codings = {c.id: c for c in session.scalars(select(Coding).where(Coding.id.in_(changed)))}
    now = utcnow()
    for coding_id in changed:
        old, new = before[coding_id][1], after[coding_id][1]
        coding = codings[coding_id]
        coding.history = [
            *coding.history,
            {
                "at": now.isoformat(),
                "reason": "codebook_change",
                "note": change_note,
                "codebook_version_id": coding.codebook_version_id,
                "mapped_to_version_id": version.id,
                "codes": [{"code": c, "decision": d} for c, d in old.items()],
            },
        ]
        coding.codebook_version_id = version.id
        # The coder's open tab holds the old codes: its If-Match must fail, not overwrite.
        coding.revision += 1
        session.execute(
            delete(CodingCode).where(
                CodingCode.coding_id == coding_id,
                CodingCode.code.in_(sorted(set(old) | set(new))),
                CodingCode.proposal_id.is_(None),
            )
        )
    session.flush()
    session.add_all(
        CodingCode(coding_id=coding_id, code=code, decision=decision)
        for coding_id in changed
        for code, decision in after[coding_id][1].items()
    )
    session.flush()
    return changed


def _resettle(session: Session, coding_ids: Sequence[int], actor: Principal | None) -> None:
    """Settle again the open stories whose codings were mapped: coders who disagreed under the
    old codes may agree under the new ones (a merge), so the story leaves adjudication."""
    if not coding_ids:
        return
    # The review domain settles stories; it imports this module, hence the late import.
    from app.reviews.service import resettle_open

    incident_ids = sorted(
        set(session.scalars(select(Coding.incident_id).where(Coding.id.in_(coding_ids))))
    )
    resettle_open(session, incident_ids, actor)


def _move_codings(
    session: Session,
    rows: list[IncidentCode],
    final: dict[int, dict[str, int]],
    version: CodebookVersion,
) -> tuple[int, int]:
    """Bring the incident_codes rows to the planned state: a row keeps its provenance (source,
    who, when) under its new code; a row split into several codes is copied. Deletes go first,
    then updates, then inserts, so that (incident_id, code) stays unique at every step."""
    targets: dict[int, list[str]] = {}
    for story in final.values():
        for code, origin in story.items():
            targets.setdefault(origin, []).append(code)
    updates: list[tuple[IncidentCode, str]] = []
    copies: list[IncidentCode] = []
    removed = 0
    for row in rows:
        codes = targets.get(row.id, [])
        if not codes:
            session.delete(row)
            removed += 1
            continue
        keep = row.code if row.code in codes else codes[0]
        if keep != row.code:
            updates.append((row, keep))
        copies.extend(
            IncidentCode(
                incident_id=row.incident_id,
                code=code,
                codebook_version_id=version.id,
                source=row.source,
                confirmed_by=row.confirmed_by,
                confirmed_at=row.confirmed_at,
            )
            for code in codes
            if code != keep
        )
    session.flush()
    for row, code in updates:
        row.code = code
        row.codebook_version_id = version.id
    session.flush()
    session.add_all(copies)
    session.flush()
    return len(updates) + len(copies), removed


# The shipped default ---------------------------------------------------------------------------


def ensure_default_codebook(
    session: Session, path: str | Path = DEFAULT_CODEBOOK_FILE
) -> CodebookVersion:
    """Load the codebook file unless a codebook with its key exists; its current version."""
    try:
        parsed = load_codebook_file(path)
    except CodebookError as exc:
        raise CodebookInvalid([(p.path, p.message) for p in exc.problems]) from exc
    existing = find_codebook(session, parsed.key)
    if existing is not None:
        return current_version(session, existing)
    return create_codebook(
        session, codebook_to_dict(parsed), None, f"loaded from {Path(path).name}"
    )
