"""Step 3 of an export (optional): int8 recipes made with Optimum's ORTQuantizer -> model_quantized.onnx.

Two kinds of int8, both with Optimum's presets for the CPU target (`AutoQuantizationConfig`):
- dynamic: weights int8 ahead of time, activation ranges measured on every batch at run time;
- static (QDQ, per-channel weights): activation ranges fixed ahead of time from calibration texts
  (`ORTQuantizer.fit` with `AutoCalibrationConfig` min-max, percentile or entropy), so a batch
  pays no range computation and outliers can be clipped; some nodes can be left in fp32
  (`nodes_to_exclude`), which is how the search keeps the ones that hurt most out of int8.

int8 is always made from the plain fp32 graph: onnxruntime 1.31 cannot quantize an O2/O3-fused
BERT graph (its shape inference loses the types behind the fused Attention/SkipLayerNormalization
nodes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from jbert.core.errors import UserError
from jbert.export.options import AUTO_TARGET, FP32_FILE, QUANTIZE_OPS, REDUCE_RANGE_TARGETS

# Operator types static int8 quantises. "all" mirrors the dynamic preset's reach (every dense layer
# and the embedding tables); "matmul" keeps the embedding tables fp32. Static QDQ on LayerNorm,
# Softmax or Add would put Q/DQ pairs around ops onnxruntime runs in float anyway: slower, less exact.
STATIC_OPS = {"all": ["MatMul", "Gather"], "matmul": ["MatMul"]}
# Percentile calibration clips the 0.001 % most extreme activations (Optimum's default).
PERCENTILE = 99.999
# Entropy calibration picks the clipping threshold whose 128-level histogram loses the least
# information (KL divergence) against a finer one. Optimum's default of 128 bins for both leaves a
# single candidate threshold, the full range, i.e. min-max again (measured: identical ranges), so
# the fine histogram has 512 bins.
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 512, 128


@dataclass(frozen=True)
class Int8Recipe:
    """One way of making int8: dynamic or static, which ops, calibration method, nodes kept fp32."""

    method: str  # "dynamic" | "static"
    quantize_ops: str = "all"  # "all" | "matmul"
    per_channel: bool = True
    calibration: Optional[str] = None  # static only: "minmax" | "percentile" | "entropy"
    nodes_excluded: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Short name for tables and the manifest, e.g. static-entropy-matmul-exclude6."""
        parts = [self.method] + ([self.calibration] if self.calibration else [])
        if self.quantize_ops != "all":
            parts.append(self.quantize_ops)
        if self.method == "dynamic" and not self.per_channel:
            parts.append("per_tensor")
        if self.nodes_excluded:
            parts.append(f"exclude{len(self.nodes_excluded)}")
        return "-".join(parts)

    def operators(self) -> Optional[list[str]]:
        """operators_to_quantize for Optimum (None: the preset's own list)."""
        return STATIC_OPS[self.quantize_ops] if self.method == "static" else QUANTIZE_OPS[self.quantize_ops]


def resolve_target(quantize: str) -> tuple[str, str]:
    """(target, how it was chosen) for --quantize TARGET or --quantize auto (this machine's CPU)."""
    if quantize != AUTO_TARGET:
        return quantize, "given (--quantize)"
    from jbert.serve.runtime.cpu import cpu_description

    detected = cpu_description()["detected_target"]
    if detected is None:
        raise UserError(
            "--quantize auto found no int8 instruction set on this CPU (VNNI, AVX-512, AVX2 or ARM); "
            "give the serving machine's target explicitly, e.g. --quantize avx2"
        )
    return detected, "detected on this machine (--quantize auto)"


def quantization_config(target: str, per_channel: bool = False, reduce_range: Optional[bool] = None,
                        quantize_ops: str = "all", recipe: Optional[Int8Recipe] = None):
    """Optimum's int8 preset for a CPU target (the object ORTQuantizer takes).

    Without `recipe`: the dynamic preset (`quantize_ops` "matmul" leaves the embedding Gathers fp32).
    With `recipe`: its method, ops, per-channel setting and excluded nodes.
    """
    from optimum.onnxruntime import AutoQuantizationConfig

    recipe = recipe or Int8Recipe("dynamic", quantize_ops, per_channel)
    kwargs: dict[str, Any] = {
        "is_static": recipe.method == "static",
        "per_channel": recipe.per_channel,
        "operators_to_quantize": recipe.operators(),
        "nodes_to_exclude": list(recipe.nodes_excluded),
    }
    if target in REDUCE_RANGE_TARGETS:
        kwargs["reduce_range"] = bool(reduce_range)
    return getattr(AutoQuantizationConfig, target)(**kwargs)


