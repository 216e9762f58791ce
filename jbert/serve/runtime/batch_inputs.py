"""Text -> model inputs: normalise and tokenize as training did, pad into int64 arrays, bucket by length.

Where the speed comes from: texts are sorted by token length within a window so a batch pads to
its own longest text instead of the longest text overall; padded arrays are written once into
preallocated int64 numpy buffers (the layout onnxruntime reads without converting).
"""

from __future__ import annotations

import unicodedata
from typing import Iterator, Sequence

import numpy as np

from jbert.core.errors import UserError
from jbert.core.normalize import normalize_text
from jbert.tokenization.encoded import TRUNCATION_SIDES, EncodedText, find_unpaired_surrogate

# Sorting window, in batches: large enough to group similar lengths, small enough that a
# million-text call does not hold every encoding at once (scoring streams chunks anyway).
SORT_WINDOW_BATCHES = 32
# A batch holds at most as many padded tokens as `batch_size` texts of this many tokens. Nothing
# changes for BERT-class exports (512 positions); a long-context export's 8,192-token text no longer
# pads a whole batch of shorter texts to its length (it shares a model call with one other at most).
BATCH_TOKENS_PER_TEXT = 512

# MeCab (fugashi + unidic-lite, as the tokenizer calls it) dies with SIGSEGV, taking the whole
# process with it, on one long text: measured, "a" * 193,333 crashes (192,357 survives), kanji crash
# at ~300,000; every kind tried survives 150,000 (docs/serving.md, Python API). No Python exception
# can come from there, so texts are measured before they reach it.
MECAB_CRASH_CHARS = 192_000
# The most characters per text any caller may allow, after clean-up (NFKC can make a text longer:
# one U+FDFA becomes 18 characters): well below the crash. With no limit given, this one applies.
MAX_TEXT_CHARS_LIMIT = 150_000
# The default per-text limit of the batch scorer and the HTTP service: far more than a model with
# max_length 512 tokens ever reads (~1,000 characters), far below the crash.
DEFAULT_MAX_TEXT_CHARS = 100_000
# NFKC makes a text at most this many times longer (U+FDFA, one character, becomes 18).
_NFKC_MAX_GROWTH = 18


class InputError(UserError):
    """One input of a request is unusable (empty, not text, too long); `index` says which."""

    def __init__(self, message: str, index: int | None = None, kind: str = "invalid"):
        super().__init__(message)
        self.index = index
        # "invalid" (wrong type / empty), "too_long" (over max_length tokens with truncate=False) or
        # "too_many_chars" (over the per-text character limit, see `check_max_text_chars`).
        self.kind = kind


def check_max_text_chars(max_text_chars: int | None) -> int:
    """The per-text character limit in force: `max_text_chars`, or MAX_TEXT_CHARS_LIMIT for None.

    A limit above MAX_TEXT_CHARS_LIMIT (where MeCab would crash the process) is a UserError.
    """
    if max_text_chars is None:
        return MAX_TEXT_CHARS_LIMIT
    if isinstance(max_text_chars, bool) or not isinstance(max_text_chars, int) or max_text_chars < 1:
        raise UserError(f"max_text_chars must be a positive integer, got {max_text_chars!r}")
    if max_text_chars > MAX_TEXT_CHARS_LIMIT:
        raise UserError(
            f"max_text_chars {max_text_chars:,} is above the most this runtime allows ({MAX_TEXT_CHARS_LIMIT:,}): "
            f"MeCab crashes the process on texts of about {MECAB_CRASH_CHARS:,} characters"
        )
    return max_text_chars


