"""Scoring in Arrow batches: a file -> tables of records, table -> scored table, scored table -> a shard file.

The Ray engine and the local engine's directory output share these steps, so a row goes
through the same code whichever engine runs it (and `jbert.serve.scoring.rows` decides its
predictions and errors for both, as for the single-file scorer).

Every batch carries two documented row-id columns, `source_file` (the input file) and
`source_row` (the record's 1-based number in that file, blank lines not counted), so the order
of the input can always be recovered, whatever order shards are read back in. Columns starting
with `_jbert_` are internal (line numbers for messages, reading errors) and never written.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import Iterator

from jbert.core.storage import is_storage_full, storage_full_error
from jbert.core.errors import UserError
from jbert.serve.scoring.inputs import open_records
from jbert.serve.scoring.outputs import has_abstention, json_line, json_value, prediction_columns
from jbert.serve.scoring.records import Record
from jbert.serve.runtime.batch_inputs import DEFAULT_MAX_TEXT_CHARS
from jbert.serve.scoring.rows import score_records

ROW_ID_COLUMNS = ("source_file", "source_row")
SHARD_FORMATS = ("parquet", "jsonl")
_LINE, _UNIT, _READ_ERROR, _FILE_INDEX = "_jbert_line", "_jbert_unit", "_jbert_read_error", "_jbert_file_index"
_TEXT_TYPE, _PAIR_TYPE = "_jbert_text_type", "_jbert_pair_type"


class NonTextValue:
    """Stands for a non-text value of the text column that crossed an Arrow batch as JSON text.

    The encoder names `original_type` in its error ("text must be a string, got int"), so the
    message is the one the single-file scorer gives for the same row.
    """

    def __init__(self, original_type: str):
        self.original_type = original_type


def _type_name(value) -> str | None:
    return None if value is None or isinstance(value, str) else type(value).__name__


def _arrow_column(values: list, as_text: bool):
    """An Arrow array of `values`; a column mixing types (JSON lines can) becomes JSON text."""
    import pyarrow as pa

    if not as_text:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError):
            pass
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(json_value(v), ensure_ascii=False, default=str) for v in values],
                    type=pa.string())


def records_to_table(records: list[Record], columns: list[str], source_file: str, file_index: int,
                     first_row: int, text_column: str, pair_column: str | None, all_text: bool):
    """One Arrow table for a chunk of records of one input file (`first_row`: the chunk's first record number).

    `columns`: the file's header (JSON lines add keys met later). `all_text`: CSV/TSV cells are
    text, so their columns are typed string even when a chunk holds only blanks.
    """
    import pyarrow as pa

    names = list(columns)
    known = set(names)
    for record in records:
        for key in record.row or ():
            if key not in known:
                known.add(key)
                names.append(key)
    clash = sorted(known & (set(ROW_ID_COLUMNS) | set(prediction_columns("multi_label_classification", True, True))))
    if clash:
        raise UserError(f"{source_file} already has the column(s) {clash} that scoring writes; rename them in the input")
    data = {}
    for name in names:
        data[name] = _arrow_column([(r.row or {}).get(name) for r in records], all_text)
    count = len(records)
    data["source_file"] = pa.array([source_file] * count, type=pa.string())
    data["source_row"] = pa.array(range(first_row, first_row + count), type=pa.int64())
    data[_FILE_INDEX] = pa.array([file_index] * count, type=pa.int64())
    data[_LINE] = pa.array([r.line for r in records], type=pa.int64())
    data[_UNIT] = pa.array([r.unit for r in records], type=pa.string())
    data[_READ_ERROR] = pa.array([r.error for r in records], type=pa.string())
    data[_TEXT_TYPE] = pa.array([_type_name((r.row or {}).get(text_column)) for r in records], type=pa.string())
    data[_PAIR_TYPE] = pa.array([_type_name((r.row or {}).get(pair_column)) if pair_column else None for r in records],
                                type=pa.string())
    return pa.table(data)


def read_file_tables(source: str, file_index: int, input_format: str | None, encoding: str, text_column: str,
                     pair_column: str | None, chunk_size: int, skip_rows: int = 0) -> Iterator:
    """Arrow tables of at most `chunk_size` records of one input file, every record kept.

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


def table_to_records(table, text_column: str, pair_column: str | None) -> list[Record]:
    """The records to score from a table: from `records_to_table`, or any table with the text column(s).

    A user's own table (the Python API) has no line numbers: its errors then name no position.
    """
    count = table.num_rows
    names = set(table.column_names)
    for name in (text_column, pair_column):
        if name is not None and name not in names:
            raise UserError(f"the data has no column {name!r} (its columns: {table.column_names}); "
                            f"name the text column (text_column=... / --text-column)")
    texts = table.column(text_column).to_pylist()
    pairs = table.column(pair_column).to_pylist() if pair_column else [None] * count
    column = (lambda name, default: table.column(name).to_pylist() if name in names else [default] * count)
    lines, units, errors = column(_LINE, None), column(_UNIT, "row"), column(_READ_ERROR, None)
    text_types, pair_types = column(_TEXT_TYPE, None), column(_PAIR_TYPE, None)
    records = []
    for i in range(count):
        row = {text_column: NonTextValue(text_types[i]) if text_types[i] else texts[i]}
        if pair_column:
            row[pair_column] = NonTextValue(pair_types[i]) if pair_types[i] else pairs[i]
        records.append(Record(lines[i], None if errors[i] else row, errors[i], units[i] or "row"))
    return records


def score_table(classifier, table, text_column: str, pair_column: str | None, *, batch_size: int = 32,
                truncate: bool = True, all_scores: bool = False, chunk_size: int | None = None,
                max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, long_text: str = "error"):
    """`table` with the prediction columns added (one row out per row in), internal columns dropped.

    Column types do not depend on the batch: predicted_label string, predicted_labels list of
    strings, predicted_score float64, truncated bool, scores a struct with one float64 per label,
    error string; the row-id columns stay last. `chunk_size`: score the reader's chunks of that
    many records one by one, even when Ray has joined several into one batch, so onnxruntime sees
    the batches the local scorer gives it (int8 models quantise activations per batch: other
    batches would move scores by ~1e-6).
    """
    import pyarrow as pa

    types = {
        "predicted_label": pa.string(), "predicted_labels": pa.list_(pa.string()), "predicted_score": pa.float64(),
        "truncated": pa.bool_(), "error": pa.string(),
        "abstained": pa.bool_(), "predicted_label_if_accepted": pa.string(),
        "scores": pa.struct([(label, pa.float64()) for label in classifier.labels]),
    }
    rows: list[dict] = []
    for start, stop in _chunk_runs(table, chunk_size):
        part = table.slice(start, stop - start)
        rows += score_records(classifier, table_to_records(part, text_column, pair_column), text_column, pair_column,
                              batch_size=batch_size, truncate=truncate, all_scores=all_scores,
                              max_text_chars=max_text_chars, long_text=long_text)
    keep = [n for n in table.column_names if not n.startswith("_jbert_") and n not in ROW_ID_COLUMNS]
    out = {name: table.column(name) for name in keep}
    for name in prediction_columns(classifier.problem_type, all_scores, nested_scores=True,
                                   abstention=has_abstention(classifier)):
        out[name] = pa.array([row.get(name) for row in rows], type=types[name])
    for name in ROW_ID_COLUMNS + (_FILE_INDEX,):
        if name in table.column_names:
            out[name] = table.column(name)
    return pa.table(out)


def _chunk_runs(table, chunk_size: int | None) -> list[tuple[int, int]]:
    """[start, stop) row ranges of the reader's chunks inside `table` (the whole table when unknown)."""
    if not chunk_size or _FILE_INDEX not in table.column_names or table.num_rows == 0:
        return [(0, table.num_rows)]
    files = table.column(_FILE_INDEX).to_pylist()
    chunks = [(row - 1) // chunk_size for row in table.column("source_row").to_pylist()]
    runs, start = [], 0
    for i in range(1, table.num_rows):
        if files[i] != files[i - 1] or chunks[i] != chunks[i - 1]:
            runs.append((start, i))
            start = i
    runs.append((start, table.num_rows))
    return runs


def shard_name(table, fmt: str) -> str:
    """part-<input file number>-<first source_row>.<fmt>: names sort in input order and a retried
    write of the same rows replaces its own shard instead of adding a second copy."""
    if _FILE_INDEX in table.column_names and table.num_rows:
        return f"part-{table.column(_FILE_INDEX)[0].as_py():05d}-{table.column('source_row')[0].as_py():010d}.{fmt}"
    return f"part-{uuid.uuid4().hex}.{fmt}"


def write_shard(table, filesystem, directory: str, fmt: str) -> dict:
    """Write one scored table as a shard (temporary name, then renamed); returns its row counts."""
    import pyarrow.parquet as pq

    if fmt not in SHARD_FORMATS:
        raise UserError(f"shards are written as {' or '.join(SHARD_FORMATS)}, not {fmt!r}")
    name = shard_name(table, fmt)
    table = table.drop_columns([n for n in table.column_names if n.startswith("_jbert_")])
    final = posixpath.join(directory, name)
    temporary = posixpath.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with filesystem.open(temporary, "wb") as handle:
            if fmt == "parquet":
                pq.write_table(table, handle)
            else:
                for row in table.to_pylist():
                    handle.write(json_line(row).encode("utf-8"))
        filesystem.mv(temporary, final)
    except OSError as err:
        if not is_storage_full(err):
            raise
        raise storage_full_error(err, final) from None
    without_error = table.column("error").null_count
    truncated = table.column("truncated").to_pylist() if "truncated" in table.column_names else []
    return {"shard": name, "rows": table.num_rows, "errors": table.num_rows - without_error,
            "truncated": sum(1 for value in truncated if value)}
