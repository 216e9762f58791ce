"""Which files to score, and reading one of them as Arrow tables of `chunk_size` records.

An input is a file, a glob (`reviews/*.parquet`) or a directory (every CSV/TSV/JSONL/Parquet
file below it, hidden files and `_SUCCESS`-style markers skipped), local or remote: remote
paths go through fsspec (s3://, gs://, abfs://, hdfs://, ... with its package installed), so
nothing here knows a storage service. Files are scored in sorted path order.
"""

from __future__ import annotations

import posixpath
from typing import Iterator

from jbert.core.errors import UserError
from jbert.serve.score_input import Record, input_format_of, is_remote, open_records
from jbert.serve.score_tables import records_to_table

INPUT_EXTENSIONS = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".ndjson", ".parquet", ".pq")
_GLOB_CHARACTERS = "*?["


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
        return [name(p) for p in found]
    if not filesystem.exists(path):
        raise UserError(f"input {spec} does not exist; check the path")
    return [spec]


def read_file_tables(source: str, file_index: int, input_format: str | None, encoding: str, text_column: str,
                     pair_column: str | None, chunk_size: int, skip_rows: int = 0) -> Iterator:
    """Arrow tables of at most `chunk_size` records of one input file, every record kept (see score_tables).

    `skip_rows`: records already scored by an interrupted run; they are read past, not returned.
    """
    opened = open_records(source, input_format, encoding, text_column, pair_column, chunk_rows=chunk_size)
    all_text = opened.format in ("csv", "tsv")
    try:
        chunk: list[Record] = []
        first_row = skip_rows + 1
        for number, record in enumerate(opened.records, start=1):
            if number <= skip_rows:
                continue
            chunk.append(record)
            if len(chunk) == chunk_size:
                yield records_to_table(chunk, opened.columns, source, file_index, first_row, text_column, pair_column, all_text)
                first_row += len(chunk)
                chunk = []
        if chunk:
            yield records_to_table(chunk, opened.columns, source, file_index, first_row, text_column, pair_column, all_text)
    finally:
        opened.close()


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
