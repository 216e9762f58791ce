"""Batch scoring of files with an export directory: stream in chunks, one output row per input row.

    from jbert.serve.scoring.options import ScoreOptions
    from jbert.serve.scoring.run import score_file
    score_file(ScoreOptions(export_dir="outputs/onnx", input="reviews.csv", output="scored.csv"))

Input: CSV / TSV / JSON lines in UTF-8, UTF-8 with BOM or cp932 (the encodings and formats the
training side reads, detected the same way by `jbert.core.readers`), Parquet, or standard
input ("-"); see `jbert.serve.scoring.inputs`. Output: JSONL, CSV or TSV (from the extension)
holding every input column plus `predicted_label`, `predicted_score` (multi-label: also
`predicted_labels`; regression: only `predicted_score`, the raw value), `truncated`, optionally
every class's score, and `error` (see `jbert.serve.scoring.rows`).

The output always has exactly one row per input record, in input order: a row that cannot be
scored (empty text, a value that is not text, bytes that do not decode, bad JSON, too many cells)
gets its `error` instead of disappearing. Blank lines are not records (as for the training reader).

Memory stays bounded: rows are read, scored and written `chunk_size` at a time. Output goes to a
hidden `.NAME.partial` file beside the target, renamed into place at the end; after each chunk a
small `.NAME.partial.json` records how far the run got, so `--resume` continues an interrupted
run (even one killed with SIGKILL) from the last finished chunk without rescoring anything: the
partial file is cut back to the last recorded chunk, so no row is written twice (see
`jbert.serve.scoring.resume`).

Several inputs (a glob, a directory), an output directory or `--engine ray` give a directory of
shards instead: `score_into_directory` chooses the engine (`shards` here, `ray_engine` on Ray).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from jbert.core.artifacts import read_json, write_json
from jbert.core.storage import is_storage_full, storage_full_error
from jbert.core.errors import UserError
from jbert.core.progress import Progress
from jbert.core.readers import detect_format
from jbert.serve.runtime.classifier import OnnxClassifier
from jbert.serve.scoring.inputs import check_formats, expand_inputs, is_remote, open_records
from jbert.serve.scoring.options import OUTPUT_FORMATS, ScoreOptions, ScoreSummary, writes_directory
from jbert.serve.scoring.outputs import OutputWriter, has_abstention, prediction_columns
from jbert.serve.scoring.records import Record
from jbert.serve.scoring.resume import STATE_VERSION, check_same_run, file_fingerprint, partial_paths
from jbert.serve.scoring.rows import score_records
from jbert.serve.scoring.shards import score_files_locally
from jbert.serve.scoring.tables import SHARD_FORMATS

logger = logging.getLogger(__name__)


def score_file(options: ScoreOptions, classifier=None) -> ScoreSummary:
    """Score every record of `options.input` and write one output row per record.

    One input file and an output file: streamed into that file (resumable). Several inputs (a
    glob, a directory), an output directory, or `--engine ray`: shards + manifest.json in the
    output directory (`score_into_directory`).
    `classifier`: an already loaded `jbert.serve.runtime.OnnxClassifier` (else loaded from
    `options.export_dir`; not used by the Ray engine, whose workers load their own). Returns
    counts and timing; raises UserError for bad options or files.
    """
    options.validate()
    if is_remote(options.output) and not writes_directory(options):
        raise UserError(f"output {options.output}: a URL output is a directory of shards; end it with / "
                        f"(e.g. {options.output.rsplit('/', 1)[0]}/scored/) or write one file to a local path")
    if writes_directory(options):
        manifest = score_into_directory(options, classifier)
        return ScoreSummary(
            output=options.output, rows=manifest["rows_out"], scored=manifest["rows_out"] - manifest["rows_with_errors"],
            errors=manifest["rows_with_errors"], truncated=manifest["rows_truncated"],
            resumed_rows=manifest.get("resumed_rows", 0), seconds=manifest["seconds"],
        )
    output_format = options.output_format or ("jsonl" if options.output == "-" else detect_format(options.output))
    if output_format not in OUTPUT_FORMATS:
        raise UserError(f"cannot write {output_format}; use an output ending in .jsonl, .csv or .tsv")
    to_stdout = options.output == "-"
    output = None if to_stdout else Path(options.output)
    partial_path = state_path = None
    if output is not None:
        partial_path, state_path = partial_paths(output)
        if output.is_dir():
            raise UserError(f"output {output} is a directory; give a file name such as {output / 'scored.jsonl'}")
        if output.exists() and not options.overwrite:
            raise UserError(f"output {output} exists; pass --overwrite to replace it or choose another path")
        if partial_path.exists() and not (options.resume or options.overwrite):
            raise UserError(
                f"an interrupted run left {partial_path}; pass --resume to continue it or --overwrite to start over"
            )
        if not output.absolute().parent.is_dir():
            raise UserError(f"the output's directory {output.absolute().parent} does not exist; create it first")

    if classifier is None:
        classifier = OnnxClassifier.from_export_dir(options.export_dir, model=options.model, num_threads=options.num_threads)
    text_column, pair_column = classifier.export_dir.text_columns(options.text_column, options.text_pair_column)

    opened = open_records(options.input, options.input_format, options.encoding, text_column, pair_column,
                          chunk_rows=options.chunk_size)
    handle = None
    try:
        input_columns, records, total_bytes = opened.columns, opened.records, opened.total_bytes
        regression = classifier.problem_type == "regression"
        columns = prediction_columns(classifier.problem_type, options.all_scores, output_format == "jsonl",
                                     abstention=has_abstention(classifier))
        writer = OutputWriter(
            output_format, options.output_encoding, input_columns, columns,
            classifier.labels if options.all_scores and not regression else None,
        )

        resumed_rows, handle, bytes_done = 0, None, 0
        fingerprint = None
        if output is not None:
            fingerprint = file_fingerprint(options, classifier, text_column, pair_column, output_format)
            if options.resume and partial_path.exists() and state_path.exists():
                state = read_json(state_path)
                check_same_run(partial_path, state, fingerprint, version=STATE_VERSION)
                resumed_rows, bytes_done = int(state["rows"]), int(state["bytes"])
                handle = open(partial_path, "r+b")
                handle.truncate(bytes_done)  # drop a chunk that was half written when the run stopped
                handle.seek(bytes_done)
            else:
                if options.resume:
                    logger.warning("nothing to resume for %s: starting from the beginning", output)
                handle = open(partial_path, "wb")
        else:
            handle = sys.stdout.buffer

        started = time.perf_counter()
        counts = {"rows": resumed_rows, "scored": 0, "errors": 0, "truncated": 0, "over_max_text_chars": 0}
        if resumed_rows:
            skipped = 0
            for _ in records:
                skipped += 1
                if skipped == resumed_rows:
                    break
            if skipped < resumed_rows:
                raise UserError(f"cannot resume: the input has {skipped} rows but the interrupted run wrote {resumed_rows}")
        elif bytes_done == 0:
            with_bom = options.output_encoding.replace("_", "-").lower() == "utf-8-sig"
            prefix = (b"\xef\xbb\xbf" if with_bom else b"") + writer.header()
            handle.write(prefix)
            bytes_done += len(prefix)

        progress = Progress(None, "scoring", unit="row", initial=resumed_rows, enabled=options.show_progress)
        try:
            for chunk in _chunks(records, options.chunk_size):
                rows = score_records(classifier, chunk, text_column, pair_column, batch_size=options.batch_size,
                                     truncate=options.truncate, all_scores=options.all_scores,
                                     max_text_chars=options.max_text_chars, long_text=options.long_text, counts=counts)
                data = writer.rows(rows)
                handle.write(data)
                handle.flush()
                bytes_done += len(data)
                counts["rows"] += len(chunk)
                if output is not None:
                    os.fsync(handle.fileno())
                    write_json(state_path, {"version": STATE_VERSION, "rows": counts["rows"], "bytes": bytes_done, "fingerprint": fingerprint})
                read = {"input": f"{100 * opened.bytes_read() / total_bytes:.0f}%"} if total_bytes else {}
                progress.update(len(chunk), errors=counts["errors"], **read)
        finally:
            progress.close()
        seconds = time.perf_counter() - started
        if output is not None:
            handle.close()
            handle = None
            os.replace(partial_path, output)
            state_path.unlink(missing_ok=True)
    except OSError as err:
        if output is None or not is_storage_full(err):
            raise
        raise storage_full_error(
            err, output, left=f"the rows written so far are kept in {partial_path}: run again with --resume once there is space"
        ) from None
    finally:
        opened.close()
        if output is not None and handle is not None and not handle.closed:
            handle.close()
    summary = ScoreSummary(
        output=options.output, rows=counts["rows"], scored=counts["scored"], errors=counts["errors"],
        truncated=counts["truncated"], resumed_rows=resumed_rows, seconds=seconds,
        over_max_text_chars=counts["over_max_text_chars"],
    )
    return summary


def score_into_directory(options, classifier=None) -> dict:
    """Score every file that `options.input` names into the directory `options.output`; returns the manifest.

    `options`: a `ScoreOptions`. `classifier`: a loaded runtime for the local
    engine (else loaded from `options.export_dir`); the Ray engine's workers load their own.
    """
    output_format = options.output_format or "parquet"
    if output_format not in SHARD_FORMATS:
        raise UserError(
            f"an output directory holds {' or '.join(SHARD_FORMATS)} shards, not {output_format}; "
            "for a CSV/TSV file score one input into an output file such as scored.csv"
        )
    files = expand_inputs(options.input)
    check_formats(files, options.input_format)
    if options.engine == "ray":
        from jbert.serve.scoring.ray_engine import score_files_with_ray  # Ray only when asked for

        return score_files_with_ray(files, options, output_format)
    if classifier is None:
        classifier = OnnxClassifier.from_export_dir(options.export_dir, model=options.model, num_threads=options.num_threads)
    text_column, pair_column = classifier.export_dir.text_columns(options.text_column, options.text_pair_column)
    return score_files_locally(files, options, classifier, text_column, pair_column, output_format)


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
