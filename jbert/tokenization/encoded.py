"""The encoding contract every jbert tokenizer returns (`EncodedText`) and the rules shared to make it.

`build_encoding` reproduces `tokenizer(text, text_pair, truncation=True, max_length=N)` of
transformers exactly (special tokens and truncation); `check_inputs` rejects what no tokenizer can
take before any work is done. Standard library only.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence


class EncodedText(NamedTuple):
    """Token ids of one text (or pair) with [CLS]/[SEP] added, not padded."""

    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool  # True when tokens were removed to fit max_length




# The sides a tokenizer can cut a long text on, as transformers' `truncation_side` names them.
TRUNCATION_SIDES = ("left", "right")


def resolve_truncation_side(truncation_side: str | None, default: str) -> str:
    """The side one call truncates on: `truncation_side`, or the tokenizer's own `default` for None.

    Anything but "left", "right" or None is a ValueError (checked before any work is done).
    """
    if truncation_side is None:
        return default
    if truncation_side not in TRUNCATION_SIDES:
        raise ValueError(f"truncation_side must be 'left', 'right' or None, got {truncation_side!r}")
    return truncation_side


def build_encoding(
    ids: list[int], pair_ids: list[int] | None, max_length: int | None, cls_id: int, sep_id: int, truncation_side: str
) -> EncodedText:
    """Special tokens and truncation exactly as PreTrainedTokenizer.prepare_for_model(truncation=True).

    The odd corners are kept on purpose: a single text that cannot fit even after removing all its
    tokens (max_length below 2 + 1) is left whole, as transformers does (it only logs an error).
    """
    total = len(ids) + (len(pair_ids) if pair_ids is not None else 0) + (2 if pair_ids is None else 3)
    truncated = False
    if max_length and total > max_length:
        remove = total - max_length
        if pair_ids is None:
            if len(ids) > remove:
                ids = ids[remove:] if truncation_side == "left" else ids[:-remove]
                truncated = True
        else:
            len_ids, len_pair = len(ids), len(pair_ids)
            first_remove = min(abs(len_pair - len_ids), remove)
            second_remove = remove - first_remove
            if len_ids > len_pair:
                ids_to_move = first_remove + second_remove // 2
                pair_ids_to_move = second_remove - second_remove // 2
            else:
                ids_to_move = second_remove // 2
                pair_ids_to_move = first_remove + second_remove - (second_remove // 2)
            before = len_ids + len_pair
            if truncation_side == "left":
                ids, pair_ids = ids[ids_to_move:], pair_ids[pair_ids_to_move:]
            else:
                ids = ids[:-ids_to_move] if ids_to_move > 0 else ids
                pair_ids = pair_ids[:-pair_ids_to_move] if pair_ids_to_move > 0 else pair_ids
            # Truncated only when tokens really went: two empty texts at max_length 2 lose nothing.
            truncated = len(ids) + len(pair_ids) < before
    if pair_ids is None:
        return EncodedText([cls_id, *ids, sep_id], [0] * (len(ids) + 2), truncated)
    return EncodedText(
        [cls_id, *ids, sep_id, *pair_ids, sep_id], [0] * (len(ids) + 2) + [1] * (len(pair_ids) + 1), truncated
    )


def check_inputs(texts: Sequence[str], text_pairs: Sequence[str] | None) -> None:
    """TypeError/ValueError naming the first input no tokenizer can take, before any work is done.

    An unpaired surrogate (a str such as json.loads('"\\ud800"') gives) is rejected here with its
    position: MeCab and the Rust tokenizers would fail on it anyway, deep inside and for the whole
    batch, with a UnicodeEncodeError that does not say which text it was.
    """
    for name, values in (("texts", texts), ("text_pairs", text_pairs)):
        if values is None:
            continue
        if name == "text_pairs" and len(values) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(values)} text_pairs; give one second text per text")
        for position, text in enumerate(values):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{position}] is {type(text).__name__}, expected str")
            surrogate = find_unpaired_surrogate(text)
            if surrogate is not None:
                raise ValueError(
                    f"{name}[{position}] holds an unpaired surrogate U+{ord(text[surrogate]):04X} at character "
                    f"{surrogate}, which is not valid Unicode; replace it (e.g. with U+FFFD) before tokenizing"
                )


# str can hold lone UTF-16 surrogates (from "\ud800" JSON escapes or surrogateescape decoding).
_SURROGATE = re.compile("[\ud800-\udfff]")


def find_unpaired_surrogate(text: str) -> int | None:
    """Index of the first unpaired surrogate code point in `text` (not valid Unicode), or None."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.start() if found else None
