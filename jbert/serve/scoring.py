"""Batch scoring of files with an export directory: stream in chunks, one output row per input row.

    from jbert.serve.scoring import ScoreOptions, score_file
    score_file(ScoreOptions(export_dir="outputs/onnx", input="reviews.csv", output="scored.csv"))

Input: CSV / TSV / JSON lines in UTF-8, UTF-8 with BOM or cp932 (the encodings and formats the
training side reads, detected the same way by `jbert.core.readers`), or standard input ("-").
Output: JSONL, CSV or TSV (from the extension) holding every input column plus
`predicted_label`, `predicted_score` (multi-label: also `predicted_labels`; regression: only
`predicted_score`, the raw value), `truncated`, optionally every class's score, and `error`.
The prediction columns are prefixed so they never overwrite an input column such as a gold `label`.

The output always has exactly one row per input record, in input order: a row that cannot be
scored (empty text, a value that is not text, bytes that do not decode, bad JSON, too many cells)
gets its `error` instead of disappearing. Blank lines are not records (as for the training reader).

Memory stays bounded: rows are read, scored and written `chunk_size` at a time. Output goes to a
hidden `.NAME.partial` file beside the target, renamed into place at the end; after each chunk a
small `.NAME.partial.json` records how far the run got, so `--resume` continues an interrupted
run from the last finished chunk without rescoring anything.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Optional

from jbert.core.artifacts import JbertSettings, read_json, write_json
from jbert.core.errors import UserError, format_problems
# _csv_dialect is tabular's private CSV/TSV dialect: reused so both sides parse files identically.
from jbert.core.readers import _csv_dialect, detect_encoding, detect_format, iter_rows, resolve_encoding, suggest_column

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("jsonl", "csv", "tsv")
PREDICTION_COLUMNS = ("predicted_label", "predicted_labels", "predicted_score", "truncated", "error")
STATE_VERSION = 1
# Bytes of standard input sniffed for the encoding (stdin cannot be re-read for detection).
STDIN_SAMPLE_BYTES = 1024 * 1024


def _option(default, help_text: str, **extra):
    """A dataclass field with its one-line help (the CLI flags come from these)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ScoreOptions:
    """Every option of `serve_onnx.py score`: the single source for `score_file` and the CLI flags."""

    export_dir: str = _option(None, "Export directory written by export.py.", positional=True)
    input: str = _option(None, "CSV/TSV/JSONL file to score, or - for standard input.", positional=True)
    output: str = _option(None, "Output file: .jsonl, .csv or .tsv (format from the extension), or - for standard output.", positional=True)
    text_column: Optional[str] = _option(None, "Column holding the text (default: the model's training text column).")
    text_pair_column: Optional[str] = _option(None, "Column holding the second text of pair models (default: the model's training pair column).")
    input_format: Optional[str] = _option(None, "csv, tsv or jsonl; default: from the input's extension (needed for standard input).")
    output_format: Optional[str] = _option(None, "jsonl, csv or tsv; default: from the output's extension (jsonl for standard output).")
    encoding: str = _option("auto", "Input encoding: auto (UTF-8, UTF-8 with BOM or cp932), utf-8, cp932, ...")
    output_encoding: str = _option("utf-8", "Output encoding; utf-8-sig writes a BOM so that Excel opens a CSV correctly.")
    model: str = _option("default", "Which ONNX file of the export to use: default, fp32, optimized or int8.")
    num_threads: Optional[int] = _option(None, "onnxruntime threads (default: one per physical core).")
    all_scores: bool = _option(False, "Add every class's score (JSONL: a 'scores' object; CSV/TSV: one score_<label> column per class).")
    truncate: bool = _option(True, "Cut texts longer than the model's max_length.", negative_flag="--no-truncate", negative_help="Mark texts longer than the model's max_length as errors instead of cutting them.")
    batch_size: int = _option(32, "Texts per onnxruntime call (sorted by length within each chunk).")
    chunk_size: int = _option(4096, "Rows read, scored and written at a time (bounds memory; resume granularity).")
    resume: bool = _option(False, "Continue an interrupted run from its .partial file instead of starting over.")
    overwrite: bool = _option(False, "Replace an existing output file (and any interrupted run's leftovers).")
    show_progress: bool = _option(True, "Progress bar with texts per second.", negative_flag="--quiet", negative_help="No progress bar (the summary line is still printed).")

    def validate(self) -> None:
        """Check the options together; one UserError lists every problem."""
        problems = []
        for name in ("export_dir", "input", "output"):
            if not getattr(self, name):
                problems.append(f"{name.upper()} is required")
        if self.input_format is not None and self.input_format not in ("csv", "tsv", "jsonl"):
            problems.append(f"--input-format {self.input_format!r} is not one of csv, tsv, jsonl")
        if self.output_format is not None and self.output_format not in OUTPUT_FORMATS:
            problems.append(f"--output-format {self.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
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


@dataclass
class Record:
    """One input record: its first line, its columns (None if unreadable) and why it is bad."""

    line: int
    row: dict | None
    error: str | None = None


# ---------------------------------------------------------------------- tolerant reading
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
    reader = csv.reader(lines, **_csv_dialect(fmt))
    try:
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
            if not cells or (len(cells) == 1 and cells[0] == "" and width > 1):
                continue  # a blank line is not a record
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


def _choose_encoding(path: Path | None, sample: bytes, requested: str) -> str:
    """The input's encoding: as requested, else tabular's detection made tolerant of a few bad rows."""
    if requested not in (None, "", "auto"):
        return resolve_encoding(path, requested) if path is not None else resolve_encoding_name(requested)
    try:
        if path is not None:
            detected = detect_encoding(path)
        else:
            with tempfile.NamedTemporaryFile(suffix=".txt") as probe:
                probe.write(sample)
                probe.flush()
                detected = detect_encoding(probe.name)
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


def _open_input(options: ScoreOptions) -> tuple[_ByteCounter, str, str, int | None, bytes]:
    """(byte line reader, encoding, format, total bytes or None, first bytes) for the input file or stdin."""
    if options.input == "-":
        stream = sys.stdin.buffer
        sample = stream.read(STDIN_SAMPLE_BYTES)
        rest = stream
        encoding = _choose_encoding(None, sample[: sample.rfind(b"\n") + 1] or sample, options.encoding)

        class _Prefixed(io.RawIOBase):
            def __init__(self):
                self.buffers = io.BytesIO(sample)

            def readable(self):
                return True

            def readinto(self, target):
                data = self.buffers.read(len(target)) or rest.read1(len(target))
                target[: len(data)] = data
                return len(data)

        return _ByteCounter(io.BufferedReader(_Prefixed())), encoding, options.input_format, None, sample
    path = Path(options.input)
    if not path.exists():
        raise UserError(f"input file {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"input {path} is a directory, not a CSV/TSV/JSONL file")
    fmt = options.input_format or detect_format(path)
    with open(path, "rb") as probe:
        sample = probe.read(STDIN_SAMPLE_BYTES)
    encoding = _choose_encoding(path, sample, options.encoding)
    return _ByteCounter(open(path, "rb")), encoding, fmt, path.stat().st_size, sample


# ---------------------------------------------------------------------- writing
class _OutputWriter:
    """Formats result rows as JSONL, CSV or TSV bytes; the caller writes and counts them."""

    def __init__(self, fmt: str, encoding: str, input_columns: list[str], prediction_columns: list[str], score_labels: list[str] | None):
        self.fmt = fmt
        self.encoding = encoding
        self.input_columns = input_columns
        self.prediction_columns = prediction_columns
        self.score_labels = score_labels
        self.columns = input_columns + [c for c in prediction_columns if c not in input_columns]
        if score_labels and fmt != "jsonl":
            self.columns += [f"score_{label}" for label in score_labels]
        clash = sorted(set(input_columns) & set(prediction_columns))
        if clash:
            raise UserError(
                f"the input already has the column(s) {clash} that scoring writes; rename them in the input"
            )

    def header(self) -> bytes:
        """The header line (CSV/TSV) or nothing (JSONL)."""
        if self.fmt == "jsonl":
            return b""
        return self._encode(self._csv_text([self.columns]))

    def rows(self, rows: list[dict]) -> bytes:
        """The encoded bytes of result rows."""
        if self.fmt == "jsonl":
            # Every row gets every prediction key (null where not scored), in a fixed order.
            predicted = set(self.prediction_columns)
            text = "".join(
                json.dumps({**{k: v for k, v in row.items() if k not in predicted},
                            **{c: row.get(c) for c in self.prediction_columns}}, ensure_ascii=False) + "\n"
                for row in rows
            )
            return self._encode(text)
        table = []
        for row in rows:
            values = []
            for column in self.columns:
                value = row.get(column)
                if column.startswith("score_") and column not in row and self.score_labels:
                    value = (row.get("scores") or {}).get(column[len("score_"):])
                values.append(_cell(value))
            table.append(values)
        return self._encode(self._csv_text(table))

    def _csv_text(self, table: list[list]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t" if self.fmt == "tsv" else ",", lineterminator="\n").writerows(table)
        return buffer.getvalue()

    def _encode(self, text: str) -> bytes:
        # The BOM of utf-8-sig is written once, by the caller, at the start of the file.
        encoding = "utf-8" if self.encoding.replace("_", "-").lower() == "utf-8-sig" else self.encoding
        return text.encode(encoding, errors="replace")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------- the run
def _paths(output: Path) -> tuple[Path, Path]:
    return output.with_name(f".{output.name}.partial"), output.with_name(f".{output.name}.partial.json")


def _fingerprint(options: ScoreOptions, classifier, text_column: str, pair_column: str | None, output_format: str) -> dict:
    """What must be identical for --resume to continue a run (input file, model, output layout)."""
    stat = Path(options.input).stat()
    return {
        "input": str(Path(options.input).absolute()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
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

    `classifier`: an already loaded `jbert.serve.runtime.OnnxClassifier` (else loaded from
    `options.export_dir`). Returns counts and timing; raises UserError for bad options or files.
    """
    from jbert.serve.runtime import OnnxClassifier

    options.validate()
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

    lines_source, encoding, input_format, total_bytes, sample = _open_input(options)
    handle = None
    source_name = "<stdin>" if options.input == "-" else options.input
    try:
        decoded = _DecodedLines(lines_source, encoding, source_name)
        if input_format == "jsonl" and sample.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            # One JSON array (a .json file): tabular streams it; it is one value, so a syntax error
            # in it cannot be confined to a row and stops the run with its line number.
            if options.input == "-":
                raise UserError("standard input holds a JSON array; send JSON lines (one object per line) instead")
            records = (Record(line, row) for line, row in iter_rows(options.input, encoding, "jsonl"))
            first = next(records, None)
            input_columns = list(first.row) if first is not None else []
            records = _chain([first] if first is not None else [], records)
            if first is not None:
                _check_columns(source_name, input_columns, text_column, pair_column, options)
        elif input_format == "jsonl":
            records = _iter_jsonl_records(decoded)
            first = next(records, None)
            input_columns = list(first.row) if first is not None and first.row is not None else []
            records = _chain([first] if first is not None else [], records)
            if first is not None and first.row is not None:
                _check_columns(source_name, input_columns, text_column, pair_column, options)
        else:
            input_columns, records = _iter_delimited_records(decoded, input_format, source_name)
            _check_columns(source_name, input_columns, text_column, pair_column, options)

        regression = classifier.problem_type == "regression"
        multi_label = classifier.problem_type == "multi_label_classification"
        prediction_columns = (
            ([] if regression else ["predicted_label"]) + (["predicted_labels"] if multi_label else [])
            + ["predicted_score", "truncated"] + (["scores"] if options.all_scores and output_format == "jsonl" and not regression else [])
            + ["error"]
        )
        writer = _OutputWriter(
            output_format, options.output_encoding, input_columns, prediction_columns,
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

        progress = _progress_bar(options.show_progress, total_bytes, resumed_rows)
        try:
            for chunk in _chunks(records, options.chunk_size):
                rows = _score_chunk(classifier, chunk, text_column, pair_column, options, regression, multi_label, counts)
                data = writer.rows(rows)
                handle.write(data)
                handle.flush()
                bytes_done += len(data)
                counts["rows"] += len(chunk)
                if output is not None:
                    os.fsync(handle.fileno())
                    write_json(state_path, {"version": STATE_VERSION, "rows": counts["rows"], "bytes": bytes_done, "fingerprint": fingerprint})
                if progress is not None:
                    progress.update(len(chunk))
                    if total_bytes:
                        progress.set_postfix_str(f"{100 * lines_source.bytes_read / total_bytes:.0f}% of input, {counts['errors']} errors", refresh=False)
        finally:
            if progress is not None:
                progress.close()
        seconds = time.perf_counter() - started
        if output is not None:
            handle.close()
            handle = None
            os.replace(partial_path, output)
            state_path.unlink(missing_ok=True)
    finally:
        if options.input != "-":  # never close the process's standard input
            lines_source.stream.close()
        if output is not None and handle is not None and not handle.closed:
            handle.close()
    summary = ScoreSummary(
        output=options.output, rows=counts["rows"], scored=counts["scored"], errors=counts["errors"],
        truncated=counts["truncated"], resumed_rows=resumed_rows, seconds=seconds,
    )
    return summary


def _check_columns(source: str, columns: list[str], text_column: str, pair_column: str | None, options: ScoreOptions) -> None:
    problems = []
    for flag, name in (("--text-column", text_column), ("--text-pair-column", pair_column)):
        if name is not None and columns and name not in columns:
            problems.append(f"{source} has no column {name!r}{suggest_column(name, columns)}; its columns are {columns}; pass {flag}")
    if problems:
        raise UserError("; ".join(problems))


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _score_chunk(classifier, chunk: list[Record], text_column: str, pair_column: str | None,
                 options: ScoreOptions, regression: bool, multi_label: bool, counts: dict) -> list[dict]:
    """Result rows for one chunk: input columns + predictions, or + error."""
    rows: list[dict] = []
    to_score: list[int] = []
    texts: list[str] = []
    pairs: list[str] | None = [] if pair_column else None
    for record in chunk:
        row = dict(record.row) if record.row is not None else {}
        error = record.error
        if error is None:
            text = row.get(text_column)
            pair = row.get(pair_column) if pair_column else None
            problem = classifier.input_problem(text, pair)
            if problem:  # "text is empty", "text_pair must be a string, got int", ...
                column = pair_column if problem.startswith("text_pair") else text_column
                error = f"line {record.line}: column {column!r} {problem.split(' ', 1)[1]}"
            else:
                to_score.append(len(rows))
                texts.append(text)
                if pairs is not None:
                    pairs.append(pair)
        row["error"] = error
        rows.append(row)
    if texts:
        top_k = len(classifier.labels) if options.all_scores and not regression else None
        encodings = classifier.encode(texts, pairs, truncate=True)
        results = classifier.predict_encoded(encodings, top_k=top_k, batch_size=options.batch_size)
        for position, result in zip(to_score, results):
            row = rows[position]
            if result["truncated"] and not options.truncate:
                row["error"] = (
                    f"text longer than the model's max_length of {classifier.max_length} tokens "
                    "(not scored because of --no-truncate)"
                )
                continue
            if not regression:
                row["predicted_label"] = result["label"]
            if multi_label:
                row["predicted_labels"] = result["labels"]
            row["predicted_score"] = result["score"]
            row["truncated"] = result["truncated"]
            if top_k:
                row["scores"] = {item["label"]: item["score"] for item in sorted(result["scores"], key=lambda s: classifier.labels.index(s["label"]))}
    for row in rows:
        if row["error"]:
            counts["errors"] += 1
        else:
            counts["scored"] += 1
            counts["truncated"] += bool(row.get("truncated"))
        # Keep the output columns in a fixed order: input columns, predictions, error last.
        row["error"] = row.pop("error")
    return rows


def _progress_bar(enabled: bool, total_bytes: int | None, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" texts", unit_scale=True, initial=initial, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                desc="scoring")
