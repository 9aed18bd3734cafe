"""Codebooks as REFI-QDA `.qdc`: export, and import that merges into a new codebook version.

A code's description carries its definition, inclusion and exclusion criteria and examples in
plain text sections that QDA programs show as the code memo and that import reads back; codes
nest by `parent`; colour and `isCodable` travel as attributes. A code's GUID is derived from the
codebook and code keys, so the same codebook exports to the same file. Importing matches codes
by GUID, then by name, then by key; what a program has that we do not (sets, notes) is reported,
not imported."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from sqlalchemy.orm import Session

from app.auth import Principal
from app.codebooks import service as codebooks
from app.models import Codebook, CodebookVersion
from app.refi.xml import CODEBOOK_NS, ORIGIN, guid, normal_guid, parse, validate_bytes
from nlp.codebook import CODE_KEY_RE, CodeSpec
from nlp.codebook import Codebook as NlpCodebook

INCLUSION = "Inclusion criteria:"
EXCLUSION = "Exclusion criteria:"
EXAMPLES = "Examples:"
KEY_LINE = "Code key: "  # our key, so that a codebook comes back with the same keys
_SECTIONS = {INCLUSION: "inclusion", EXCLUSION: "exclusion", EXAMPLES: "examples"}


def code_guid(codebook_key: str, code_key: str) -> str:
    return guid("code", codebook_key, code_key)


def description(code: CodeSpec) -> str:
    """Definition, then each list as `Heading:` and `- item` lines (continuations indented)."""
    parts = [code.definition.strip()] if code.definition.strip() else []
    for heading, items in (
        (INCLUSION, code.inclusion),
        (EXCLUSION, code.exclusion),
        (EXAMPLES, code.examples),
    ):
        if items:
            lines = [heading]
            for item in items:
                first, *rest = item.strip().split("\n")
                lines.append(f"- {first}")
                lines.extend(f"  {line}" for line in rest)
            parts.append("\n".join(lines))
    parts.append(f"{KEY_LINE}{code.key}")
    return "\n\n".join(parts)


def parse_description(text: str | None) -> dict[str, Any]:
    """The inverse of `description`; text in no known section is the definition."""
    out: dict[str, Any] = {
        "definition": "",
        "inclusion": [],
        "exclusion": [],
        "examples": [],
        "key": None,
    }
    definition: list[str] = []
    section: str | None = None
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        if line.startswith(KEY_LINE) and CODE_KEY_RE.match(line[len(KEY_LINE) :].strip()):
            out["key"] = line[len(KEY_LINE) :].strip()
            section = "__key__"
            continue
        if section == "__key__" and not line.strip():
            continue
        if line.strip() in _SECTIONS:
            section = _SECTIONS[line.strip()]
            continue
        if section is None or section == "__key__":
            definition.append(line)
        elif line.startswith("- "):
            out[section].append(line[2:])
        elif line.startswith("  ") and out[section]:
            out[section][-1] += "\n" + line[2:]
        elif line.strip():
            out[section].append(line.strip())
    out["definition"] = "\n".join(definition).strip()
    return out


def _children(codebook: NlpCodebook) -> dict[str | None, list[CodeSpec]]:
    tree: dict[str | None, list[CodeSpec]] = {}
    for code in codebook.codes:
        tree.setdefault(code.parent, []).append(code)
    return tree


def code_elements(parent: etree._Element, ns: str, codebook: NlpCodebook) -> None:
    """`<Code>` elements, nested as the codebook's parents say, under `parent`."""
    tree = _children(codebook)

    def add(under: etree._Element, code: CodeSpec) -> None:
        element = etree.SubElement(
            under,
            f"{{{ns}}}Code",
            guid=code_guid(codebook.key, code.key),
            name=code.label,
            isCodable="true" if code.codable and not code.retired else "false",
        )
        if code.color:
            element.set("color", code.color)
        text = description(code)
        if text:
            etree.SubElement(element, f"{{{ns}}}Description").text = text
        for child in tree.get(code.key, []):
            add(element, child)

    for top in tree.get(None, []):
        add(parent, top)


def export_qdc(version: CodebookVersion) -> bytes:
    codebook = codebooks.load_nlp_codebook(version)
    root = etree.Element(f"{{{CODEBOOK_NS}}}CodeBook", nsmap={None: CODEBOOK_NS}, origin=ORIGIN)
    codes = etree.SubElement(root, f"{{{CODEBOOK_NS}}}Codes")
    code_elements(codes, CODEBOOK_NS, codebook)
    data = etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)
    validate_bytes(data, "codebook")
    return data


@dataclass
class ForeignCode:
    """A code as a QDA program wrote it."""

    guid: str
    name: str
    codable: bool
    color: str | None
    description: str | None
    parent: str | None  # the parent's guid


@dataclass
class ReadCodebook:
    codes: list[ForeignCode]
    origin: str | None
    sets: int = 0
    notes: list[str] = field(default_factory=list)


