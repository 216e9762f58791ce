"""Tokenization of prepared splits: "text" (+ "text_pair") -> unpadded model inputs, truncations counted.

Runs the tokenizer that training saves with the model, so serving (which loads that tokenizer's
files with `jbert.tokenization`) sees the same ids. Padding happens per batch in the training loop.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

import datasets

from jbert.core.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def tokenize_dataset(
    dataset: datasets.Dataset, tokenizer: "PreTrainedTokenizerBase", max_length: int, has_pair: bool,
    stride: int | None = None,
) -> tuple[datasets.Dataset, int]:
    """Tokenize "text" (+ "text_pair") into input_ids, attention_mask, token_type_ids, unpadded.

    Texts longer than `max_length` tokens are truncated exactly as `tokenizer(..., truncation=True,
    max_length=max_length)` would (longest_first for pairs); returns the dataset (model inputs
    plus "labels" when present; text columns dropped) and how many examples were truncated.
    Each text is tokenized once: slow tokenizers (BertJapaneseTokenizer runs MeCab in Python) are
    tokenized without special tokens and assembled with `prepare_for_model`, which is what their
    own `__call__` does; fast tokenizers report truncation through their overflowing tokens.

    With `stride` (train --long_text windows), a text longer than `max_length` becomes several rows,
    its windows (`jbert.tokenization.windows`), each with the text's label and the columns
    "document" (the text's row number) and "window" (0, 1, ... in reading order); the count
    returned is then the texts cut even so (pairs whose first text leaves no room), and
    `count_windowed(dataset)` tells how many texts were read in more than one window.
    """
    special_count = tokenizer.num_special_tokens_to_add(pair=has_pair)
    if max_length <= special_count:
        raise UserError(
            f"--max_length {max_length} leaves no room for text next to the {special_count} special tokens; raise it"
        )
    if has_pair and "text_pair" not in dataset.column_names:
        raise ValueError("has_pair=True but the dataset has no 'text_pair' column")
    if stride is not None:
        encode = _window_encoder(tokenizer, max_length, has_pair, stride)
        text_columns = list(dataset.column_names)  # rows multiply: labels are written again per window
    else:
        encode = _fast_encoder(tokenizer, max_length, has_pair) if tokenizer.is_fast else _slow_encoder(tokenizer, max_length, has_pair)
        text_columns = [c for c in dataset.column_names if c != "labels"]
    # Deterministic, so a disk-backed dataset's cache is reused only for the very same tokenizer
    # (its vocabulary, not just its name) and settings; also spares datasets hashing the closure.
    fingerprint = datasets.fingerprint.Hasher.hash(
        [dataset._fingerprint, type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()),
         tokenizer.truncation_side, max_length, has_pair, stride]
    )
    with _quiet_transformers(), _progress_bar_only_on_a_terminal():
        tokenized = dataset.map(
            encode,
            batched=True,
            with_indices=stride is not None,
            batch_size=256,
            remove_columns=text_columns,
            new_fingerprint=fingerprint,
            desc="tokenizing",
        )
    if "_truncated" not in tokenized.column_names:  # an empty dataset gets no new columns
        return tokenized, 0
    truncated = sum(tokenized["_truncated"])
    tokenized = tokenized.remove_columns("_truncated")
    return tokenized, int(truncated)



@contextmanager
def _progress_bar_only_on_a_terminal():
    """datasets' map bar redraws with carriage returns: in a log file (CI, nohup) it is only noise."""
    turn_off = not sys.stderr.isatty() and not datasets.are_progress_bars_disabled()
    if turn_off:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if turn_off:
            datasets.enable_progress_bars()


def _slow_encoder(tokenizer: "PreTrainedTokenizerBase", max_length: int, has_pair: bool):
    special_count = tokenizer.num_special_tokens_to_add(pair=has_pair)

    def encode(batch: dict) -> dict:
        output: dict[str, list] = {"input_ids": [], "attention_mask": [], "token_type_ids": [], "_truncated": []}
        pairs = batch["text_pair"] if has_pair else [None] * len(batch["text"])
        for text, text_pair in zip(batch["text"], pairs):
            ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
            pair_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text_pair)) if has_pair else None
            too_long = len(ids) + (len(pair_ids) if pair_ids is not None else 0) + special_count > max_length
            encoded = tokenizer.prepare_for_model(
                ids, pair_ids, add_special_tokens=True, truncation="longest_first" if too_long else False,
                max_length=max_length, return_attention_mask=True, return_token_type_ids=True,
            )
            output["input_ids"].append(encoded["input_ids"])
            output["attention_mask"].append(encoded["attention_mask"])
            output["token_type_ids"].append(encoded["token_type_ids"])
            output["_truncated"].append(too_long)
        return output

    return encode


def _fast_encoder(tokenizer: "PreTrainedTokenizerBase", max_length: int, has_pair: bool):
    def encode(batch: dict) -> dict:
        encoded = tokenizer(
            batch["text"], batch["text_pair"] if has_pair else None, truncation=True, max_length=max_length,
            return_attention_mask=True, return_token_type_ids=True,
        )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "token_type_ids": encoded["token_type_ids"],
            # the Rust tokenizer keeps what truncation cut off: non-empty means truncated
            "_truncated": [bool(encoding.overflowing) for encoding in encoded.encodings],
        }

    return encode


def count_windowed(tokenized: datasets.Dataset) -> int:
    """Texts of a windowed dataset (`tokenize_dataset(..., stride=N)`) read in more than one window."""
    if "window" not in tokenized.column_names or not len(tokenized):
        return 0
    return len(set(tokenized.filter(lambda window: window > 0, input_columns="window")["document"]))


def _window_encoder(tokenizer: "PreTrainedTokenizerBase", max_length: int, has_pair: bool, stride: int):
    from jbert.tokenization.windows import encode_windows

    def encode(batch: dict, indices: list[int]) -> dict:
        output: dict[str, list] = {"input_ids": [], "attention_mask": [], "token_type_ids": [], "document": [],
                                   "window": [], "_truncated": []}
        labels = batch.get("labels")
        if labels is not None:
            output["labels"] = []
        windowed = encode_windows(tokenizer, batch["text"], batch["text_pair"] if has_pair else None, max_length,
                                  stride)
        for row, (document, item) in enumerate(zip(indices, windowed)):
            for number, window in enumerate(item.windows):
                output["input_ids"].append(window.input_ids)
                output["attention_mask"].append([1] * len(window.input_ids))
                output["token_type_ids"].append(window.token_type_ids)
                output["document"].append(document)
                output["window"].append(number)
                output["_truncated"].append(item.truncated and number == 0)
                if labels is not None:
                    output["labels"].append(labels[row])
        return output

    return encode


class _quiet_transformers:
    """Silence transformers' per-call truncation warnings while we count truncations ourselves."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        self._logging.set_verbosity(self._level)
        return False
