"""Serve a jbert export directory with onnxruntime (no torch): score files, or run an HTTP service.

    python serve_onnx.py score outputs/onnx reviews.csv scored.csv
    python serve_onnx.py score outputs/onnx reviews.jsonl scored.jsonl --all-scores --model fp32
    python serve_onnx.py score outputs/onnx big.tsv scored.tsv --resume        # continue an interrupted run
    cat reviews.jsonl | python serve_onnx.py score outputs/onnx - - --input-format jsonl > scored.jsonl
    python serve_onnx.py score outputs/onnx 'reviews/*.parquet' scored/                    # shards + manifest.json
    python serve_onnx.py score outputs/onnx 'reviews/*.parquet' scored/ --engine ray        # local Ray, all cores
    python serve_onnx.py score outputs/onnx s3://bucket/day=2026-11-24/ scored/ --engine ray --address auto
    python serve_onnx.py http outputs/onnx --port 8000
    python serve_onnx.py http outputs/onnx --host 0.0.0.0 --api-key-file /run/secrets/jbert-key
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"inputs": "この商品はとても良いです。"}'
    curl -s localhost:8000/v1/predict -H 'content-type: application/json' \\
         -d '{"inputs": ["この商品はとても良いです。"], "top_k": 3}'

`score` writes one output row per input row (a row that cannot be scored gets an `error`), to a
temporary file renamed into place at the end; several inputs (a glob, a directory) or an output
directory give Parquet (or JSONL) shards with `source_file`/`source_row` and a manifest.json, on
this process or, with --engine ray, on Ray Data. `http` listens on 127.0.0.1 unless --host says
otherwise (then it prints a warning); POST /predict (text-embeddings-inference's), POST / (what
huggingface_hub.InferenceClient sends), POST /v1/predict (jbert's richer answer), GET /health,
GET /info, GET /metrics, and the OpenAPI schema at /openapi.json. Slow clients get 408 after
--read-timeout-s; at most --max-connections connections are held. With --api-key-file every
route but /health needs `Authorization: Bearer <key>`. On SIGTERM it drains (/health 503, new requests 503, accepted ones
answered) and exits 0. Bad input exits with code 2.
Flags accept dashes or underscores (--text-column or --text_column).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from jbert.core.cli import add_options, options_from_args
from jbert.core.errors import run_cli
from jbert.serve.http.app import serve
from jbert.serve.http.options import ServeOptions
from jbert.serve.scoring.options import ScoreOptions
from jbert.serve.scoring.run import score_file



def build_parser() -> argparse.ArgumentParser:
    """The `score` and `http` subcommands with flags generated from ScoreOptions / ServeOptions."""
    # This module's docstring is the usage text: its first paragraph the description, the rest the epilog.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{score,http}")
    score = commands.add_parser("score", help="Score CSV/TSV/JSONL/Parquet files (or standard input) into a file or a shard directory.",
                                description="Score files: one output row per input row, streamed in chunks, here or on Ray.")
    add_options(score, ScoreOptions)
    http = commands.add_parser("http", help="Run the HTTP service (micro-batched, Prometheus /metrics).",
                               description="Serve POST /predict (TEI), POST / (Inference API), POST /v1/predict, GET /health, /info and /metrics with uvicorn.")
    add_options(http, ServeOptions)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run `score` or `http`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "score":
        options = options_from_args(ScoreOptions, args)
        summary = score_file(options)
        print(
            f"scored {summary.scored} of {summary.rows} rows ({summary.errors} errors, {summary.truncated} truncated"
            + (f", {summary.over_max_text_chars} over --max-text-chars" if summary.over_max_text_chars else "")
            + (f", {summary.resumed_rows} taken over from the interrupted run" if summary.resumed_rows else "")
            + f") in {summary.seconds:.1f} s, {summary.texts_per_second:.0f} texts/s -> {summary.output}",
            file=sys.stderr,
        )
    else:
        serve(options_from_args(ServeOptions, args))


def run(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (`jbert-serve`): `main` with a UserError turned into its message and exit 2."""
    return run_cli(main, argv)


if __name__ == "__main__":  # python -m jbert.<stage>.cli, and `accelerate launch -m jbert.train.cli` for several processes
    sys.exit(run())
