"""The REFI-QDA namespaces, schema validation (lxml) and stable GUIDs."""

from __future__ import annotations

import uuid
from functools import cache
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from app.errors import AppError

SCHEMAS = Path(__file__).parent / "schemas"
CODEBOOK_NS = "urn:QDA-XML:codebook:1.0"
PROJECT_NS = "urn:QDA-XML:project:1.0"
ORIGIN = "CIT service"
# GUIDs derived from what they name, so that exporting twice gives the same file.
_NAMESPACE = uuid.UUID("5b0c7a52-6d1e-4c53-9a3e-2f6b8f0e9a11")
Kind = Literal["codebook", "project"]


class RefiInvalid(AppError):
    """A REFI-QDA file that does not follow the standard: 422 with the schema's complaints."""

    status = 422
    title = "Invalid REFI-QDA file"
    type_slug = "invalid-refi-qda"


def guid(*parts: Any) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def normal_guid(value: str | None) -> str:
    """ATLAS.ti writes `{GUID}` in upper case; the standard allows both forms."""
    return (value or "").strip().strip("{}").lower()


@cache
def schema(kind: Kind) -> etree.XMLSchema:
    name = "Codebook.xsd" if kind == "codebook" else "Project.xsd"
    return etree.XMLSchema(etree.parse(str(SCHEMAS / name)))


def parse(data: bytes, kind: Kind, what: str) -> etree._Element:
    """Parse and validate; RefiInvalid with line numbers when the file breaks the schema."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise RefiInvalid(f"{what} is not well-formed XML: {exc}") from exc
    validator = schema(kind)
    if not validator.validate(root):
        errors = [{"line": e.line, "message": e.message} for e in list(validator.error_log)[:50]]
        first = errors[0] if errors else {"line": 0, "message": "?"}
        raise RefiInvalid(
            f"{what} does not follow the REFI-QDA {kind} schema "
            f"(line {first['line']}: {first['message']})",
            extra={"errors": errors},
        )
    return root


def validate_bytes(data: bytes, kind: Kind) -> None:
    parse(data, kind, f"the {kind}")
