"""Tokenisation: text (already normalised by `jbert.core.normalize`) -> token ids, one way everywhere.

Takes a tokenizer directory (a hub id or path at training time; the copy inside a model or export
directory afterwards) and hands on `EncodedText` ids. Training loads tokenizers through
transformers (`pretrained`) or builds a Japanese WordPiece vocabulary (`wordpiece`); serving uses
the torch-free fast path (`fast`), which reproduces `BertJapaneseTokenizer` ids exactly, and falls
back to transformers only for tokenizers it cannot reproduce (`loading`). Both sides start MeCab
through `mecab`, so a model never sees other words at serving time than in training.

    tokenizer_dir  a tokenizer directory's file names, vocab.txt, tokenizer_config.json, length limits
    encoded        EncodedText and the rules every tokenizer shares to make it (special tokens, truncation)
    mecab          MeCab dictionaries, tagger options, word splitting
    fast           FastBertJapaneseTokenizer, FastJsonTokenizer (no torch, no transformers)
    pretrained     load_tokenizer (transformers), ReferenceTokenizer
    wordpiece      train_japanese_wordpiece
    loading        load_serving_tokenizer: the fast path or the reference fallback
    byte_fallback  SentencePiece byte fallback kept when transformers converts a tokenizer to a fast one
    sentencepiece_json  tokenizer.json for SentencePiece-only directories, proven equal first (a CLI)
    jumanpp        Juman++ tokenizers found, and refused with an install hint where Juman++ is missing
    unigram        train_japanese_unigram: a Unigram vocabulary (tokenizer.json) for --from_scratch

Nothing here imports torch; transformers is imported only when a training-side tokenizer is built.
"""

from jbert.tokenization.fast import FastBertJapaneseTokenizer, FastJsonTokenizer
from jbert.tokenization.encoded import EncodedText
from jbert.tokenization.tokenizer_dir import read_tokenizer_config
from jbert.tokenization.loading import load_serving_tokenizer
from jbert.tokenization.mecab import MECAB_DICTIONARIES, MecabWordSplitter, create_mecab_tagger, mecab_tagger_options
from jbert.tokenization.pretrained import ReferenceTokenizer, bert_japanese_mecab_kwargs, load_tokenizer
from jbert.tokenization.wordpiece import train_japanese_wordpiece

__all__ = [
    "EncodedText",
    "FastBertJapaneseTokenizer",
    "FastJsonTokenizer",
    "MECAB_DICTIONARIES",
    "MecabWordSplitter",
    "ReferenceTokenizer",
    "bert_japanese_mecab_kwargs",
    "create_mecab_tagger",
    "load_serving_tokenizer",
    "load_tokenizer",
    "mecab_tagger_options",
    "read_tokenizer_config",
    "train_japanese_wordpiece",
]
