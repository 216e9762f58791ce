"""Step 5 of an export: manifest.json, what serving loads and how far to trust it.

Records the source model's file hashes, package versions, every parity figure and the default
model file.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

from jbert.core.artifacts import Manifest, ManifestModelFile
from jbert.core.file_hashes import sha256_file
from jbert.export.model_dir import ModelDirInfo
from jbert.export.options import FP32_FILE, MODEL_FILES, ExportOptions




def hash_files(directory: Path) -> dict[str, str]:
    """sha256 of every file at the top of the model directory, so an export names its exact source."""
    return {path.name: sha256_file(path) for path in sorted(directory.iterdir()) if path.is_file()}


def onnx_size(path: Path) -> int:
    """Bytes of an ONNX file plus any external-data files stored beside it."""
    size = path.stat().st_size
    for sibling in path.parent.iterdir():
        if sibling != path and sibling.name.startswith(path.name) and sibling.is_file():
            size += sibling.stat().st_size
    return size


def onnx_opset(path: Path) -> Optional[int]:
    """The default-domain opset an ONNX file was written with."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def package_versions() -> dict[str, str]:
    """Versions of the packages that made (and will serve) the export."""
    versions = {"python": sys.version.split()[0]}
    for package in ("onnxruntime", "optimum", "optimum-onnx", "onnx", "transformers", "tokenizers", "torch", "fugashi", "unidic-lite"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions



def source_record(model_dir: Path) -> dict:
    """Where the export came from: the model directory, the hashes of its files, the time."""
    return {
        "model_dir": str(model_dir.resolve()),
        "files": hash_files(model_dir),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_manifest(work_dir: Path, info: ModelDirInfo, options: ExportOptions, parity: dict, validation: dict,
                   source: dict, quantization: Optional[dict]) -> Manifest:
    """The manifest of the files in WORK_DIR, with their sizes, hashes and parity figures."""
    models = {}
    for key in options.model_keys():
        path = work_dir / MODEL_FILES[key]
        models[key] = ManifestModelFile(
            file=MODEL_FILES[key],
            precision="int8" if key == "int8" else "fp32",
            optimization=options.optimize if key == "optimized" else None,
            quantization=quantization if key == "int8" else None,
            size_bytes=onnx_size(path),
            sha256=sha256_file(path),
            parity=parity[key],
        )
    return Manifest(
        task=info.problem_type,
        labels=info.labels,
        max_length=info.settings.max_length,
        is_pair=info.settings.is_pair,
        default_model=options.resolved_default_model(),
        models=models,
        source=source,
        versions=package_versions(),
        opset=onnx_opset(work_dir / FP32_FILE),
        validation=validation,
        decision=decision_record(info.settings),
        temperature=info.settings.temperature,
        long_text=info.settings.long_text.to_dict() if info.settings.long_text else None,
    )


def decision_record(settings) -> dict:
    """The decision rule serving applies, as jbert.json holds it: per-label thresholds and/or min_confidence.

    Empty without one, so an export of a model without tuned rules has the manifest it had before.
    """
    record = {}
    if settings.label_thresholds:
        record["label_thresholds"] = dict(settings.label_thresholds)
        record["default_threshold"] = float(settings.multi_label_threshold)
    if settings.min_confidence is not None:
        record["min_confidence"] = float(settings.min_confidence)
    return record
