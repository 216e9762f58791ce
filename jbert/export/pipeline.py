"""Export a model directory to ONNX with Optimum, optimise, quantise, and check it against PyTorch.

    export_model("outputs/model", "outputs/onnx", ExportOptions(optimize="O2", quantize="avx512_vnni"))

`export_model` is the sequence of named steps, each in its own module, all inside a temporary
directory that is renamed to EXPORT_DIR only when every check passed:

1. `onnx_export`: fp32 export with optimum-onnx `main_export` (dynamic batch and sequence axes),
   the tokenizer saved and reloaded identically, jbert.json copied.
2. `optimize`: optional graph optimisation (ORTOptimizer, O1-O3) -> model_optimized.onnx.
3. `int8_search` (with `quantize`, `calibration`, `agreement`): optional int8 from the fp32 graph,
   the fastest of dynamic / calibrated static candidates that agrees with fp32 on held-out texts
   -> model_quantized.onnx, every candidate's figures in the manifest.
4. `validate`: parity with PyTorch on the texts of `texts`, at batch size 1 and a padded batch;
   `document_parity`: for models trained with --long_text windows, the pooled answer per long document.
5. `manifest`: manifest.json with the source, versions, every figure, the default file and the
   sha256 of every file of the export (the runtime refuses files changed since).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from jbert.core.artifacts import Manifest, atomic_directory, check_output_dir
from jbert.core.errors import UserError
from jbert.export import manifest as manifest_step
from jbert.export import document_parity, int8_search, onnx_export, validate
from jbert.export import optimize as optimize_step  # `optimize` reads as ExportOptions.optimize here
from jbert.export.model_dir import check_export_path, inspect_model_dir, load_model_tokenizer, resolve_max_length
from jbert.export.options import MODEL_FILES, ExportOptions
from jbert.export.steps import StepLog
from jbert.export.calibration import load_calibration_texts
from jbert.export.texts import load_validation_examples


def export_model(
    model_dir: str | os.PathLike,
    export_dir: str | os.PathLike,
    options: Optional[ExportOptions] = None,
) -> Manifest:
    """Export MODEL_DIR to a checked, self-contained ONNX directory at EXPORT_DIR and return its manifest.

    `options` says what to make and how strictly to check it (default: `ExportOptions()`, fp32
    only). Raises `UserError` for bad input (nothing is written) and `ValidationError` when an ONNX
    graph does not match PyTorch (nothing is left at EXPORT_DIR; an existing directory there is
    untouched).
    """
    options = ExportOptions() if options is None else options
    options.validate()
    steps = StepLog(options.show_progress)
    model_dir = Path(model_dir)
    export_dir = Path(export_dir)
    check_export_path(model_dir, export_dir)
    check_output_dir(export_dir, options.overwrite)

    info = inspect_model_dir(model_dir)
    steps.step(f"loading the tokenizer of {model_dir}")
    tokenizer = load_model_tokenizer(model_dir)
    resolve_max_length(info, tokenizer)
    examples, validation_source = load_validation_examples(
        model_dir, info.settings, info.config, options.validation_file, options.max_validation_texts
    )
    calibration = None
    if options.quantize is not None and options.quantize_method != "dynamic":
        calibration = load_calibration_texts(model_dir, info.settings, options.calibration_file, examples, options.calibration_texts)
        if options.quantize_method == "static" and not calibration.examples:
            raise UserError("--quantize_method static needs calibration texts: " + "; ".join(calibration.problems)
                            + "; give --calibration_file with real texts of the task")
    source = manifest_step.source_record(model_dir)

    with atomic_directory(export_dir, overwrite=options.overwrite) as work_dir:
        steps.step("exporting the fp32 graph with Optimum")
        onnx_export.export_fp32(model_dir, work_dir, options.opset)
        onnx_export.save_tokenizer_checked(tokenizer, work_dir, examples, info.settings.max_length)
        onnx_export.copy_settings(model_dir, work_dir, info)
        if options.optimize is not None:
            steps.step(f"optimising the graph ({options.optimize})")
            optimize_step.optimize_graph(work_dir, options.optimize)
        quantization, search = None, {}
        if options.quantize is not None:
            quantization, search = int8_search.search_int8(
                work_dir, info, tokenizer, examples, validation_source, calibration, options, steps
            )

        steps.step(f"checking parity with PyTorch on {len(examples)} texts ({validation_source})")
        parity, validation = validate.check_parity(work_dir, model_dir, tokenizer, examples, info, options, steps)
        validation["source"] = validation_source
        if info.settings.long_text is not None and info.settings.long_text.windows:
            steps.step("checking long documents read in windows, per document")
            validation["documents"] = document_parity.check_document_parity(work_dir, model_dir, tokenizer, examples,
                                                                            info, options, steps)
        manifest = manifest_step.build_manifest(work_dir, info, options, parity, validation, source, quantization)
        manifest.quantization = search
        manifest.record_files(work_dir)
        manifest.save(work_dir)
    steps.step(f"wrote {export_dir} (default model: {MODEL_FILES[manifest.default_model]})")
    return manifest
