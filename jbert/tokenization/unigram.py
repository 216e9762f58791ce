"""Unigram (SentencePiece-style) vocabularies built from scratch with the `tokenizers` library.

The alternative to MeCab + WordPiece for `--from_scratch --vocabulary unigram`: no word splitter,
the text is cut only at spaces (Metaspace, as SentencePiece does) and a Unigram language model
chooses the pieces, so the vocabulary learns Japanese words and morphemes from the data itself.
The result is a tokenizer.json (with BERT's five special tokens and [CLS] ... [SEP] templates) in
a directory `AutoTokenizer` loads as `PreTrainedTokenizerFast`; serving runs the very same
tokenizer.json through `FastJsonTokenizer`, so training and serving ids are the same by construction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from jbert.core.errors import UserError
from jbert.tokenization.pretrained import BERT_SPECIAL_TOKENS

# A character seen fewer times than this is left to [UNK] rather than given a vocabulary entry of its own.
MAX_PIECE_LENGTH = 16


def train_japanese_unigram(
    texts: Iterable[str],
    vocab_size: int,
    output_dir: str | os.PathLike,
    model_max_length: int = 512,
    model_input_names: Sequence[str] = ("input_ids", "token_type_ids", "attention_mask"),
):
    """Train a Unigram vocabulary on `texts` and save it as a fast tokenizer in `output_dir`; return the tokenizer.

    Special tokens are BERT's ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4), single texts become
    `[CLS] text [SEP]` and pairs `[CLS] a [SEP] b [SEP]` (type ids 0 then 1). Every character of the
    texts is in the initial alphabet, so [UNK] only appears for characters never seen.
    `model_input_names` are the inputs the model takes (drop "token_type_ids" for ModernBERT).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(BERT_SPECIAL_TOKENS) + 1:
        raise UserError(f"vocab_size must be at least {len(BERT_SPECIAL_TOKENS) + 1} (got {vocab_size})")
    lines = []
    alphabet: set[str] = set()
    for text in texts:
        if not isinstance(text, str):
            raise UserError(f"train_japanese_unigram needs texts (str), got {type(text).__name__}")
        if text.strip():
            lines.append(text)
            alphabet.update(text)
    if not lines:
        raise UserError("cannot build a vocabulary: the training texts are all empty")
    alphabet.discard(" ")
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=max(vocab_size, len(BERT_SPECIAL_TOKENS) + len(alphabet) + 1),
        special_tokens=list(BERT_SPECIAL_TOKENS),
        unk_token="[UNK]",
        initial_alphabet=sorted(alphabet),
        max_piece_length=MAX_PIECE_LENGTH,
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    ids = {token: tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]")}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=list(ids.items()),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=model_max_length, model_input_names=list(model_input_names),
    )
    fast.init_kwargs.pop("tokenizer_object", None)  # a Rust object: tokenizer_config.json cannot hold it
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(output_dir))
    return fast