def _quantize_into(fp32_path: Path, output_path: Path, qconfig, ranges: Optional[dict] = None) -> None:
    """Run ORTQuantizer on FP32_PATH and put only the int8 ONNX file at OUTPUT_PATH."""
    from optimum.onnxruntime import ORTQuantizer

    # Optimum also writes ort_config.json, config.json and tokenizer files into its save_dir.
    scratch_dir = Path(tempfile.mkdtemp(prefix=".quantize-", dir=output_path.parent))
    try:
        quantizer = ORTQuantizer.from_pretrained(str(fp32_path.parent), file_name=fp32_path.name)
        quantizer.quantize(qconfig, save_dir=str(scratch_dir), file_suffix="quantized", calibration_tensors_range=ranges)
        written = scratch_dir / f"{fp32_path.stem}_quantized.onnx"
        if not written.is_file():
            raise RuntimeError(f"ORTQuantizer finished without writing {written.name}")
        os.replace(written, output_path)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


def quantize_dynamic(fp32_path: Path, output_path: Path, target: str, per_channel: bool, reduce_range: Optional[bool],
                     quantize_ops: str = "all", nodes_to_exclude: tuple[str, ...] = ()) -> None:
    """Dynamic int8 of the fp32 graph at FP32_PATH (NODES_TO_EXCLUDE kept fp32), written to OUTPUT_PATH."""
    recipe = Int8Recipe("dynamic", quantize_ops, per_channel, nodes_excluded=tuple(nodes_to_exclude))
    _quantize_into(fp32_path, output_path, quantization_config(target, reduce_range=reduce_range, recipe=recipe))


def calibrate(fp32_path: Path, method: str, dataset, scratch_dir: Path, batch_size: int = 1) -> dict:
    """Activation ranges of the fp32 graph on the calibration DATASET with Optimum's calibration METHOD.

    The ranges cover every tensor `STATIC_OPS["all"]` quantises, a superset of what the matmul-only
    and node-excluding recipes need, so one calibration per method serves them all.
    """
    from optimum.onnxruntime import AutoCalibrationConfig, ORTQuantizer

    configs = {
        "minmax": lambda: AutoCalibrationConfig.minmax(dataset),
        "percentile": lambda: AutoCalibrationConfig.percentiles(dataset, percentile=PERCENTILE),
        "entropy": lambda: AutoCalibrationConfig.entropy(dataset, num_bins=ENTROPY_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS),
    }
    quantizer = ORTQuantizer.from_pretrained(str(fp32_path.parent), file_name=fp32_path.name)
    # The augmented graph (every calibrated tensor an output) goes to scratch, not the working directory.
    return quantizer.fit(dataset, configs[method](), onnx_augmented_model_name=str(scratch_dir / f"augmented-{method}.onnx"),
                         operators_to_quantize=STATIC_OPS["all"], batch_size=batch_size)


def quantize_static(fp32_path: Path, output_path: Path, target: str, recipe: Int8Recipe, ranges: dict,
                    reduce_range: Optional[bool] = None) -> None:
    """Static QDQ int8 of the fp32 graph with precomputed calibration RANGES, written to OUTPUT_PATH."""
    _quantize_into(fp32_path, output_path, quantization_config(target, reduce_range=reduce_range, recipe=recipe), ranges)


def quantization_record(target: str, recipe: Int8Recipe, reduce_range: Optional[bool] = None,
                        calibration: Optional[dict] = None) -> dict:
    """What the manifest says about how an int8 file was made."""
    qconfig = quantization_config(target, reduce_range=reduce_range, recipe=recipe)
    record = {
        "target": target,
        "mode": recipe.method,
        "recipe": recipe.name,
        "source": FP32_FILE,
        "per_channel": bool(recipe.per_channel),
        "quantize_ops": recipe.quantize_ops,
        "reduce_range": bool(qconfig.reduce_range),
        "weights_dtype": qconfig.weights_dtype.name,
        "activations_dtype": qconfig.activations_dtype.name,
        "operators": list(qconfig.operators_to_quantize),
    }
    record["nodes_excluded"] = list(recipe.nodes_excluded)
    if recipe.method == "static":
        record["format"] = "QDQ"
        settings = {"percentile": {"percentile": PERCENTILE},
                    "entropy": {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}}.get(recipe.calibration, {})
        record["calibration"] = {"method": recipe.calibration, **settings, **(calibration or {})}
    return record


def subgraph_nodes(path: Path) -> list[str]:
    """Op types of the nodes of an ONNX file that hold subgraphs (If, Loop, Scan), one entry per node.

    Optimum's static quantizer refuses such graphs ("not supported for models with subgraphs");
    DeBERTa-v2/v3 exports have two `If` nodes (its relative-position code), so its int8 is dynamic.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [node.op_type for node in model.graph.node
            if any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attribute in node.attribute)]
