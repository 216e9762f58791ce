"""Export stage: a model directory -> a validated ONNX directory that serving loads without torch.

Takes a model directory from `jbert.train` (or any Hugging Face sequence-classification directory),
exports it with Optimum, optionally optimises and quantises it with onnxruntime's tools, and checks
every ONNX file against the PyTorch logits on real texts. Hands on model.onnx (+ optimised, int8),
the tokenizer, config, jbert.json and manifest.json with the parity figures; a failed check leaves
nothing behind.

The steps, in the order `pipeline.export_model` runs them: `model_dir` (inspect the source),
`texts` (held-out validation texts), `calibration` (calibration texts), `onnx_export`, `optimize`,
`int8_search` (int8 recipes of `quantize`, judged by `agreement`), `validate`, `manifest`.

    from jbert.export import ExportOptions, export_model, MODEL_FILES
"""

from jbert.export.options import MODEL_FILES, ExportOptions
from jbert.export.pipeline import export_model

__all__ = ["MODEL_FILES", "ExportOptions", "export_model"]
