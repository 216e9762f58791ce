"""ONNX Runtime inference for an export directory: normalise, tokenize, batch, run, postprocess.

No torch, no transformers, no HTTP: this is the one module the batch scorer and the HTTP service
share, and it runs from a serving-only install (`requirements-serve.txt`).

    from jbert.serve.runtime import OnnxClassifier
    classifier = OnnxClassifier.from_export_dir("outputs/export", model="int8")
    classifier.predict(["この商品はとても良いです。"], top_k=3)
    # [{"label": "positive", "score": 0.97, "truncated": False, "scores": [...]}]

Where the speed comes from: texts are sorted by token length within a window so a batch pads to
its own longest text instead of the longest text overall; padded arrays are written once into
preallocated int64 numpy buffers (the layout onnxruntime reads without converting); the session
uses one intra-op thread per physical core (hyper-threads only add contention to GEMMs) and
sequential execution (a BERT graph is one chain; the parallel executor adds scheduling overhead).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jbert.core.artifacts import JbertSettings, Manifest, read_json
from jbert.core.errors import UserError
from jbert.tokenization.files import EncodedText
from jbert.tokenization.loading import load_serving_tokenizer
from jbert.core.postprocessing import sigmoid, softmax
from jbert.core.normalize import normalize_text
from jbert.serve.cpu import warn_if_cpu_lacks_int8_target

logger = logging.getLogger(__name__)

MODEL_CHOICES = ("default", "fp32", "optimized", "int8")
DEFAULT_BATCH_SIZE = 32
# Sorting window, in batches: large enough to group similar lengths, small enough that a
# million-text call does not hold every encoding at once (scoring streams chunks anyway).
SORT_WINDOW_BATCHES = 32


class InputError(UserError):
    """One input of a request is unusable (empty, not text, too long); `index` says which."""

    def __init__(self, message: str, index: int | None = None, kind: str = "invalid"):
        super().__init__(message)
        self.index = index
        self.kind = kind  # "invalid" (wrong type / empty) or "too_long"


def physical_core_count() -> int:
    """Number of physical CPU cores this process may use (hyper-threads not counted).

    Reads the Linux CPU topology for the CPUs in this process's affinity mask; elsewhere falls
    back to psutil when installed, else to the logical CPU count.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # macOS / Windows
        allowed = None
    if allowed is not None:
        cores = set()
        for cpu in allowed:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            try:
                package = (topology / "physical_package_id").read_text().strip()
                core = (topology / "core_id").read_text().strip()
            except OSError:
                cores = set()
                break
            cores.add((package, core))
        if cores:
            return len(cores)
        return max(1, len(allowed))
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


