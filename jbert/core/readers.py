"""Streaming readers for CSV, TSV and JSON lines files in UTF-8, UTF-8 with BOM or cp932 (torch-free).

Training reads its data through this module and serving scores files through it, so both accept
exactly the same files. Nothing here loads a whole file: rows are yielded one at a time with the
physical line they start on, so every error can name the file and line the user must look at.

Only the standard library is used (no pandas), because the serving install has no heavy packages.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import json
import math
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

from jbert.core.errors import UserError

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
AUTO_ENCODINGS = ("utf-8-sig", "utf-8", "cp932")

# How much of a file `detect_encoding` reads. Scoring files can be many GB; the first 16 MiB decide
# reliably, and a file that changes encoding later still fails with its exact line number.
ENCODING_SAMPLE_BYTES = 16 * 1024 * 1024

_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_READ_CHUNK = 1024 * 1024

# Japanese texts with many line breaks inside one quoted cell can exceed csv's 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def detect_encoding(path: str | os.PathLike) -> str:
    """Return the encoding of a text file: "utf-8-sig" (BOM), "utf-8" or "cp932" (Shift_JIS).

    UTF-8 is tried first because valid UTF-8 Japanese text almost never decodes as cp932 and vice
    versa. A file that is neither (or UTF-16, which Excel's "Unicode text" writes) is a UserError.
    """
    path = Path(path)
    _check_is_file(path)
    with open(path, "rb") as handle:
        sample = handle.read(ENCODING_SAMPLE_BYTES)
        at_end = not handle.read(1)
    return detect_sample_encoding(sample, complete=at_end, where=str(path))


def detect_sample_encoding(sample: bytes, complete: bool = True, where: str = "the input") -> str:
    """The encoding of the first bytes of a stream (e.g. standard input): as `detect_encoding`.

    `complete` says the sample is the whole input; otherwise a multi-byte character cut off at
    its end is not held against the sample. `where` names the input in error messages.
    """
    if sample.startswith(_UTF8_BOM):
        return "utf-8-sig"
    if sample.startswith(_UTF16_BOMS):
        raise UserError(
            f"{where} is UTF-16 encoded (Excel's 'Unicode text' export); save it as "
            "'CSV UTF-8' or convert it, e.g. `iconv -f UTF-16 -t UTF-8 in.txt > out.txt`"
        )
    if _decodes(sample, "utf-8", complete):
        return "utf-8"
    if _mostly_utf8(sample):
        # cp932 often "decodes" UTF-8 Japanese into mojibake without complaint; a UTF-8 file with
        # a few broken bytes is read as UTF-8 so that the error names the broken line.
        return "utf-8"
    if _decodes(sample, "cp932", complete):
        return "cp932"
    line_number, bad = _first_undecodable_line(sample, "utf-8")
    raise UserError(
        f"{where}, line {line_number}: the file is neither UTF-8 nor cp932 (Shift_JIS) (bytes {bad!r}); "
        "pass --encoding with its real encoding (e.g. --encoding euc_jp) or re-save it as UTF-8"
    )


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
    encoding = resolve_encoding(path, encoding)
    lines = _decoded_lines(path, encoding)
    try:
        if fmt == "jsonl":
            for _, row in _iter_jsonl(path, lines):
                return list(row)
            return []
        header = next(csv.reader(_texts(lines), **csv_dialect(fmt)), None)
        return _clean_header(header) if header else []
    finally:
        lines.close()  # only the first row was needed: close the file now


def iter_rows(
    path: str | os.PathLike, encoding: str = "auto", fmt: str | None = None
) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, row)` for every data row of a CSV, TSV or JSON lines file, streaming.

    `line_number` is the 1-based physical line the row starts on (a quoted CSV cell may span
    several lines). CSV/TSV values are strings, missing trailing cells are None; JSON values keep
    their types. Undecodable bytes, bad JSON and rows with more cells than the header raise a
    UserError naming the file and line.
    """
    path = Path(path)
    fmt = _resolve_format(path, fmt)
    encoding = resolve_encoding(path, encoding)
    lines = _decoded_lines(path, encoding)
    if fmt == "jsonl":
        yield from _iter_jsonl(path, lines)
    else:
        yield from _iter_delimited(path, lines, fmt)


def resolve_encoding(path: str | os.PathLike, encoding: str | None) -> str:
    """Turn "auto"/None into the detected encoding; check that a named encoding exists.

    "shift_jis" (and its aliases) is read as cp932, its Microsoft superset: what Japanese users
    call Shift_JIS is what Excel writes, with ① ㈱ and NEC/IBM kanji that strict Shift_JIS rejects.
    """
    if encoding in (None, "", "auto"):
        return detect_encoding(path)
    try:
        codec_name = codecs.lookup(encoding).name
    except LookupError:
        raise UserError(
            f"--encoding {encoding!r} is not a known encoding; use auto, utf-8, utf-8-sig, cp932 or shift_jis"
        ) from None
    _check_is_file(Path(path))
    return "cp932" if codec_name == "shift_jis" else encoding


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


def _check_is_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a CSV/TSV/JSON lines file")


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is None:
        return detect_format(path)
    if fmt not in TEXT_FORMATS:
        raise UserError(f"unknown file format {fmt!r} for {path}; use one of {', '.join(TEXT_FORMATS)}")
    return fmt


def csv_dialect(fmt: str) -> dict:
    """csv.reader/csv.writer keyword arguments for "csv" or "tsv", so readers and writers agree."""
    # Standard quoting for both: Excel and pandas quote cells holding delimiters, quotes or line
    # breaks in CSV and TSV alike; a quote in the middle of a cell stays literal.
    return {"delimiter": "\t" if fmt == "tsv" else ",", "quotechar": '"', "doublequote": True}


_csv_dialect = csv_dialect  # the name jbert.serve.scoring imports today


def _decoded_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Yield (line_number, text line with its line ending) decoded line by line.

    Decoding each line separately (instead of a text-mode file) is what lets a decoding error
    report its line. Splitting the bytes on b"\\n" is safe for UTF-8 and cp932: neither uses the
    byte 0x0A inside a multi-byte character.
    """
    codec_name = codecs.lookup(encoding).name
    strip_bom = codec_name in ("utf-8", "utf-8-sig")
    alternatives = [hint for name, hint in (("cp932", "--encoding cp932 (Japanese Excel / Shift_JIS)"),
                                            ("utf-8", "--encoding utf-8")) if name != codec_name]
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if line_number == 1 and strip_bom and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            try:
                yield line_number, raw.decode(encoding)
            except UnicodeDecodeError as err:
                bad = raw[max(err.start - 2, 0): err.end + 2]
                raise UserError(
                    f"{path}, line {line_number}: bytes {bad!r} cannot be decoded as {encoding}; "
                    f"the file (or this part of it) uses another encoding: pass {', '.join(alternatives)} "
                    "or --encoding with the file's real encoding"
                ) from None


def _texts(lines: Iterator[tuple[int, str]]) -> Iterator[str]:
    for _, text in lines:
        yield text


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
    return [name.strip() for name in header]


def _iter_delimited(path: Path, lines: Iterator[tuple[int, str]], fmt: str) -> Iterator[tuple[int, dict]]:
    tracker = _LineTracker(lines)
    reader = csv.reader(tracker, **csv_dialect(fmt))
    try:
        header = next(reader, None)
        if not header:
            return
        columns = _clean_header(header)
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise UserError(f"{path}, line 1: the header repeats the column(s) {duplicates}; rename them")
        width = len(columns)
        record_start = tracker.last_line + 1
        for cells in reader:
            line_number, record_start = record_start, tracker.last_line + 1
            if not cells or (len(cells) == 1 and cells[0] == "" and width > 1):
                continue  # blank line
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
        raise UserError(f"{path}, line {tracker.last_line}: malformed {fmt.upper()} ({err})") from None


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
        yield line_number, row


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
        yield buffer_line, value
        buffer_line += buffer[:end].count("\n")
        buffer = buffer[end:]
        expecting_value = False


def _decodes(sample: bytes, encoding: str, at_end: bool) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        # final only at the real end: a sample may stop in the middle of a multi-byte character
        decoder.decode(sample, final=at_end)
    except UnicodeDecodeError:
        return False
    return True


def _mostly_utf8(sample: bytes) -> bool:
    """True when UTF-8 decodes nearly all non-ASCII text of the sample (and fails only here and there)."""
    text = sample.decode("utf-8", errors="replace")
    broken = text.count("\ufffd")
    non_ascii = sum(1 for char in text if ord(char) > 127) - broken
    return non_ascii >= 3 * broken  # cp932 text read as UTF-8 is nearly all U+FFFD


def _first_undecodable_line(sample: bytes, encoding: str) -> tuple[int, bytes]:
    """(1-based line number, a few bytes around the problem) of the first line that fails to decode."""
    for line_number, raw in enumerate(sample.split(b"\n"), start=1):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as err:
            return line_number, raw[max(err.start - 2, 0): err.end + 2]
    return 1, sample[:8]


def is_missing(value: object) -> bool:
    """True for cells that hold no value: None, NaN, or a string that is empty after stripping."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
