"""Batch scoring of files with an export directory: stream in chunks, one output row per input row.

    from jbert.serve.scoring import ScoreOptions, score_file
    score_file(ScoreOptions(export_dir="outputs/onnx", input="reviews.csv", output="scored.csv"))

Input: CSV / TSV / JSON lines in UTF-8, UTF-8 with BOM or cp932 (the encodings and formats the
training side reads, detected the same way by `jbert.core.readers`), Parquet, or standard
input ("-"); see `jbert.serve.score_input`. Output: JSONL, CSV or TSV (from the extension)
holding every input column plus `predicted_label`, `predicted_score` (multi-label: also
`predicted_labels`; regression: only `predicted_score`, the raw value), `truncated`, optionally
every class's score, and `error` (see `jbert.serve.score_rows`).

The output always has exactly one row per input record, in input order: a row that cannot be
scored (empty text, a value that is not text, bytes that do not decode, bad JSON, too many cells)
gets its `error` instead of disappearing. Blank lines are not records (as for the training reader).

Memory stays bounded: rows are read, scored and written `chunk_size` at a time. Output goes to a
hidden `.NAME.partial` file beside the target, renamed into place at the end; after each chunk a
small `.NAME.partial.json` records how far the run got, so `--resume` continues an interrupted
run (even one killed with SIGKILL) from the last finished chunk without rescoring anything: the
partial file is cut back to the last recorded chunk, so no row is written twice.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from jbert.core.artifacts import JbertSettings, is_storage_full, read_json, storage_full_error, write_json
from jbert.core.errors import UserError, format_problems
from jbert.core.progress import Progress
from jbert.core.readers import detect_format
from jbert.serve.score_input import INPUT_FORMATS, Record, is_remote, open_records
from jbert.serve.score_output import TEXT_OUTPUT_FORMATS, OutputWriter, prediction_columns
from jbert.serve.score_rows import score_records
from jbert.serve.score_tables import SHARD_FORMATS

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = TEXT_OUTPUT_FORMATS
STATE_VERSION = 1
ENGINES = ("local", "ray")


def _option(default, help_text: str, **extra):
    """A dataclass field with its one-line help (the CLI flags come from these)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ScoreOptions:
    """Every option of `serve_onnx.py score`: the single source for `score_file` and the CLI flags."""

    export_dir: str = _option(None, "Export directory written by export.py.", positional=True)
    input: str = _option(None, "CSV/TSV/JSONL/Parquet file, glob ('in/*.parquet') or directory, local or an fsspec URL (s3://...), or - for standard input.", positional=True)
    output: str = _option(None, "Output file: .jsonl, .csv or .tsv (format from the extension), - for standard output, or a directory (scored/) for Parquet/JSONL shards + manifest.json.", positional=True)
    text_column: Optional[str] = _option(None, "Column holding the text (default: the model's training text column).")
    text_pair_column: Optional[str] = _option(None, "Column holding the second text of pair models (default: the model's training pair column).")
    input_format: Optional[str] = _option(None, "csv, tsv, jsonl or parquet; default: from the input's extension (needed for standard input).")
    output_format: Optional[str] = _option(None, "jsonl, csv or tsv for a file (default: from its extension; jsonl for standard output); parquet (default) or jsonl for a directory.")
    encoding: str = _option("auto", "Input encoding: auto (UTF-8, UTF-8 with BOM or cp932), utf-8, cp932, ...")
    output_encoding: str = _option("utf-8", "Output encoding; utf-8-sig writes a BOM so that Excel opens a CSV correctly.")
    model: str = _option("default", "Which ONNX file of the export to use: default, fp32, optimized or int8.")
    num_threads: Optional[int] = _option(None, "onnxruntime threads (default: one per physical core; with --engine ray: per worker, physical cores / workers on a local Ray, 1 on a cluster).")
    all_scores: bool = _option(False, "Add every class's score (JSONL: a 'scores' object; CSV/TSV: one score_<label> column per class).")
    truncate: bool = _option(True, "Cut texts longer than the model's max_length.", negative_flag="--no-truncate", negative_help="Mark texts longer than the model's max_length as errors instead of cutting them.")
    batch_size: int = _option(32, "Texts per onnxruntime call (sorted by length within each chunk).")
    chunk_size: int = _option(4096, "Rows read, scored and written at a time (bounds memory; resume granularity).")
    resume: bool = _option(False, "Continue an interrupted run from its .partial file instead of starting over.")
    overwrite: bool = _option(False, "Replace an existing output file (and any interrupted run's leftovers).")
    engine: str = _option("local", "local (this process) or ray (Ray Data: an actor pool on a local Ray or the cluster at --address; output is a directory).")
    address: Optional[str] = _option(None, "Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray and stop it at the end).")
    num_workers: Optional[int] = _option(None, "Ray scoring actors (default: the cluster's CPUs / --num-threads).")
    show_progress: bool = _option(True, "Progress bar with texts per second.", negative_flag="--quiet", negative_help="No progress bar (the summary line is still printed).")

    def validate(self) -> None:
        """Check the options together; one UserError lists every problem."""
        problems = []
        for name in ("export_dir", "input", "output"):
            if not getattr(self, name):
                problems.append(f"{name.upper()} is required")
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            problems.append(f"--input-format {self.input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
        if self.output_format is not None and self.output_format not in OUTPUT_FORMATS + SHARD_FORMATS:
            problems.append(f"--output-format {self.output_format!r} is not one of {', '.join(OUTPUT_FORMATS + ('parquet',))}")
        if self.engine not in ENGINES:
            problems.append(f"--engine {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.engine != "ray":
            problems += [f"{flag} needs --engine ray" for flag, value in (("--address", self.address), ("--num-workers", self.num_workers)) if value]
        else:
            if self.input == "-" or self.output == "-":
                problems.append("--engine ray reads files and writes a directory: standard input/output are for the local engine")
            if self.resume:
                problems.append("--resume is for the local engine (Ray retries failed batches itself); rerun with --overwrite")
        if self.num_workers is not None and self.num_workers < 1:
            problems.append(f"--num-workers must be at least 1, got {self.num_workers}")
        if self.input == "-" and self.input_format is None:
            problems.append("reading standard input needs --input-format csv, tsv or jsonl")
        if self.input == "-" and self.resume:
            problems.append("--resume needs an input file: standard input cannot be read again")
        if self.output == "-" and self.resume:
            problems.append("--resume needs an output file, not standard output")
        if self.input not in (None, "-") and self.output not in (None, "-"):
            if Path(self.input).absolute() == Path(self.output).absolute():
                problems.append("the output file must differ from the input file")
        for name in ("batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append(f"--num-threads must be at least 1, got {self.num_threads}")
        try:
            "".encode(self.output_encoding)
        except LookupError:
            problems.append(f"--output-encoding {self.output_encoding!r} is not a known encoding")
        if problems:
            raise UserError(format_problems("cannot score", problems))


@dataclass
class ScoreSummary:
    """What a scoring run did."""

    output: str
    rows: int  # records read (== rows written)
    scored: int
    errors: int
    truncated: int
    resumed_rows: int  # rows taken over from an interrupted run
    seconds: float

    @property
    def texts_per_second(self) -> float:
        """Scoring throughput of this run (resumed rows not counted)."""
        done = self.rows - self.resumed_rows
        return done / self.seconds if self.seconds > 0 else 0.0


def _paths(output: Path) -> tuple[Path, Path]:
    return output.with_name(f".{output.name}.partial"), output.with_name(f".{output.name}.partial.json")


def _fingerprint(options: ScoreOptions, classifier, text_column: str, pair_column: str | None, output_format: str) -> dict:
    """What must be identical for --resume to continue a run (input file, model, output layout)."""
    if is_remote(options.input):
        from jbert.serve.score_sources import filesystem_for

        filesystem, path = filesystem_for(options.input)
        info = filesystem.info(path)
        name, size, modified = options.input, info.get("size"), str(info.get("mtime") or info.get("LastModified") or "")
    else:
        stat = Path(options.input).stat()
        name, size, modified = str(Path(options.input).absolute()), stat.st_size, stat.st_mtime_ns
    return {
        "input": name,
        "input_size": size,
        "input_mtime_ns": modified,
        "model_file": str(classifier.model_path.absolute()),
        "text_column": text_column,
        "text_pair_column": pair_column,
        "output_format": output_format,
        "output_encoding": options.output_encoding,
        "all_scores": options.all_scores,
        "truncate": options.truncate,
    }


def score_file(options: ScoreOptions, classifier=None) -> ScoreSummary:
    """Score every record of `options.input` and write one output row per record.

    One input file and an output file: streamed into that file (resumable). Several inputs (a
    glob, a directory), an output directory, or `--engine ray`: shards + manifest.json in the
    output directory (`jbert.serve.score_shards`, `jbert.serve.ray_engine`).
    `classifier`: an already loaded `jbert.serve.runtime.OnnxClassifier` (else loaded from
    `options.export_dir`; not used by the Ray engine, whose workers load their own). Returns
    counts and timing; raises UserError for bad options or files.
    """
    from jbert.serve.runtime import OnnxClassifier

    options.validate()
    if is_remote(options.output) and not writes_directory(options):
        raise UserError(f"output {options.output}: a URL output is a directory of shards; end it with / "
                        f"(e.g. {options.output.rsplit('/', 1)[0]}/scored/) or write one file to a local path")
    if writes_directory(options):
        from jbert.serve.score_directory import score_into_directory

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
        partial_path, state_path = _paths(output)
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
    settings: JbertSettings = classifier.settings
    text_column = options.text_column or settings.text_column
    pair_column = (options.text_pair_column or settings.text_pair_column) if classifier.is_pair else None
    if options.text_pair_column and not classifier.is_pair:
        raise UserError("--text-pair-column was given but this model classifies single texts")

    opened = open_records(options.input, options.input_format, options.encoding, text_column, pair_column,
                          chunk_rows=options.chunk_size)
    handle = None
    try:
        input_columns, records, total_bytes = opened.columns, opened.records, opened.total_bytes
        regression = classifier.problem_type == "regression"
        columns = prediction_columns(classifier.problem_type, options.all_scores, output_format == "jsonl")
        writer = OutputWriter(
            output_format, options.output_encoding, input_columns, columns,
            classifier.labels if options.all_scores and not regression else None,
        )

        resumed_rows, handle, bytes_done = 0, None, 0
        fingerprint = None
        if output is not None:
            fingerprint = _fingerprint(options, classifier, text_column, pair_column, output_format)
            if options.resume and partial_path.exists() and state_path.exists():
                state = read_json(state_path)
                differences = [k for k, v in fingerprint.items() if state.get("fingerprint", {}).get(k) != v]
                if state.get("version") != STATE_VERSION or differences:
                    raise UserError(
                        f"cannot resume {partial_path}: {', '.join(differences) or 'its format'} changed since the "
                        f"interrupted run; pass --overwrite to start over"
                    )
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
        counts = {"rows": resumed_rows, "scored": 0, "errors": 0, "truncated": 0}
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
                                     truncate=options.truncate, all_scores=options.all_scores, counts=counts)
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
    )
    return summary


def writes_directory(options: ScoreOptions) -> bool:
    """True when the output is a directory of shards rather than one file (see `score_file`)."""
    if options.engine == "ray":
        return True
    if options.output == "-" or options.input == "-":
        return False
    output = options.output
    name = output.rstrip("/").rsplit("/", 1)[-1]
    return (output.endswith(("/", os.sep)) or Path(output).is_dir() or "." not in name
            or any(ch in options.input for ch in "*?[") or Path(options.input).is_dir()
            or options.output_format == "parquet")


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
