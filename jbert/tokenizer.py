"""Training-side tokenizers: load any Hugging Face tokenizer, and build Japanese WordPiece vocabularies.

`load_tokenizer` goes through `AutoTokenizer`, so any encoder's tokenizer loads by hub id or path.
For `BertJapaneseTokenizer` (the cl-tohoku models) it checks the MeCab dictionary up front and can
swap it (`mecab_dic`): cl-tohoku v2 models name `unidic_lite` (installed with jbert), v3 models
name the full `unidic`, which needs a separate download. Whatever dictionary is chosen is written
into the saved tokenizer_config.json, so serving starts MeCab exactly the same way.

`train_japanese_wordpiece` builds a vocabulary from scratch: MeCab words (same splitter as the
fast serving tokenizer, which reproduces `BertJapaneseTokenizer` exactly), then WordPiece trained
in Rust by the `tokenizers` library, saved as a regular `BertJapaneseTokenizer` directory.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Iterable

from .errors import UserError
from .fast_tokenizer import (
    MECAB_DICTIONARIES,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_JSON_FILE,
    VOCAB_FILE,
    MecabWordSplitter,
    create_mecab_tagger,
    is_named_mecab_dictionary,
    mecab_tagger_options,
    read_tokenizer_config,
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
    return tokenizer


def _required_alphabet(char_counts: dict[str, int]) -> list[str]:
    chars = sorted(char_counts, key=lambda ch: (-char_counts[ch], ch))
    return chars + [CONTINUING_SUBWORD_PREFIX + ch for ch in chars]


def train_japanese_wordpiece(
    texts: Iterable[str],
    vocab_size: int,
    output_dir: str | os.PathLike,
    mecab_dic: str = "unidic_lite",
    model_max_length: int = 512,
):
    """Build a Japanese WordPiece vocabulary from `texts` and save a BertJapaneseTokenizer in `output_dir`.

    Texts are split into words by MeCab exactly as BertJapaneseTokenizer will split them (NFKC,
    `mecab_dic`), then WordPiece is trained with the `tokenizers` library ("##" continuation, the
    five BERT special tokens first). Every character of the texts is kept in the vocabulary both as
    a word start and as a "##" continuation, so [UNK] only appears for characters never seen; when
    `vocab_size` is too small for that, the vocabulary grows to fit and a warning says so.
    Returns the saved tokenizer, reloadable with `AutoTokenizer.from_pretrained(output_dir)`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertJapaneseTokenizer

    if vocab_size < 1:
        raise UserError(f"vocab_size must be at least 1 (got {vocab_size})")
    mecab_kwargs = bert_japanese_mecab_kwargs(mecab_dic)
    splitter = MecabWordSplitter(mecab_dic=mecab_kwargs["mecab_dic"], mecab_option=mecab_kwargs.get("mecab_option"))

    char_counts: dict[str, int] = {}
    word_lines: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise UserError(f"train_japanese_wordpiece needs texts (str), got {type(text).__name__}")
        # MeCab words split again on whitespace, as BertJapaneseTokenizer does before WordPiece.
        pieces = splitter.split_pieces(text)
        if not pieces:
            continue
        for piece in pieces:
            for ch in piece:
                char_counts[ch] = char_counts.get(ch, 0) + 1
        word_lines.append(" ".join(pieces))
    if not word_lines:
        raise UserError("cannot build a vocabulary: the training texts contain no words (all empty?)")

    required = list(BERT_SPECIAL_TOKENS) + _required_alphabet(char_counts)
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX))
    wordpiece.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordPieceTrainer(
        vocab_size=max(vocab_size, len(BERT_SPECIAL_TOKENS) + 1),
        min_frequency=2,
        # The "##" form of every character is registered up front, in a fixed order: the trainer
        # would otherwise number them in hash-map order, which breaks ties between equally
        # frequent merges differently from run to run (a different vocabulary for the same seed).
        special_tokens=list(BERT_SPECIAL_TOKENS) + [CONTINUING_SUBWORD_PREFIX + ch for ch in sorted(char_counts)],
        initial_alphabet=sorted(char_counts),
        continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX,
        show_progress=False,
    )
    wordpiece.train_from_iterator(word_lines, trainer=trainer, length=len(word_lines))
    learned = [token for token, _ in sorted(wordpiece.get_vocab().items(), key=lambda item: item[1])]

    # Keep the specials and the full alphabet; fill the rest with learned pieces in the order the
    # trainer found them (most useful merges first), dropping the last ones if over budget.
    required_set = set(required)
    room = max(vocab_size - len(required), 0)
    extra = [token for token in learned if token not in required_set][:room]
    vocab = list(BERT_SPECIAL_TOKENS) + [t for t in required if t not in BERT_SPECIAL_TOKENS] + extra
    if len(vocab) > vocab_size:
        logger.warning(
            "vocabulary has %d entries, more than vocab_size=%d: the %d distinct characters of the training "
            "texts are all kept (as word starts and ## continuations) so that [UNK] stays rare",
            len(vocab), vocab_size, len(char_counts),
        )

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = output_dir / VOCAB_FILE
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertJapaneseTokenizer(
        vocab_file=str(vocab_file),
        do_lower_case=False,
        word_tokenizer_type="mecab",
        subword_tokenizer_type="wordpiece",
        mecab_kwargs=mecab_kwargs,
        model_max_length=model_max_length,
    )
    tokenizer.save_pretrained(str(output_dir))
    return tokenizer


__all__ = ["MECAB_DICTIONARIES", "bert_japanese_mecab_kwargs", "load_tokenizer", "train_japanese_wordpiece"]