class TextEncoder:
    """Normalisation + tokenizer of one export, turning texts (or pairs) into padded model inputs."""

    def __init__(self, tokenizer, normalization, max_length: int, is_pair: bool, long_text=None):
        """`normalization`: the export's `JbertSettings.normalization`, applied exactly as in training.

        `long_text`: the export's `jbert.core.windows.LongTextRule`; with windows, `encode` gives each
        text's windows (`WindowedText`) instead of cutting it.
        """
        self.tokenizer = tokenizer
        self.long_text = long_text if long_text is not None and long_text.windows else None
        self.normalization = normalization
        self.max_length = max_length
        self.is_pair = is_pair
        self.pad_token_id = int(tokenizer.pad_token_id)

    def clean(self, value: object, name: str, max_text_chars: int | None = None) -> tuple[str | None, str | None]:
        """(normalised text, None) or (None, why it cannot be scored); see `check_max_text_chars` for the limit."""
        cleaned, problem, _ = self._clean(value, name, check_max_text_chars(max_text_chars))
        return cleaned, problem

    def _clean(self, value: object, name: str, limit: int) -> tuple[str | None, str | None, str]:
        """(normalised text, problem, InputError kind); `limit`: characters allowed, already checked."""
        if value is None:
            return None, f"{name} is missing", "invalid"
        if not isinstance(value, str):
            # A value that crossed an Arrow stage as JSON text still carries its original type's name.
            type_name = getattr(value, "original_type", type(value).__name__)
            hint = "; store the text as a string (UTF-8) column, not a binary one" if type_name == "bytes" else ""
            return None, f"{name} must be a string, got {type_name}{hint}", "invalid"
        if len(value) > limit:
            # Measured before clean-up, which costs time in proportion to the length.
            return None, f"{name} has {len(value):,} characters; at most {limit:,} are allowed per text", "too_many_chars"
        surrogate_at = find_unpaired_surrogate(value)
        if surrogate_at is not None:
            # A JSON "\ud800" escape decodes to a lone surrogate, which is not text: the tokenizer
            # would refuse the whole batch, so the one row is refused here instead.
            return None, (f"{name} holds an unpaired UTF-16 surrogate at character {surrogate_at} "
                          "(not valid Unicode); fix the escape in the input"), "invalid"
        cleaned = normalize_text(value, self.normalization)
        if not cleaned:
            return None, f"{name} is empty" + (" after clean-up (only spaces or control characters)" if value else ""), "invalid"
        grown = self._tokenizer_chars(cleaned)
        if grown > MAX_TEXT_CHARS_LIMIT:
            return None, (f"{name} grows to {grown:,} characters under Unicode NFKC normalisation; at most "
                          f"{MAX_TEXT_CHARS_LIMIT:,} can be tokenized"), "too_many_chars"
        return cleaned, None, "invalid"

    def _tokenizer_chars(self, cleaned: str) -> int:
        """Characters of `cleaned` as MeCab will see them: the tokenizer applies NFKC again itself."""
        if self.normalization.nfkc or len(cleaned) * _NFKC_MAX_GROWTH <= MAX_TEXT_CHARS_LIMIT:
            return len(cleaned)  # already NFKC (idempotent), or too short to grow past the limit
        return len(unicodedata.normalize("NFKC", cleaned))

    def input_problem(self, text: object, text_pair: object = None, max_text_chars: int | None = None) -> str | None:
        """Why one input cannot be scored (wrong type, empty after clean-up, too many characters), or None."""
        problem = self.clean(text, "text", max_text_chars)[1]
        if problem is None and self.is_pair:
            problem = self.clean(text_pair, "text_pair", max_text_chars)[1]
        return problem

    def encode(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, truncate: bool = True,
        max_text_chars: int | None = None, truncation_side: str | None = None,
    ) -> list[EncodedText]:
        """Normalise and tokenize texts as training did; raises InputError naming the first bad one.

        `truncate=False` turns a text longer than max_length tokens into an InputError
        (kind "too_long") instead of silently cutting it. A text (or text_pair) of more than
        `max_text_chars` characters is an InputError of kind "too_many_chars", raised before
        anything is tokenized; None means MAX_TEXT_CHARS_LIMIT, and more than that is a UserError.
        `truncation_side`: "left" keeps the end of a long text, "right" its beginning; None (the
        default) cuts where the tokenizer was saved to, as in training. Anything else: InputError.
        An export trained with --long_text windows gets `WindowedText` items (every window of the
        text; `run_logits` pools them) and nothing is cut, whatever the side.
        """
        limit = check_max_text_chars(max_text_chars)
        if truncation_side is not None and truncation_side not in TRUNCATION_SIDES:
            raise InputError(f"truncation_side must be 'left', 'right' or None, got {truncation_side!r}", kind="invalid")
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
            cleaned, problem, kind = self._clean(text, "text", limit)
            if problem is None and normalized_pairs is not None:
                cleaned_pair, problem, kind = self._clean(text_pairs[index], "text_pair", limit)
                normalized_pairs.append(cleaned_pair)
            if problem:
                raise InputError(f"input {index}: {problem}", index=index, kind=kind)
            normalized.append(cleaned)
        if not normalized:
            return []
        if self.long_text is not None:  # read whole in windows: nothing is cut, so no side applies
            from jbert.tokenization.windows import encode_windows

            encodings = encode_windows(self.tokenizer, normalized, normalized_pairs, self.max_length,
                                       self.long_text.stride)
        elif truncation_side is None:  # the tokenizer's own side: works with any tokenizer object
            encodings = self.tokenizer.encode_batch(normalized, normalized_pairs, max_length=self.max_length)
        else:
            encodings = self.tokenizer.encode_batch(normalized, normalized_pairs, max_length=self.max_length,
                                                    truncation_side=truncation_side)
        for index, item in enumerate(encodings):
            if item.truncated and not truncate:
                raise InputError(
                    f"input {index} is longer than the model's max_length of {self.max_length} tokens; "
                    f"shorten it or allow truncation (truncate=true)",
                    index=index,
                    kind="too_long",
                )
        return list(encodings)

    def pad(self, encodings: Sequence[EncodedText], input_names: set[str]) -> dict[str, np.ndarray]:
        """Pad a batch into int64 arrays shaped (batch, longest): the feeds for a model with `input_names`."""
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
        if "token_type_ids" in input_names:
            feeds["token_type_ids"] = token_type_ids
        return feeds


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Index lists of at most `batch_size` inputs of similar length, covering every index once.

    Inputs are sorted by length inside windows of `SORT_WINDOW_BATCHES` batches, so a batch pads
    to its own longest input; callers put results back by index, so input order is kept. A batch
    is also cut before its padded size (inputs x longest) would pass `batch_size` x
    `BATCH_TOKENS_PER_TEXT` tokens (an input longer than that runs alone).
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    count = len(lengths)
    window = batch_size * SORT_WINDOW_BATCHES
    budget = batch_size * BATCH_TOKENS_PER_TEXT
    for window_start in range(0, count, window):
        order = sorted(range(window_start, min(count, window_start + window)), key=lengths.__getitem__)
        batch: list[int] = []
        for index in order:  # ascending: the input being added is the batch's longest
            if batch and (len(batch) == batch_size or (len(batch) + 1) * lengths[index] > budget):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch
