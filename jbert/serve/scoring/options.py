"""The options of `serve_onnx.py score`, checked together, and what a finished run reports.

    from jbert.serve.scoring.options import ScoreOptions
    from jbert.serve.scoring.run import score_file
    score_file(ScoreOptions(export_dir="outputs/onnx", input="reviews.csv", output="scored.csv"))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from jbert.core.cli import option
from jbert.core.errors import UserError, format_problems
from jbert.serve.runtime.batch_inputs import DEFAULT_MAX_TEXT_CHARS, MAX_TEXT_CHARS_LIMIT
from jbert.serve.scoring.inputs import INPUT_FORMATS
from jbert.serve.scoring.outputs import TEXT_OUTPUT_FORMATS
from jbert.serve.scoring.tables import SHARD_FORMATS

OUTPUT_FORMATS = TEXT_OUTPUT_FORMATS
ENGINES = ("local", "ray")
# What happens to a text over --max-text-chars: an error row, or its first max-text-chars characters scored.
LONG_TEXT_CHOICES = ("error", "truncate-chars")


@dataclass
class ScoreOptions:
    """Every option of `serve_onnx.py score`: the single source for `score_file` and the CLI flags."""

    export_dir: str = option(None, "Export directory written by export.py.", positional=True)
    input: str = option(None, "CSV/TSV/JSONL/Parquet file, glob ('in/*.parquet') or directory, local or an fsspec URL (s3://...), or - for standard input.", positional=True)
    output: str = option(None, "Output file: .jsonl, .csv or .tsv (format from the extension), - for standard output, or a directory (scored/) for Parquet/JSONL shards + manifest.json.", positional=True)
    text_column: Optional[str] = option(None, "Column holding the text (default: the model's training text column).")
    text_pair_column: Optional[str] = option(None, "Column holding the second text of pair models (default: the model's training pair column).")
    input_format: Optional[str] = option(None, "csv, tsv, jsonl or parquet; default: from the input's extension (needed for standard input).")
    output_format: Optional[str] = option(None, "jsonl, csv or tsv for a file (default: from its extension; jsonl for standard output); parquet (default) or jsonl for a directory.")
    encoding: str = option("auto", "Input encoding: auto (UTF-8, UTF-8 with BOM or cp932), utf-8, cp932, ...")
    output_encoding: str = option("utf-8", "Output encoding; utf-8-sig writes a BOM so that Excel opens a CSV correctly.")
    model: str = option("default", "Which ONNX file of the export to use: default, fp32, optimized or int8.")
    num_threads: Optional[int] = option(None, "onnxruntime threads (default: one per physical core; with --engine ray: per worker, physical cores / workers on a local Ray, 1 on a cluster).")
    all_scores: bool = option(False, "Add every class's score (JSONL: a 'scores' object; CSV/TSV: one score_<label> column per class).")
    truncate: bool = option(True, "Cut texts longer than the model's max_length.", negative_flag="--no-truncate", negative_help="Mark texts longer than the model's max_length as errors instead of cutting them.")
    max_text_chars: int = option(DEFAULT_MAX_TEXT_CHARS, f"Characters allowed per text (and per text pair), checked before tokenizing; at most {MAX_TEXT_CHARS_LIMIT:,} (MeCab crashes the process on much longer texts).")
    long_text: str = option("error", "A text over --max-text-chars: error (an error row) or truncate-chars (its first --max-text-chars characters are scored, the row marked truncated).", choices=LONG_TEXT_CHOICES)
    batch_size: int = option(32, "Texts per onnxruntime call (sorted by length within each chunk).")
    chunk_size: int = option(4096, "Rows read, scored and written at a time (bounds memory; resume granularity).")
    resume: bool = option(False, "Continue an interrupted run from its .partial file instead of starting over.")
    overwrite: bool = option(False, "Replace an existing output file (and any interrupted run's leftovers).")
    engine: str = option("local", "local (this process) or ray (Ray Data: an actor pool on a local Ray or the cluster at --address; output is a directory).")
    address: Optional[str] = option(None, "Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray and stop it at the end).")
    num_workers: Optional[int] = option(None, "Ray scoring actors (default: the cluster's CPUs / --num-threads).")
    show_progress: bool = option(True, "Progress bar with texts per second.", negative_flag="--quiet", negative_help="No progress bar (the summary line is still printed).")

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
        if self.input not in (None, "-") and self.output not in (None, "-") and same_file(self.input, self.output):
            problems.append(f"the output file must differ from the input file: {self.output} is the input file "
                            f"{self.input} (after resolving '..' and links); write the scores to another file")
        if isinstance(self.max_text_chars, bool) or not isinstance(self.max_text_chars, int) \
                or not 1 <= self.max_text_chars <= MAX_TEXT_CHARS_LIMIT:
            problems.append(f"--max-text-chars must be between 1 and {MAX_TEXT_CHARS_LIMIT:,}, got {self.max_text_chars!r} "
                            "(MeCab crashes the process on longer texts)")
        if self.long_text not in LONG_TEXT_CHOICES:
            problems.append(f"--long-text {self.long_text!r} is not one of {', '.join(LONG_TEXT_CHOICES)}")
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
    over_max_text_chars: int = 0  # rows with a text over --max-text-chars (error rows, or cut and scored)

    @property
    def texts_per_second(self) -> float:
        """Scoring throughput of this run (resumed rows not counted)."""
        done = self.rows - self.resumed_rows
        return done / self.seconds if self.seconds > 0 else 0.0


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


def same_file(input_path: str, output_path: str) -> bool:
    """True when `output_path` names the input file itself: compared after resolving '..' and symbolic links.

    URLs are compared as written; a local output that does not exist yet is a new file, unless its
    resolved path is the input's (a dangling link pointing at the input cannot exist: the input does).
    """
    if "://" in input_path or "://" in output_path:
        return input_path.rstrip("/") == output_path.rstrip("/")
    try:
        return os.path.samefile(input_path, output_path)
    except OSError:  # one of them does not exist (yet): compare where they lead
        return Path(input_path).resolve() == Path(output_path).resolve()
