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

import sys

from jbert.export.cli import run

if __name__ == "__main__":
    sys.exit(run())
