"""Special tokens with lstrip / rstrip / single_word outside added_tokens_decoder: serving ids equal transformers'.

A BertJapaneseTokenizer directory may carry a special token's flags in special_tokens_map.json or as
an AddedToken dict in tokenizer_config.json. transformers honours them (with `single_word`,
"今日は[MASK]です" has no [MASK] token), the fast path does not, so such a directory must fall back
to the reference tokenizer, with a warning naming the flag; every variant gives transformers' ids.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from conftest import write_tiny_japanese_tokenizer
from jbert.tokenization import FastBertJapaneseTokenizer, ReferenceTokenizer, load_serving_tokenizer

TEXTS = [
    "今日は[MASK]です", "今日は [MASK] です", "[MASK]です", "今日は[MASK]", " [MASK] ", "[MASK]",
    "天気[SEP]雨", "天気 [SEP] 雨 [SEP]", "[MASK][MASK] 最高 [SEP]", "この商品はとても良いです。", "",
]
FLAGS = ("single_word", "lstrip", "rstrip")


def _flagged(content: str, flag: str) -> dict:
    token = {"content": content, "lstrip": False, "rstrip": False, "single_word": False, "normalized": False,
             "special": True}
    token[flag] = True
    return token


def _directory(tmp_path: Path, where: str, flag: str, keep_decoder: bool) -> Path:
    """The tiny tokenizer with [MASK] and [SEP] flagged in `where` (map, config or both)."""
    directory = tmp_path / f"{where}-{flag}-{keep_decoder}"
    write_tiny_japanese_tokenizer(directory)
    config_path, map_path = directory / "tokenizer_config.json", directory / "special_tokens_map.json"
    config, special_map = json.loads(config_path.read_text()), json.loads(map_path.read_text())
    if not keep_decoder:
        config.pop("added_tokens_decoder")
    for key, content in (("mask_token", "[MASK]"), ("sep_token", "[SEP]")):
        if where in ("map", "both"):
            special_map[key] = _flagged(content, flag)
        if where in ("config", "both"):
            # tokenizer_config.json holds AddedTokens with a type tag (transformers' own format)
            config[key] = {**_flagged(content, flag), "__type": "AddedToken"}
            if where == "config":
                special_map.pop(key)  # so the map's plain string does not replace it
    config_path.write_text(json.dumps(config))
    map_path.write_text(json.dumps(special_map))
    return directory


def _reference_ids(directory: Path, texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return AutoTokenizer.from_pretrained(str(directory))(texts)["input_ids"]


@pytest.mark.parametrize("keep_decoder", [True, False], ids=["with-decoder", "no-decoder"])
@pytest.mark.parametrize("where", ["map", "config", "both"])
@pytest.mark.parametrize("flag", FLAGS)
def test_flagged_special_tokens_give_transformers_ids(tmp_path, flag, where, keep_decoder):
    directory = _directory(tmp_path, where, flag, keep_decoder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = load_serving_tokenizer(directory)
    got = [encoded.input_ids for encoded in tokenizer.encode_batch(TEXTS)]
    assert got == _reference_ids(directory, TEXTS)
    if keep_decoder:
        # added_tokens_decoder lists [MASK] and [SEP] without flags, and transformers takes them from there
        assert isinstance(tokenizer, FastBertJapaneseTokenizer)
    else:
        # the flags reach transformers: the fast path steps aside and says why
        assert isinstance(tokenizer, ReferenceTokenizer)
        assert any(f"has {flag}" in str(w.message) and "outside" not in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_single_word_changes_the_ids_so_the_check_can_fail(tmp_path):
    """The case the peer check found: with single_word, transformers does not split off [MASK] inside a word."""
    directory = _directory(tmp_path, "both", "single_word", keep_decoder=False)
    reference = _reference_ids(directory, ["今日は[MASK]です"])[0]
    write_tiny_japanese_tokenizer(tmp_path / "plain")
    fast = FastBertJapaneseTokenizer(tmp_path / "plain")
    plain = fast.encode_batch(["今日は[MASK]です"])[0].input_ids
    assert reference != plain and fast.special_tokens["mask_token"] == "[MASK]"
    assert plain.count(fast.added_tokens["[MASK]"]) == 1 and fast.added_tokens["[MASK]"] not in reference
