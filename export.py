"""Export a jbert model directory to a checked ONNX directory for serving.

    python export.py outputs/model outputs/onnx
    python export.py outputs/model outputs/onnx --quantize auto --validation_file data/test.csv   # fastest int8 that keeps fp32's decisions
    python export.py outputs/model outputs/onnx --quantize avx2 --calibration_file data/unlabelled.csv --calibration_method entropy
    python export.py outputs/model outputs/onnx --optimize O2 --quantize avx512_vnni --quantize_method dynamic --per_channel --overwrite

Writes model.onnx (fp32), optionally model_optimized.onnx and model_quantized.onnx, the config,
tokenizer, jbert.json and manifest.json (with the sha256 of every file: serving refuses changed
files). Every ONNX file is checked against PyTorch on real texts (the model's examples.jsonl or
--validation_file). With --quantize, int8 candidates (dynamic; static calibrated on the training
file or --calibration_file with min-max, percentile and entropy; matmul-only; then with the nodes
that hurt most kept fp32) are measured on those held-out texts in the runtime, and the fastest that
meets --min_agreement is kept; the table goes to stderr and manifest.json. A failed check exits
with code 1 and leaves nothing behind, bad input exits with code 2. Flags accept dashes or
underscores (--min-agreement).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from typing import Sequence

from jbert.core.errors import run_cli
from jbert.export import ExportOptions, export_model


def _flag_names(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    underscored = "--" + name
    return [underscored] if dashed == underscored else [underscored, dashed]


def build_parser() -> argparse.ArgumentParser:
    """argparse flags generated from ExportOptions, each with its one-sentence help."""
    parser = argparse.ArgumentParser(
        prog="export.py",
        description=__doc__.split("\n\n")[0],
        epilog="Example: python export.py outputs/model outputs/onnx --optimize O2 --quantize auto",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="Model directory written by train.py (or any Hugging Face sequence-classification directory).")
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="Directory to write the ONNX export to; it must not exist or be empty unless --overwrite.")
    for option in fields(ExportOptions):
        default = option.default if option.default is not MISSING else None
        help_text = option.metadata["help"]
        if option.metadata.get("negative_flag"):
            parser.add_argument(option.metadata["negative_flag"], dest=option.name, action="store_false", help=option.metadata["negative_help"])
        elif option.type in ("bool", bool):
            parser.add_argument(*_flag_names(option.name), dest=option.name, action="store_true", help=help_text)
        elif option.type in ("Optional[bool]",):
            parser.add_argument(*_flag_names(option.name), dest=option.name, action="store_const", const=True, default=None, help=help_text)
        else:
            value_type = {"float": float, "int": int, "Optional[int]": int}.get(str(option.type), str)
            parser.add_argument(
                *_flag_names(option.name), dest=option.name, type=value_type, default=default,
                metavar=option.metadata.get("metavar"), help=help_text if default is None else f"{help_text} (default: {default})",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the flags and run the export."""
    args = build_parser().parse_args(argv)
    options = {option.name: getattr(args, option.name) for option in fields(ExportOptions)}
    export_model(args.model_dir, args.export_dir, **options)


if __name__ == "__main__":
    sys.exit(run_cli(main))