def make_session_options(num_threads: int | None = None, graph_optimization: str = "all", allow_spinning: bool = True):
    """onnxruntime SessionOptions as this project runs them (threads, executor, graph optimisation).

    `num_threads`: intra-op threads; None means one per physical core.
    `graph_optimization`: "disable", "basic", "extended" or "all".
    `allow_spinning`: let idle intra-op threads busy-wait for the next op. Good for back-to-back
    batches; a server on few cores turns it off so the waiting threads leave CPU to the event
    loop and the tokenizer thread.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if graph_optimization not in levels:
        raise UserError(f"graph_optimization must be one of {sorted(levels)}, got {graph_optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or physical_core_count()
    # One chain of ops: a second inter-op pool would only compete with the intra-op threads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[graph_optimization]
    options.log_severity_level = 3  # warnings about unused initializers are noise for users
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


class OnnxClassifier:
    """A text classifier served from a jbert export directory with onnxruntime."""

    def __init__(
        self,
        session,
        tokenizer,
        settings: JbertSettings,
        manifest: Manifest,
        labels: list[str],
        model_key: str,
        model_path: Path,
    ):
        """Use `from_export_dir`; this constructor takes already loaded parts."""
        self.session = session
        self.tokenizer = tokenizer
        self.settings = settings
        self.manifest = manifest
        self.labels = labels
        self.model_key = model_key
        self.model_path = model_path
        self.problem_type = manifest.task
        self.max_length = int(manifest.max_length or settings.max_length)
        self.is_pair = bool(manifest.is_pair)
        self.threshold = float(settings.multi_label_threshold)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self._input_names = {item.name for item in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._input_names
        if missing:
            raise UserError(f"{model_path}: the ONNX model lacks inputs {sorted(missing)}; re-export it with export.py")
        self._output_name = "logits" if "logits" in {o.name for o in session.get_outputs()} else session.get_outputs()[0].name

    @classmethod
    def from_export_dir(
        cls,
        export_dir: str | os.PathLike,
        model: str = "default",
        num_threads: int | None = None,
        graph_optimization: str = "all",
        prefer_fast_tokenizer: bool = True,
        allow_spinning: bool = True,
    ) -> "OnnxClassifier":
        """Load an export directory through its manifest.json.

        `model`: "default" (the manifest's choice), "fp32", "optimized" or "int8".
        `num_threads`: onnxruntime intra-op threads (None: one per physical core).
        `graph_optimization`, `allow_spinning`: see `make_session_options`.
        """
        import onnxruntime as ort

        export_dir = Path(export_dir)
        manifest = Manifest.load(export_dir)
        if model not in MODEL_CHOICES:
            raise UserError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
        model_key = manifest.default_model if model == "default" else model
        if model_key not in manifest.models:
            raise UserError(
                f"{export_dir} has no {model_key!r} model (it has: {', '.join(manifest.models)}); "
                f"choose one of those or re-export with the option that makes it "
                f"(--quantize for int8, --optimize for optimized)"
            )
        model_path = export_dir / manifest.models[model_key].file
        if not model_path.is_file():
            raise UserError(
                f"{model_path} is listed in {export_dir / 'manifest.json'} but missing; "
                f"copy the complete export directory or re-export the model"
            )
        manifest.verify_files(export_dir)  # refuse files changed since export (hashes in manifest.json)
        warn_if_cpu_lacks_int8_target(manifest.models[model_key], model_path)
        if num_threads is not None and num_threads < 1:
            raise UserError(f"num_threads must be at least 1, got {num_threads}")
        settings = JbertSettings.load(export_dir)
        labels = cls._read_labels(export_dir, manifest)
        options = make_session_options(num_threads, graph_optimization, allow_spinning)
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise UserError(f"{model_path} cannot be loaded by onnxruntime ({err}); re-export the model") from None
        tokenizer = load_serving_tokenizer(export_dir, prefer_fast=prefer_fast_tokenizer)
        return cls(session, tokenizer, settings, manifest, labels, model_key, model_path)

    @staticmethod
    def _read_labels(export_dir: Path, manifest: Manifest) -> list[str]:
        """Label names by class index from config.json id2label (the manifest's list as fallback)."""
        config_path = export_dir / "config.json"
        if config_path.is_file():
            id2label = read_json(config_path).get("id2label") or {}
            if id2label:
                return [str(id2label[key]) for key in sorted(id2label, key=int)]
        if manifest.labels:
            return list(manifest.labels)
        raise UserError(f"{export_dir}: neither config.json id2label nor manifest labels name the classes; re-export the model")

    # ------------------------------------------------------------------ info
    def info(self) -> dict:
        """What is being served: for /info, /health and logs."""
        return {
            "task": self.problem_type,
            "labels": self.labels,
            "max_length": self.max_length,
            "is_pair": self.is_pair,
            "model": self.model_key,
            "model_file": self.model_path.name,
            "fast_tokenizer": bool(getattr(self.tokenizer, "is_fast", False)),
            "intra_op_threads": self.session.get_session_options().intra_op_num_threads,
        }

    # ------------------------------------------------------------------ stage 1: text -> ids
    def _clean(self, value: object, name: str) -> tuple[str | None, str | None]:
        """(normalised text, None) or (None, why it cannot be scored)."""
        if value is None:
            return None, f"{name} is missing"
        if not isinstance(value, str):
            return None, f"{name} must be a string, got {type(value).__name__}"
        cleaned = normalize_text(value, self.settings.normalization)
        if not cleaned:
            return None, f"{name} is empty" + (" after clean-up (only spaces or control characters)" if value else "")
        return cleaned, None

    def input_problem(self, text: object, text_pair: object = None) -> str | None:
        """Why one input cannot be scored (wrong type, empty after clean-up), or None if it can."""
        problem = self._clean(text, "text")[1]
        if problem is None and self.is_pair:
            problem = self._clean(text_pair, "text_pair")[1]
        return problem

    def encode(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, truncate: bool = True
    ) -> list[EncodedText]:
        """Normalise and tokenize texts as training did; raises InputError naming the first bad one.

        `truncate=False` turns a text longer than max_length tokens into an InputError
        (kind "too_long") instead of silently cutting it.
        """
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings, not one string")
        if self.is_pair and text_pairs is None:
            raise InputError("this model classifies sentence pairs: give text_pairs as well")
        if not self.is_pair and text_pairs is not None:
            raise InputError("this model classifies single texts: text_pairs are not accepted")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise InputError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
        normalized: list[str] = []
        normalized_pairs: list[str] | None = [] if text_pairs is not None else None
        for index, text in enumerate(texts):
            cleaned, problem = self._clean(text, "text")
            if problem is None and normalized_pairs is not None:
                cleaned_pair, problem = self._clean(text_pairs[index], "text_pair")
                normalized_pairs.append(cleaned_pair)
            if problem:
                raise InputError(f"input {index}: {problem}", index=index)
            normalized.append(cleaned)
        if not normalized:
            return []
        encodings = self.tokenizer.encode_batch(normalized, normalized_pairs, max_length=self.max_length)
        for index, item in enumerate(encodings):
            if item.truncated and not truncate:
                raise InputError(
                    f"input {index} is longer than the model's max_length of {self.max_length} tokens; "
                    f"shorten it or allow truncation (truncate=true)",
                    index=index,
                    kind="too_long",
                )
        return list(encodings)

    # ------------------------------------------------------------------ stage 2: ids -> scores
    def pad(self, encodings: Sequence[EncodedText]) -> dict[str, np.ndarray]:
        """Pad a batch into int64 arrays shaped (batch, longest) as the ONNX model expects."""
        lengths = np.fromiter((len(e.input_ids) for e in encodings), dtype=np.int64, count=len(encodings))
        width = int(lengths.max())
        input_ids = np.full((len(encodings), width), self.pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = lengths[row]
            input_ids[row, :length] = encoding.input_ids
            if self.is_pair:  # single texts are all segment 0: nothing to write
                token_type_ids[row, :length] = encoding.token_type_ids
        # Broadcast comparison builds the mask in one vectorised step.
        attention_mask = (np.arange(width, dtype=np.int64)[None, :] < lengths[:, None]).astype(np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = token_type_ids
        return feeds

    def run_logits(self, encodings: Sequence[EncodedText], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Raw logits (n, num_outputs) in input order; batches are built from length-sorted inputs."""
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        count = len(encodings)
        if count == 0:
            return np.zeros((0, max(1, len(self.labels))), dtype=np.float32)
        logits: np.ndarray | None = None
        window = batch_size * SORT_WINDOW_BATCHES
        for window_start in range(0, count, window):
            window_indices = range(window_start, min(count, window_start + window))
            order = sorted(window_indices, key=lambda i: len(encodings[i].input_ids))
            for batch_start in range(0, len(order), batch_size):
                batch_indices = order[batch_start : batch_start + batch_size]
                feeds = self.pad([encodings[i] for i in batch_indices])
                batch_logits = self.session.run([self._output_name], feeds)[0]
                if logits is None:
                    logits = np.empty((count, batch_logits.shape[1]), dtype=np.float32)
                logits[batch_indices] = batch_logits
        return logits

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities (softmax or sigmoid) or raw regression values, by problem_type."""
        logits = logits.astype(np.float64, copy=False)
        if self.problem_type == "regression":
            return logits
        if self.problem_type == "multi_label_classification":
            return sigmoid(logits)
        return softmax(logits)

    def format_predictions(
        self, scores: np.ndarray, truncated: Sequence[bool] | None = None, top_k: int | None = None
    ) -> list[dict]:
        """Turn score rows into result dicts (see `predict` for their keys)."""
        if top_k is not None and top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}", kind="invalid")
        results = []
        regression = self.problem_type == "regression"
        multi_label = self.problem_type == "multi_label_classification"
        for row_index, row in enumerate(scores):
            if regression:
                result = {"label": self.labels[0] if self.labels else None, "score": float(row[0])}
            else:
                best = int(row.argmax())
                result = {"label": self.labels[best], "score": float(row[best])}
                if multi_label:
                    # Strictly above, as jbert.core.postprocessing.predictions_from_logits decides in training.
                    result["labels"] = [self.labels[i] for i in np.flatnonzero(row > self.threshold)]
                if top_k is not None:
                    ranked = np.argsort(-row, kind="stable")[:top_k]
                    result["scores"] = [{"label": self.labels[i], "score": float(row[i])} for i in ranked]
            result["truncated"] = bool(truncated[row_index]) if truncated is not None else False
            results.append(result)
        return results

    def predict_encoded(
        self, encodings: Sequence[EncodedText], top_k: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[dict]:
        """Run already encoded inputs and return result dicts in input order."""
        scores = self.scores_from_logits(self.run_logits(encodings, batch_size=batch_size))
        return self.format_predictions(scores, [e.truncated for e in encodings], top_k)

    def predict(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        top_k: int | None = None,
        truncate: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[dict]:
        """Classify texts (or sentence pairs); one dict per input, in input order.

        Each dict holds "label" (best class name; for regression the output's name) and "score"
        (its probability; the raw value for regression) and "truncated". Multi-label models add
        "labels": every class whose sigmoid score is above the model's threshold. With `top_k`,
        "scores" lists the `top_k` best classes as {"label", "score"}, best first.
        Raises InputError for an empty or non-text input, or a too long one with truncate=False.
        """
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}", kind="invalid")
        encodings = self.encode(texts, text_pairs, truncate=truncate)
        return self.predict_encoded(encodings, top_k=top_k, batch_size=batch_size)
