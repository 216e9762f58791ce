"""Records: one input row to score, and text files (CSV/TSV/JSONL) read line by line into them, tolerantly.

Unlike the training reader, which stops at the first bad row (right for training data), these
readers yield a `Record` with an `error` for a line that does not decode, bad JSON or too many
cells, and go on: the scorer writes one output row per input record. `jbert.serve.scoring.inputs`
opens the files (local, remote or standard input) and hands their lines here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from jbert.core.errors import UserError
from jbert.core.file_encodings import detect_encoding, detect_sample_encoding, resolve_encoding
from jbert.core.readers import csv_dialect
from jbert.core.safe_input import JsonInputError, parse_json


@dataclass
class Record:
    """One input record: where it starts, its columns (None if unreadable) and why it is bad."""

    line: int | None  # the 1-based line it starts on (text files), its row number (Parquet), or None
    row: dict | None
    error: str | None = None
    unit: str = "line"

    @property
    def where(self) -> str:
        """"line 12: " or "row 12: " to start an error message ("" when the position is unknown)."""
        return f"{self.unit} {self.line}: " if self.line is not None else ""


def peek_columns(records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    """The first record's keys as the columns (JSON objects have no header), records unchanged."""
    first = next(records, None)
    if first is None:
        return [], iter(())
    columns = list(first.row) if first.row is not None else []

    def chained() -> Iterator[Record]:
        yield first
        yield from records

    return columns, chained()


class ByteCounter:
    """Binary line iterator that counts bytes read, for the progress bar's file percentage."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.bytes_read = 0

    def __iter__(self) -> Iterator[bytes]:
        for raw in self.stream:
            self.bytes_read += len(raw)
            yield raw


class DecodedLines:
    """Decode byte lines one by one; a bad line is decoded with U+FFFD and its error remembered.

    Per-line decoding is what keeps one corrupt row from ending the run (jbert.core.readers's strict
    reader stops at the first undecodable byte, which is right for training data, wrong here).
    """

    def __init__(self, raw_lines, encoding: str, source: str):
        self.raw_lines = raw_lines
        self.encoding = encoding
        self.source = source
        self.line_number = 0
        self.errors: list[str] = []  # errors since the last record was taken

    def __iter__(self) -> Iterator[str]:
        strip_bom = self.encoding.replace("_", "-").lower() in ("utf-8", "utf8", "utf-8-sig")
        for raw in self.raw_lines:
            self.line_number += 1
            if self.line_number == 1 and strip_bom and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode(self.encoding)
            except UnicodeDecodeError as err:
                bad = raw[max(err.start - 2, 0) : err.end + 2]
                self.errors.append(
                    f"line {self.line_number}: bytes {bad!r} cannot be decoded as {self.encoding}"
                )
                yield raw.decode(self.encoding, errors="replace")

    def take_errors(self) -> str | None:
        """Errors of the lines read since the last call (i.e. of the record just parsed)."""
        if not self.errors:
            return None
        message = "; ".join(self.errors) + " (row kept but not scored; check the file's encoding or pass --encoding)"
        self.errors = []
        return message


def delimited_records(lines: DecodedLines, fmt: str, source: str) -> tuple[list[str], Iterator[Record]]:
    reader = csv.reader(lines, **csv_dialect(fmt))
    try:
        header = next(reader, None)
        while header == []:  # blank lines above the header hold nothing
            header = next(reader, None)
    except csv.Error as err:
        raise UserError(f"{source}, line 1: malformed {fmt.upper()} header ({err})") from None
    if not header:
        return [], iter(())
    columns = [name.strip() for name in header]
    header_error = lines.take_errors()
    if header_error:
        raise UserError(f"{source}: the header row cannot be decoded: {header_error}")
    width = len(columns)

    def records() -> Iterator[Record]:
        start = lines.line_number + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:  # e.g. a NUL byte; the reader resumes on the next line
                yield Record(start, None, f"line {start}: malformed {fmt.upper()} ({err})")
                lines.take_errors()
                start = lines.line_number + 1
                continue
            line, start = start, lines.line_number + 1
            decode_error = lines.take_errors()
            if not cells:
                continue  # a blank line is not a record; a line holding only "" is a row with empty cells
            row = dict(zip(columns, cells))
            for missing in columns[len(cells):]:
                row[missing] = None
            error = decode_error
            if error is None and len(cells) > width and any(c.strip() for c in cells[width:]):
                error = (
                    f"line {line}: {len(cells)} cells but the header has {width}; quote cells that "
                    f"contain {'a tab' if fmt == 'tsv' else 'a comma'} or a line break"
                )
            yield Record(line, row, error)

    return columns, records()


def jsonl_records(lines: DecodedLines) -> Iterator[Record]:
    for text in lines:
        line = lines.line_number
        decode_error = lines.take_errors()
        if not text.strip():
            continue
        if decode_error:
            yield Record(line, None, decode_error)
            continue
        try:
            # parse_json: deep nesting and 5,000-digit integers are a message too, not a traceback.
            row = parse_json(text, f"line {line}")
        except JsonInputError as err:
            yield Record(line, None, str(err))
            continue
        if not isinstance(row, dict):
            yield Record(line, None, f"line {line}: a JSON {type(row).__name__} where an object was expected")
            continue
        yield Record(line, row)


def mostly_utf8(sample: bytes) -> bool:
    """True when most lines with non-ASCII bytes are valid UTF-8: a UTF-8 file with a few bad rows.

    Japanese cp932 text almost never forms valid UTF-8, so in a cp932 file this fraction is ~0.
    """
    non_ascii = [line for line in sample.split(b"\n") if any(byte >= 0x80 for byte in line)]
    if not non_ascii:
        return True
    valid = 0
    for line in non_ascii:
        try:
            line.decode("utf-8")
            valid += 1
        except UnicodeDecodeError:
            pass
    return valid >= 0.5 * len(non_ascii)


def choose_encoding(path: Path | None, sample: bytes, requested: str, where: str) -> str:
    """The input's encoding: as requested, else tabular's detection made tolerant of a few bad rows."""
    if requested not in (None, "", "auto"):
        return resolve_encoding(path, requested) if path is not None else resolve_encoding_name(requested)
    try:
        if path is not None:
            detected = detect_encoding(path)
        else:  # a stream: decide on the sample's complete lines
            detected = detect_sample_encoding(sample[: sample.rfind(b"\n") + 1] or sample, complete=True, where=where)
    except UserError:
        if mostly_utf8(sample):
            return "utf-8"  # undecodable rows become error rows instead of stopping the run
        raise
    # tabular decides for the whole sample: a UTF-8 file with one corrupt row fails UTF-8 there and
    # may pass as cp932, which would garble every row. Per line, such a file is plainly UTF-8.
    if detected == "cp932" and mostly_utf8(sample):
        return "utf-8"
    return detected


def resolve_encoding_name(encoding: str) -> str:
    """Check that an encoding name exists (for standard input, which has no path to check)."""
    import codecs

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"--encoding {encoding!r} is not a known encoding; use auto, utf-8, utf-8-sig or cp932") from None
    return encoding
