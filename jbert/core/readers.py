"""Streaming readers for CSV, TSV and JSON lines files in UTF-8, UTF-8 with BOM or cp932 (torch-free).

Training reads its data through this module and serving scores files through it, so both accept
exactly the same files. Nothing here loads a whole file: rows are yielded one at a time with the
physical line they start on, so every error can name the file and line the user must look at.

Only the standard library is used (no pandas), because the serving install has no heavy packages.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

from jbert.core.file_encodings import decoded_lines, resolve_encoding
from jbert.core.errors import UserError
from jbert.core.safe_input import check_regular_file

# Extension -> format. `.txt` exports from Excel ("Unicode text") and most corpora are tab-separated.
FORMAT_BY_EXTENSION = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}
TEXT_FORMATS = ("csv", "tsv", "jsonl")

# Japanese texts with many line breaks inside one quoted cell can exceed csv's 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def detect_format(path: str | os.PathLike) -> str:
    """Return "csv", "tsv" or "jsonl" from the file extension (.csv, .tsv/.txt, .jsonl/.json/.ndjson)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in FORMAT_BY_EXTENSION:
        return FORMAT_BY_EXTENSION[suffix]
    known = ", ".join(sorted(FORMAT_BY_EXTENSION))
    raise UserError(
        f"{path}: cannot tell the file format from the extension {suffix or '(none)'!r}; "
        f"use one of {known} (Parquet files: .parquet)"
    )


def read_columns(path: str | os.PathLike, encoding: str = "auto", fmt: str | None = None) -> list[str]:
    """Column names of a file: the header row of CSV/TSV, the keys of the first JSON object."""
    path = Path(path)
    fmt = _resolve_format(path, fmt)
    check_regular_file(path, str(path))  # a FIFO or /dev/zero never ends: refused before the encoding sniff
    encoding = resolve_encoding(path, encoding)
    lines = decoded_lines(path, encoding)
    try:
        if fmt == "jsonl":
            for _, row in _iter_jsonl(path, lines):
                return list(row)
            return []
        tracker = _LineTracker(lines)
        header = _read_header(path, csv.reader(tracker, **csv_dialect(fmt)), tracker, fmt)
        return header[1] if header else []
    finally:
        lines.close()  # only the first row was needed: close the file now


