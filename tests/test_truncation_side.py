"""A per-call truncation side in every serving tokenizer: `encode_batch(..., truncation_side="left"|"right")`.

None keeps the tokenizer's own side (the ids do not change); "left" keeps the end of a long text and
cuts a pair longest-first from the left, exactly as transformers does with `truncation_side="left"`;
the side of one call never leaks into a concurrent call on the same tokenizer.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import write_tiny_japanese_tokenizer
from jbert.tokenization import FastBertJapaneseTokenizer, FastJsonTokenizer, ReferenceTokenizer, load_serving_tokenizer

# Several sentences, so that a cut keeps a different part of the text on each side.
LONG_TEXT = "この商品はとても良いです。普通のホテルです。今日は雨。最悪の料理でした。犬が走る。" * 3
SHORT_TEXT = "猫が寝る"
TEXTS = ["この商品はとても良いです。", "", "普通のホテルです" * 40, LONG_TEXT, "今日は雨" * 9, "鬱蒼とした森"]
NO_CUT = 10_000  # a max_length no text here reaches: the whole ids


def _json_tokenizer_dir(directory: Path) -> Path:
    """A tokenizer.json directory (BertTokenizerFast) over the tiny Japanese vocabulary."""
    from transformers import BertTokenizerFast

    write_tiny_japanese_tokenizer(directory / "japanese")
    BertTokenizerFast(vocab_file=str(directory / "japanese" / "vocab.txt"), do_lower_case=False).save_pretrained(
        directory / "json")
    return directory / "json"


@pytest.fixture(scope="module", params=["fast-japanese", "fast-json", "reference"])
def tokenizer(request, tmp_path_factory):
    """Each of the three serving tokenizer classes, all truncating on the right by default."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "fast-json":
        loaded = load_serving_tokenizer(_json_tokenizer_dir(root))
        assert isinstance(loaded, FastJsonTokenizer)
    else:
        write_tiny_japanese_tokenizer(root)
        loaded = load_serving_tokenizer(root, prefer_fast=request.param == "fast-japanese")
        assert isinstance(loaded, FastBertJapaneseTokenizer if request.param == "fast-japanese" else ReferenceTokenizer)
    assert loaded.truncation_side == "right"
    return loaded


def _body(encoded) -> list[int]:
    """Ids without [CLS] and the last [SEP]."""
    return encoded.input_ids[1:-1]


def test_left_keeps_the_end_of_a_long_text(tokenizer):
    whole = _body(tokenizer.encode_batch([LONG_TEXT], max_length=NO_CUT)[0])
    assert len(whole) > 20
    left = tokenizer.encode_batch([LONG_TEXT], max_length=12, truncation_side="left")[0]
    right = tokenizer.encode_batch([LONG_TEXT], max_length=12, truncation_side="right")[0]
    assert left.truncated and right.truncated and len(left.input_ids) == len(right.input_ids) == 12
    assert _body(left) == whole[-10:]
    assert _body(right) == whole[:10]
    assert left.input_ids[0] == right.input_ids[0] and left.input_ids[-1] == right.input_ids[-1]  # [CLS] ... [SEP]


def test_a_pair_is_cut_longest_first_from_the_left(tokenizer):
    long_ids, short_ids = (_body(e) for e in tokenizer.encode_batch([LONG_TEXT, SHORT_TEXT], max_length=NO_CUT))
    assert len(long_ids) > 2 * len(short_ids) + 4
    # Room for the whole short text and 6 tokens of the long one: only the long one loses tokens.
    max_length = len(short_ids) + 6 + 3
    encoded = tokenizer.encode_batch([LONG_TEXT], [SHORT_TEXT], max_length=max_length, truncation_side="left")[0]
    sep = encoded.input_ids[-1]
    first_end = encoded.input_ids.index(sep)
    assert encoded.truncated and len(encoded.input_ids) == max_length
    assert encoded.input_ids[1:first_end] == long_ids[-6:]
    assert encoded.input_ids[first_end + 1:-1] == short_ids
    assert encoded.token_type_ids == [0] * (first_end + 1) + [1] * (len(short_ids) + 1)
    # Both beyond their share: each keeps its own end, the two lengths as even as longest-first makes them.
    both = tokenizer.encode_batch([LONG_TEXT], [LONG_TEXT + "猫"], max_length=9, truncation_side="left")[0]
    first_end = both.input_ids.index(sep)
    first, second = both.input_ids[1:first_end], both.input_ids[first_end + 1:-1]
    assert len(first) + len(second) == 6 and abs(len(first) - len(second)) <= 1
    second_ids = _body(tokenizer.encode_batch([LONG_TEXT + "猫"], max_length=NO_CUT)[0])
    assert first == long_ids[-len(first):] and second == second_ids[-len(second):]


