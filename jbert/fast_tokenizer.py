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

This module also owns the MeCab dictionary handling (`mecab_tagger_options`, `create_mecab_tagger`)
that `jbert.tokenizer` reuses at training time, so both sides start MeCab identically.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import unicodedata
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from .errors import UserError

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
TOKENIZER_JSON_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"

# Named dictionaries: pip package that provides them, and how to install it.
MECAB_DICTIONARIES = {
    "unidic_lite": ("unidic_lite", "pip install unidic-lite"),
    "unidic": ("unidic", "pip install unidic && python -m unidic download"),
    "ipadic": ("ipadic", "pip install ipadic"),
}
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Defaults of BertJapaneseTokenizer.__init__ for the keys a tokenizer_config.json may omit.
_BERT_JAPANESE_SPECIAL_DEFAULTS = {
    "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
}
# WordpieceTokenizer in transformers gives a whole word [UNK] beyond this many characters.
MAX_INPUT_CHARS_PER_WORD = 100
# Words whose WordPiece ids are remembered (about 100 bytes each).
WORDPIECE_CACHE_SIZE = 200_000


class EncodedText(NamedTuple):
    """Token ids of one text (or pair) with [CLS]/[SEP] added, not padded."""

    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool  # True when tokens were removed to fit max_length


# --------------------------------------------------------------------------- MeCab dictionaries


def mecab_dictionary_dir(mecab_dic: str) -> Path:
    """Directory of a MeCab dictionary given by name (unidic_lite, unidic, ipadic) or path.

    A missing dictionary is a UserError that says how to install it, and that unidic_lite is the
    offline alternative.
    """
    if mecab_dic in MECAB_DICTIONARIES:
        module_name, install = MECAB_DICTIONARIES[mecab_dic]
        offline_hint = (
            "" if mecab_dic == "unidic_lite" else
            " Offline alternative: pass --mecab_dic unidic_lite (the small UniDic bundled with jbert's "
            "requirements; token splits may differ slightly from the model's pre-training)."
        )
        try:
            module = __import__(module_name)
        except ModuleNotFoundError:
            raise UserError(
                f"MeCab dictionary {mecab_dic!r} is not installed. Install it with: {install}.{offline_hint}"
            ) from None
        dic_dir = Path(module.DICDIR)
        if not dic_dir.is_dir():
            # The `unidic` pip package ships without its dictionary files until `python -m unidic download`.
            raise UserError(
                f"MeCab dictionary {mecab_dic!r}: the package is installed but its dictionary files are not "
                f"({dic_dir} is missing). Download them with: {install}.{offline_hint}"
            )
        return dic_dir
    dic_dir = Path(os.path.expanduser(str(mecab_dic)))
    if not dic_dir.is_dir():
        raise UserError(
            f"MeCab dictionary {mecab_dic!r} is neither a known name ({', '.join(MECAB_DICTIONARIES)}) nor an "
            "existing directory; pass --mecab_dic unidic_lite, unidic, ipadic or the path of a compiled MeCab "
            "dictionary (the directory holding sys.dic)"
        )
    if not (dic_dir / "sys.dic").is_file():
        raise UserError(
            f"MeCab dictionary directory {dic_dir} has no sys.dic; give the directory of a compiled MeCab "
            "dictionary (e.g. the 'dicdir' of unidic-lite or /var/lib/mecab/dic/ipadic-utf8)"
        )
    return dic_dir


def is_named_mecab_dictionary(mecab_dic: str | None) -> bool:
    """True for the dictionary names transformers' MecabTokenizer understands itself."""
    return mecab_dic in MECAB_DICTIONARIES


