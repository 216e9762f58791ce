"""Serving tokenizers without torch or transformers: exact, fast `BertJapaneseTokenizer` ids.

`BertJapaneseTokenizer` is pure Python after MeCab and has no fast version upstream. The fast path
here splits words with MeCab through fugashi (same dictionary, same options, same NFKC and
lower-casing as transformers' `MecabTokenizer`; wakati output where that is provably the same),
then gives each word to the Rust WordPiece model of the `tokenizers` library, memoising the ids
per word (WordPiece depends on the word alone), and adds special tokens and truncates exactly as
`tokenizer(text, text_pair, truncation=True, max_length=N)` does. The ids are identical to the
reference (the test suite checks thousands of real sentences and edge cases).

Directories with a `tokenizer.json` (English BERT, MiniLM ...) use `tokenizers.Tokenizer` directly.
Anything this module does not reproduce exactly (Sudachi, Juman++, SentencePiece subwords, the
"basic" word tokenizer, unusual added tokens) falls back to transformers' reference tokenizer,
imported lazily, with a warning that says why.

MeCab handling lives in `jbert.tokenization.mecab`, shared with training.
"""
from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
from pathlib import Path
from typing import Sequence

from jbert.core.errors import UserError
from jbert.tokenization.encoded import EncodedText, build_encoding, check_inputs, resolve_truncation_side
from jbert.tokenization.tokenizer_dir import (
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_JSON_FILE,
    VOCAB_FILE,
    Unsupported,
    is_bert_japanese_config,
    known_length_limit,
    load_vocab,
    read_tokenizer_config,
    token_content,
)
from jbert.tokenization.mecab import MecabWordSplitter

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Defaults of BertJapaneseTokenizer.__init__ for the keys a tokenizer_config.json may omit.
_BERT_JAPANESE_SPECIAL_DEFAULTS = {
    "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
}
# WordpieceTokenizer in transformers gives a whole word [UNK] beyond this many characters.
MAX_INPUT_CHARS_PER_WORD = 100
# Words whose WordPiece ids are remembered (about 100 bytes each).
WORDPIECE_CACHE_SIZE = 200_000
# Truncating copies of a tokenizer.json kept at once (one per max_length and side in use).
MAX_TRUNCATING_TOKENIZERS = 8



def _check_special_token_flags(config: dict, special_values: list) -> None:
    """Raise `Unsupported` for a special token that strips whitespace or is single_word.

    transformers takes a special token's flags from `added_tokens_decoder` when the token is there;
    otherwise from the AddedToken dict in tokenizer_config.json or (older saves without
    added_tokens_decoder) special_tokens_map.json, and `single_word` then changes the ids ("今日は[MASK]です"
    no longer has a [MASK]). The fast path does not reproduce the flags, so such a directory goes to
    the reference tokenizer. A flag on a token that added_tokens_decoder also lists falls back too
    (where transformers would ignore it), which costs speed, never exactness.
    """
    listed = {entry.get("content") for entry in (config.get("added_tokens_decoder") or {}).values()}
    for value in special_values:
        if not isinstance(value, dict):
            continue
        flags = [flag for flag in ("lstrip", "rstrip", "single_word") if value.get(flag)]
        if flags and value.get("content") not in listed:
            raise Unsupported(
                f"special token {value.get('content')!r} has {'/'.join(flags)} set in {TOKENIZER_CONFIG_FILE} or "
                f"{SPECIAL_TOKENS_MAP_FILE} (not in added_tokens_decoder), which the fast path does not reproduce"
            )


