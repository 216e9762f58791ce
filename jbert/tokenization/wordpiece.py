"""Japanese WordPiece vocabularies built from scratch, saved as a regular BertJapaneseTokenizer.

MeCab words (the same splitter as the fast serving tokenizer, which reproduces
`BertJapaneseTokenizer` exactly), then WordPiece trained in Rust by the `tokenizers` library.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from jbert.core.errors import UserError
from jbert.tokenization.tokenizer_dir import VOCAB_FILE
from jbert.tokenization.mecab import MecabWordSplitter
from jbert.tokenization.pretrained import BERT_SPECIAL_TOKENS, CONTINUING_SUBWORD_PREFIX, bert_japanese_mecab_kwargs

logger = logging.getLogger(__name__)

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

    return save_bert_japanese_tokenizer(vocab, output_dir, mecab_kwargs, model_max_length)


def save_bert_japanese_tokenizer(vocab: list[str], output_dir: str | os.PathLike, mecab_kwargs: dict,
                                 model_max_length: int):
    """Write `vocab` as a MeCab + WordPiece BertJapaneseTokenizer directory (cased) and return the tokenizer."""
    from transformers import BertJapaneseTokenizer

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
