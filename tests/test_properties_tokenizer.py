"""Property tests: the serving tokenizer gives the reference's ids on arbitrary Unicode text.

`load_serving_tokenizer` (torch-free: MeCab + Rust WordPiece, or tokenizers.Tokenizer for a
tokenizer.json) against transformers' own tokenizer loaded with AutoTokenizer, on generated text:
combining marks, variation selectors, control and format characters, every kind of line break and
space, special tokens written literally, words around WordPiece's 100-character limit, mixed
scripts; single texts and pairs; truncation lengths from 1 up; with jbert.core.normalize applied
first (as serving does) and without it. Unpaired surrogates, which a str can hold (a JSON
"\\ud800" escape), are rejected by both sides, the serving side naming the text.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from conftest import TINY_VOCAB_WORDS, examples, write_tiny_japanese_tokenizer

from jbert.core.normalize import NormalizationConfig, normalize_text
from jbert.tokenization import FastBertJapaneseTokenizer, FastJsonTokenizer, load_serving_tokenizer

# Pieces that each stress one step: NFKC, MeCab's word splitting, lower-casing, the split on
# special tokens, WordPiece's "##" and its 100-character limit, Python's str.split() whitespace.
FRAGMENTS = [
    *TINY_VOCAB_WORDS,
    "[SEP]", "[CLS]", "[UNK]", "[MASK]", "[PAD]", "[sep]", "［SEP］", "##", "##い", "[", "]",
    " ", "  ", "\u3000", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", "\u2029", "\xa0",
    "\ufffd",  # what a reader decoding with errors="replace" (scoring) hands on for a bad byte
    "\x00", "\x7f", "\x9f", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202e", "\u2066", "\ufeff", "\u00ad",
    "\u0301", "\u0308\u0301", "\u3099", "\u309a", "か\u3099", "e\u0301", "\u20dd",  # combining marks
    "\ufe0e", "\ufe0f", "葛\U000E0100", "\U000E01EF", "☺\ufe0f",  # variation selectors
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇯🇵", "\U0001F3F4\U000E0067\U000E0062\U000E007F",
    "ﾊﾝｶｸｶﾀｶﾅ", "ｶﾞ", "ＦＵＬＬ", "１２３", "①", "㈱", "㍻", "Ⅻ", "ﬁ", "…", "〜", "～", "¹", "½",
    "ΑΣ", "ς", "İ", "ß", "ǅ", "Ω", "K",  # case mapping corners (final sigma, dotted I, Kelvin sign)
    "한국어", "ภาษาไทย", "العربية", "עברית", "हिन्दी", "Русский", "中文汉字", "Ελληνικά",
    "<script>", "http://example.com/a?b=c", "a.b,c;d!e?", "１,０００円", "100%", "#hash", "@user",
]
LONG_WORDS = st.builds(
    lambda char, count: char * count,
    st.sampled_from(["あ", "x", "漢", "ア", "1", "😀", "e\u0301"]),
    st.integers(95, 130),  # around MAX_INPUT_CHARS_PER_WORD = 100
)
texts = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.characters(exclude_categories=("Cs",)),  # any single code point but a surrogate
        st.text(max_size=4),
        LONG_WORDS,
    ),
    max_size=12,
).map("".join)
max_lengths = st.one_of(st.integers(1, 40), st.sampled_from([512, None]))


def _bert_japanese_dir(directory, **settings):
    from transformers import AddedToken, AutoTokenizer, BertJapaneseTokenizer

    write_tiny_japanese_tokenizer(directory)
    options = dict(do_lower_case=False, word_tokenizer_type="mecab", subword_tokenizer_type="wordpiece",
                   mecab_kwargs={"mecab_dic": "unidic_lite"}, model_max_length=64)
    added = settings.pop("added_tokens", None)
    options.update(settings)
    BertJapaneseTokenizer(vocab_file=str(directory / "vocab.txt"), **options).save_pretrained(directory)
    if added:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        tokenizer.add_tokens([AddedToken(added[0], normalized=False), *added[1:]])
        tokenizer.save_pretrained(directory)
    return directory


def _tokenizer_json_dir(directory, do_lower_case: bool, config_lower_case: bool):
    """A BertTokenizerFast directory (tokenizer.json) whose tokenizer_config.json may disagree with it."""
    import json

    from transformers import BertTokenizerFast

    directory.mkdir(parents=True)
    chars = sorted(set("".join(FRAGMENTS)) - set(" \t\n\r"))[:300]
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "the",
                                *chars, *("##" + c for c in chars)]))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=do_lower_case,
                      model_max_length=64).save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["do_lower_case"] = config_lower_case  # transformers rebuilds the normalizer on load
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def tokenizer_pairs(tmp_path_factory):
    """{name: (serving tokenizer, transformers reference)} for each tokenizer kind under test."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # truncation below 3 tokens logs one line per text
    root = tmp_path_factory.mktemp("property-tokenizers")
    directories = {
        "mecab-wordpiece": _bert_japanese_dir(root / "wordpiece"),
        "mecab-lower-added": _bert_japanese_dir(root / "lower", do_lower_case=True,
                                                added_tokens=["ジェイバート", "NewWord"]),
        "mecab-characters-left": _bert_japanese_dir(root / "characters", subword_tokenizer_type="character",
                                                    truncation_side="left"),
        "mecab-no-nfkc": _bert_japanese_dir(root / "no-nfkc", mecab_kwargs={"mecab_dic": "unidic_lite", "normalize_text": False}),
        "whitespace-wordpiece": _bert_japanese_dir(root / "whitespace", do_word_tokenize=False),
        "json-lower": _tokenizer_json_dir(root / "json-lower", do_lower_case=True, config_lower_case=True),
        "json-cased-by-config": _tokenizer_json_dir(root / "json-cased", do_lower_case=True, config_lower_case=False),
    }
    pairs = {}
    for name, directory in directories.items():
        fast = load_serving_tokenizer(directory)
        expected_class = FastJsonTokenizer if name.startswith("json") else FastBertJapaneseTokenizer
        assert isinstance(fast, expected_class), f"{name}: fell back to {type(fast).__name__}"
        pairs[name] = (fast, AutoTokenizer.from_pretrained(str(directory)))
    return pairs


