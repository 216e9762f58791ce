"""OnnxClassifier: an export directory served with onnxruntime (normalise, tokenize, run, post-process).

No torch, no transformers, no HTTP: the batch scorer and the HTTP service both run it, from a
serving-only install (`requirements-serve.txt`).

    from jbert.serve.runtime import OnnxClassifier
    classifier = OnnxClassifier.from_export_dir("outputs/export", model="int8")
    classifier.predict(["この商品はとても良いです。"], top_k=3)
    # [{"label": "positive", "score": 0.97, "truncated": False, "scores": [...]}]

The parts live beside it: `batch_inputs` (normalise, tokenize, pad, bucket by length), `session`
(onnxruntime options, threads, loading), `cpu` (int8 instruction sets), and
`jbert.core.postprocessing` (softmax / sigmoid, shared with training); `jbert.core.export_dir`
reads the export directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jbert.core.artifacts import JbertSettings, Manifest
from jbert.core.errors import UserError
from jbert.core.export_dir import ExportDir
from jbert.core.postprocessing import abstentions, label_thresholds_array, scale_logits, sigmoid, softmax
from jbert.core.windows import check_stride, pool_window_logits
from jbert.serve.runtime.batch_inputs import InputError, TextEncoder, length_sorted_batches
from jbert.serve.runtime.cpu import warn_if_cpu_lacks_int8_target
from jbert.serve.runtime.session import check_session_matches_export, open_session, session_io_names
from jbert.tokenization.encoded import EncodedText
from jbert.tokenization.loading import load_serving_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


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
        export_dir: ExportDir | None = None,
    ):
        """Use `from_export_dir`; this constructor takes already loaded parts.

        `export_dir`: the ExportDir they were read from; without one (a model being measured during
        export, before its directory exists) it is made from the parts, rooted at the model's folder.
        """
        self.session = session
        self.tokenizer = tokenizer
        self.export_dir = export_dir or ExportDir(Path(model_path).parent, manifest, settings, labels)
        self.settings = settings
        self.manifest = manifest
        self.labels = labels
        self.model_key = model_key
        self.model_path = model_path
        self.problem_type = self.export_dir.problem_type
        self.max_length = self.export_dir.max_length
        self.is_pair = self.export_dir.is_pair
        # One float (the global threshold) unless training tuned one per label (jbert.json label_thresholds).
        self.threshold = label_thresholds_array(labels, settings.label_thresholds, float(settings.multi_label_threshold))
        # Single-label abstention (jbert.json min_confidence); None: every input gets its label, as before.
        self.min_confidence = (settings.min_confidence
                               if self.problem_type == "single_label_classification" else None)
        # The export's fitted softmax temperature (single-label only; None: raw softmax as before).
        self.temperature = manifest.temperature if self.problem_type == "single_label_classification" else None
        # How texts over max_length are read (jbert.json long_text): windows pooled per text, or cut.
        self.long_text = settings.long_text if settings.long_text is not None and settings.long_text.windows else None
        if self.long_text is not None:  # a hand-edited jbert.json: refused at load, not request by request
            check_stride(self.long_text.stride, self.max_length, 3 if self.is_pair else 2,
                         flag=f"{self.export_dir.path / 'jbert.json'}: long_text.stride")
        self.encoder = TextEncoder(tokenizer, settings.normalization, self.max_length, self.is_pair, self.long_text)
        self.pad_token_id = self.encoder.pad_token_id
        self._input_names, self._output_name = session_io_names(session, model_path)
        check_session_matches_export(session, Path(model_path), self._output_name, labels, self.export_dir.input_names)

    @classmethod
    def from_export_dir(
        cls,
        export_dir: str | os.PathLike | ExportDir,
        model: str = "default",
        num_threads: int | None = None,
        graph_optimization: str = "all",
        prefer_fast_tokenizer: bool = True,
        allow_spinning: bool = True,
    ) -> "OnnxClassifier":
        """Load an export directory (a path, or an ExportDir already read) through its manifest.json.

        `model`: "default" (the manifest's choice), "fp32", "optimized" or "int8".
        `num_threads`: onnxruntime intra-op threads (None: one per physical core).
        `graph_optimization`, `allow_spinning`: see `jbert.serve.runtime.session.make_session_options`.
        """
        export = export_dir if isinstance(export_dir, ExportDir) else ExportDir.open(export_dir)
        model_key, model_path = export.model_file(model)
        export.verify_files()  # refuse files changed since export (hashes in manifest.json)
        warn_if_cpu_lacks_int8_target(export.manifest.models[model_key], model_path)
        if num_threads is not None and num_threads < 1:
            raise UserError(f"num_threads must be at least 1, got {num_threads}")
        session = open_session(model_path, num_threads, graph_optimization, allow_spinning)
        tokenizer = load_serving_tokenizer(export.path, prefer_fast=prefer_fast_tokenizer)
        return cls(session, tokenizer, export.settings, export.manifest, export.labels, model_key, model_path, export)

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
            "temperature": self.temperature,
            "long_text": self.long_text.to_dict() if self.long_text else {"mode": "truncate"},
            "fast_tokenizer": bool(getattr(self.tokenizer, "is_fast", False)),
            "intra_op_threads": self.session.get_session_options().intra_op_num_threads,
            **self.decision_rule(),
        }

    def decision_rule(self) -> dict:
        """The tuned decision rule, for /info: {"label_thresholds": {...}} or {"min_confidence": p}; {} without one."""
        rule = {}
        if self.problem_type == "multi_label_classification" and self.settings.label_thresholds:
            rule["label_thresholds"] = dict(self.settings.label_thresholds)
        if self.min_confidence is not None:
            rule["min_confidence"] = float(self.min_confidence)
        return rule

    # ------------------------------------------------------------------ stage 1: text -> ids
    def input_problem(self, text: object, text_pair: object = None, max_text_chars: int | None = None) -> str | None:
        """Why one input cannot be scored (wrong type, empty after clean-up, too many characters), or None."""
        return self.encoder.input_problem(text, text_pair, max_text_chars)

    def encode(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, truncate: bool = True,
        max_text_chars: int | None = None, truncation_side: str | None = None,
    ) -> list[EncodedText]:
        """Normalise and tokenize texts as training did (see `TextEncoder.encode`).

        `max_text_chars`: characters allowed per text (and per text_pair), checked before any
        tokenizing; None means `batch_inputs.MAX_TEXT_CHARS_LIMIT`, the most allowed (MeCab crashes
        the process on much longer texts). Over it: InputError with kind "too_many_chars".
        `truncation_side`: "left" (keep the end of a long text) or "right" (keep its beginning) for
        this call; None: the tokenizer's own side, the one the model saw in training.
        """
        return self.encoder.encode(texts, text_pairs, truncate=truncate, max_text_chars=max_text_chars,
                                   truncation_side=truncation_side)

    def pad(self, encodings: Sequence[EncodedText]) -> dict[str, np.ndarray]:
        """Pad a batch into int64 arrays shaped (batch, longest) as this ONNX model expects."""
        return self.encoder.pad(encodings, self._input_names)

    # ------------------------------------------------------------------ stage 2: ids -> scores
    def run_logits(self, encodings: Sequence[EncodedText], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Raw logits (n, num_outputs) in input order; batches are built from length-sorted inputs.

        Windowed texts (`WindowedText`, exports trained with --long_text windows) run every window
        and get their windows' logits pooled as in training (`jbert.core.windows.pool_window_logits`).
        """
        if any(hasattr(e, "windows") for e in encodings):
            windows, documents = [], []
            for document, item in enumerate(encodings):
                parts = item.windows if hasattr(item, "windows") else (item,)
                windows += parts
                documents += [document] * len(parts)
            window_logits = self.run_logits(windows, batch_size)
            return pool_window_logits(window_logits, np.asarray(documents), len(encodings), self.long_text.pooling)
        count = len(encodings)
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if count == 0:
            return np.zeros((0, max(1, len(self.labels))), dtype=np.float32)
        logits: np.ndarray | None = None
        lengths = [len(e.input_ids) for e in encodings]
        for batch_indices in length_sorted_batches(lengths, batch_size):
            feeds = self.pad([encodings[i] for i in batch_indices])
            batch_logits = self.session.run([self._output_name], feeds)[0]
            if logits is None:
                logits = np.empty((count, batch_logits.shape[1]), dtype=np.float32)
            logits[batch_indices] = batch_logits
        return logits

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities (softmax or sigmoid) or raw regression values, by problem_type.

        Single-label: softmax(logits / T) when the export carries a temperature T (calibrated
        scores; the argmax is the same), plain softmax otherwise.
        """
        logits = logits.astype(np.float64, copy=False)
        if self.problem_type == "regression":
            return logits
        if self.problem_type == "multi_label_classification":
            return sigmoid(logits)
        return softmax(scale_logits(logits, self.temperature))

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
            if self.min_confidence is not None:
                self.mark_abstention(result, row)
            results.append(result)
        return results

    def mark_abstention(self, result: dict, row: np.ndarray) -> None:
        """Add "abstained" to a single-label result; an abstained one has "label": None, its label kept as "label_if_accepted".

        The label is taken away rather than flagged beside it so that a client reading only "label"
        cannot act on an answer the model was not sure enough of.
        """
        abstained = bool(abstentions(row[np.newaxis, :], self.min_confidence)[0])
        result["abstained"] = abstained
        if abstained:
            result["label_if_accepted"] = result["label"]
            result["label"] = None

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
        max_text_chars: int | None = None,
        truncation_side: str | None = None,
    ) -> list[dict]:
        """Classify texts (or sentence pairs); one dict per input, in input order.

        Each dict holds "label" (best class name; for regression the output's name) and "score"
        (its probability; the raw value for regression) and "truncated". Multi-label models add
        "labels": every class whose sigmoid score is above the model's threshold (its own per label
        when training tuned them). A single-label model with an abstention rule (min_confidence)
        adds "abstained"; when true, "label" is None and "label_if_accepted" holds the best class. With `top_k`,
        "scores" lists the `top_k` best classes as {"label", "score"}, best first.
        Raises InputError for an empty or non-text input, a too long one with truncate=False, or
        one of more than `max_text_chars` characters (see `encode`), or a `truncation_side` other
        than "left", "right" or None (the tokenizer's own side).
        """
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}", kind="invalid")
        encodings = self.encode(texts, text_pairs, truncate=truncate, max_text_chars=max_text_chars,
                                truncation_side=truncation_side)
        return self.predict_encoded(encodings, top_k=top_k, batch_size=batch_size)