def mecab_tagger_options(mecab_dic: str | None = "unidic_lite", mecab_option: str | None = None) -> str:
    """The option string MeCab starts with, built exactly as transformers' MecabTokenizer does.

    A directory path is also accepted as `mecab_dic`: MeCab then gets `-d PATH -r RC` where RC is the
    directory's own mecabrc if it has one, else /dev/null, because MeCab refuses to start without a
    resource file and a user dictionary directory usually has none.
    """
    mecab_option = mecab_option or ""
    if mecab_dic is None:
        return mecab_option
    dic_dir = mecab_dictionary_dir(mecab_dic)
    if is_named_mecab_dictionary(mecab_dic):
        mecabrc = os.path.join(str(dic_dir), "mecabrc")
    else:
        mecabrc = str(dic_dir / "mecabrc") if (dic_dir / "mecabrc").is_file() else os.devnull
    return f'-d "{dic_dir}" -r "{mecabrc}" ' + mecab_option


def create_mecab_tagger(mecab_dic: str | None = "unidic_lite", mecab_option: str | None = None):
    """Start a fugashi `GenericTagger` with a dictionary; failures become UserErrors that say how to fix."""
    try:
        import fugashi
    except ModuleNotFoundError:
        raise UserError("fugashi (MeCab for Python) is not installed; install it with: pip install fugashi") from None
    options = mecab_tagger_options(mecab_dic, mecab_option)
    try:
        return fugashi.GenericTagger(options)
    except RuntimeError as err:
        raise UserError(
            f"MeCab failed to start with options {options!r} ({err}). Check --mecab_dic (a name: "
            f"{', '.join(MECAB_DICTIONARIES)}; or a compiled dictionary directory) and mecab_option."
        ) from None


# mecab_option words that only pick dictionaries; anything else (output formats, -a, -N ...) keeps
# the word splitter on the node path, whose surfaces cannot be changed by output options.
_DICTIONARY_ONLY_OPTIONS = ("-d", "-r", "-u", "--dicdir", "--rcfile", "--userdic")


def _only_dictionary_options(mecab_option: str | None) -> bool:
    try:
        words = shlex.split(mecab_option or "")
    except ValueError:
        return False
    expect_value = False
    for word in words:
        if expect_value:
            expect_value = False
            continue
        if word in _DICTIONARY_ONLY_OPTIONS:
            expect_value = True
        elif not word.startswith(_DICTIONARY_ONLY_OPTIONS) or word.startswith("--") and "=" not in word:
            return False
    return True


class MecabWordSplitter:
    """Words of a text exactly as transformers' `MecabTokenizer.tokenize` returns them."""

    def __init__(
        self,
        mecab_dic: str | None = "unidic_lite",
        mecab_option: str | None = None,
        normalize_text: bool = True,
        do_lower_case: bool = False,
        never_split: Sequence[str] = (),
    ):
        self._options = (mecab_dic, mecab_option)
        self.tagger = create_mecab_tagger(mecab_dic, mecab_option)
        self.normalize_text = normalize_text
        self.do_lower_case = do_lower_case
        self.never_split = frozenset(never_split)
        # Wakati output ("w1 w2 ... ") split on whitespace equals every surface split on whitespace,
        # which is all WordPiece looks at, and it skips building one Python object per word.
        # Lower-casing is per surface (with never_split), so it needs the surfaces themselves.
        self._wakati = None
        if not do_lower_case and _only_dictionary_options(mecab_option):
            self._wakati = create_mecab_tagger(mecab_dic, ((mecab_option or "") + " -Owakati").strip())

    def split(self, text: str) -> list[str]:
        """MeCab surfaces of `text` (after NFKC if configured; lower-cased if configured)."""
        if self.normalize_text:
            text = unicodedata.normalize("NFKC", text)
        surfaces = [node.surface for node in self.tagger(text)]
        if self.do_lower_case:
            never_split = self.never_split
            surfaces = [s if s in never_split else s.lower() for s in surfaces]
        return surfaces

    def split_pieces(self, text: str) -> list[str]:
        """The surfaces of `split(text)`, each split again on whitespace, as WordpieceTokenizer does."""
        if self._wakati is None:
            return [piece for surface in self.split(text) for piece in surface.split()]
        if self.normalize_text:
            text = unicodedata.normalize("NFKC", text)
        return self._wakati.parse(text).split()


