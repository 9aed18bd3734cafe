"""Codebooks: the codes researchers apply to CIT stories, their criteria and the rule indicators."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_EXCLUDE_WINDOW",
    "DEFAULT_THRESHOLD",
    "CodeSpec",
    "Codebook",
    "CodebookError",
    "CodebookProblem",
    "Indicators",
    "codebook_to_dict",
    "codebook_to_yaml",
    "load_codebook_file",
    "parse_codebook",
]

DEFAULT_THRESHOLD = 0.5
"""Score at or above which a code is suggested when the codebook sets no threshold."""

CODE_KEY_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
CODEBOOK_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")

TOP_FIELDS = ("key", "name", "description", "language", "codes")
CODE_FIELDS = (
    "key",
    "label",
    "parent",
    "bitner_group",
    "definition",
    "inclusion",
    "exclusion",
    "examples",
    "threshold",
    "retired",
    "codable",
    "indicators",
    "color",
)
COLOR_RE = re.compile(r"#(?:[0-9A-Fa-f]{6}|[0-9A-Fa-f]{3})\Z")
INDICATOR_FIELDS = (
    "phrases",
    "lemma_phrases",
    "patterns",
    "exclude_phrases",
    "exclude_patterns",
    "exclude_window",
)
DEFAULT_EXCLUDE_WINDOW = 3
"""Tokens on either side of a negative cue within which it vetoes a match of its code."""
MAX_EXCLUDE_WINDOW = 50

TokenPattern = tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Indicators:
    """Surface evidence for a code: phrases (case-insensitive), lemma phrases, Matcher patterns.

    Negative cues veto evidence: a match of `exclude_phrases` (case-insensitive, like `phrases`)
    or `exclude_patterns` cancels every match of this code's indicators that overlaps it or lies
    within `exclude_window` tokens of it ("outstanding balance" vetoes "outstanding" as praise).
    """

    phrases: tuple[str, ...] = ()
    lemma_phrases: tuple[str, ...] = ()
    patterns: tuple[TokenPattern, ...] = ()
    exclude_phrases: tuple[str, ...] = ()
    exclude_patterns: tuple[TokenPattern, ...] = ()
    exclude_window: int = DEFAULT_EXCLUDE_WINDOW

    def __hash__(self) -> int:
        # Patterns hold dicts; hash their canonical JSON so codebooks can key caches.
        return hash(
            (
                self.phrases,
                self.lemma_phrases,
                json.dumps(self.patterns, sort_keys=True),
                self.exclude_phrases,
                json.dumps(self.exclude_patterns, sort_keys=True),
                self.exclude_window,
            )
        )

    @property
    def is_empty(self) -> bool:
        return not (self.phrases or self.lemma_phrases or self.patterns)

    @property
    def has_exclusions(self) -> bool:
        return bool(self.exclude_phrases or self.exclude_patterns)

    @property
    def uses_lemmas(self) -> bool:
        """True when matching needs token lemmas (lemma phrases or a LEMMA key in a pattern)."""
        return bool(self.lemma_phrases) or any(
            "LEMMA" in token
            for pattern in (*self.patterns, *self.exclude_patterns)
            for token in pattern
        )


@dataclass(frozen=True)
class CodeSpec:
    """One code of a codebook, as a researcher defines it."""

    key: str
    label: str
    parent: str | None = None
    bitner_group: str | None = None
    definition: str = ""
    inclusion: tuple[str, ...] = ()
    exclusion: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    threshold: float = DEFAULT_THRESHOLD
    retired: bool = False
    # False for a parent that only groups its sub-codes: coders apply one of those instead.
    codable: bool = True
    indicators: Indicators = field(default_factory=Indicators)
    # For QDA programs (REFI-QDA): the code's colour.
    color: str | None = None


@dataclass(frozen=True)
class Codebook:
    """A named set of codes; `active_codes` are those a coder may apply (not retired, and not a
    parent marked `codable: false`)."""

    key: str
    name: str
    codes: tuple[CodeSpec, ...]
    description: str = ""
    language: str = "en"

    @property
    def active_codes(self) -> tuple[CodeSpec, ...]:
        """The codes coders may apply and suggestions score: not retired, and codable."""
        return tuple(code for code in self.codes if not code.retired and code.codable)

    @property
    def code_keys(self) -> tuple[str, ...]:
        return tuple(code.key for code in self.codes)

    def code(self, key: str) -> CodeSpec:
        for code in self.codes:
            if code.key == key:
                return code
        raise KeyError(key)

    @property
    def uses_lemmas(self) -> bool:
        return any(code.indicators.uses_lemmas for code in self.active_codes)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form: equal codebooks give equal fingerprints."""
        canonical = json.dumps(codebook_to_dict(self), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CodebookProblem:
    """One thing wrong with a codebook: where (`codes[2].indicators.patterns[1]`) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(codebook)'}: {self.message}"


class CodebookError(ValueError):
    """A codebook that cannot be used; `problems` lists every place found wrong."""

    def __init__(self, problems: Sequence[CodebookProblem]) -> None:
        self.problems: list[CodebookProblem] = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid codebook ({count} problem{'s' if count != 1 else ''}):\n{lines}")


class _Problems:
    """Collects problems while the parser goes on, so that one error reports them all."""

    def __init__(self) -> None:
        self.items: list[CodebookProblem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(CodebookProblem(path, message))


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _text(
    data: Mapping[str, Any],
    name: str,
    path: str,
    problems: _Problems,
    *,
    required: bool = False,
    default: str = "",
) -> str:
    value = data.get(name)
    where = f"{path}.{name}" if path else name
    if value is None:
        if required:
            problems.add(where, "is required")
        return default
    if not isinstance(value, str):
        problems.add(where, f"must be a string, not {_type_name(value)}")
        return default
    if required and not value.strip():
        problems.add(where, "must not be blank")
    return value


def _optional_text(
    data: Mapping[str, Any], name: str, path: str, problems: _Problems
) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(f"{path}.{name}", f"must be a string or null, not {_type_name(value)}")
        return None
    return value if value.strip() else None


def _string_list(value: object, where: str, problems: _Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add(where, f"must be a list of strings, not {_type_name(value)}")
        return ()
    items: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            problems.add(f"{where}[{index}]", f"must be a string, not {_type_name(item)}")
        elif not item.strip():
            problems.add(f"{where}[{index}]", "must not be blank")
        else:
            items.append(item)
    return tuple(items)


def _unknown_fields(
    data: Mapping[str, Any], allowed: Sequence[str], path: str, problems: _Problems
) -> None:
    for name in data:
        if name not in allowed:
            where = f"{path}.{name}" if path else str(name)
            problems.add(where, f"unknown field (allowed: {', '.join(allowed)})")


_pattern_matcher: Any = None


def _pattern_error(pattern: list[Any]) -> str | None:
    """Compile one token pattern with spaCy's Matcher on a blank vocab; return its error, if any."""
    global _pattern_matcher
    from spacy.matcher import Matcher
    from spacy.vocab import Vocab

    if _pattern_matcher is None:
        _pattern_matcher = Matcher(Vocab(), validate=True)
    try:
        _pattern_matcher.add("codebook-validation", [pattern])
    except Exception as exc:  # spaCy raises MatchPatternError, ValueError or KeyError
        return " ".join(str(exc).split())
    finally:
        if "codebook-validation" in _pattern_matcher:
            _pattern_matcher.remove("codebook-validation")
    return None


def _patterns(value: object, where: str, problems: _Problems) -> tuple[TokenPattern, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add(where, f"must be a list of token patterns, not {_type_name(value)}")
        return ()
    patterns: list[TokenPattern] = []
    for index, pattern in enumerate(value):
        place = f"{where}[{index}]"
        if not isinstance(pattern, list) or not pattern:
            problems.add(place, "must be a non-empty list of token descriptions (mappings)")
            continue
        bad_tokens = [i for i, token in enumerate(pattern) if not isinstance(token, dict)]
        if bad_tokens:
            for i in bad_tokens:
                problems.add(f"{place}[{i}]", "a token description must be a mapping")
            continue
        error = _pattern_error(pattern)
        if error is not None:
            problems.add(place, f"does not compile as a spaCy Matcher pattern: {error}")
            continue
        patterns.append(tuple(copy.deepcopy(token) for token in pattern))
    return tuple(patterns)


def _indicators(value: object, path: str, problems: _Problems) -> Indicators:
    if value is None:
        return Indicators()
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping, not {_type_name(value)}")
        return Indicators()
    _unknown_fields(value, INDICATOR_FIELDS, path, problems)
    indicators = Indicators(
        phrases=_string_list(value.get("phrases"), f"{path}.phrases", problems),
        lemma_phrases=_string_list(value.get("lemma_phrases"), f"{path}.lemma_phrases", problems),
        patterns=_patterns(value.get("patterns"), f"{path}.patterns", problems),
        exclude_phrases=_string_list(
            value.get("exclude_phrases"), f"{path}.exclude_phrases", problems
        ),
        exclude_patterns=_patterns(
            value.get("exclude_patterns"), f"{path}.exclude_patterns", problems
        ),
        exclude_window=_window(value.get("exclude_window"), f"{path}.exclude_window", problems),
    )
    if indicators.has_exclusions and indicators.is_empty:
        problems.add(
            path,
            "exclude_phrases / exclude_patterns veto matches of this code's indicators, "
            "but it has none (add phrases, lemma_phrases or patterns)",
        )
    positive = {phrase.lower() for phrase in indicators.phrases}
    for index, phrase in enumerate(indicators.exclude_phrases):
        if phrase.lower() in positive:
            problems.add(
                f"{path}.exclude_phrases[{index}]",
                f"{phrase!r} is also one of the code's phrases: it would veto itself everywhere",
            )
    return indicators


def _window(value: object, where: str, problems: _Problems) -> int:
    if value is None:
        return DEFAULT_EXCLUDE_WINDOW
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(where, f"must be a whole number of tokens, not {_type_name(value)}")
        return DEFAULT_EXCLUDE_WINDOW
    if not 0 <= value <= MAX_EXCLUDE_WINDOW:
        problems.add(where, f"must be between 0 and {MAX_EXCLUDE_WINDOW} tokens, got {value}")
        return DEFAULT_EXCLUDE_WINDOW
    return value


def _threshold(value: object, where: str, problems: _Problems) -> float:
    if value is None:
        return DEFAULT_THRESHOLD
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(where, f"must be a number between 0 and 1, not {_type_name(value)}")
        return DEFAULT_THRESHOLD
    if not 0.0 <= float(value) <= 1.0:
        problems.add(where, f"must be between 0 and 1, got {value}")
        return DEFAULT_THRESHOLD
    return float(value)


def _code(data: object, path: str, problems: _Problems) -> CodeSpec | None:
    if not isinstance(data, Mapping):
        problems.add(path, f"must be a mapping, not {_type_name(data)}")
        return None
    _unknown_fields(data, CODE_FIELDS, path, problems)
    key = _text(data, "key", path, problems, required=True)
    if key.strip() and not CODE_KEY_RE.match(key):
        problems.add(
            f"{path}.key",
            f"{key!r} is not a valid code key (lower-case letter, then a-z, 0-9 or _)",
        )
    retired = data.get("retired", False)
    if retired is None:
        retired = False
    if not isinstance(retired, bool):
        problems.add(f"{path}.retired", f"must be true or false, not {_type_name(retired)}")
        retired = False
    codable = data.get("codable", True)
    if codable is None:
        codable = True
    if not isinstance(codable, bool):
        problems.add(f"{path}.codable", f"must be true or false, not {_type_name(codable)}")
        codable = True
    color = _optional_text(data, "color", path, problems)
    if color is not None and not COLOR_RE.match(color):
        problems.add(f"{path}.color", f"{color!r} is not a colour like #F5A623")
        color = None
    return CodeSpec(
        key=key,
        label=_text(data, "label", path, problems, required=True),
        parent=_optional_text(data, "parent", path, problems),
        bitner_group=_optional_text(data, "bitner_group", path, problems),
        definition=_text(data, "definition", path, problems),
        inclusion=_string_list(data.get("inclusion"), f"{path}.inclusion", problems),
        exclusion=_string_list(data.get("exclusion"), f"{path}.exclusion", problems),
        examples=_string_list(data.get("examples"), f"{path}.examples", problems),
        threshold=_threshold(data.get("threshold"), f"{path}.threshold", problems),
        retired=retired,
        codable=codable,
        indicators=_indicators(data.get("indicators"), f"{path}.indicators", problems),
        color=color,
    )


def _check_references(codes: Sequence[tuple[int, CodeSpec]], problems: _Problems) -> None:
    """Duplicate keys, unknown parents and parent cycles."""
    first_index: dict[str, int] = {}
    for index, code in codes:
        if not code.key:
            continue
        if code.key in first_index:
            problems.add(
                f"codes[{index}].key",
                f"duplicate key {code.key!r} (first used at codes[{first_index[code.key]}])",
            )
        else:
            first_index[code.key] = index
    parents: dict[str, str] = {}
    for index, code in codes:
        if code.parent is None:
            continue
        if code.parent not in first_index:
            problems.add(f"codes[{index}].parent", f"unknown parent {code.parent!r}")
        elif code.key and first_index.get(code.key) == index:
            parents[code.key] = code.parent
    for index, code in codes:
        if not code.codable and code.key not in parents.values():
            problems.add(
                f"codes[{index}].codable",
                f"only a parent code can be not codable; no code names {code.key!r} as parent",
            )
    reported: set[str] = set()
    for start in parents:
        chain: list[str] = []
        node: str | None = start
        while node is not None and node not in chain and node not in reported:
            chain.append(node)
            node = parents.get(node)
        if node is not None and node in chain:
            cycle = chain[chain.index(node) :]
            for member in cycle:
                reported.add(member)
            loop = " -> ".join([*cycle, node])
            problems.add(f"codes[{first_index[cycle[0]]}].parent", f"parent cycle: {loop}")
        reported.update(chain)


def parse_codebook(data: Mapping[str, Any]) -> Codebook:
    """Validate a codebook mapping (the YAML format) and build a `Codebook`.

    Every problem is collected before raising, so a researcher fixes a file in one pass.
    """
    problems = _Problems()
    if not isinstance(data, Mapping):
        problems.add("", f"a codebook must be a mapping, not {_type_name(data)}")
        raise CodebookError(problems.items)
    _unknown_fields(data, TOP_FIELDS, "", problems)
    key = _text(data, "key", "", problems, required=True)
    if key.strip() and not CODEBOOK_KEY_RE.match(key):
        problems.add("key", f"{key!r} is not a valid codebook key (a-z, 0-9, _, . or -)")
    name = _text(data, "name", "", problems, required=True)
    description = _text(data, "description", "", problems)
    language = _text(data, "language", "", problems, default="en") or "en"
    raw_codes = data.get("codes")
    parsed: list[tuple[int, CodeSpec]] = []
    if raw_codes is None:
        problems.add("codes", "is required")
    elif not isinstance(raw_codes, list):
        problems.add("codes", f"must be a list of codes, not {_type_name(raw_codes)}")
    elif not raw_codes:
        problems.add("codes", "must hold at least one code")
    else:
        for index, raw in enumerate(raw_codes):
            code = _code(raw, f"codes[{index}]", problems)
            if code is not None:
                parsed.append((index, code))
    _check_references(parsed, problems)
    if problems.items:
        raise CodebookError(problems.items)
    return Codebook(
        key=key,
        name=name,
        description=description,
        language=language,
        codes=tuple(code for _, code in parsed),
    )


def load_codebook_file(path: str | Path) -> Codebook:
    """Read and validate a YAML (or JSON) codebook file."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CodebookError([CodebookProblem("", f"{file.name} is not valid YAML: {exc}")]) from exc
    return parse_codebook(data)


def _indicators_to_dict(indicators: Indicators) -> dict[str, Any]:
    out: dict[str, Any] = {"phrases": list(indicators.phrases)}
    if indicators.lemma_phrases:
        out["lemma_phrases"] = list(indicators.lemma_phrases)
    out["patterns"] = [[copy.deepcopy(token) for token in p] for p in indicators.patterns]
    # Negative cues only when used, so that codebooks without them keep their fingerprint.
    if indicators.exclude_phrases:
        out["exclude_phrases"] = list(indicators.exclude_phrases)
    if indicators.exclude_patterns:
        out["exclude_patterns"] = [
            [copy.deepcopy(token) for token in p] for p in indicators.exclude_patterns
        ]
    if indicators.has_exclusions or indicators.exclude_window != DEFAULT_EXCLUDE_WINDOW:
        out["exclude_window"] = indicators.exclude_window
    return out


def codebook_to_dict(codebook: Codebook) -> dict[str, Any]:
    """The YAML-format mapping of a codebook: `parse_codebook(codebook_to_dict(cb)) == cb`."""
    return {
        "key": codebook.key,
        "name": codebook.name,
        "description": codebook.description,
        "language": codebook.language,
        "codes": [
            {
                "key": code.key,
                "label": code.label,
                "parent": code.parent,
                "bitner_group": code.bitner_group,
                "definition": code.definition,
                "inclusion": list(code.inclusion),
                "exclusion": list(code.exclusion),
                "examples": list(code.examples),
                "threshold": code.threshold,
                "retired": code.retired,
                # Written only when false, so that codebooks stored before the field existed
                # keep their exact content (and fingerprint).
                **({"codable": False} if not code.codable else {}),
                "indicators": _indicators_to_dict(code.indicators),
                # Only when set, so that codebooks without them keep their exact form.
                **({"color": code.color} if code.color else {}),
            }
            for code in codebook.codes
        ],
    }


def codebook_to_yaml(codebook: Codebook) -> str:
    """The codebook as YAML text, in the same format as the files under `codebooks/`."""
    return yaml.safe_dump(
        codebook_to_dict(codebook), sort_keys=False, allow_unicode=True, width=100
    )