def iter_rows(
    path: str | os.PathLike, encoding: str = "auto", fmt: str | None = None
) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, row)` for every data row of a CSV, TSV or JSON lines file, streaming.

    `line_number` is the 1-based physical line the row starts on (a quoted CSV cell may span
    several lines). CSV/TSV values are strings, missing trailing cells are None; JSON values keep
    their types. Undecodable bytes, bad JSON, rows with more cells than the header, and a path
    that is not a regular file (a FIFO, /dev/zero: it would never end) raise a UserError naming
    the file (and line).
    """
    path = Path(path)
    fmt = _resolve_format(path, fmt)
    check_regular_file(path, str(path))
    encoding = resolve_encoding(path, encoding)
    lines = decoded_lines(path, encoding)
    if fmt == "jsonl":
        yield from _iter_jsonl(path, lines)
    else:
        yield from _iter_delimited(path, lines, fmt)


def suggest_column(name: str, columns: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a mistyped column name, or ''."""
    columns = list(columns)
    lowered = {c.lower(): c for c in columns}
    if name.lower() in lowered:
        return f" (did you mean {lowered[name.lower()]!r}?)"
    prefixed = [c for c in columns if c.lower().startswith(name.lower()) or name.lower().startswith(c.lower())]
    if len(prefixed) == 1 and name:
        return f" (did you mean {prefixed[0]!r}?)"
    close = difflib.get_close_matches(name, columns, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- internals


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is None:
        return detect_format(path)
    if fmt not in TEXT_FORMATS:
        raise UserError(f"unknown file format {fmt!r} for {path}; use one of {', '.join(TEXT_FORMATS)}")
    return fmt


def csv_dialect(fmt: str) -> dict:
    """csv.reader/csv.writer keyword arguments for "csv" or "tsv", so readers and writers agree."""
    # Standard quoting for both: Excel and pandas quote cells holding delimiters, quotes or line
    # breaks in CSV and TSV alike; a quote in the middle of a cell stays literal. strict: a cell
    # that opens a quote it never closes, or closes it with more text behind, is an error naming
    # its line; lenient parsing would swallow every following row into that cell without a word
    # (a hand-written TSV line starting with '"' merged the rest of the file into one row).
    return {"delimiter": "\t" if fmt == "tsv" else ",", "quotechar": '"', "doublequote": True, "strict": True}


_csv_dialect = csv_dialect  # the name jbert.serve.scoring imports today


class _LineTracker:
    """Feeds lines to csv.reader while remembering which physical line each record started on."""

    def __init__(self, lines: Iterator[tuple[int, str]]):
        self._lines = lines
        self.last_line = 0

    def __iter__(self):
        for line_number, text in self._lines:
            self.last_line = line_number
            yield text


def _clean_header(header: list[str]) -> list[str]:
    # A BOM inside a name (a file saved twice with a BOM) is invisible to the user who must type it.
    return [name.replace("\ufeff", "").strip() for name in header]


def _read_header(path: Path, reader, tracker: _LineTracker, fmt: str) -> tuple[int, list[str]] | None:
    """(line, cleaned column names) of the first non-blank record, or None for a file without one."""
    try:
        for header in reader:
            if header:  # blank lines above the header hold nothing
                return tracker.last_line, _clean_header(header)
    except csv.Error as err:
        raise UserError(f"{path}, line {tracker.last_line}: malformed {fmt.upper()} header ({_explain(err)})") from None
    return None


def _iter_delimited(path: Path, lines: Iterator[tuple[int, str]], fmt: str) -> Iterator[tuple[int, dict]]:
    tracker = _LineTracker(lines)
    reader = csv.reader(tracker, **csv_dialect(fmt))
    header = _read_header(path, reader, tracker, fmt)
    if header is None:
        return
    header_line, columns = header
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise UserError(f"{path}, line {header_line}: the header repeats the column(s) {duplicates}; rename them")
    width = len(columns)
    record_start = tracker.last_line + 1
    try:
        for cells in reader:
            line_number, record_start = record_start, tracker.last_line + 1
            if not cells:
                continue  # a blank line; a line holding only "" is a row whose first cell is empty
            if len(cells) > width:
                extra = cells[width:]
                if any(cell.strip() for cell in extra):
                    raise UserError(
                        f"{path}, line {line_number}: {len(cells)} cells but the header has {width} "
                        f"({columns}); quote cells that contain the delimiter "
                        f"{'a tab' if fmt == 'tsv' else 'a comma'} or a line break"
                    )
                cells = cells[:width]
            row = dict(zip(columns, cells))
            for missing in columns[len(cells):]:
                row[missing] = None
            yield line_number, row
    except csv.Error as err:
        where = f"line {record_start}" if record_start == tracker.last_line else f"lines {record_start}-{tracker.last_line}"
        raise UserError(f"{path}, {where}: malformed {fmt.upper()} ({_explain(err)})") from None


def _explain(err: csv.Error) -> str:
    # csv's own wording suggests "universal-newline mode", which is no help to someone with a file.
    if "new-line character seen in unquoted field" in str(err):
        return 'a carriage return (\\r) inside an unquoted cell; quote the cell ("...") or remove the \\r'
    if "unexpected end of data" in str(err) or "expected after" in str(err):
        return (f"{err}: a cell that starts with a double quote must end with one, and quotes inside it "
                'are written twice (""); a cell meant to start with a literal quote must itself be quoted')
    return str(err)


def _iter_jsonl(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict]]:
    lines = iter(lines)
    first = next(lines, None)
    while first is not None and not first[1].strip():
        first = next(lines, None)  # leading blank lines
    if first is None:
        return
    if first[1].lstrip().startswith("["):
        # A .json file holding one array: parsed element by element, never as a whole.
        yield from _iter_json_array(path, first, lines)
        return
    for line_number, text in _chain_first(first, lines):
        if not text.strip():
            continue
        try:
            row = _JSON_DECODER.decode(text)
        except RecursionError:
            raise UserError(f"{path}, line {line_number}: JSON nested too deeply to be read; each line must hold one "
                            'flat JSON object such as {"text": "...", "label": "..."}') from None
        except (json.JSONDecodeError, ValueError) as err:
            raise UserError(
                f"{path}, line {line_number}: not valid JSON ({err}); each line must hold one JSON "
                'object such as {"text": "...", "label": "..."}'
            ) from None
        if not isinstance(row, dict):
            raise UserError(
                f"{path}, line {line_number}: a JSON {type(row).__name__} where an object "
                '{"column": value, ...} was expected'
            )
        if "\\u" in text:
            _check_no_surrogates(path, line_number, row)
        yield line_number, row


# Half of a UTF-16 surrogate pair: only a JSON escape such as "\ud800" can put one into a str here
# (the bytes are decoded strictly), and no tokenizer or file writer accepts it downstream.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_no_surrogates(path: Path, line_number: int, value) -> None:
    """UserError naming the line when a string (key or value, at any depth) holds an unpaired surrogate."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found:
            raise UserError(
                f"{path}, line {line_number}: the JSON escape \\u{ord(found.group()):04x} is half of a "
                "UTF-16 surrogate pair without its other half, so the text is not valid Unicode; "
                "write the character itself or both halves of the pair (e.g. \\ud83d\\ude00)"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_no_surrogates(path, line_number, key)
            _check_no_surrogates(path, line_number, item)
    elif isinstance(value, list):
        for item in value:
            _check_no_surrogates(path, line_number, item)


def _reject_constant(name: str):
    # NaN/Infinity are not JSON; json accepts them by default and they would become labels.
    raise ValueError(f"{name} is not valid JSON")


# One decoder for all lines: json.loads with options would build a new one per line (3x slower).
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _chain_first(first, rest):
    yield first
    yield from rest


# A JSON array element still unparsed after this many characters is a syntax error, not a big row.
_MAX_JSON_VALUE_CHARS = 64 * 1024 * 1024


def _iter_json_array(path: Path, first, lines) -> Iterator[tuple[int, dict]]:
    """Stream the objects of a top-level JSON array with raw_decode over a growing buffer."""
    decoder = _JSON_DECODER
    line_number, buffer = first
    buffer = buffer.lstrip()[1:]  # drop "["
    buffer_line = line_number  # line of buffer[0]
    exhausted = False
    expecting_value = True
    while True:
        stripped = buffer.lstrip()
        buffer_line += buffer[: len(buffer) - len(stripped)].count("\n")
        buffer = stripped
        if not buffer:
            if exhausted:
                raise UserError(f"{path}: the JSON array is not closed with ']'; was the file cut short?")
            nxt = next(lines, None)
            if nxt is None:
                exhausted = True
            else:
                buffer += nxt[1]
            continue
        if buffer[0] == "]":
            return
        if buffer[0] == ",":
            if expecting_value:
                raise UserError(f"{path}, line {buffer_line}: unexpected ',' in the JSON array")
            buffer = buffer[1:]
            expecting_value = True
            continue
        try:
            value, end = decoder.raw_decode(buffer)
        except RecursionError:  # thousands of nested brackets: more lines would not help
            raise UserError(f"{path}, line {buffer_line}: JSON nested too deeply to be read") from None
        except (json.JSONDecodeError, ValueError) as err:
            nxt = None if exhausted else next(lines, None)
            if nxt is None or len(buffer) > _MAX_JSON_VALUE_CHARS:
                exhausted = True
                raise UserError(f"{path}, line {buffer_line}: not valid JSON ({err})") from None
            buffer += nxt[1]
            continue
        if not isinstance(value, dict):
            raise UserError(f"{path}, line {buffer_line}: a JSON {type(value).__name__} where an object was expected")
        if not expecting_value:
            raise UserError(f"{path}, line {buffer_line}: missing ',' between objects of the JSON array")
        if "\\u" in buffer[:end]:
            _check_no_surrogates(path, buffer_line, value)
        yield buffer_line, value
        buffer_line += buffer[:end].count("\n")
        buffer = buffer[end:]
        expecting_value = False


def is_missing(value: object) -> bool:
    """True for cells that hold no value: None, NaN, or a string that is empty after stripping."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