@pytest.mark.parametrize("max_length", [512, 12, 5, 3, 2])
def test_none_is_the_tokenizers_own_side_unchanged(tokenizer, max_length):
    from transformers import AutoTokenizer

    pairs = list(reversed(TEXTS))
    default = tokenizer.encode_batch(TEXTS, max_length=max_length)
    assert tokenizer.encode_batch(TEXTS, max_length=max_length, truncation_side=None) == default
    assert tokenizer.encode_batch(TEXTS, max_length=max_length, truncation_side="right") == default
    assert tokenizer.encode_batch(TEXTS, pairs, max_length=max_length, truncation_side=None) == \
        tokenizer.encode_batch(TEXTS, pairs, max_length=max_length)
    # Today's ids: transformers' own, and a left call in between leaves the default alone.
    tokenizer.encode_batch(TEXTS, pairs, max_length=max_length, truncation_side="left")
    reference = AutoTokenizer.from_pretrained(str(tokenizer.directory))
    expected = reference(TEXTS, pairs, truncation=True, max_length=max_length)["input_ids"]
    assert [e.input_ids for e in tokenizer.encode_batch(TEXTS, pairs, max_length=max_length)] == expected


def test_a_side_other_than_left_or_right_is_a_value_error(tokenizer):
    for side in ("Left", "middle", ""):
        with pytest.raises(ValueError, match="truncation_side must be 'left', 'right' or None"):
            tokenizer.encode_batch(TEXTS, max_length=8, truncation_side=side)


@pytest.mark.parametrize("max_length", [64, 12, 7, 4, 3, 2])
def test_left_ids_are_transformers_bert_japanese_left_ids(tmp_path, max_length):
    from transformers import BertJapaneseTokenizer

    directory = tmp_path / "tokenizer"
    write_tiny_japanese_tokenizer(directory)
    fast = load_serving_tokenizer(directory)
    assert isinstance(fast, FastBertJapaneseTokenizer)
    reference = BertJapaneseTokenizer.from_pretrained(str(directory), truncation_side="left")
    pairs = list(reversed(TEXTS))
    for second in (None, pairs):
        expected = reference(TEXTS, second, truncation=True, max_length=max_length)
        got = fast.encode_batch(TEXTS, second, max_length=max_length, truncation_side="left")
        assert [e.input_ids for e in got] == expected["input_ids"]
        assert [e.token_type_ids for e in got] == expected["token_type_ids"]


def test_a_left_saved_tokenizer_is_cut_on_the_right_when_asked(tmp_path):
    from transformers import BertJapaneseTokenizer

    directory = tmp_path / "tokenizer"
    write_tiny_japanese_tokenizer(directory)
    BertJapaneseTokenizer.from_pretrained(str(directory), truncation_side="left").save_pretrained(directory)
    fast = load_serving_tokenizer(directory)
    assert fast.truncation_side == "left"
    whole = _body(fast.encode_batch([LONG_TEXT], max_length=NO_CUT)[0])
    assert _body(fast.encode_batch([LONG_TEXT], max_length=8)[0]) == whole[-6:]
    assert _body(fast.encode_batch([LONG_TEXT], max_length=8, truncation_side="right")[0]) == whole[:6]
    assert _body(fast.encode_batch([LONG_TEXT], max_length=8)[0]) == whole[-6:]  # the override did not stick


@pytest.mark.parametrize("kind", ["fast-json", "reference"])
def test_concurrent_calls_each_get_their_own_side(tmp_path, kind):
    """Threads alternating left and right on one tokenizer: no call is cut on another call's side."""
    if kind == "fast-json":
        tokenizer = load_serving_tokenizer(_json_tokenizer_dir(tmp_path))
        assert isinstance(tokenizer, FastJsonTokenizer)
        calls, batch = 200, [LONG_TEXT * 4] * 32  # batches big enough that the Rust encoding overlaps
    else:
        write_tiny_japanese_tokenizer(tmp_path)
        tokenizer = load_serving_tokenizer(tmp_path, prefer_fast=False)
        assert isinstance(tokenizer, ReferenceTokenizer)
        calls, batch = 60, [LONG_TEXT] * 8
    expected = {side: tokenizer.encode_batch(batch[:1], max_length=16, truncation_side=side)[0]
                for side in ("left", "right")}
    assert expected["left"] != expected["right"]
    start = threading.Barrier(8)

    def call(number: int) -> bool:
        if number < 8:
            start.wait()  # the first calls of every thread begin together
        side = ("left", "right")[number % 2]
        return all(e == expected[side] for e in tokenizer.encode_batch(batch, max_length=16, truncation_side=side))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(calls)))
    assert all(results), f"{results.count(False)} of {calls} calls got ids cut on the wrong side"
