"""Export options: every flag of export.py, its default, its help and the checks across them.

`ExportOptions` is the single source: `export_model(model_dir, export_dir, options)` takes it, and
the CLI flags and `--help` (`jbert.export.cli`) are generated from its fields by `jbert.core.cli`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from jbert.core.cli import option
from jbert.core.errors import UserError, format_problems

ONNX_TASK = "text-classification"
# O4 is Optimum's fp16 mixed-precision level: meant for GPUs, slower than fp32 on CPU
# onnxruntime and unable to meet an fp32 tolerance, so it is not offered.
OPTIMIZATION_LEVELS = ("O1", "O2", "O3")
QUANTIZATION_TARGETS = ("avx512_vnni", "avx512", "avx2", "arm64")
AUTO_TARGET = "auto"  # --quantize auto: the target detected from this machine's CPU (jbert.serve.cpu)
# How int8 is made: "auto" searches the candidates (jbert.export.int8_search) from fastest to most
# conservative and keeps the fastest that agrees with fp32; "dynamic" and "static" make one recipe.
QUANTIZE_METHODS = ("auto", "dynamic", "static")
# Static int8 calibration (Optimum's AutoCalibrationConfig): activation ranges from the min/max seen,
# from a high percentile of the histogram (outliers clipped), or minimising the KL divergence.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Optimum's arm64 and avx512_vnni presets fix reduce_range=False: those instruction sets do not
# saturate, so 7-bit weights would only cost accuracy.
REDUCE_RANGE_TARGETS = ("avx2", "avx512")
# Which operator types dynamic int8 quantises. "all" is Optimum's preset (MatMul, Attention, Gather,
# ...): the embedding Gather tables become int8 too, the smallest file. "matmul" keeps the embedding
# tables (and every other non-matmul op) in fp32: on a briefly fine-tuned MiniLM, per channel, int8
# label agreement with fp32 went from 98.1 % to 98.8 % (README, "Choosing the int8 recipe"), for a 59 MB instead
# of a 23 MB file since the vocabulary-sized embedding table stays fp32. Attention is listed for
# fused graphs; int8 is made from the unfused graph, where every dense layer is a MatMul.
QUANTIZE_OPS = {"all": None, "matmul": ["MatMul", "Attention"]}
MIN_OPSET = 14  # scaled-dot-product attention of transformers' BERT exports from opset 14 on

FP32_FILE = "model.onnx"
OPTIMIZED_FILE = "model_optimized.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
MODEL_FILES = {"fp32": FP32_FILE, "optimized": OPTIMIZED_FILE, "int8": QUANTIZED_FILE}


@dataclass
class ExportOptions:
    """Every option of an export: what `export_model` takes, and the single source of the CLI flags."""

    optimize: Optional[str] = option(None, f"Also write an onnxruntime graph-optimised copy, model_optimized.onnx: O1 (basic), O2 (plus BERT fusions), O3 (plus fast GELU approximation). Choices: {', '.join(OPTIMIZATION_LEVELS)}.", metavar="LEVEL")
    quantize: Optional[str] = option(None, f"Also write an int8 copy, model_quantized.onnx, for this CPU instruction set (made from the fp32 graph); auto: the instruction set of this machine. Choices: {AUTO_TARGET}, {', '.join(QUANTIZATION_TARGETS)}.", metavar="TARGET")
    quantize_method: str = option("auto", f"How int8 is made: auto (try dynamic, static with each calibration method, matmul-only, then excluding the nodes that hurt most; keep the fastest that meets --min_agreement on the held-out texts), dynamic or static (one recipe). Choices: {', '.join(QUANTIZE_METHODS)}.", metavar="METHOD")
    calibration_method: Optional[str] = option(None, f"Static int8 calibration: {', '.join(CALIBRATION_METHODS)} (default: all three with --quantize_method auto, minmax with static).", metavar="METHOD")
    calibration_file: Optional[str] = option(None, "CSV/TSV/JSONL file of texts to calibrate static int8 on (the model's text column); default: the training file of the run (training_config.yaml). Texts also in the held-out validation texts are left out.", metavar="FILE")
    calibration_texts: int = option(200, "Use at most this many calibration texts, spread over the file.")
    max_quantize_seconds: float = option(1800.0, "Fail (exit 2, nothing written) when making and measuring the int8 candidates takes longer than this.")
    per_channel: bool = option(False, "Quantize weights per output channel in dynamic int8 (static int8 is always per channel): more accurate at a slightly larger file.")
    reduce_range: Optional[bool] = option(None, "Quantize weights to 7 bits, which avoids overflow on AVX2/AVX512 CPUs without VNNI (avx2 and avx512 targets only).")
    quantize_ops: str = option("all", f"Which ops int8 quantises: all (Optimum's preset, embeddings included: smallest file) or matmul (MatMul only; embeddings stay fp32: a larger file, closer to fp32 together with --per_channel). Choices: {', '.join(QUANTIZE_OPS)}.", metavar="OPS")
    validation_file: Optional[str] = option(None, "CSV/TSV/JSONL file of texts (the model's text column, its pair column for pair models, and optionally the label column) to check parity on; default: examples.jsonl of the model directory.", metavar="FILE")
    max_accuracy_change: float = option(0.005, "Where the held-out texts have labels, an int8 candidate must also keep its accuracy (subset accuracy for multi-label) within this of fp32's, either way (0.005 = half a point).")
    atol: float = option(1e-4, "Largest absolute logit difference allowed between PyTorch and the fp32/optimised ONNX graphs.")
    min_agreement: float = option(0.99, "Smallest agreement of int8 with fp32 on the held-out texts: the fraction of same labels (single-label), of same per-label decisions (multi-label), of scores within 2 percent of the fp32 score range (regression).")
    opset: Optional[int] = option(None, f"ONNX opset to export with (at least {MIN_OPSET}; default: Optimum's choice for the architecture).")
    overwrite: bool = option(False, "Replace EXPORT_DIR if it exists and is not empty.")
    default_model: Optional[str] = option(None, "Which file serving loads by default: fp32, optimized or int8 (default: int8 if made, else optimized, else fp32).", metavar="MODEL")
    validation_batch_size: int = option(8, "The larger, padded batch size used in the parity check (batch size 1 is always checked too).")
    max_validation_texts: int = option(256, "Use at most this many texts from the validation file (PyTorch runs them all, twice).")
    show_progress: bool = option(True, "Print a line for each slow step and a progress bar for validation.", negative_flag="--quiet", negative_help="Print no step lines and no progress bar (errors are still printed).")

    def __post_init__(self) -> None:
        # Callers pass pathlib.Path as readily as str; the manifest records these as JSON strings.
        for name in ("calibration_file", "validation_file"):
            if getattr(self, name) is not None:
                setattr(self, name, os.fspath(getattr(self, name)))

    def validate(self) -> None:
        """Check all options together; raise one UserError that lists every problem."""
        problems: list[str] = []
        if self.optimize is not None and self.optimize not in OPTIMIZATION_LEVELS:
            if self.optimize == "O4":
                problems.append("--optimize O4 is fp16 mixed precision for GPUs; onnxruntime on CPU runs it slower than fp32 and it cannot match fp32 logits. Use O2 or O3")
            else:
                problems.append(f"--optimize {self.optimize!r} is not a level; choose one of {', '.join(OPTIMIZATION_LEVELS)}")
        if self.quantize is not None and self.quantize not in (AUTO_TARGET, *QUANTIZATION_TARGETS):
            problems.append(f"--quantize {self.quantize!r} is not a known target; choose one of {AUTO_TARGET}, {', '.join(QUANTIZATION_TARGETS)} (auto: this machine's; avx512_vnni for recent Intel/AMD servers, avx2 for older x86, arm64 for ARM)")
        if self.quantize_method not in QUANTIZE_METHODS:
            problems.append(f"--quantize_method {self.quantize_method!r} is not a choice; choose one of {', '.join(QUANTIZE_METHODS)}")
        if self.calibration_method is not None and self.calibration_method not in CALIBRATION_METHODS:
            problems.append(f"--calibration_method {self.calibration_method!r} is not a calibration method; choose one of {', '.join(CALIBRATION_METHODS)}")
        elif self.calibration_method is not None and self.quantize_method == "dynamic":
            problems.append("--calibration_method only applies to static int8; use --quantize_method auto or static")
        if self.calibration_file is not None:
            if not Path(self.calibration_file).is_file():
                problems.append(f"--calibration_file {self.calibration_file} does not exist")
            elif self.quantize_method == "dynamic":
                problems.append("--calibration_file only applies to static int8; use --quantize_method auto or static")
        if self.quantize is None and (self.calibration_file is not None or self.calibration_method is not None):
            problems.append("--calibration_file / --calibration_method only apply to int8; add --quantize auto")
        if self.calibration_texts < 1:
            problems.append(f"--calibration_texts must be at least 1 (got {self.calibration_texts})")
        if not self.max_quantize_seconds > 0:
            problems.append(f"--max_quantize_seconds must be positive (got {self.max_quantize_seconds})")
        if self.quantize is None and self.per_channel:
            problems.append("--per_channel only applies to int8 quantisation; add --quantize TARGET")
        if self.quantize_ops not in QUANTIZE_OPS:
            problems.append(f"--quantize_ops {self.quantize_ops!r} is not a choice; choose one of {', '.join(QUANTIZE_OPS)} (matmul keeps the embeddings in fp32)")
        elif self.quantize is None and self.quantize_ops != "all":
            problems.append(f"--quantize_ops {self.quantize_ops} only applies to int8 quantisation; add --quantize TARGET")
        if self.reduce_range is not None:
            if self.quantize is None:
                problems.append("--reduce_range only applies to int8 quantisation; add --quantize avx2 or --quantize avx512")
            elif self.quantize in QUANTIZATION_TARGETS and self.quantize not in REDUCE_RANGE_TARGETS and self.reduce_range:
                problems.append(f"--reduce_range does not apply to --quantize {self.quantize} (it never saturates); use it with avx2 or avx512")
        if not self.atol > 0:
            problems.append(f"--atol must be positive (got {self.atol})")
        if not 0 <= self.max_accuracy_change <= 1:
            problems.append(f"--max_accuracy_change must be between 0 and 1 (got {self.max_accuracy_change})")
        if not 0 <= self.min_agreement <= 1:
            problems.append(f"--min_agreement must be between 0 and 1 (got {self.min_agreement})")
        if self.opset is not None:
            import onnx

            if not MIN_OPSET <= self.opset <= onnx.defs.onnx_opset_version():
                problems.append(f"--opset must be between {MIN_OPSET} and {onnx.defs.onnx_opset_version()} (got {self.opset})")
        if self.validation_file is not None and not Path(self.validation_file).is_file():
            problems.append(f"--validation_file {self.validation_file} does not exist")
        if self.validation_batch_size < 1:
            problems.append(f"--validation_batch_size must be at least 1 (got {self.validation_batch_size})")
        if self.max_validation_texts < 1:
            problems.append(f"--max_validation_texts must be at least 1 (got {self.max_validation_texts})")
        if self.default_model is not None:
            made = self.model_keys()
            if self.default_model not in MODEL_FILES:
                problems.append(f"--default_model {self.default_model!r} is not one of {', '.join(MODEL_FILES)}")
            elif self.default_model not in made:
                flag = "--optimize LEVEL" if self.default_model == "optimized" else "--quantize TARGET"
                problems.append(f"--default_model {self.default_model} is not being made; add {flag} or choose one of {', '.join(made)}")
        if problems:
            raise UserError(format_problems("invalid export options", problems))

    def model_keys(self) -> list[str]:
        """Manifest keys of the ONNX files this export writes, in order."""
        keys = ["fp32"]
        if self.optimize is not None:
            keys.append("optimized")
        if self.quantize is not None:
            keys.append("int8")
        return keys

    def resolved_default_model(self) -> str:
        """The file serving loads by default: the one asked for, else the most optimised made."""
        return self.default_model or self.model_keys()[-1]

