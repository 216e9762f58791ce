"""SentencePiece tokenizers as a tokenizer.json with the ids of the SentencePiece model itself.

Models that ship only a SentencePiece file (spiece.model, sentencepiece.bpe.model, spm.model: XLM-R,
DeBERTa-v2/v3, T5-style rinna models, ALBERT) are served torch-free through a tokenizer.json that
the `tokenizers` library runs (`FastJsonTokenizer`). transformers converts them when a tokenizer is
loaded, with one gap that matters for Japanese: its converters drop SentencePiece's **byte
fallback** (DeBERTa-v3 Japanese and other recent Unigram models have it), so every character
outside the vocabulary becomes [UNK] instead of its UTF-8 byte pieces, and the fast tokenizer's ids
differ from the SentencePiece model's on many Japanese sentences (rare kanji, emoji).

`jbert.tokenization.byte_fallback` rebuilds such a tokenizer with the byte fallback kept; training
uses it, so the model directory's tokenizer.json gives the SentencePiece ids. `write_tokenizer_json DIR` (`python -m jbert.tokenization.sentencepiece_json DIR`)
converts a directory that has only the SentencePiece file once, proving the ids equal to transformers'
slow SentencePiece tokenizer on sample sentences first. Needs transformers and sentencepiece
(training side only); nothing here runs at serving time.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from jbert.core.errors import UserError
from jbert.tokenization.byte_fallback import SENTENCEPIECE_FILES, sentencepiece_file
from jbert.tokenization.tokenizer_dir import TOKENIZER_JSON_FILE

logger = logging.getLogger(__name__)

# Sentences the conversion is checked on when the caller gives none: kana, kanji, full-width and
# half-width forms, rare kanji, emoji and spaces (what SentencePiece normalises or byte-falls-back).
CHECK_SENTENCES = (
    "この商品はとても良いです。", "部屋は広くて清潔でした!", "ﾊﾝｶｸｶﾀｶﾅ と ＦＵＬＬ　ＷＩＤＴＨ １２３",
    "鬱蒼とした龘の森", "😀👍🏽 絵文字👨‍👩‍👧", "  二重  空白  ", "Straße İstanbul", "①②③ ㈱ ㌔", "",
)


def id_mismatches(slow, fast, texts: Sequence[str]) -> list[tuple[str, list[int], list[int]]]:
    """(text, slow ids, fast ids) for every text the two tokenizers encode differently."""
    texts = list(texts)
    expected = slow(texts)["input_ids"]
    got = [encoded.input_ids for encoded in fast.encode_batch(texts, max_length=None)] if hasattr(fast, "encode_batch") \
        else fast(texts)["input_ids"]
    return [(text, a, b) for text, a, b in zip(texts, expected, got) if a != b]


def write_tokenizer_json(directory: str | os.PathLike, texts: Sequence[str] = CHECK_SENTENCES) -> Path:
    """Write DIR/tokenizer.json for a SentencePiece-only directory, after proving its ids equal the slow tokenizer's.

    The ids compared are those serving will give (`FastJsonTokenizer` on the written file) against
    transformers' slow tokenizer (the SentencePiece model run by the sentencepiece package). A
    difference is a UserError (exit 2) naming the first text, and nothing stays written.
    """
    from jbert.tokenization.fast import FastJsonTokenizer
    from jbert.tokenization.pretrained import load_tokenizer

    directory = Path(directory)
    if sentencepiece_file(directory) is None:
        raise UserError(f"{directory} has no SentencePiece model ({', '.join(SENTENCEPIECE_FILES)})")
    target = directory / TOKENIZER_JSON_FILE
    if target.exists():
        raise UserError(f"{target} exists already; serving uses it as it is")
    from transformers import AutoTokenizer

    try:
        slow = AutoTokenizer.from_pretrained(str(directory), use_fast=False, trust_remote_code=False)
    except (ImportError, ValueError, OSError) as err:
        raise UserError(f"cannot load the SentencePiece tokenizer of {directory} with transformers: {err}") from None
    fast = load_tokenizer(str(directory))
    if not getattr(fast, "is_fast", False):
        raise UserError(f"transformers has no fast (tokenizer.json) version of {type(slow).__name__}; serving "
                        f"{directory} needs transformers and sentencepiece (the reference fallback)")
    partial = target.with_name(TOKENIZER_JSON_FILE + ".partial")
    fast.backend_tokenizer.save(str(partial))
    try:
        os.replace(partial, target)
        mismatches = id_mismatches(slow, FastJsonTokenizer(directory), texts)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if mismatches:
        target.unlink()
        text, expected, got = mismatches[0]
        raise UserError(f"{directory}: the converted tokenizer.json gives other ids than the SentencePiece model on "
                        f"{len(mismatches)} of {len(texts)} texts (first {text!r}: {expected} vs {got}); nothing "
                        "written: serve it with transformers and sentencepiece installed (the reference fallback)")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jbert.tokenization.sentencepiece_json DIR`: write DIR/tokenizer.json (exit 2 on a problem)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m jbert.tokenization.sentencepiece_json TOKENIZER_DIR", file=sys.stderr)
        return 2
    try:
        print(write_tokenizer_json(args[0]))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
