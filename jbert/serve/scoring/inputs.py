"""Reading inputs to score, tolerantly: every record comes back, a bad one with the reason it is bad.

CSV / TSV / JSON lines in UTF-8, UTF-8 with BOM or cp932 (detected as `jbert.core.readers` does
for training), Parquet, or standard input ("-"). Paths may be local or remote: anything
`fsspec` opens (s3://, gs://, abfs://, hdfs://, ... with the matching fsspec package installed).

Unlike the training reader, which stops at the first bad row (right for training data), this
one yields a `Record` with an `error` for a line that does not decode, bad JSON or too many
cells, and goes on: the scorer writes one output row per input record.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from jbert.core.errors import UserError
from jbert.core.readers import (
    csv_dialect, detect_encoding, detect_format, detect_sample_encoding, iter_rows,
    resolve_encoding, suggest_column,
)

INPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
# Bytes sniffed for the encoding (standard input and remote files cannot be re-read for detection).
SAMPLE_BYTES = 1024 * 1024
PARQUET_EXTENSIONS = (".parquet", ".pq")


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


def is_remote(path: str) -> bool:
    """True for a URL with a scheme other than file:// (s3://, gs://, ...)."""
    return "://" in path and not path.startswith("file://")


def input_format_of(path: str, requested: str | None = None) -> str:
    """csv, tsv, jsonl or parquet: as requested, else from the extension."""
    if requested:
        if requested not in INPUT_FORMATS:
            raise UserError(f"--input-format {requested!r} is not one of {', '.join(INPUT_FORMATS)}")
        return requested
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.lower().endswith(PARQUET_EXTENSIONS):
        return "parquet"
    return detect_format(name if is_remote(path) else path)


@dataclass
class OpenedInput:
    """An input opened for scoring: its columns, its records, and how far through it the reading is."""

    source: str
    format: str
    columns: list[str]
    records: Iterator[Record]
    total_bytes: int | None
    bytes_read: Callable[[], int]
    close: Callable[[], None]
    encoding: str | None = None


def open_records(source: str, input_format: str | None, encoding: str, text_column: str,
                 pair_column: str | None, chunk_rows: int = 4096) -> OpenedInput:
    """Open `source` (a path, a URL or "-") and check that it has the text columns.

    Raises UserError for a missing file, an unknown format, or a header without the text column.
    """
    fmt = input_format_of(source, input_format) if source != "-" else input_format
    if source == "-" and fmt is None:
        raise UserError("reading standard input needs --input-format csv, tsv or jsonl")
    if fmt == "parquet":
        opened = _open_parquet(source, chunk_rows)
    else:
        opened = _open_text(source, fmt, encoding)
    try:
        _check_columns(opened.source, opened.columns, text_column, pair_column)
    except UserError:
        opened.close()
        raise
    return opened


def _check_columns(source: str, columns: list[str], text_column: str, pair_column: str | None) -> None:
    problems = []
    for flag, name in (("--text-column", text_column), ("--text-pair-column", pair_column)):
        if name is not None and columns and name not in columns:
            problems.append(f"{source} has no column {name!r}{suggest_column(name, columns)}; its columns are {columns}; pass {flag}")
    if problems:
        raise UserError("; ".join(problems))


