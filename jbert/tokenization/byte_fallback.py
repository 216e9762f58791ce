"""SentencePiece byte fallback kept when transformers converts a SentencePiece tokenizer to a fast one.

transformers' converters (XLM-R, DeBERTa-v2/v3, T5, ALBERT ...) drop a SentencePiece model's byte
fallback: every character outside the vocabulary becomes the unknown token in the fast tokenizer,
where the SentencePiece model itself gives its UTF-8 byte pieces, so ids differ on many Japanese
sentences (rare kanji, emoji). DeBERTa-v3 Japanese and other recent Unigram models are trained with
byte fallback. `exact_sentencepiece_tokenizer` rebuilds such a fast tokenizer with the fallback kept
(the Rust Unigram and BPE models support it). Imports transformers only when called on a tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "spm.model", "tokenizer.model")


def sentencepiece_file(directory: str | os.PathLike) -> Path | None:
    """The SentencePiece model file of a tokenizer directory, or None."""
    for name in SENTENCEPIECE_FILES:
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def _has_byte_fallback(model_file: Path) -> bool:
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    return bool(proto.trainer_spec.byte_fallback)


def _backend_drops_byte_fallback(tokenizer) -> bool:
    model = json.loads(tokenizer.backend_tokenizer.to_str()).get("model", {})
    return model.get("type") in ("Unigram", "BPE") and not model.get("byte_fallback")


def exact_sentencepiece_tokenizer(tokenizer):
    """`tokenizer` itself, or the same fast tokenizer rebuilt with its SentencePiece byte fallback kept.

    A fast tokenizer converted from a SentencePiece model trained with byte fallback loses it (see the
    module docstring); the rebuilt one gives the SentencePiece ids. Anything else comes back unchanged.
    """
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if not getattr(tokenizer, "is_fast", False) or not vocab_file or not Path(vocab_file).is_file() \
            or not str(vocab_file).endswith(".model"):
        return tokenizer
    try:
        if not _has_byte_fallback(Path(vocab_file)) or not _backend_drops_byte_fallback(tokenizer):
            return tokenizer
    except Exception:  # noqa: BLE001 - not a SentencePiece proto (a vocab.txt, vocab.json ...): nothing to fix
        return tokenizer
    from transformers.convert_slow_tokenizer import SLOW_TO_FAST_CONVERTERS

    slow_class = getattr(tokenizer, "slow_tokenizer_class", None)
    converter = SLOW_TO_FAST_CONVERTERS.get(slow_class.__name__) if slow_class is not None else None
    if converter is None:
        logger.warning("%s: SentencePiece byte fallback is lost in the fast tokenizer and no converter is known "
                       "to rebuild it; characters outside the vocabulary become the unknown token", vocab_file)
        return tokenizer

    class ByteFallbackConverter(converter):
        handle_byte_fallback = True

    try:
        slow = slow_class.from_pretrained(tokenizer.name_or_path, trust_remote_code=False)
        backend = ByteFallbackConverter(slow).converted()
        rebuilt = type(tokenizer).from_pretrained(tokenizer.name_or_path, tokenizer_object=backend,
                                                   trust_remote_code=False)
    except (ImportError, OSError, ValueError) as err:  # e.g. the sentencepiece package is not installed
        logger.warning("%s: SentencePiece byte fallback is lost in the fast tokenizer and could not be rebuilt (%s); "
                       "characters outside the vocabulary become the unknown token", vocab_file, err)
        return tokenizer
    # save_pretrained would write the Rust object into tokenizer_config.json (it cannot); the
    # tokenizer.json it writes from the backend is what keeps the byte fallback.
    rebuilt.init_kwargs.pop("tokenizer_object", None)
    # A warning, not info: these ids differ from what AutoTokenizer alone gives (they are the SentencePiece model's).
    logger.warning("%s: the fast tokenizer lacked the byte fallback of its SentencePiece model (%s); rebuilt with it, "
                   "so characters outside the vocabulary become byte pieces as in SentencePiece, not the unknown token",
                   tokenizer.name_or_path, Path(vocab_file).name)
    return rebuilt
