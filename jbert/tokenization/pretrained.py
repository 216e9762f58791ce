"""Training-side tokenizers through transformers: `load_tokenizer` and the `ReferenceTokenizer` fallback.

`load_tokenizer` goes through `AutoTokenizer`, so any encoder's tokenizer loads by hub id or path.
For `BertJapaneseTokenizer` (the cl-tohoku models) it checks the MeCab dictionary up front and can
swap it (`mecab_dic`): cl-tohoku v2 models name `unidic_lite` (installed with jbert), v3 models
name the full `unidic`, which needs a separate download. Whatever dictionary is chosen is written
into the saved tokenizer_config.json, so serving starts MeCab exactly the same way.

`ReferenceTokenizer` puts the loaded tokenizer behind the serving interface (`encode_batch`), for
the tokenizers the fast path does not reproduce and for the parity checks of export.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from pathlib import Path
from typing import Sequence

from jbert.core.errors import UserError
from jbert.tokenization.encoded import EncodedText, check_inputs, resolve_truncation_side
from jbert.tokenization.tokenizer_dir import (
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_JSON_FILE,
    VOCAB_FILE,
    known_length_limit,
    read_tokenizer_config,
)
from jbert.tokenization.jumanpp import require_jumanpp
from jbert.tokenization.byte_fallback import exact_sentencepiece_tokenizer
from jbert.tokenization.mecab import (
    create_mecab_tagger,
    is_named_mecab_dictionary,
    mecab_tagger_options,
)

logger = logging.getLogger(__name__)

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUING_SUBWORD_PREFIX = "##"
# Any of these makes a directory loadable by AutoTokenizer.
_TOKENIZER_FILES = (
    TOKENIZER_CONFIG_FILE, TOKENIZER_JSON_FILE, VOCAB_FILE, "spiece.model", "sentencepiece.bpe.model",
    "vocab.json", "tokenizer.model",
)


def _looks_like_local_path(name_or_path: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else (./x, /x, ~/x, a/b/c) is meant as a path.
    return (
        os.path.exists(name_or_path)
        or name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1
        or os.sep != "/" and os.sep in name_or_path
    )


def bert_japanese_mecab_kwargs(mecab_dic: str, base: dict | None = None) -> dict:
    """`mecab_kwargs` of a BertJapaneseTokenizer that uses `mecab_dic` (a name or a dictionary directory).

    transformers' MecabTokenizer accepts only names; a directory becomes `mecab_dic: None` plus
    `mecab_option: -d DIR -r RC`, which both transformers and jbert's fast tokenizer understand.
    Raises UserError when the dictionary is missing, saying how to install it.
    """
    kwargs = dict(base or {})
    if is_named_mecab_dictionary(mecab_dic):
        mecab_tagger_options(mecab_dic)  # fail now, with the install hint, rather than deep in transformers
        kwargs["mecab_dic"] = mecab_dic
        return kwargs
    kwargs["mecab_dic"] = None
    kwargs["mecab_option"] = mecab_tagger_options(str(Path(os.path.expanduser(mecab_dic)).resolve()), kwargs.get("mecab_option")).strip()
    return kwargs


def _without_dictionary_option(mecab_kwargs: dict) -> dict:
    """mecab_kwargs minus a `mecab_option` that selects a dictionary (-d), which a new dictionary replaces."""
    kwargs = dict(mecab_kwargs)
    option = kwargs.get("mecab_option") or ""
    try:
        words = shlex.split(option)
    except ValueError:
        words = option.split()
    if any(word == "-d" or word.startswith(("-d", "--dicdir")) for word in words):
        kwargs.pop("mecab_option")
    return kwargs


def _read_remote_tokenizer_config(name: str) -> dict:
    from transformers.models.auto.tokenization_auto import get_tokenizer_config

    try:
        return get_tokenizer_config(name) or {}
    except OSError as err:
        raise UserError(_not_loadable_message(name, err)) from None


def _not_loadable_message(name: str, err: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    hint = (
        "HF_HUB_OFFLINE=1 is set, so only models already in the local cache load; download it on a connected "
        "machine (huggingface-cli download NAME) or pass a local directory"
        if offline else "check the model id and the network, or pass a local directory"
    )
    if "/" in name and not os.path.exists(name):
        hint += f"; there is no local directory {name} either"
    return f"cannot load the tokenizer of {name!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__} ({hint})"


def load_tokenizer(name_or_path: str, mecab_dic: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer by hub id or local directory through `AutoTokenizer`.

    For `BertJapaneseTokenizer` the MeCab dictionary is checked before loading: `mecab_dic`
    ("unidic_lite", "unidic", "ipadic", or a compiled dictionary directory) replaces the one named
    in tokenizer_config.json. A missing dictionary, a path that does not exist, or a directory without
    tokenizer files is a UserError saying how to fix it.
    """
    from transformers import AutoTokenizer

    name_or_path = str(name_or_path)
    local = _looks_like_local_path(name_or_path)
    if local:
        directory = Path(os.path.expanduser(name_or_path))
        if not directory.exists():
            raise UserError(f"model/tokenizer path {name_or_path} does not exist; check the path or give a hub id")
        if not directory.is_dir():
            raise UserError(f"model/tokenizer path {name_or_path} is a file; give the directory that holds the tokenizer")
        if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
            raise UserError(
                f"{name_or_path} has no tokenizer files (expected one of {', '.join(_TOKENIZER_FILES[:3])} ...); "
                "point to a directory written by save_pretrained, or pass --tokenizer_name"
            )
        config = read_tokenizer_config(directory)
        name_or_path = str(directory)
    else:
        config = _read_remote_tokenizer_config(name_or_path)

    require_jumanpp(config, name_or_path)
    overrides: dict = {}
    # Only BertJapaneseTokenizer has word_tokenizer_type (tokenizer_class may live in config.json).
    if config.get("word_tokenizer_type") == "mecab":
        mecab_kwargs = dict(config.get("mecab_kwargs") or {})
        configured = mecab_kwargs.get("mecab_dic", "unidic_lite")
        if mecab_dic is not None:
            mecab_kwargs = overrides["mecab_kwargs"] = bert_japanese_mecab_kwargs(
                mecab_dic, _without_dictionary_option(mecab_kwargs)
            )
        elif configured is not None and not is_named_mecab_dictionary(configured):
            # A path written into mecab_dic (transformers itself rejects that): translate it.
            mecab_kwargs = overrides["mecab_kwargs"] = bert_japanese_mecab_kwargs(configured, mecab_kwargs)
        # Start MeCab once here: a missing dictionary or bad option becomes a UserError saying how
        # to fix it, instead of an ImportError/RuntimeError from deep inside transformers.
        create_mecab_tagger(mecab_kwargs.get("mecab_dic", "unidic_lite"), mecab_kwargs.get("mecab_option"))
    elif mecab_dic is not None:
        logger.warning(
            "--mecab_dic %s ignored: the tokenizer of %s (%s) does not use MeCab",
            mecab_dic, name_or_path, config.get("tokenizer_class", "unknown class"),
        )
    from transformers import PreTrainedTokenizerBase

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **overrides)
    except OSError as err:
        raise UserError(_not_loadable_message(name_or_path, err)) from None
    except (ModuleNotFoundError, ImportError) as err:
        raise UserError(f"the tokenizer of {name_or_path} needs a package that is not installed: {err}") from None
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        # transformers 4.57 returns a bare bool instead of raising when MeCab rejects its options
        # (e.g. mecab_option "-d DIR" naming a dictionary directory that does not exist); every
        # caller would otherwise fail later with an AttributeError far from the cause.
        mecab_kwargs = overrides.get("mecab_kwargs", config.get("mecab_kwargs"))
        where = f"{name_or_path}/{TOKENIZER_CONFIG_FILE}" if local else f"the tokenizer_config.json of {name_or_path}"
        raise UserError(
            f"cannot load the tokenizer of {name_or_path}: transformers returned {type(tokenizer).__name__} "
            f"({tokenizer!r}) instead of a tokenizer. {where} has mecab_kwargs {mecab_kwargs}: check that the "
            "MeCab dictionary it names exists and its mecab_option is valid, or pass --mecab_dic unidic_lite "
            "(or another installed dictionary)"
        )
    # transformers' converters drop a SentencePiece model's byte fallback: rebuilt so the ids (and the
    # tokenizer.json saved with the model) are those of the SentencePiece model.
    return exact_sentencepiece_tokenizer(tokenizer)


