"""Serve a jbert export directory with onnxruntime (no torch): score files, or run an HTTP service.

    python serve_onnx.py score outputs/onnx reviews.csv scored.csv
    python serve_onnx.py score outputs/onnx 'reviews/*.parquet' scored/ --engine ray
    python serve_onnx.py http outputs/onnx --port 8000
    python serve_onnx.py --help        # every subcommand, flag and example (jbert/serve/cli.py)

The same commands run as `jbert-serve score ...` / `jbert-serve http ...` once the package is installed.
"""

import sys

from jbert.serve.cli import run

if __name__ == "__main__":
    sys.exit(run())
