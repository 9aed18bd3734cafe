"""Writing exports as byte chunks: CSV (one table, or every table in a zip), JSONL, xlsx.

Everything is a generator over the service's batches, so memory stays flat however many stories
there are: CSV and JSONL go out as they are written; xlsx is written by XlsxWriter in
`constant_memory` mode to a temporary file (a zip cannot be finished before its last sheet),
then streamed and deleted."""

from __future__ import annotations

import csv
import io
import os
import queue
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from typing import Any

import orjson
import xlsxwriter
from isal import isal_zlib

CHUNK = 256 * 1024
_PLAIN = (str, int, float)
XLSX_MAX_ROWS = 1_048_576
XLSX_MAX_CELL = 32_767


def cell(value: Any) -> Any:
    """A value as a CSV/xlsx cell: lists joined by ';', mappings as JSON, no None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ";".join(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def row_cells(row: Iterable[Any]) -> list[Any]:
    """A row's values as csv.writer is given them: most are text, whole numbers or empty, and
    only the others go through `cell`."""
    return ["" if v is None else v if type(v) in _PLAIN else cell(v) for v in row]


def csv_chunks(
    header: list[str], rows: Iterable[list[Any]], *, bom: bool = True, cells: bool = False
) -> Iterator[bytes]:
    """UTF-8 CSV (with a BOM, so spreadsheet programs read it as UTF-8), in ~256 KiB chunks.
    `cells`: the rows hold cells already (text, numbers, ""), as `story_row` builds them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if bom:
        buffer.write("\ufeff")
    writer.writerow(header)
    write = writer.writerow
    tell = buffer.tell
    for row in rows:
        write(row if cells else row_cells(row))
        if tell() >= CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream that hands its bytes on (zipfile streams into it, from
    the deflating thread, while the export's thread takes what is there)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with self._lock:
            self.parts.append(bytes(data))
            self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        with self._lock:
            out = b"".join(self.parts)
            self.parts.clear()
            self.size = 0
        return out


def _isal_deflate(member: Any) -> None:
    """The member deflated by ISA-L (python-isal's `isal_zlib`, zlib's API and a raw deflate
    stream any unzip reads) instead of zlib: at level 1 about four times zlib's speed at level 1
    for the same ratio on story text (bench/README.md, Exports at scale). zipfile has no option
    for the compressor, so its writer's is replaced before anything is written; were that
    attribute gone in a later Python, zlib's stays (the same archive, only slower)."""
    if getattr(member, "_compressor", None) is not None:
        member._compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)


def zip_chunks(members: Iterable[tuple[str, Callable[[], Iterator[bytes]]]]) -> Iterator[bytes]:
    """A zip written on the fly: each member's chunks are deflated (level 1: fast) as they come,
    by a thread of their own (`_written_behind`) while the next chunks are made."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, chunks in members:
            with archive.open(name, "w", force_zip64=True) as member:
                _isal_deflate(member)
                for _ in _written_behind(member.write, chunks()):
                    if sink.size >= CHUNK:
                        yield sink.take()
            yield sink.take()
    yield sink.take()


_STOP = object()


def _written_behind(write: Callable[[bytes], Any], chunks: Iterator[bytes]) -> Iterator[None]:
    """`write(chunk)` for every chunk, in a thread, while the caller's thread makes the next
    chunks: ISA-L's deflate and zlib's CRC let go of the GIL, so a zip member's compression
    runs on the other core beside the Python (and the SQLite) that builds its lines. Yields
    after handing each chunk over; returns when every chunk is written; an error of either side
    is raised here, and a caller that stops early stops the thread."""
    handed: queue.Queue[Any] = queue.Queue(maxsize=2)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            while (chunk := handed.get()) is not _STOP:
                write(chunk)
        except BaseException as error:  # handed to the caller's thread below
            failed.append(error)
            while handed.get() is not _STOP:  # let the producer finish handing over
                pass

    worker = threading.Thread(target=run, name="cit-export-deflate", daemon=True)
    worker.start()
    try:
        for chunk in chunks:
            if failed:
                break
            handed.put(chunk)
            yield
    finally:
        handed.put(_STOP)
        worker.join()
    if failed:
        raise failed[0]


def jsonl_chunks(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    parts: list[bytes] = []
    size = 0
    for record in records:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        parts.append(line)
        size += len(line)
        if size >= CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    yield b"".join(parts)


def line_chunks(header: list[str], lines: Iterable[bytes], *, bom: bool = True) -> Iterator[bytes]:
    """UTF-8 CSV as `csv_chunks` writes it, from UTF-8 lines made already (each ending with
    CRLF, several to an item: `app.exports.lines`): the header by csv.writer, then the lines as
    they are, in chunks of at least ~256 KiB (a batch of lines is one)."""
    buffer = io.StringIO()
    if bom:
        buffer.write("\ufeff")
    csv.writer(buffer, lineterminator="\r\n").writerow(header)
    parts = [buffer.getvalue().encode()]
    size = 0
    for block in lines:
        parts.append(block)
        size += len(block)
        if size >= CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    yield b"".join(parts)


def _xlsx_value(value: Any) -> Any:
    value = cell(value)
    if isinstance(value, str) and len(value) > XLSX_MAX_CELL:
        return value[: XLSX_MAX_CELL - 1] + "…"
    return value


def write_xlsx(path: str, sheets: Iterable[tuple[str, list[str], Iterable[list[Any]]]]) -> None:
    """Sheets in XlsxWriter's constant-memory mode: rows go to disk as they are written. A
    table longer than a sheet holds (1,048,576 rows) continues on `name (2)`, ..."""
    workbook = xlsxwriter.Workbook(
        path,
        {
            "constant_memory": True,
            "strings_to_numbers": False,
            "strings_to_formulas": False,
            "strings_to_urls": False,
        },
    )
    bold = workbook.add_format({"bold": True})
    for name, header, rows in sheets:
        part = 1
        sheet = workbook.add_worksheet(name)
        sheet.write_row(0, 0, header, bold)
        sheet.freeze_panes(1, 0)
        row_number = 1
        for row in rows:
            if row_number >= XLSX_MAX_ROWS:
                part += 1
                sheet = workbook.add_worksheet(f"{name} ({part})")
                sheet.write_row(0, 0, header, bold)
                row_number = 1
            sheet.write_row(row_number, 0, [_xlsx_value(v) for v in row])
            row_number += 1
    workbook.close()


def xlsx_chunks(sheets: Iterable[tuple[str, list[str], Iterable[list[Any]]]]) -> Iterator[bytes]:
    handle, path = tempfile.mkstemp(prefix="cit-export-", suffix=".xlsx")
    os.close(handle)
    try:
        write_xlsx(path, sheets)
        with open(path, "rb") as written:
            while chunk := written.read(CHUNK):
                yield chunk
    finally:
        os.unlink(path)