# --------------------------------------------------------------------------- reference fallback


class ReferenceTokenizer:
    """transformers' own tokenizer behind the same interface (imports transformers when built)."""

    is_fast = False

    def __init__(self, directory: str | os.PathLike):
        """Load with `load_tokenizer` (same dictionary handling and errors as training)."""
        self.directory = Path(directory)
        self.tokenizer = load_tokenizer(str(directory))
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model_max_length = known_length_limit(self.tokenizer.model_max_length)
        self.truncation_side = self.tokenizer.truncation_side  # the side it was saved with (training's)
        self._call_lock = threading.Lock()

    def encode_batch(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = 512,
        truncation_side: str | None = None,
    ) -> list[EncodedText]:
        """Ids exactly as `tokenizer(texts, text_pairs, truncation=True, max_length=max_length)`; not padded.

        `truncation_side` ("left"/"right") overrides the tokenizer's own side for this call only;
        None keeps it. Safe to call from several threads at once, with different sides.
        """
        check_inputs(texts, text_pairs)
        side = resolve_truncation_side(truncation_side, self.truncation_side)
        if max_length is None:
            max_length = self.model_max_length
        if not texts:
            return []
        pairs = list(text_pairs) if text_pairs is not None else None
        # transformers takes the side only from the tokenizer's `truncation_side` attribute, and a fast
        # (Rust-backed) one also re-sets its backend's truncation on every call, so the (set side, full,
        # cut) calls run under one lock: otherwise concurrent calls would cut with each other's side
        # and length. This is the fallback path, slower anyway; the fast tokenizers need no lock.
        with self._call_lock:
            tokenizer = self.tokenizer
            tokenizer.truncation_side = side
            try:
                full = tokenizer(list(texts), pairs, truncation=False)
                cut = tokenizer(list(texts), pairs, truncation=True, max_length=max_length) if max_length else full
            finally:
                tokenizer.truncation_side = self.truncation_side
        result = []
        for row in range(len(texts)):
            ids = cut["input_ids"][row]
            token_type_ids = cut["token_type_ids"][row] if "token_type_ids" in cut else [0] * len(ids)
            result.append(EncodedText(list(ids), list(token_type_ids), len(ids) < len(full["input_ids"][row])))
        return result