class FastBertJapaneseTokenizer:
    """MeCab (fugashi) + Rust WordPiece with ids identical to transformers' `BertJapaneseTokenizer`."""

    is_fast = True

    def __init__(self, directory: str | os.PathLike, config: dict | None = None):
        """Build from a BertJapaneseTokenizer directory; raises `Unsupported` for settings not covered."""
        from tokenizers import models

        self.directory = Path(directory)
        config = read_tokenizer_config(self.directory) if config is None else config
        self._check_supported(config)
        vocab_file = self.directory / VOCAB_FILE
        if not vocab_file.is_file():
            raise UserError(f"{self.directory} has no {VOCAB_FILE}; it is not a complete BertJapaneseTokenizer directory")
        self.vocab = load_vocab(vocab_file)

        special = dict(_BERT_JAPANESE_SPECIAL_DEFAULTS)
        for key in SPECIAL_TOKEN_KEYS:
            if key in config:
                special[key] = token_content(config[key])
        self.special_tokens = {key: value for key, value in special.items() if value is not None}
        extra_values = list(config.get("additional_special_tokens") or [])
        extra_values += list((config.get("extra_special_tokens") or {}).values())
        extra = [token_content(t) for t in extra_values]
        all_special = list(dict.fromkeys([*self.special_tokens.values(), *[t for t in extra if t]]))

        _check_special_token_flags(config, [config.get(key) for key in SPECIAL_TOKEN_KEYS] + extra_values)

        # Added tokens: transformers splits the text on every one of them before word splitting.
        added: dict[str, int] = {}
        normalized_plain_added: list[str] = []
        for token_id, entry in (config.get("added_tokens_decoder") or {}).items():
            content = entry["content"]
            if entry.get("lstrip") or entry.get("rstrip") or entry.get("single_word"):
                raise Unsupported(f"added token {content!r} strips whitespace or is single_word")
            added[content] = int(token_id)
            if not entry.get("special") and entry.get("normalized", True):
                normalized_plain_added.append(content)
        for token in all_special:
            if token not in added:
                if token not in self.vocab:
                    raise Unsupported(f"special token {token!r} is not in {VOCAB_FILE}")
                added[token] = self.vocab[token]
        self.added_tokens = added
        contents = sorted(added, key=len, reverse=True)
        for token in contents:
            if any(token != other and token in other for other in contents):
                raise Unsupported(f"added token {token!r} is part of another added token")
        self._split_pattern = (
            None if config.get("split_special_tokens") or not contents
            else re.compile("(" + "|".join(re.escape(t) for t in contents) + ")")
        )
        self._split_first_chars = frozenset(t[0] for t in contents if t)

        self.do_lower_case = bool(config.get("do_lower_case", False))
        protected = list(dict.fromkeys(all_special + normalized_plain_added))
        self._lowercase_protect = (
            re.compile("(" + "|".join(re.escape(t) for t in sorted(protected, key=len, reverse=True)) + ")")
            if protected else None
        )
        self.truncation_side = config.get("truncation_side", "right")
        self.model_max_length = known_length_limit(config.get("model_max_length"))

        self.unk_token = self.special_tokens["unk_token"]
        if self.unk_token not in self.vocab:
            raise Unsupported(f"unknown token {self.unk_token!r} is not in {VOCAB_FILE}")
        self.unk_token_id = self._token_id(self.unk_token)
        self.cls_token_id = self._token_id(self.special_tokens["cls_token"])
        self.sep_token_id = self._token_id(self.special_tokens["sep_token"])
        self.pad_token_id = self._token_id(self.special_tokens["pad_token"])

        self.do_word_tokenize = bool(config.get("do_word_tokenize", True))
        if self.do_word_tokenize:
            mecab_kwargs = dict(config.get("mecab_kwargs") or {})
            unknown = set(mecab_kwargs) - {"mecab_dic", "mecab_option", "normalize_text"}
            if unknown:
                raise Unsupported(f"mecab_kwargs {sorted(unknown)} are not understood")
            self.word_splitter: MecabWordSplitter | None = MecabWordSplitter(
                mecab_dic=mecab_kwargs.get("mecab_dic", "unidic_lite"),
                mecab_option=mecab_kwargs.get("mecab_option"),
                normalize_text=bool(mecab_kwargs.get("normalize_text", True)),
                do_lower_case=self.do_lower_case,
                never_split=list(config.get("never_split") or []) + all_special,
            )
        else:
            self.word_splitter = None

        self.do_subword_tokenize = bool(config.get("do_subword_tokenize", True))
        self.subword_tokenizer_type = config.get("subword_tokenizer_type", "wordpiece")
        self._wordpiece = None
        self._wordpiece_cache: dict[str, list[int]] = {}
        if self.do_subword_tokenize and self.subword_tokenizer_type == "wordpiece":
            self._wordpiece = models.WordPiece(
                vocab=self.vocab, unk_token=self.unk_token, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
                continuing_subword_prefix="##",
            )
        # transformers looks a token up among the added tokens before the vocabulary.
        self._id_remap = {
            self.vocab[token]: token_id for token, token_id in added.items()
            if token in self.vocab and self.vocab[token] != token_id
        }

    @staticmethod
    def _check_supported(config: dict) -> None:
        if not is_bert_japanese_config(config):
            raise Unsupported(f"tokenizer_class {config.get('tokenizer_class')!r} is not BertJapaneseTokenizer")
        if config.get("do_word_tokenize", True):
            word_type = config.get("word_tokenizer_type", "basic")
            if word_type != "mecab":
                raise Unsupported(f"word_tokenizer_type {word_type!r} (only 'mecab' has a fast path)")
        if config.get("do_subword_tokenize", True):
            subword_type = config.get("subword_tokenizer_type", "wordpiece")
            if subword_type not in ("wordpiece", "character"):
                raise Unsupported(f"subword_tokenizer_type {subword_type!r} (only 'wordpiece' and 'character')")
        if config.get("truncation_side", "right") not in ("right", "left"):
            raise Unsupported(f"truncation_side {config.get('truncation_side')!r}")

    def _token_id(self, token: str) -> int:
        if token in self.added_tokens:
            return self.added_tokens[token]
        return self.vocab.get(token, self.vocab[self.unk_token])

    def _lowercase(self, text: str) -> str:
        # transformers lower-cases character by character around the special tokens, so the
        # context-dependent final sigma never applies: lower each character alone when one is present.
        def lower(part: str) -> str:
            return "".join(ch.lower() for ch in part) if "\u03a3" in part else part.lower()

        if self._lowercase_protect is None:
            return lower(text)
        parts = self._lowercase_protect.split(text)
        return "".join(part if i % 2 else lower(part) for i, part in enumerate(parts))

    def _segments(self, text: str) -> list[str | int]:
        """Text chunks to word-split, interleaved with ids of added tokens written literally in the text."""
        if self.do_lower_case:
            text = self._lowercase(text)
        if self._split_pattern is None or not any(ch in text for ch in self._split_first_chars):
            return [text] if text else []
        segments: list[str | int] = []
        for i, part in enumerate(self._split_pattern.split(text)):
            if i % 2:
                segments.append(self.added_tokens[part])
            elif part:
                segments.append(part)
        return segments

    def _words(self, chunk: str) -> list[str]:
        if self.word_splitter is None:
            return chunk.split() if self._wordpiece is not None else [chunk]
        if self._wordpiece is not None:
            return self.word_splitter.split_pieces(chunk)
        return self.word_splitter.split(chunk)

    def _subword_ids(self, word_lists: list[list[str]]) -> list[list[int]]:
        """Ids of the subwords of each list of words."""
        if self._wordpiece is not None:
            # WordPiece is a pure function of one word, and words repeat a lot (Zipf), so ids are
            # memoised per word; only words not seen before go to the Rust WordPiece, in one batch.
            cache = self._wordpiece_cache
            table: dict[str, list[int] | None] = {}
            missing: list[str] = []
            for words in word_lists:
                for word in words:
                    if word not in table:
                        ids = cache.get(word)
                        table[word] = ids
                        if ids is None:
                            missing.append(word)
            if missing:
                if len(cache) + len(missing) > WORDPIECE_CACHE_SIZE:
                    cache.clear()  # bounded memory on endless streams of new words
                tokenize = self._wordpiece.tokenize
                for word in missing:
                    # The model's own call: no per-batch thread pool or Encoding objects to pay for.
                    ids = [token.id for token in tokenize(word)]
                    if self._id_remap:
                        ids = [self._id_remap.get(i, i) for i in ids]
                    table[word] = cache[word] = ids
            return [[i for word in words for i in table[word]] for words in word_lists]
        if self.do_subword_tokenize:  # character subwords (CharacterTokenizer applies NFKC again)
            return [
                [self._token_id(ch) if ch in self.vocab else self.unk_token_id
                 for word in words for ch in unicodedata.normalize("NFKC", word)]
                for words in word_lists
            ]
        return [[self._token_id(word) for word in words] for words in word_lists]

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens or truncation (like `tokenize` + ids)."""
        segmented = [self._segments(text) for text in texts]
        chunks = [self._words(part) for segments in segmented for part in segments if isinstance(part, str)]
        chunk_ids = iter(self._subword_ids(chunks))
        result = []
        for segments in segmented:
            ids: list[int] = []
            for part in segments:
                if isinstance(part, str):
                    ids.extend(next(chunk_ids))
                else:
                    ids.append(part)
            result.append(ids)
        return result

    def encode_batch(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = 512,
        truncation_side: str | None = None,
    ) -> list[EncodedText]:
        """[CLS] text [SEP] (text_pair [SEP]) ids, truncated longest-first to `max_length`; not padded.

        `truncation_side` ("left"/"right") overrides the tokenizer's own side for this call only;
        None keeps it. Nothing shared is changed, so concurrent calls with different sides are safe.
        """
        check_inputs(texts, text_pairs)
        side = resolve_truncation_side(truncation_side, self.truncation_side)
        if max_length is None:
            max_length = self.model_max_length
        if text_pairs is None:
            ids = self.tokenize_ids(texts)
            return [build_encoding(row, None, max_length, self.cls_token_id, self.sep_token_id, side) for row in ids]
        ids = self.tokenize_ids(list(texts) + list(text_pairs))
        first, second = ids[: len(texts)], ids[len(texts):]
        return [
            build_encoding(a, b, max_length, self.cls_token_id, self.sep_token_id, side)
            for a, b in zip(first, second)
        ]


# --------------------------------------------------------------------------- tokenizer.json


class FastJsonTokenizer:
    """A directory's `tokenizer.json` run by `tokenizers.Tokenizer`, set up as transformers' fast tokenizer."""

    is_fast = True

    def __init__(self, directory: str | os.PathLike, config: dict | None = None):
        """Load `tokenizer.json`, apply the tokenizer_config.json options transformers applies on load."""
        from tokenizers import Tokenizer, normalizers

        self.directory = Path(directory)
        config = read_tokenizer_config(self.directory) if config is None else config
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_JSON_FILE))
        self.tokenizer.no_padding()
        # BertTokenizerFast rebuilds its normalizer when tokenizer_config.json disagrees with tokenizer.json.
        normalizer = self.tokenizer.normalizer
        if normalizer is not None and (config.get("tokenizer_class") or "").startswith("BertTokenizer"):
            state = json.loads(normalizer.__getstate__())
            if state.get("type") == "BertNormalizer":
                wanted = {
                    "lowercase": config.get("do_lower_case", True),
                    "strip_accents": config.get("strip_accents"),
                    "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
                }
                if any(state.get(key, value) != value for key, value in wanted.items()):
                    state.pop("type")
                    state.update(wanted)
                    self.tokenizer.normalizer = normalizers.BertNormalizer(**state)
        self.truncation_side = config.get("truncation_side", "right")
        self.model_max_length = known_length_limit(config.get("model_max_length"))
        pad_token = token_content(config.get("pad_token"))
        pad_id = self.tokenizer.token_to_id(pad_token) if pad_token else None
        self.pad_token_id = int(pad_id) if pad_id is not None else 0
        # One `tokenizers.Tokenizer` per (max_length, side), each set up once and never changed again:
        # enable_truncation on a Tokenizer that another thread is encoding with fails ("Already
        # borrowed") or cuts that call on the wrong side, and a lock would serialise the Rust
        # encoding that otherwise runs without the GIL. Copies cost one tokenizer.json each.
        self._truncating: dict[tuple[int | None, str], object] = {}
        self._truncating_lock = threading.Lock()

    def _tokenizer_for(self, max_length: int | None, side: str):
        """The `tokenizers.Tokenizer` that truncates to `max_length` on `side` (made on first use)."""
        key = (max_length or None, side)
        tokenizer = self._truncating.get(key)
        if tokenizer is not None:
            return tokenizer
        with self._truncating_lock:
            tokenizer = self._truncating.get(key)
            if tokenizer is None:
                from tokenizers import Tokenizer

                if len(self._truncating) >= MAX_TRUNCATING_TOKENIZERS:
                    # Callers that vary max_length endlessly: start again rather than grow (a caller
                    # already holding a dropped copy keeps using it safely).
                    self._truncating = {}
                tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
                if max_length:
                    tokenizer.enable_truncation(max_length, strategy="longest_first", direction=side)
                else:
                    tokenizer.no_truncation()
                self._truncating = {**self._truncating, key: tokenizer}
            return tokenizer

    def encode_batch(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = 512,
        truncation_side: str | None = None,
    ) -> list[EncodedText]:
        """Ids with special tokens from the tokenizer's post-processor, truncated longest-first; not padded.

        `truncation_side` ("left"/"right") overrides the tokenizer's own side for this call only;
        None keeps it. Safe to call from several threads at once, with different sides.
        """
        check_inputs(texts, text_pairs)
        side = resolve_truncation_side(truncation_side, self.truncation_side)
        if max_length is None:
            max_length = self.model_max_length
        tokenizer = self._tokenizer_for(max_length, side)
        inputs = list(texts) if text_pairs is None else list(zip(texts, text_pairs))
        encodings = tokenizer.encode_batch_fast(inputs, add_special_tokens=True)
        return [EncodedText(e.ids, e.type_ids, bool(e.overflowing)) for e in encodings]
