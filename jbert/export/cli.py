"""The export command line (`python export.py`, `jbert-export`): flags from ExportOptions, then `export_model`.

    jbert-export outputs/model outputs/onnx --quantize auto

`main(argv)` raises `UserError` / `ValidationError` like the library does (tests call it);
`run(argv)` is the console-script entry point: it maps those to a message and exit code 2 / 1
(`jbert.core.errors.run_cli`), exactly as `python export.py` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jbert.core.cli import add_options, options_from_args
from jbert.core.errors import run_cli
from jbert.export.options import ExportOptions
from jbert.export.pipeline import export_model

DESCRIPTION = "Export a jbert model directory to a checked ONNX directory for serving."


def build_parser() -> argparse.ArgumentParser:
    """MODEL_DIR, EXPORT_DIR and one flag per ExportOptions field, each with its one-sentence help."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION,
        epilog="Example: python export.py outputs/model outputs/onnx --optimize O2 --quantize auto",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="Model directory written by train.py (or any Hugging Face sequence-classification directory).")
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="Directory to write the ONNX export to; it must not exist or be empty unless --overwrite.")
    add_options(parser, ExportOptions)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the flags (default: sys.argv[1:]) and run the export."""
    args = build_parser().parse_args(argv)
    export_model(args.model_dir, args.export_dir, options_from_args(ExportOptions, args))


def run(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: `main` with errors turned into messages and exit codes."""
    return run_cli(main, argv)


if __name__ == "__main__":  # python -m jbert.<stage>.cli, and `accelerate launch -m jbert.train.cli` for several processes
    sys.exit(run())
