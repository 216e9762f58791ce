"""Long texts read in overlapping windows: the layout of the windows and how their logits become one answer.

A text longer than `max_length` tokens is either cut (`truncate`, the Hugging Face default, which
decides on the beginning only) or read whole as windows (`windows`): consecutive pieces of at most
the window's width that overlap by `stride` tokens, exactly the layout of a fast tokenizer's
`return_overflowing_tokens=True, stride=N` (the Rust `Encoding.truncate`). Each window is classified
like a short text, and the window logits of one document are pooled into the document's logits:

    mean   the mean of the window logits (default): every part of the document counts, one noisy
           window cannot flip the answer alone, and a short text (one window) gets exactly its
           own logits; it is also what the model was trained to be right on (every window carries
           the document's label; with --window_training document, the pooled logits do).
    max    the element-wise maximum: the most confident window decides for each class; suits
           documents decided by one sentence anywhere in them (a complaint in a long review).
    first  the first window only: the answer truncation gives, at windowing's cost (for comparison).

For sentence pairs only the second text is windowed (as question answering does with a question
and a long context); a pair whose first text leaves no more than `stride` tokens of room for the
second is cut as before (longest first) and counted as truncated.

Training, evaluation, the export check and every serving path use these functions, so a document
gets the same answer everywhere. numpy only (serving imports it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jbert.core.errors import UserError

LONG_TEXT_MODES = ("truncate", "windows")
WINDOW_POOLINGS = ("mean", "max", "first")


def default_stride(max_length: int) -> int:
    """The overlap used when none is given: a quarter of the window, so a sentence cut at one window's
    edge is seen whole in the next (sentences are rarely longer than a quarter of 128 tokens)."""
    return max(0, max_length // 4)


def max_stride(max_length: int, special_tokens: int) -> int:
    """The largest overlap allowed: half of the window's text tokens, so every window moves on by at
    least half a window (a document is read at most about twice)."""
    return max(0, (max_length - special_tokens) // 2)


def check_stride(stride: int, max_length: int, special_tokens: int, flag: str = "--stride") -> None:
    """UserError unless 0 <= stride <= half the text tokens of one window."""
    width = max_length - special_tokens
    most = max_stride(max_length, special_tokens)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise UserError(f"{flag} must be a whole number of tokens >= 0, got {stride!r}")
    if stride > most:
        raise UserError(
            f"{flag} {stride} is not smaller than the window: at --max_length {max_length} a window holds "
            f"{width} text tokens, and an overlap above half of it ({most}) would read most tokens "
            f"twice or more; use a stride of at most {most} (the default is {default_stride(max_length)})"
        )


def window_spans(n_tokens: int, width: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of the windows of a text of `n_tokens` (at least one range).

    Windows hold `width` tokens (the last may hold fewer) and start `width - stride` apart, the
    layout of the Rust tokenizer's `Encoding.truncate(width, stride)`; the last window ends at the
    text's end. Skipping the first `stride` tokens of every window but the first covers each token
    exactly once.
    """
    if width < 1 or not 0 <= stride < width:
        raise ValueError(f"window width {width} and stride {stride}: need 0 <= stride < width")
    if n_tokens <= width:
        return [(0, n_tokens)]
    spans = []
    step = width - stride
    start = 0
    while True:
        end = min(start + width, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def pool_window_logits(logits: np.ndarray, documents: np.ndarray, n_documents: int, pooling: str) -> np.ndarray:
    """Document logits (n_documents, n_outputs) from window logits (n_windows, n_outputs).

    `documents[i]` is the document of window i (0 .. n_documents-1, every one present); windows of
    one document are in reading order. A document of one window gets that window's logits exactly,
    whatever the pooling.
    """
    logits = np.asarray(logits)
    documents = np.asarray(documents, dtype=np.int64)
    if pooling not in WINDOW_POOLINGS:
        raise ValueError(f"window pooling must be one of {WINDOW_POOLINGS}, got {pooling!r}")
    if len(documents) != len(logits):
        raise ValueError(f"{len(logits)} window logits but {len(documents)} document ids")
    counts = np.bincount(documents, minlength=n_documents)
    if len(counts) != n_documents or (counts == 0).any():
        raise ValueError("every document needs at least one window and ids below n_documents")
    if pooling == "first":
        firsts = np.unique(documents, return_index=True)[1]
        return logits[firsts]
    if pooling == "max":
        pooled = np.full((n_documents, logits.shape[1]), -np.inf, dtype=logits.dtype)
        np.maximum.at(pooled, documents, logits)
        return pooled
    pooled = np.zeros((n_documents, logits.shape[1]), dtype=np.float64)
    np.add.at(pooled, documents, logits)
    pooled /= counts[:, None]
    single = counts == 1  # exactly the window's own numbers, not a float64 round trip's
    pooled = pooled.astype(logits.dtype)
    if single.any():
        firsts = np.unique(documents, return_index=True)[1]
        pooled[single] = logits[firsts[single]]
    return pooled


@dataclass(frozen=True)
class LongTextRule:
    """How a model reads texts longer than its max_length (saved in jbert.json and the export manifest)."""

    mode: str = "truncate"  # LONG_TEXT_MODES
    stride: int = 0  # overlapping tokens between windows
    pooling: str = "mean"  # WINDOW_POOLINGS

    @property
    def windows(self) -> bool:
        """True when long texts are read as windows."""
        return self.mode == "windows"

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return {"mode": self.mode, "stride": self.stride, "pooling": self.pooling}

    @classmethod
    def from_dict(cls, values: object, where: str) -> "LongTextRule":
        """Build from a saved dict; anything serving could not apply is a UserError naming `where`."""
        if not isinstance(values, dict):
            raise UserError(f"{where}: long_text must be an object with mode, stride and pooling, got {values!r}")
        mode, stride, pooling = values.get("mode"), values.get("stride", 0), values.get("pooling", "mean")
        if mode not in LONG_TEXT_MODES:
            raise UserError(f"{where}: long_text.mode must be one of {LONG_TEXT_MODES}, got {mode!r}")
        if pooling not in WINDOW_POOLINGS:
            raise UserError(f"{where}: long_text.pooling must be one of {WINDOW_POOLINGS}, got {pooling!r}")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
            raise UserError(f"{where}: long_text.stride must be a whole number >= 0, got {stride!r}")
        return cls(mode, stride, pooling)
