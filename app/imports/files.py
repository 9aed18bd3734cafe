"""Reading the files research teams have: CSV in any common encoding and delimiter, JSON Lines,
and Excel workbooks, as (first line of the record, row) pairs.

Encodings: a BOM says UTF-8 or UTF-16; text that decodes as UTF-8 is UTF-8; anything else is
what charset-normalizer finds (cp1252 in practice). Delimiters: the one of `, ; TAB |` that the
header line holds most often outside quotes. A file that cannot be read at all raises
`FileUnreadable` with one sentence for the user, never a traceback."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any

from charset_normalizer import from_bytes

SAMPLE_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t", "|")
FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
csv.field_size_limit(10_000_000)


class FileUnreadable(ValueError):
    """The whole file cannot be read (wrong type, broken workbook, undecodable text)."""


@dataclass(frozen=True)
class RowProblem:
    """A record that cannot be read as a row (bad JSON, more cells than columns)."""

    message: str


@dataclass
class TableFile:
    path: Path
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    columns: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        found = {
            "format": self.format,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "sheet": self.sheet,
            "columns": self.columns,
        }
        return {k: v for k, v in found.items() if v is not None}


def detect_encoding(sample: bytes) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        # A multi-byte character may be cut at the end of the sample.
        sample.decode("utf-8") if len(sample) < SAMPLE_BYTES else sample[:-4].decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    results = from_bytes(sample)
    best = results.best()
    if best is None:
        raise FileUnreadable("the file is not text in any encoding we recognise")
    # Spreadsheets saved on Windows in Western Europe and the Americas are cp1252: when it reads
    # the text about as cleanly as the best guess (which on short samples is often an exotic
    # relative such as mac_latin2), take it.
    for result in results:
        if result.encoding == "cp1252" and result.chaos <= best.chaos + 0.05:
            return "cp1252"
    return best.encoding


def detect_delimiter(header_line: str) -> str:
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def open_table(path: Path, *, sheet: str | None = None) -> TableFile:
    """Look at the file: its format, encoding, delimiter (or sheet) and column names."""
    if not path.exists():
        raise FileUnreadable(f"{path.name} does not exist")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FileUnreadable(
            f"{path.name}: use a .csv, .tsv, .jsonl (.ndjson) or .xlsx file, "
            f"not {path.suffix or 'a file without an extension'}"
        )
    table = TableFile(path, fmt)
    if fmt == "xlsx":
        workbook = _workbook(path)
        try:
            table.sheet = _sheet(workbook, sheet).title
            header = next(_sheet_rows(workbook, table.sheet), (0, []))[1]
            table.columns = [str(c) for c in header]
        finally:
            workbook.close()
        return table
    with path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    table.encoding = detect_encoding(sample)
    if fmt == "csv":
        text = sample.decode(table.encoding, errors="replace")
        first = text.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
        table.delimiter = "\t" if path.suffix.lower() == ".tsv" else detect_delimiter(first)
        table.columns = next(csv.reader([first], delimiter=table.delimiter), [])
    return table


def _workbook(path: Path) -> Any:
    import openpyxl

    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException, ...
        raise FileUnreadable(
            f"{path.name} is not an Excel workbook that can be read ({exc.__class__.__name__})"
        ) from exc


def _sheet(workbook: Any, name: str | None) -> Any:
    if name is None:
        return workbook.worksheets[0]
    if name not in workbook.sheetnames:
        raise FileUnreadable(
            f"no sheet {name!r}; the workbook has {', '.join(workbook.sheetnames)}"
        )
    return workbook[name]


def _cell_text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return str(value)


def _sheet_rows(workbook: Any, name: str) -> Iterator[tuple[int, list[Any]]]:
    for number, values in enumerate(workbook[name].iter_rows(values_only=True), start=1):
        cells = [_cell_text(v) for v in values]
        while cells and cells[-1] in (None, ""):
            cells.pop()
        if cells:
            yield number, cells


def _text(table: TableFile) -> IO[str]:
    assert table.encoding is not None
    return table.path.open(encoding=table.encoding, newline="", errors="strict")


def rows(table: TableFile) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """(first line of the record, row or the reason it cannot be read)."""
    try:
        if table.format == "xlsx":
            yield from _xlsx_rows(table)
        elif table.format == "csv":
            yield from _csv_rows(table)
        else:
            yield from _jsonl_rows(table)
    except UnicodeDecodeError as exc:
        raise FileUnreadable(
            f"{table.path.name} is not valid {table.encoding} text (byte {exc.start} of a "
            "block): save it as UTF-8 and import again"
        ) from exc
    except csv.Error as exc:
        raise FileUnreadable(f"{table.path.name} cannot be read as CSV: {exc}") from exc


def _csv_rows(table: TableFile) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    with _text(table) as handle:
        reader = csv.reader(handle, delimiter=table.delimiter or ",")
        header: list[str] | None = None
        last_line = 0
        for cells in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.lstrip("\ufeff").strip() for c in cells]
                continue
            if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
                yield (
                    first_line,
                    RowProblem(
                        f"{len(cells)} values for {len(header)} columns (is a quote missing?)"
                    ),
                )
                continue
            yield first_line, {k: v for k, v in zip(header, cells, strict=False) if k and v != ""}


def _xlsx_rows(table: TableFile) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    workbook = _workbook(table.path)
    try:
        header: list[str] | None = None
        assert table.sheet is not None
        for number, cells in _sheet_rows(workbook, table.sheet):
            if header is None:
                header = [str(c or "").strip() for c in cells]
                continue
            yield (
                number,
                {k: v for k, v in zip(header, cells, strict=False) if k and v not in (None, "")},
            )
    finally:
        workbook.close()


def _jsonl_rows(table: TableFile) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    with _text(table) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, RowProblem(f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(data, dict):
                yield number, RowProblem("a line must hold a JSON object")
                continue
            yield number, data


def count_records(table: TableFile) -> int | None:
    """How many records (for progress); None when counting would mean reading a workbook."""
    if table.format == "xlsx":
        workbook = _workbook(table.path)
        try:
            rows_in_sheet = workbook[table.sheet].max_row
        finally:
            workbook.close()
        return max(int(rows_in_sheet) - 1, 0) if rows_in_sheet else None
    try:
        return sum(1 for _ in rows(table))
    except FileUnreadable:
        return None
