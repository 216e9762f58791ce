"""Step 3 of an export (optional): int8 quantisation with Optimum's ORTQuantizer -> model_quantized.onnx.

int8 is always made from the plain fp32 graph: onnxruntime 1.31 cannot quantize an O2/O3-fused
BERT graph (its shape inference loses the types behind the fused Attention/SkipLayerNormalization
nodes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from jbert.export.onnx_export import move_model_file
from jbert.export.options import FP32_FILE, QUANTIZE_OPS, QUANTIZED_FILE, REDUCE_RANGE_TARGETS, ExportOptions


def quantization_config(target: str, per_channel: bool = False, reduce_range: Optional[bool] = None, quantize_ops: str = "all"):
    """Optimum's dynamic int8 preset for a CPU target (the same object ORTQuantizer takes).

    `quantize_ops` "matmul" restricts the preset to the MatMul-type ops (`QUANTIZE_OPS`), leaving
    the embedding Gathers in fp32.
    """
    from optimum.onnxruntime import AutoQuantizationConfig

    kwargs: dict[str, Any] = {"is_static": False, "per_channel": per_channel, "operators_to_quantize": QUANTIZE_OPS[quantize_ops]}
    if target in REDUCE_RANGE_TARGETS:
        kwargs["reduce_range"] = bool(reduce_range)
    return getattr(AutoQuantizationConfig, target)(**kwargs)


def quantize_dynamic(work_dir: Path, target: str, per_channel: bool, reduce_range: Optional[bool], quantize_ops: str = "all") -> None:
    """model.onnx -> model_quantized.onnx (always from the unfused fp32 graph, see module doc)."""
    from optimum.onnxruntime import ORTQuantizer

    scratch_dir = work_dir / ".quantize"
    quantizer = ORTQuantizer.from_pretrained(str(work_dir), file_name=FP32_FILE)
    quantizer.quantize(quantization_config(target, per_channel, reduce_range, quantize_ops), save_dir=str(scratch_dir), file_suffix="quantized")
    move_model_file(scratch_dir, QUANTIZED_FILE, work_dir)


def quantization_record(options: ExportOptions) -> dict:
    qconfig = quantization_config(options.quantize, options.per_channel, options.reduce_range, options.quantize_ops)
    return {
        "target": options.quantize,
        "mode": "dynamic",
        "source": FP32_FILE,
        "per_channel": bool(options.per_channel),
        "quantize_ops": options.quantize_ops,
        "reduce_range": bool(qconfig.reduce_range),
        "weights_dtype": qconfig.weights_dtype.name,
        "activations_dtype": qconfig.activations_dtype.name,
        "operators": list(qconfig.operators_to_quantize),
    }


def int8_remedies(options: ExportOptions) -> str:
    """What to try when int8 disagrees with fp32, leaving out what this export already used."""
    remedies = []
    if not options.per_channel:
        remedies.append("--per_channel (per-output-channel scales, about the same size)")
    if options.quantize_ops == "all":
        remedies.append("--quantize_ops matmul (embeddings stay fp32: closer to fp32 together with --per_channel, but a larger file, e.g. 59 instead of 23 MB for MiniLM-L6)")
    if options.quantize in REDUCE_RANGE_TARGETS and not options.reduce_range:
        remedies.append("--reduce_range")
    remedies.append("or serve the fp32/optimised file (--default_model), or lower --min_agreement after checking accuracy with --validation_file")
    return "try " + ", ".join(remedies)