def _open_binary(source: str) -> tuple[IO[bytes], int | None]:
    """(binary stream, size in bytes or None) of a local path or an fsspec URL."""
    if is_remote(source):
        import fsspec

        try:
            filesystem, path = fsspec.core.url_to_fs(source)
        except (ImportError, ValueError) as err:
            raise UserError(f"cannot open {source}: {err} (install the fsspec package for that scheme, e.g. s3fs)") from None
        try:
            return filesystem.open(path, "rb"), filesystem.size(path)
        except FileNotFoundError:
            raise UserError(f"input file {source} does not exist; check the path") from None
    path = Path(source.removeprefix("file://"))
    if not path.exists():
        raise UserError(f"input file {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"input {path} is a directory, not a CSV/TSV/JSONL/Parquet file")
    return open(path, "rb"), path.stat().st_size


def _open_parquet(source: str, chunk_rows: int) -> OpenedInput:
    import pyarrow.parquet as pq

    stream, size = _open_binary(source)
    try:
        parquet = pq.ParquetFile(stream)
    except Exception as err:  # pyarrow raises ArrowInvalid for a file that is not Parquet
        stream.close()
        raise UserError(f"{source} cannot be read as Parquet ({err})") from None
    progress = {"rows": 0}
    total_rows = parquet.metadata.num_rows

    def records() -> Iterator[Record]:
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            for row in batch.to_pylist():
                progress["rows"] += 1
                yield Record(progress["rows"], row, unit="row")

    # Progress in "bytes" is rows here: the ratio is what the progress bar shows.
    return OpenedInput(source, "parquet", list(parquet.schema_arrow.names), records(), total_rows,
                       lambda: progress["rows"], stream.close)


def _open_text(source: str, fmt: str, requested_encoding: str) -> OpenedInput:
    if source == "-":
        raw, total, sample = _stdin_with_sample()
        encoding = _choose_encoding(None, sample[: sample.rfind(b"\n") + 1] or sample, requested_encoding, "<stdin>")
        name = "<stdin>"
        close = lambda: None  # never close the process's standard input  # noqa: E731
    else:
        stream, total = _open_binary(source)
        sample = stream.read(SAMPLE_BYTES)
        stream.seek(0)
        local = None if is_remote(source) else Path(source.removeprefix("file://"))
        encoding = _choose_encoding(local, sample, requested_encoding, source)
        raw, name, close = stream, source, stream.close
    lines_source = _ByteCounter(raw)
    decoded = _DecodedLines(lines_source, encoding, name)
    try:
        if fmt == "jsonl" and sample.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            # One JSON array (a .json file): tabular streams it; it is one value, so a syntax error
            # in it cannot be confined to a row and stops the run with its line number.
            if source == "-" or is_remote(source):
                raise UserError(f"{name} holds a JSON array; send JSON lines (one object per line) instead")
            records = (Record(line, row) for line, row in iter_rows(source, encoding, "jsonl"))
            columns, records = _peek_columns(records)
        elif fmt == "jsonl":
            columns, records = _peek_columns(_iter_jsonl_records(decoded))
        else:
            columns, records = _iter_delimited_records(decoded, fmt, name)
    except BaseException:
        close()
        raise
    return OpenedInput(name, fmt, columns, records, total, lambda: lines_source.bytes_read, close, encoding)


def _peek_columns(records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    """The first record's keys as the columns (JSON objects have no header), records unchanged."""
    first = next(records, None)
    if first is None:
        return [], iter(())
    columns = list(first.row) if first.row is not None else []

    def chained() -> Iterator[Record]:
        yield first
        yield from records

    return columns, chained()


def _stdin_with_sample() -> tuple[IO[bytes], None, bytes]:
    stream = sys.stdin.buffer
    sample = stream.read(SAMPLE_BYTES)

    class _Prefixed(io.RawIOBase):
        def __init__(self):
            self.buffers = io.BytesIO(sample)

        def readable(self):
            return True

        def readinto(self, target):
            data = self.buffers.read(len(target)) or stream.read1(len(target))
            target[: len(data)] = data
            return len(data)

    return io.BufferedReader(_Prefixed()), None, sample


# ---------------------------------------------------------------------- tolerant line reading
class _ByteCounter:
    """Binary line iterator that counts bytes read, for the progress bar's file percentage."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.bytes_read = 0

    def __iter__(self) -> Iterator[bytes]:
        for raw in self.stream:
            self.bytes_read += len(raw)
            yield raw


class _DecodedLines:
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


def _iter_delimited_records(lines: _DecodedLines, fmt: str, source: str) -> tuple[list[str], Iterator[Record]]:
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


def _iter_jsonl_records(lines: _DecodedLines) -> Iterator[Record]:
    for text in lines:
        line = lines.line_number
        decode_error = lines.take_errors()
        if not text.strip():
            continue
        if decode_error:
            yield Record(line, None, decode_error)
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            yield Record(line, None, f"line {line}: not valid JSON ({err})")
            continue
        if not isinstance(row, dict):
            yield Record(line, None, f"line {line}: a JSON {type(row).__name__} where an object was expected")
            continue
        yield Record(line, row)


def _mostly_utf8(sample: bytes) -> bool:
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


def _choose_encoding(path: Path | None, sample: bytes, requested: str, where: str) -> str:
    """The input's encoding: as requested, else tabular's detection made tolerant of a few bad rows."""
    if requested not in (None, "", "auto"):
        return resolve_encoding(path, requested) if path is not None else resolve_encoding_name(requested)
    try:
        if path is not None:
            detected = detect_encoding(path)
        else:  # a stream: decide on the sample's complete lines
            detected = detect_sample_encoding(sample[: sample.rfind(b"\n") + 1] or sample, complete=True, where=where)
    except UserError:
        if _mostly_utf8(sample):
            return "utf-8"  # undecodable rows become error rows instead of stopping the run
        raise
    # tabular decides for the whole sample: a UTF-8 file with one corrupt row fails UTF-8 there and
    # may pass as cp932, which would garble every row. Per line, such a file is plainly UTF-8.
    if detected == "cp932" and _mostly_utf8(sample):
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
