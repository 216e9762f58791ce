"""The teacher(s) of --task distill: model or export directories, their outputs computed once and cached.

    --teacher DIR[,DIR...]   each a model directory (PyTorch, transformers) or an export directory
                             (its ONNX model through onnxruntime: several times faster on CPU)
      -> check: one problem type, one label set, single texts or pairs alike (an ensemble must agree)
      -> raw logits for every text the run needs (training, unlabeled, validation, test), per teacher,
         written once to <output_dir>.checkpoints/teacher_outputs.npz; a resumed run (or another
         process of the run) reads them back instead of running the teacher again
      -> soft targets at a temperature: the teachers' probabilities averaged (an ensemble is its mean)

Averaging probabilities rather than logits is what an ensemble's prediction means (and what
Hinton et al. distil); for regression the teachers' values are averaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jbert.core.artifacts import MANIFEST_FILE, JbertSettings
from jbert.core.errors import UserError
from jbert.core.export_dir import ExportDir
from jbert.data.labels import MULTI_LABEL, SINGLE_LABEL
from jbert.train.distill_options import teacher_paths

logger = logging.getLogger("jbert")

CACHE_FILE = "teacher_outputs.npz"
REGRESSION = "regression"


@dataclass
class Teacher:
    """One teacher directory: what it predicts and how to run it."""

    path: Path
    kind: str  # "model" (a model directory) or "export" (an export directory, run with onnxruntime)
    problem_type: str
    label_names: list[str]  # [] for regression
    settings: JbertSettings
    tokenizer: object = field(repr=False, default=None)

    @property
    def is_pair(self) -> bool:
        """True when the teacher classifies sentence pairs."""
        return self.settings.text_pair_column is not None

    def weight_files(self) -> list[Path]:
        """The files whose change means other outputs (the cache's key holds their sizes and times)."""
        names = ("model.safetensors", "pytorch_model.bin", "config.json", MANIFEST_FILE)
        files = [self.path / name for name in names if (self.path / name).is_file()]
        return files + sorted(self.path.glob("*.onnx"))

    def logits(self, texts: list[str], pairs: list[str] | None, batch_size: int, device) -> np.ndarray:
        """Raw logits (n, labels) for texts in order, tokenized with the teacher's own tokenizer."""
        if not texts:
            width = max(1, len(self.label_names))
            return np.zeros((0, width), dtype=np.float32)
        if self.kind == "export":
            return _onnx_logits(self, texts, pairs, batch_size)
        from transformers import AutoModelForSequenceClassification

        from jbert.train.saved_predictions import predict

        model = AutoModelForSequenceClassification.from_pretrained(self.path, trust_remote_code=False).to(device)
        # A teacher trained with --long_text windows answers for whole texts, its windows pooled.
        return predict(model, self.tokenizer, texts, pairs, self.settings.max_length, batch_size, device,
                       self.settings.long_text)


def open_teacher(path: str) -> Teacher:
    """A teacher from a model directory (config.json + weights) or an export directory (manifest.json)."""
    from jbert.tokenization import load_tokenizer

    directory = Path(path)
    if (directory / MANIFEST_FILE).is_file():
        export = ExportDir.open(directory)
        if export.settings.long_text is not None and export.settings.long_text.windows:
            raise UserError(f"--teacher {path} is an export of a model that reads long texts in windows; give its "
                            "model directory (train.py's output) as the teacher, which pools the windows the same way")
        labels = [] if export.problem_type == REGRESSION else list(export.labels)
        return Teacher(directory, "export", export.problem_type, labels, export.settings, load_tokenizer(str(directory)))
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise UserError(f"--teacher {path} holds neither a model (config.json) nor an export (manifest.json); give "
                        "train.py's output directory or export.py's")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    settings = JbertSettings.load(directory)
    problem_type = config.get("problem_type") or settings.problem_type
    id2label = config.get("id2label") or {}
    labels = [] if problem_type == REGRESSION else [id2label[key] for key in sorted(id2label, key=int)]
    return Teacher(directory, "model", problem_type, labels, settings, load_tokenizer(str(directory)))


def open_teachers(value: str) -> list[Teacher]:
    """The --teacher directories; an ensemble must share problem type, labels and text columns."""
    teachers = [open_teacher(path) for path in teacher_paths(value)]
    first = teachers[0]
    for other in teachers[1:]:
        if (other.problem_type, other.label_names, other.is_pair) != (first.problem_type, first.label_names, first.is_pair):
            raise UserError(
                f"--teacher: the ensemble's models disagree: {first.path} is {first.problem_type} with labels "
                f"{first.label_names}{' (pairs)' if first.is_pair else ''}, {other.path} is {other.problem_type} "
                f"with labels {other.label_names}{' (pairs)' if other.is_pair else ''}; give teachers of one task")
    return teachers


def _onnx_logits(teacher: Teacher, texts: list[str], pairs: list[str] | None, batch_size: int) -> np.ndarray:
    """The export's default ONNX model over texts in length order (less padding), back in input order."""
    import onnxruntime

    export = ExportDir.open(teacher.path)
    # fp32 when the export has it: the teacher runs once per text, so its best figures count more than speed
    _, model_file = export.model_file("fp32" if "fp32" in export.manifest.models else "default")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    wanted = {item.name for item in session.get_inputs()}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
    result = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        encoded = teacher.tokenizer([texts[i] for i in ids], [pairs[i] for i in ids] if pairs else None,
                                    truncation=True, max_length=export.max_length, padding=True, return_tensors="np")
        feeds = {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items() if name in wanted}
        logits = session.run(None, feeds)[0]
        for row, i in enumerate(ids):
            result[i] = np.asarray(logits[row], dtype=np.float32)
    return np.stack(result)


# ------------------------------------------------------------------ outputs, cached


def cache_key(teachers: list[Teacher], parts: dict[str, tuple[list[str], list[str] | None]]) -> str:
    """A digest of the teachers' files (path, size, time) and every text: the cache is valid only for both."""
    digest = hashlib.sha256()
    for teacher in teachers:
        digest.update(str(teacher.path.resolve()).encode())
        for path in teacher.weight_files():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for name in sorted(parts):
        texts, pairs = parts[name]
        digest.update(name.encode())
        digest.update(json.dumps([texts, pairs], ensure_ascii=False).encode())
    return digest.hexdigest()


def teacher_outputs(teachers: list[Teacher], parts: dict[str, tuple[list[str], list[str] | None]], cache_dir: Path,
                    batch_size: int, device, compute: bool) -> dict[str, np.ndarray]:
    """{part: logits (teachers, n, labels)} from the cache, or (compute=True) run and cached.

    Called on the main process first with compute=True; the others, and a resumed run, find the file.
    """
    key = cache_key(teachers, parts)
    path = cache_dir / CACHE_FILE
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                logger.info("teacher outputs read from %s", path)
                return {name: saved[f"part_{name}"] for name in parts}
    if not compute:
        raise RuntimeError(f"{path} was not written by the main process")
    outputs = {}
    for name, (texts, pairs) in parts.items():
        outputs[name] = np.stack([teacher.logits(texts, pairs, batch_size, device) for teacher in teachers])
        logger.info("teacher outputs: %s, %d texts x %d teacher(s)", name, len(texts), len(teachers))
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = cache_dir / f".{CACHE_FILE}.{os.getpid()}.npz"
    np.savez(temporary, key=np.asarray(key), **{f"part_{name}": value for name, value in outputs.items()})
    os.replace(temporary, path)  # whole or not at all: a kill mid-write leaves the previous cache or none
    return outputs


def remove_cache(cache_dir: Path) -> None:
    """The model directory is written: the cached teacher outputs are no longer needed."""
    (cache_dir / CACHE_FILE).unlink(missing_ok=True)


# ------------------------------------------------------------------ from logits to targets


def ensemble_probabilities(logits: np.ndarray, problem_type: str, temperature: float = 1.0) -> np.ndarray:
    """Teachers' logits (teachers, n, labels) -> the mean of their probabilities at `temperature` (n, labels).

    Single-label: softmax; multi-label: per-label sigmoid; regression: the mean value (no temperature).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if problem_type == REGRESSION:
        return logits.mean(axis=0).astype(np.float32)
    scaled = logits / temperature
    if problem_type == MULTI_LABEL:
        probabilities = 1.0 / (1.0 + np.exp(-scaled))
    else:
        scaled = scaled - scaled.max(axis=-1, keepdims=True)
        probabilities = np.exp(scaled)
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return probabilities.mean(axis=0).astype(np.float32)


def ensemble_logits(logits: np.ndarray, problem_type: str) -> np.ndarray:
    """The ensemble as one model's logits (for metrics): log of the mean softmax, logit of the mean sigmoid."""
    probabilities = ensemble_probabilities(logits, problem_type).astype(np.float64)
    if problem_type == REGRESSION:
        return probabilities.astype(np.float32)
    probabilities = np.clip(probabilities, 1e-12, 1 - 1e-12)
    if problem_type == MULTI_LABEL:
        return np.log(probabilities / (1 - probabilities)).astype(np.float32)
    return np.log(probabilities).astype(np.float32)


def check_teacher_fits_data(teacher: Teacher, problem_type: str, data_labels: list[str], is_pair: bool) -> None:
    """The data's labels must be among the teacher's, its texts single or pairs alike; else one UserError."""
    if teacher.is_pair != is_pair:
        want = "sentence pairs" if teacher.is_pair else "single texts"
        have = "--text_pair_column" if is_pair else "no --text_pair_column"
        raise UserError(f"--teacher {teacher.path} classifies {want}, but the run has {have}; "
                        "give the data the teacher was trained for")
    if problem_type != SINGLE_LABEL and problem_type != MULTI_LABEL:
        return
    unknown = [name for name in data_labels if name not in teacher.label_names]
    if unknown:
        raise UserError(f"--teacher {teacher.path} knows the labels {teacher.label_names}, but the data has "
                        f"{unknown} besides; distil on data with the teacher's labels (--label_column?)")