# --------------------------------------------------------------------------- tokenizer files


def _load_vocab(vocab_file: Path) -> dict[str, int]:
    """vocab.txt -> token ids, with the same rules as transformers' load_vocab (last duplicate wins)."""
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as reader:
        for index, line in enumerate(reader.readlines()):
            vocab[line.rstrip("\n")] = index
    return vocab


def _token_content(value: Any) -> str | None:
    """A special token written as a string or as a serialised AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def _read_json_object(path: Path) -> dict:
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
    config = _read_json_object(config_path) if config_path.is_file() else {}
    map_path = directory / SPECIAL_TOKENS_MAP_FILE
    if map_path.is_file():
        config.update(_read_json_object(map_path))
    return config


def _is_bert_japanese_config(config: dict) -> bool:
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class:
        return tokenizer_class in ("BertJapaneseTokenizer", "BertJapaneseTokenizerFast")
    return "word_tokenizer_type" in config or "mecab_kwargs" in config


# --------------------------------------------------------------------------- truncation (shared)


def _build_encoding(
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
            if truncation_side == "left":
                ids, pair_ids = ids[ids_to_move:], pair_ids[pair_ids_to_move:]
            else:
                ids = ids[:-ids_to_move] if ids_to_move > 0 else ids
                pair_ids = pair_ids[:-pair_ids_to_move] if pair_ids_to_move > 0 else pair_ids
            truncated = True
    if pair_ids is None:
        return EncodedText([cls_id, *ids, sep_id], [0] * (len(ids) + 2), truncated)
    return EncodedText(
        [cls_id, *ids, sep_id, *pair_ids, sep_id], [0] * (len(ids) + 2) + [1] * (len(pair_ids) + 1), truncated
    )


def _check_inputs(texts: Sequence[str], text_pairs: Sequence[str] | None) -> None:
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, expected str")
    if text_pairs is not None:
        if len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs; give one second text per text")
        for position, text in enumerate(text_pairs):
            if not isinstance(text, str):
                raise TypeError(f"text_pairs[{position}] is {type(text).__name__}, expected str")


# --------------------------------------------------------------------------- fast BertJapaneseTokenizer


class _Unsupported(Exception):
    """A setting the fast path does not reproduce exactly; the message says which."""


class FastBertJapaneseTokenizer:
    """MeCab (fugashi) + Rust WordPiece with ids identical to transformers' `BertJapaneseTokenizer`."""

    is_fast = True

    def __init__(self, directory: str | os.PathLike, config: dict | None = None):
        """Build from a BertJapaneseTokenizer directory; raises `_Unsupported` for settings not covered."""
        from tokenizers import models

        self.directory = Path(directory)
        config = read_tokenizer_config(self.directory) if config is None else config
        self._check_supported(config)
        vocab_file = self.directory / VOCAB_FILE
        if not vocab_file.is_file():
            raise UserError(f"{self.directory} has no {VOCAB_FILE}; it is not a complete BertJapaneseTokenizer directory")
        self.vocab = _load_vocab(vocab_file)

        special = dict(_BERT_JAPANESE_SPECIAL_DEFAULTS)
        for key in SPECIAL_TOKEN_KEYS:
            if key in config:
                special[key] = _token_content(config[key])
        self.special_tokens = {key: value for key, value in special.items() if value is not None}
        extra = [_token_content(t) for t in config.get("additional_special_tokens") or []]
        extra += [_token_content(t) for t in (config.get("extra_special_tokens") or {}).values()]
        all_special = list(dict.fromkeys([*self.special_tokens.values(), *[t for t in extra if t]]))

        # Added tokens: transformers splits the text on every one of them before word splitting.
        added: dict[str, int] = {}
        normalized_plain_added: list[str] = []
        for token_id, entry in (config.get("added_tokens_decoder") or {}).items():
            content = entry["content"]
            if entry.get("lstrip") or entry.get("rstrip") or entry.get("single_word"):
                raise _Unsupported(f"added token {content!r} strips whitespace or is single_word")
            added[content] = int(token_id)
            if not entry.get("special") and entry.get("normalized", True):
                normalized_plain_added.append(content)
        for token in all_special:
            if token not in added:
                if token not in self.vocab:
                    raise _Unsupported(f"special token {token!r} is not in {VOCAB_FILE}")
                added[token] = self.vocab[token]
        self.added_tokens = added
        contents = sorted(added, key=len, reverse=True)
        for token in contents:
            if any(token != other and token in other for other in contents):
                raise _Unsupported(f"added token {token!r} is part of another added token")
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
        self.model_max_length = int(config.get("model_max_length") or 0) or None
        if self.model_max_length and self.model_max_length > 10**9:
            self.model_max_length = None  # transformers' "no limit" sentinel

        self.unk_token = self.special_tokens["unk_token"]
        if self.unk_token not in self.vocab:
            raise _Unsupported(f"unknown token {self.unk_token!r} is not in {VOCAB_FILE}")
        self.unk_token_id = self._token_id(self.unk_token)
        self.cls_token_id = self._token_id(self.special_tokens["cls_token"])
        self.sep_token_id = self._token_id(self.special_tokens["sep_token"])
        self.pad_token_id = self._token_id(self.special_tokens["pad_token"])

        self.do_word_tokenize = bool(config.get("do_word_tokenize", True))
        if self.do_word_tokenize:
            mecab_kwargs = dict(config.get("mecab_kwargs") or {})
            unknown = set(mecab_kwargs) - {"mecab_dic", "mecab_option", "normalize_text"}
            if unknown:
                raise _Unsupported(f"mecab_kwargs {sorted(unknown)} are not understood")
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
        if not _is_bert_japanese_config(config):
            raise _Unsupported(f"tokenizer_class {config.get('tokenizer_class')!r} is not BertJapaneseTokenizer")
        if config.get("do_word_tokenize", True):
            word_type = config.get("word_tokenizer_type", "basic")
            if word_type != "mecab":
                raise _Unsupported(f"word_tokenizer_type {word_type!r} (only 'mecab' has a fast path)")
        if config.get("do_subword_tokenize", True):
            subword_type = config.get("subword_tokenizer_type", "wordpiece")
            if subword_type not in ("wordpiece", "character"):
                raise _Unsupported(f"subword_tokenizer_type {subword_type!r} (only 'wordpiece' and 'character')")
        if config.get("truncation_side", "right") not in ("right", "left"):
            raise _Unsupported(f"truncation_side {config.get('truncation_side')!r}")

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
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = 512
    ) -> list[EncodedText]:
        """[CLS] text [SEP] (text_pair [SEP]) ids, truncated longest-first to `max_length`; not padded."""
        _check_inputs(texts, text_pairs)
        if max_length is None:
            max_length = self.model_max_length
        if text_pairs is None:
            ids = self.tokenize_ids(texts)
            return [
                _build_encoding(row, None, max_length, self.cls_token_id, self.sep_token_id, self.truncation_side)
                for row in ids
            ]
        ids = self.tokenize_ids(list(texts) + list(text_pairs))
        first, second = ids[: len(texts)], ids[len(texts):]
        return [
            _build_encoding(a, b, max_length, self.cls_token_id, self.sep_token_id, self.truncation_side)
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
        self.model_max_length = int(config.get("model_max_length") or 0) or None
        if self.model_max_length and self.model_max_length > 10**9:
            self.model_max_length = None
        pad_token = _token_content(config.get("pad_token"))
        pad_id = self.tokenizer.token_to_id(pad_token) if pad_token else None
        self.pad_token_id = int(pad_id) if pad_id is not None else 0
        self._truncation_length: int | None = -1

    def encode_batch(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = 512
    ) -> list[EncodedText]:
        """Ids with special tokens from the tokenizer's post-processor, truncated longest-first; not padded."""
        _check_inputs(texts, text_pairs)
        if max_length is None:
            max_length = self.model_max_length
        if max_length != self._truncation_length:
            if max_length:
                self.tokenizer.enable_truncation(max_length, strategy="longest_first", direction=self.truncation_side)
            else:
                self.tokenizer.no_truncation()
            self._truncation_length = max_length
        inputs = list(texts) if text_pairs is None else list(zip(texts, text_pairs))
        encodings = self.tokenizer.encode_batch_fast(inputs, add_special_tokens=True)
        return [EncodedText(e.ids, e.type_ids, bool(e.overflowing)) for e in encodings]


# --------------------------------------------------------------------------- reference fallback


class ReferenceTokenizer:
    """transformers' own tokenizer behind the same interface (imports transformers when built)."""

    is_fast = False

    def __init__(self, directory: str | os.PathLike):
        """Load with `jbert.tokenizer.load_tokenizer` (same dictionary handling and errors as training)."""
        from .tokenizer import load_tokenizer

        self.directory = Path(directory)
        self.tokenizer = load_tokenizer(str(directory))
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model_max_length = self.tokenizer.model_max_length if self.tokenizer.model_max_length < 10**9 else None

    def encode_batch(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = 512
    ) -> list[EncodedText]:
        """Ids exactly as `tokenizer(texts, text_pairs, truncation=True, max_length=max_length)`; not padded."""
        _check_inputs(texts, text_pairs)
        if max_length is None:
            max_length = self.model_max_length
        tokenizer = self.tokenizer
        if not texts:
            return []
        truncation = bool(max_length)
        full = tokenizer(list(texts), list(text_pairs) if text_pairs is not None else None, truncation=False)
        if truncation:
            cut = tokenizer(list(texts), list(text_pairs) if text_pairs is not None else None,
                            truncation=True, max_length=max_length)
        else:
            cut = full
        result = []
        for row in range(len(texts)):
            ids = cut["input_ids"][row]
            token_type_ids = cut["token_type_ids"][row] if "token_type_ids" in cut else [0] * len(ids)
            result.append(EncodedText(list(ids), list(token_type_ids), len(ids) < len(full["input_ids"][row])))
        return result


# --------------------------------------------------------------------------- entry point


def load_serving_tokenizer(directory: str | os.PathLike, prefer_fast: bool = True):
    """The tokenizer serving uses for a model or export directory.

    BertJapaneseTokenizer directories (MeCab + WordPiece or character subwords) get the fast exact
    path; directories with a tokenizer.json get `tokenizers.Tokenizer`; anything else, or
    `prefer_fast=False`, gets transformers' reference tokenizer (a warning says why when the fast
    path was wanted). Every returned object has `.encode_batch(texts, text_pairs=None,
    max_length=512) -> list[EncodedText]`, `.pad_token_id` and `.is_fast`.
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
    if not prefer_fast:
        return ReferenceTokenizer(directory)
    config = read_tokenizer_config(directory)
    if _is_bert_japanese_config(config):
        if (directory / ADDED_TOKENS_FILE).is_file() and "added_tokens_decoder" not in config:
            # Newer saves repeat added_tokens.json inside added_tokens_decoder, which is what loads.
            reason = f"legacy {ADDED_TOKENS_FILE} without added_tokens_decoder"
        else:
            try:
                return FastBertJapaneseTokenizer(directory, config)
            except _Unsupported as unsupported:
                reason = str(unsupported)
    elif (directory / TOKENIZER_JSON_FILE).is_file():
        return FastJsonTokenizer(directory, config)
    else:
        reason = f"no {TOKENIZER_JSON_FILE} and tokenizer_class {config.get('tokenizer_class')!r} has no fast path here"
    warnings.warn(
        f"{directory}: {reason}; using transformers' reference tokenizer instead of the fast path "
        "(slower, and it needs the transformers package)",
        stacklevel=2,
    )
    return ReferenceTokenizer(directory)
