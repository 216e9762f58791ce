"""Random-weight encoders of each family jbert supports, with Unigram tokenizers trained here on Japanese text.

A helper module, not a benchmark (bench/*.py are the benchmarks): shared by tests/test_encoders*.py (tiny
sizes) and bench/encoders.py (the real models' shapes), which put bench/ on sys.path. Nothing
is downloaded. A family is a transformers config class, a sequence-classification class and the
special tokens / post-processor its hub tokenizers use, so a directory built here loads, trains,
exports and serves the way the hub model's directory would.

    build_pretrained_dir(path, "modernbert", texts, size="tiny")   # a directory for --model_name_or_path
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Family:
    """One architecture family: its config class, special tokens and how a pair is laid out."""

    name: str
    config_class: str
    model_class: str
    specials: dict  # role -> token; the order of SPECIAL_ROLES gives the ids
    pair_template: str  # "roberta": <s> A </s></s> B </s>; "bert": [CLS] A [SEP] B [SEP]
    model_input_names: tuple = ("input_ids", "attention_mask")
    pair_type_ids: bool = False  # does the tokenizer give the second text type id 1?
    shapes: dict = field(default_factory=dict)  # size name -> config keywords


BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
# fairseq's order (<s>=0, <pad>=1, </s>=2, <unk>=3): RoBERTa position ids start after padding_idx 1.
ROBERTA_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>",
                    "cls_token": "<s>", "sep_token": "</s>"}  # as xlm-roberta-base's tokenizer_config.json
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)

FAMILIES = {
    "modernbert": Family(
        "modernbert", "ModernBertConfig", "ModernBertForSequenceClassification",
        # sbintuitions/modernbert-ja: <s>/</s> pieces plus <cls>/<sep>, no token_type_ids
        {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "cls_token": "<cls>",
         "sep_token": "<sep>", "mask_token": "<mask>"},
        "bert",
        shapes={
            "tiny": dict(TINY, global_attn_every_n_layers=2, local_attention=16),
            # sbintuitions/modernbert-ja-130m
            "real": dict(vocab_size=102400, hidden_size=512, num_hidden_layers=19, num_attention_heads=8,
                         intermediate_size=2048, max_position_embeddings=8192, global_attn_every_n_layers=3,
                         local_attention=128),
        },
    ),
    "deberta-v2": Family(
        "deberta-v2", "DebertaV2Config", "DebertaV2ForSequenceClassification", BERT_SPECIALS, "bert",
        model_input_names=("input_ids", "token_type_ids", "attention_mask"), pair_type_ids=True,
        shapes={
            # DeBERTa-v3: relative attention, no absolute positions, no token type embeddings
            "tiny": dict(TINY, type_vocab_size=0, relative_attention=True, position_biased_input=False,
                         pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=32,
                         norm_rel_ebd="layer_norm", share_att_key=True),
            # ku-nlp/deberta-v3-base-japanese
            "real": dict(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, type_vocab_size=0,
                         relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
                         max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm",
                         share_att_key=True),
        },
    ),
    "xlm-roberta": Family(
        "xlm-roberta", "XLMRobertaConfig", "XLMRobertaForSequenceClassification", ROBERTA_SPECIALS, "roberta",
        shapes={
            "tiny": dict(TINY, type_vocab_size=1, max_position_embeddings=130),
            # FacebookAI/xlm-roberta-base (multilingual-e5-base has the same shape)
            "real": dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1),
        },
    ),
    "roberta": Family(
        "roberta", "RobertaConfig", "RobertaForSequenceClassification", ROBERTA_SPECIALS, "roberta",
        shapes={"tiny": dict(TINY, type_vocab_size=1, max_position_embeddings=130)},
    ),
    "electra": Family(
        "electra", "ElectraConfig", "ElectraForSequenceClassification", BERT_SPECIALS, "bert",
        model_input_names=("input_ids", "token_type_ids", "attention_mask"), pair_type_ids=True,
        shapes={"tiny": dict(TINY, embedding_size=32)},
    ),
    "bert": Family(
        "bert", "BertConfig", "BertForSequenceClassification", BERT_SPECIALS, "bert",
        model_input_names=("input_ids", "token_type_ids", "attention_mask"), pair_type_ids=True,
        shapes={
            "tiny": dict(TINY),
            # tohoku-nlp/bert-base-japanese-v3 (its MeCab + WordPiece tokenizer is bench/tokenizer.py's subject)
            "real": dict(vocab_size=32768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512),
        },
    ),
}


def train_unigram_tokenizer(family: Family, texts: Sequence[str], vocab_size: int = 800):
    """A `PreTrainedTokenizerFast` with a Unigram model trained on TEXTS and the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(family.specials.values()))
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      unk_token=family.specials["unk_token"], byte_fallback=False)
    tokenizer.train_from_iterator(texts, trainer)
    cls = family.specials.get("cls_token", family.specials.get("bos_token"))
    sep = family.specials.get("sep_token", family.specials.get("eos_token"))
    ids = {token: tokenizer.token_to_id(token) for token in (cls, sep)}
    if family.pair_template == "roberta":
        tokenizer.post_processor = processors.RobertaProcessing((sep, ids[sep]), (cls, ids[cls]), trim_offsets=False,
                                                                add_prefix_space=False)
    else:
        second = 1 if family.pair_type_ids else 0
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:{second} {sep}:{second}",
            special_tokens=[(cls, ids[cls]), (sep, ids[sep])],
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_input_names=list(family.model_input_names),
                                   **family.specials)


def build_config(family: Family, size: str, tokenizer, num_labels: int = 2, **overrides):
    """The family's config at SIZE ("tiny" or "real"), its special-token ids taken from TOKENIZER."""
    import transformers

    keywords = dict(family.shapes[size])
    keywords.setdefault("vocab_size", len(tokenizer))
    keywords["vocab_size"] = max(keywords["vocab_size"], len(tokenizer))
    keywords.update(overrides)
    for role in ("pad_token", "bos_token", "eos_token", "cls_token", "sep_token"):
        token = getattr(tokenizer, role, None)
        if token is not None:
            keywords.setdefault(f"{role}_id", tokenizer.convert_tokens_to_ids(token))
    return getattr(transformers, family.config_class)(num_labels=num_labels, **keywords)


def build_pretrained_dir(directory: Path, family_name: str, texts: Sequence[str], size: str = "tiny",
                         vocab_size: int = 800, seed: int = 0, **overrides) -> Path:
    """A "pretrained" directory (random weights, save_pretrained layout) a user would fine-tune from."""
    import torch
    import transformers

    family = FAMILIES[family_name]
    directory = Path(directory)
    tokenizer = train_unigram_tokenizer(family, texts, vocab_size)
    config = build_config(family, size, tokenizer, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, family.model_class)(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
