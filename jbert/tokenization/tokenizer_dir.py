"""A tokenizer directory's files and settings: file names, vocab.txt, tokenizer_config.json, length limits.

What every jbert tokenizer (fast, reference, serving's loader) reads from a tokenizer directory, read
the way transformers reads it. Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jbert.core.errors import UserError

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
TOKENIZER_JSON_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"

# A model_max_length at or above this means "no limit": transformers writes VERY_LARGE_INTEGER
# (int(1e30)) when a tokenizer does not know its model's length, and no encoder takes a million tokens.
NO_LENGTH_LIMIT = 1_000_000


def known_length_limit(model_max_length: Any) -> int | None:
    """A tokenizer's model_max_length as a number of tokens, or None when it means "no limit" (or is unset)."""
    limit = int(model_max_length or 0)
    return limit if 0 < limit < NO_LENGTH_LIMIT else None



def load_vocab(vocab_file: Path) -> dict[str, int]:
    """vocab.txt -> token ids, with the same rules as transformers' load_vocab (last duplicate wins)."""
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as reader:
        for index, line in enumerate(reader.readlines()):
            vocab[line.rstrip("\n")] = index
    return vocab


def token_content(value: Any) -> str | None:
    """A special token written as a string or as a serialised AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def read_json_object(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); was it written completely?") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a JSON object")
    return values


def read_tokenizer_config(directory: str | os.PathLike) -> dict:
    """tokenizer_config.json of a directory with special_tokens_map.json applied on top, as transformers does."""
    directory = Path(directory)
    config_path = directory / TOKENIZER_CONFIG_FILE
    config = read_json_object(config_path) if config_path.is_file() else {}
    map_path = directory / SPECIAL_TOKENS_MAP_FILE
    if map_path.is_file():
        config.update(read_json_object(map_path))
    return config


def is_bert_japanese_config(config: dict) -> bool:
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class:
        return tokenizer_class in ("BertJapaneseTokenizer", "BertJapaneseTokenizerFast")
    return "word_tokenizer_type" in config or "mecab_kwargs" in config


class Unsupported(Exception):
    """A setting the fast path does not reproduce exactly; the message says which."""