def read_codes(codes_element: etree._Element | None, ns: str) -> list[ForeignCode]:
    found: list[ForeignCode] = []

    def walk(element: etree._Element, parent: str | None) -> None:
        for code in element.findall(f"{{{ns}}}Code"):
            desc = code.find(f"{{{ns}}}Description")
            item = ForeignCode(
                guid=normal_guid(code.get("guid")),
                name=(code.get("name") or "").strip(),
                codable=(code.get("isCodable") or "true").strip().lower() in ("true", "1"),
                color=code.get("color"),
                description=desc.text if desc is not None else None,
                parent=parent,
            )
            found.append(item)
            walk(code, item.guid)

    if codes_element is not None:
        walk(codes_element, None)
    return found


def read_qdc(data: bytes) -> ReadCodebook:
    root = parse(data, "codebook", "the .qdc file")
    sets = root.find(f"{{{CODEBOOK_NS}}}Sets")
    return ReadCodebook(
        read_codes(root.find(f"{{{CODEBOOK_NS}}}Codes"), CODEBOOK_NS),
        root.get("origin"),
        len(sets) if sets is not None else 0,
    )


def slug(name: str) -> str:
    """A code key from a program's code name: `Staff: rude!` -> `staff_rude`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if not key or not key[0].isalpha():
        key = f"code_{key}" if key else "code"
    return key[:90]


def _expand_color(color: str | None) -> str | None:
    if color and re.fullmatch(r"#[0-9A-Fa-f]{3}", color):
        return "#" + "".join(c * 2 for c in color[1:]).upper()
    return color.upper() if color else None


def merge(
    current: Mapping[str, Any] | None, foreign: Iterable[ForeignCode], *, key: str, name: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The codebook content after merging the program's codes into `current` (or a new one),
    and how each foreign GUID maps to a code key. Codes only in `current` stay; indicators
    and thresholds of matched codes stay; labels, descriptions, nesting, colours and
    `isCodable` come from the file."""
    content: dict[str, Any] = (
        {**current, "codes": [dict(c) for c in current.get("codes", [])]}
        if current
        else {"key": key, "name": name, "description": "", "language": "en", "codes": []}
    )
    by_key = {c["key"]: c for c in content["codes"]}
    by_guid = {code_guid(content["key"], k): k for k in by_key}
    by_label = {str(c["label"]).strip().lower(): c["key"] for c in content["codes"]}
    mapping: dict[str, str] = {}
    foreign = list(foreign)
    for code in foreign:
        stated = parse_description(code.description)["key"]
        found = by_guid.get(code.guid) or (stated if stated in by_key else None)
        found = found or by_label.get(code.name.lower())
        if found is None and stated and stated not in mapping.values():
            found = stated
            entry0: dict[str, Any] = {"key": found, "label": code.name or found}
            content["codes"].append(entry0)
            by_key[found] = entry0
        if found is None and slug(code.name) in by_key and slug(code.name) not in mapping.values():
            found = slug(code.name)
        if found is None:
            found = slug(code.name)
            suffix = 2
            while found in by_key:
                found = f"{slug(code.name)[:86]}_{suffix}"
                suffix += 1
            entry: dict[str, Any] = {"key": found, "label": code.name or found}
            content["codes"].append(entry)
            by_key[found] = entry
        mapping[code.guid] = found
    for code in foreign:
        entry = by_key[mapping[code.guid]]
        parsed = parse_description(code.description)
        entry["label"] = code.name or entry["label"]
        entry["definition"] = parsed["definition"]
        for section in ("inclusion", "exclusion", "examples"):
            entry[section] = parsed[section]
        entry["parent"] = mapping.get(code.parent) if code.parent else None
        color = _expand_color(code.color)
        if color:
            entry["color"] = color
        else:
            entry.pop("color", None)
        if entry.get("retired"):
            continue  # a retired code stays retired: the file cannot bring it back
        if code.codable:
            entry.pop("codable", None)
        else:
            entry["codable"] = False
    return content, mapping


@dataclass(frozen=True)
class QdcImport:
    codebook_id: int
    key: str
    version: int
    outcome: str  # created, new version, unchanged
    codes: int
    sets_ignored: int


def import_qdc(
    session: Session,
    data: bytes,
    *,
    key: str | None,
    name: str | None,
    actor: Principal | None,
    note: str = "",
) -> QdcImport:
    """Merge a `.qdc` into the codebook `key` (a new version), or create it; the usual codebook
    validation applies and nothing is saved when it fails."""
    read = read_qdc(data)
    target: Codebook | None = codebooks.find_codebook(session, key) if key else None
    key = key or slug(name or "imported codebook").replace("_", "-")
    current = codebooks.current_version(session, target).content if target else None
    content, _mapping = merge(current, read.codes, key=key, name=name or key)
    note = note or f"imported from a REFI-QDA codebook ({read.origin or 'unknown program'})"
    if target is None:
        version = codebooks.create_codebook(session, content, actor, note)
        outcome = "created"
    else:
        before = target.current_version
        version = codebooks.update_codebook(session, target, content, actor, note)
        outcome = "unchanged" if version.number == before else "new version"
    return QdcImport(version.codebook_id, key, version.number, outcome, len(read.codes), read.sets)
