"""Step 2 of an export (optional): onnxruntime graph optimisation (ORTOptimizer, O1-O3) -> model_optimized.onnx."""

from __future__ import annotations

from pathlib import Path

from jbert.core.errors import UserError
from jbert.export.onnx_export import move_model_file
from jbert.export.options import FP32_FILE, OPTIMIZED_FILE


def optimize_graph(work_dir: Path, level: str) -> None:
    """model.onnx -> model_optimized.onnx with ORTOptimizer at an Optimum optimisation level."""
    from optimum.onnxruntime import AutoOptimizationConfig, ORTOptimizer

    # A scratch directory keeps Optimum's extra config copies out of the export directory.
    scratch_dir = work_dir / ".optimize"
    optimizer = ORTOptimizer.from_pretrained(str(work_dir), file_names=[FP32_FILE])
    config = AutoOptimizationConfig.with_optimization_level(level, for_gpu=False)
    try:
        optimizer.optimize(config, save_dir=str(scratch_dir), file_suffix="optimized")
    except (NotImplementedError, KeyError) as err:
        raise UserError(f"--optimize {level} is not available for this architecture ({err}); use --optimize O1") from None
    move_model_file(scratch_dir, OPTIMIZED_FILE, work_dir)


