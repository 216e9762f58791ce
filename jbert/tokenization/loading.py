"""The tokenizer serving uses for a directory: the fast exact path, or transformers' as a fallback."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from jbert.core.errors import UserError
from jbert.tokenization.fast import FastBertJapaneseTokenizer, FastJsonTokenizer
from jbert.tokenization.byte_fallback import SENTENCEPIECE_FILES
from jbert.tokenization.tokenizer_dir import (
    ADDED_TOKENS_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_JSON_FILE,
    VOCAB_FILE,
    Unsupported,
    is_bert_japanese_config,
    read_tokenizer_config,
)
from jbert.tokenization.jumanpp import require_jumanpp
from jbert.tokenization.pretrained import ReferenceTokenizer

# --------------------------------------------------------------------------- entry point


def load_serving_tokenizer(directory: str | os.PathLike, prefer_fast: bool = True):
    """The tokenizer serving uses for a model or export directory.

    BertJapaneseTokenizer directories (MeCab + WordPiece or character subwords) get the fast exact
    path; directories with a tokenizer.json get `tokenizers.Tokenizer`; anything else, or
    `prefer_fast=False`, gets transformers' reference tokenizer (a warning says why when the fast
    path was wanted). Every returned object has `.encode_batch(texts, text_pairs=None,
    max_length=512, truncation_side=None) -> list[EncodedText]` (safe to call from several threads),
    `.truncation_side` (its own side), `.pad_token_id` and `.is_fast`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"tokenizer directory {directory} does not exist")
    has_files = any((directory / name).is_file() for name in (TOKENIZER_CONFIG_FILE, VOCAB_FILE, TOKENIZER_JSON_FILE))
    if not has_files:
        raise UserError(
            f"{directory} has no tokenizer files ({TOKENIZER_CONFIG_FILE}, {VOCAB_FILE} or {TOKENIZER_JSON_FILE}); "
            "point to a model or export directory written by jbert or save_pretrained"
        )
    config = read_tokenizer_config(directory)
    require_jumanpp(config, str(directory))
    if not prefer_fast:
        return ReferenceTokenizer(directory)
    if is_bert_japanese_config(config):
        if (directory / ADDED_TOKENS_FILE).is_file() and "added_tokens_decoder" not in config:
            # Newer saves repeat added_tokens.json inside added_tokens_decoder, which is what loads.
            reason = f"legacy {ADDED_TOKENS_FILE} without added_tokens_decoder"
        else:
            try:
                return FastBertJapaneseTokenizer(directory, config)
            except Unsupported as unsupported:
                reason = str(unsupported)
    elif (directory / TOKENIZER_JSON_FILE).is_file():
        return FastJsonTokenizer(directory, config)
    else:
        reason = f"no {TOKENIZER_JSON_FILE} and tokenizer_class {config.get('tokenizer_class')!r} has no fast path here"
    _require_transformers(directory, reason)
    warnings.warn(
        f"{directory}: {reason}; using transformers' reference tokenizer instead of the fast path "
        "(slower, and it needs the transformers package)",
        stacklevel=2,
    )
    return ReferenceTokenizer(directory)


def _require_transformers(directory: Path, reason: str) -> None:
    """UserError (exit 2) when the reference fallback cannot run: a serving-only install has no transformers."""
    import importlib.util

    if importlib.util.find_spec("transformers") is not None:
        return
    hint = "install the training stack (requirements.txt) to serve it through transformers"
    if any((directory / name).is_file() for name in SENTENCEPIECE_FILES):
        hint = (f"it has only a SentencePiece model: write its {TOKENIZER_JSON_FILE} once, where transformers and "
                f"sentencepiece are installed, with `python -m jbert.tokenization.sentencepiece_json {directory}` "
                "(it proves the ids equal first), or " + hint)
    raise UserError(f"{directory} cannot be served without transformers ({reason}): {hint}")
