"""Which inputs to score and opening one of them: every record comes back, a bad one with its reason.

An input is a file, a glob (`reviews/*.parquet`) or a directory (every CSV/TSV/JSONL/Parquet
file below it, hidden files and `_SUCCESS`-style markers skipped), scored in sorted path order,
or standard input ("-"). Files are CSV / TSV / JSON lines in UTF-8, UTF-8 with BOM or cp932
(detected as `jbert.core.readers` does for training) or Parquet. Paths may be local or remote:
anything `fsspec` opens (s3://, gs://, abfs://, hdfs://, ... with the matching fsspec package
installed), so nothing here knows a storage service. Text files are read into records by
`jbert.serve.scoring.records`, which keeps a bad line as a record with an `error`.
"""

from __future__ import annotations

import io
import posixpath
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from jbert.core.errors import UserError
from jbert.core.readers import detect_format, iter_rows, suggest_column
from jbert.core.safe_input import check_regular_file
from jbert.serve.scoring.records import (
    ByteCounter, DecodedLines, Record, choose_encoding, delimited_records, jsonl_records, peek_columns,
)

INPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
# Bytes sniffed for the encoding (standard input and remote files cannot be re-read for detection).
SAMPLE_BYTES = 1024 * 1024
PARQUET_EXTENSIONS = (".parquet", ".pq")
INPUT_EXTENSIONS = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".ndjson", ".parquet", ".pq")
_GLOB_CHARACTERS = "*?["


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
    # A FIFO or a device (/dev/zero) never ends: refused before a byte is read (standard input is "-").
    check_regular_file(path, f"input {path}")
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
        encoding = choose_encoding(None, sample[: sample.rfind(b"\n") + 1] or sample, requested_encoding, "<stdin>")
        name = "<stdin>"
        close = lambda: None  # never close the process's standard input  # noqa: E731
    else:
        stream, total = _open_binary(source)
        sample = stream.read(SAMPLE_BYTES)
        stream.seek(0)
        local = None if is_remote(source) else Path(source.removeprefix("file://"))
        encoding = choose_encoding(local, sample, requested_encoding, source)
        raw, name, close = stream, source, stream.close
    lines_source = ByteCounter(raw)
    decoded = DecodedLines(lines_source, encoding, name)
    try:
        if fmt == "jsonl" and sample.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            # One JSON array (a .json file): tabular streams it; it is one value, so a syntax error
            # in it cannot be confined to a row and stops the run with its line number.
            if source == "-" or is_remote(source):
                raise UserError(f"{name} holds a JSON array; send JSON lines (one object per line) instead")
            records = (Record(line, row) for line, row in iter_rows(source, encoding, "jsonl"))
            columns, records = peek_columns(records)
        elif fmt == "jsonl":
            columns, records = peek_columns(jsonl_records(decoded))
        else:
            columns, records = delimited_records(decoded, fmt, name)
    except BaseException:
        close()
        raise
    return OpenedInput(name, fmt, columns, records, total, lambda: lines_source.bytes_read, close, encoding)


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


def filesystem_for(path: str):
    """(fsspec filesystem, path inside it) for a local path or URL; a missing fsspec driver is a UserError."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as err:
        raise UserError(f"cannot open {path}: {err} (install the fsspec package for that scheme, e.g. s3fs, gcsfs)") from None
    except ValueError as err:
        raise UserError(f"cannot open {path}: {err}") from None


def expand_inputs(spec: str) -> list[str]:
    """The input files named by a file, glob or directory (sorted); UserError when none match."""
    filesystem, path = filesystem_for(spec)
    remote = is_remote(spec)

    def name(found: str) -> str:
        return filesystem.unstrip_protocol(found) if remote else found

    if any(ch in path for ch in _GLOB_CHARACTERS):
        found = sorted(p for p in filesystem.glob(path) if not filesystem.isdir(p))
        if not found:
            raise UserError(f"input {spec!r} matches no file; check the pattern (quote it so the shell leaves it alone)")
        return [name(p) for p in found]
    if filesystem.isdir(path):
        found = sorted(
            p for p in filesystem.find(path)
            if p.lower().endswith(INPUT_EXTENSIONS) and not posixpath.basename(p).startswith((".", "_"))
        )
        if not found:
            raise UserError(f"input directory {spec} holds no {', '.join(INPUT_EXTENSIONS)} file")
        if not remote:
            for found_path in found:
                check_regular_file(found_path, f"input {found_path} (in {spec})")
        return [name(p) for p in found]
    if not filesystem.exists(path):
        raise UserError(f"input {spec} does not exist; check the path")
    if not remote:
        check_regular_file(path, f"input {spec}")  # a FIFO or a device never ends
    return [spec]


def check_formats(files: list[str], input_format: str | None) -> None:
    """Every file's format is known (from --input-format or its extension): one error lists all others."""
    problems = []
    for path in files:
        try:
            input_format_of(path, input_format)
        except UserError as err:
            problems.append(str(err))
    if problems:
        raise UserError("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
