"""An export directory, read once: manifest, settings, labels, which ONNX file, which text columns.

    export = ExportDir.open("outputs/onnx")
    key, model_file = export.model_file("int8")              # or "default", "fp32", "optimized"
    text_column, pair_column = export.text_columns()         # the training columns, or the user's

The runtime, the batch scorer and the Ray engine all start from this object, so the export's files
are read in one place and the choices made from them (model file, text/pair columns) are made the
same way everywhere. It holds plain dataclasses only, so Ray ships it to workers as it is; a worker
that must load the files itself opens the same path again with `ExportDir.open`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jbert.core.artifacts import MANIFEST_FILE, JbertSettings, Manifest, read_json
from jbert.core.errors import UserError

# "default" is the file the manifest names as its default (the best one that passed the export's checks).
MODEL_CHOICES = ("default", "fp32", "optimized", "int8")
CONFIG_FILE = "config.json"


@dataclass
class ExportDir:
    """What an export directory says about the model it holds (see `jbert.core.artifacts` for the files)."""

    path: Path
    manifest: Manifest
    settings: JbertSettings
    labels: list[str]  # class names by index

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ExportDir":
        """Read manifest.json, jbert.json and the label names; UserError when the directory is not an export."""
        path = Path(path)
        manifest = Manifest.load(path)
        return cls(path, manifest, JbertSettings.load(path), read_labels(path, manifest))

    @property
    def problem_type(self) -> str:
        """single_label_classification, multi_label_classification or regression."""
        return self.manifest.task

    @property
    def is_pair(self) -> bool:
        """True when the model classifies sentence pairs."""
        return bool(self.manifest.is_pair)

    @property
    def max_length(self) -> int:
        """Tokens per input the model was exported for."""
        return int(self.manifest.max_length or self.settings.max_length)

    @property
    def input_names(self) -> list[str] | None:
        """The model inputs export.py checked the ONNX files with (None for exports that did not record them)."""
        names = (self.manifest.validation or {}).get("inputs")
        return list(names) if isinstance(names, list) and names else None

    def model_file(self, model: str = "default") -> tuple[str, Path]:
        """(manifest key, path) of the ONNX file `model` names; UserError when it is unknown, absent or missing."""
        if model not in MODEL_CHOICES:
            raise UserError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
        key = self.manifest.default_model if model == "default" else model
        if key not in self.manifest.models:
            raise UserError(
                f"{self.path} has no {key!r} model (it has: {', '.join(self.manifest.models)}); "
                f"choose one of those or re-export with the option that makes it "
                f"(--quantize for int8, --optimize for optimized)"
            )
        model_path = self.path / self.manifest.models[key].file
        if not model_path.is_file():
            raise UserError(
                f"{model_path} is listed in {self.path / MANIFEST_FILE} but missing; "
                f"copy the complete export directory or re-export the model"
            )
        return key, model_path

    def text_columns(self, text_column: str | None = None, text_pair_column: str | None = None) -> tuple[str, str | None]:
        """(text column, pair column or None) to read inputs from: the user's choice, else the training columns.

        A pair column for a model of single texts is a UserError (it would be silently ignored).
        """
        if text_pair_column and not self.is_pair:
            raise UserError("--text-pair-column was given but this model classifies single texts")
        text = text_column or self.settings.text_column
        pair = (text_pair_column or self.settings.text_pair_column) if self.is_pair else None
        return text, pair

    def verify_files(self) -> None:
        """Refuse an export whose files changed since export (sha256 recorded in manifest.json)."""
        self.manifest.verify_files(self.path)


def read_labels(path: Path, manifest: Manifest) -> list[str]:
    """Label names by class index from config.json id2label (the manifest's list as fallback)."""
    config_path = path / CONFIG_FILE
    if config_path.is_file():
        id2label = read_json(config_path).get("id2label") or {}
        if id2label:
            return [str(id2label[key]) for key in sorted(id2label, key=int)]
    if manifest.labels:
        return list(manifest.labels)
    raise UserError(f"{path}: neither config.json id2label nor manifest labels name the classes; re-export the model")