def _assert_same_ids(fast, reference, firsts, seconds, max_length):
    """input_ids, token_type_ids and the truncated flag agree with transformers for every input."""
    pairs = list(seconds) if seconds is not None else None
    expected = reference(list(firsts), pairs, truncation=True, max_length=max_length)
    untruncated = reference(list(firsts), pairs, truncation=False)
    got = fast.encode_batch(list(firsts), pairs, max_length=max_length)
    assert len(got) == len(firsts)
    for index, encoded in enumerate(got):
        where = f"input {index}: {firsts[index]!r}" + (f" / {pairs[index]!r}" if pairs else "")
        assert encoded.input_ids == expected["input_ids"][index], where
        assert encoded.token_type_ids == expected["token_type_ids"][index], where
        was_cut = len(expected["input_ids"][index]) < len(untruncated["input_ids"][index])
        assert encoded.truncated == was_cut, where


KINDS = ["mecab-wordpiece", "mecab-lower-added", "mecab-characters-left", "mecab-no-nfkc", "whitespace-wordpiece",
         "json-lower", "json-cased-by-config"]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(80))
@given(
    firsts=st.lists(texts, min_size=1, max_size=4),
    second_texts=st.none() | st.lists(texts, min_size=4, max_size=4),
    max_length=max_lengths,
    normalize=st.booleans(),
)
@example(firsts=["ΑΣ ΣΑΣ", "a\u2028b\x1cc\x85d"], second_texts=None, max_length=512, normalize=False)
@example(firsts=["あ" * 101, "x" * 100 + "\u0301"], second_texts=None, max_length=8, normalize=False)
@example(firsts=["[SEP]ジェイバート[sep]NewWord newword"], second_texts=["［SEP］" * 3] * 4, max_length=5, normalize=True)
def test_serving_ids_identical_to_reference(tokenizer_pairs, kind, firsts, second_texts, max_length, normalize):
    fast, reference = tokenizer_pairs[kind]
    seconds = second_texts[: len(firsts)] if second_texts is not None else None
    if normalize:
        # What serving hands the tokenizer: the model's saved NormalizationConfig, here the default.
        firsts = [normalize_text(text, NormalizationConfig()) for text in firsts]
        seconds = [normalize_text(text, NormalizationConfig()) for text in seconds] if seconds else seconds
    note(f"firsts={firsts!r} seconds={seconds!r}")
    _assert_same_ids(fast, reference, firsts, seconds, max_length)


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@pytest.mark.parametrize("kind", ["mecab-wordpiece", "json-lower"])
@settings(max_examples=examples(20))
@given(before=texts, surrogate=surrogates, after=texts, position=st.integers(0, 2), normalize=st.booleans())
@example(before="a", surrogate="\ud800", after="b", position=0, normalize=False)
@example(before="", surrogate="\udcff", after="", position=1, normalize=True)  # what surrogateescape makes of byte 0xff
def test_unpaired_surrogates_rejected_by_both(tokenizer_pairs, kind, before, surrogate, after, position, normalize):
    fast, reference = tokenizer_pairs[kind]
    bad = before + surrogate + after
    if normalize:
        bad = normalize_text(bad, NormalizationConfig())  # clean-up keeps surrogates: still rejected
    batch = ["今日は雨", "良い"]
    batch.insert(position, bad)
    with pytest.raises(ValueError, match=rf"texts\[{position}\] holds an unpaired surrogate U\+D[89A-F][0-9A-F]{{2}}"):
        fast.encode_batch(batch, max_length=32)
    with pytest.raises((ValueError, TypeError)):  # MeCab: UnicodeEncodeError; tokenizers: TypeError
        reference(batch, truncation=True, max_length=32)
    # A batch without the bad text still works: the check rejects nothing else.
    batch.pop(position)
    _assert_same_ids(fast, reference, batch, None, 32)


@pytest.mark.xfail(strict=True, reason=(
    "known difference, found by the random search on 2026-12-07: MeCab reads a text only up to a NUL "
    "character, and with a long tail after the NUL transformers' MecabTokenizer returns the two ESC "
    "characters before it as one word where jbert's splitter returns two. Serving and training remove "
    "control characters before tokenizing (remove_control, on by default), so only --remove_control "
    "false meets it; MeCab dropping everything after a NUL is the larger problem there."))
def test_nul_then_a_long_tail_gives_the_reference_ids(tokenizer_pairs):
    fast, reference = tokenizer_pairs["mecab-wordpiece"]
    _assert_same_ids(fast, reference, ["\x1b\x1b\x00" + "あ" * 300], None, None)
