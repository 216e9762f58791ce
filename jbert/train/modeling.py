"""Model construction: a pretrained encoder with a fresh classification head, or a BERT from scratch;
and the run's tokenizer (the checkpoint's, or a WordPiece vocabulary trained for --from_scratch)."""

from __future__ import annotations

import logging
import os
from typing import Callable

from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from jbert.core.artifacts import atomic_directory
from jbert.core.errors import UserError
from jbert.train.positions import check_pretrained_length

logger = logging.getLogger("jbert")

# Shapes follow Google's BERT miniatures (Turc et al. 2019); "base" is BERT-base.
SIZE_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def label_config(label_names: list[str], problem_type: str) -> dict:
    """Config fields that make every later stage print real label names."""
    if problem_type == "regression":
        return {"num_labels": 1, "problem_type": problem_type, "id2label": {0: "score"}, "label2id": {"score": 0}}
    return {
        "num_labels": len(label_names),
        "problem_type": problem_type,
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


# Every dropout rate name of transformers' encoder configs: BERT's (also RoBERTa, XLM-R, ELECTRA and
# DeBERTa), ModernBERT's attention/embedding/mlp, DeBERTa's pooler and cls, DistilBERT's dropout and
# seq_classif_dropout. --dropout sets each one a config has: a ModernBERT checkpoint would otherwise
# keep its own rates, and names a family lacks would be written into its config.json for nothing.
DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "attention_dropout",
                  "embedding_dropout", "mlp_dropout", "pooler_dropout", "cls_dropout", "dropout", "seq_classif_dropout")
HEAD_DROPOUT_FIELDS = ("classifier_dropout", "pooler_dropout", "cls_dropout", "seq_classif_dropout")


def set_dropout(config, dropout: float | None, head: bool = True) -> None:
    """Set --dropout on every DROPOUT_FIELDS rate `config` has (nothing when dropout is None).

    head=False leaves the classification head's rates alone (a masked-LM model has no such head,
    and a later fine-tune from it should start from the checkpoint's own)."""
    if dropout is None:
        return
    for name in DROPOUT_FIELDS:
        if hasattr(config, name) and (head or name not in HEAD_DROPOUT_FIELDS):
            setattr(config, name, dropout)


# --from_scratch --architecture: the position limit each starts with. BERT's grows to --max_length
# (as before); ModernBERT is built for 8,192 tokens (RoPE, alternating local/global attention), and
# DeBERTa-v2's relative attention has no absolute positions to run out of.
SCRATCH_POSITIONS = {"bert": 512, "modernbert": 8192, "deberta-v2": 512}
ARCHITECTURES = tuple(SCRATCH_POSITIONS)
ARCHITECTURE_NAMES = {"bert": "BERT", "modernbert": "ModernBERT", "deberta-v2": "DeBERTa-v2"}  # as model cards write them


def scratch_model_config(architecture: str, size: str, vocab_size: int, special_ids: dict, max_length: int,
                         dropout: float | None = None, **extra):
    """The transformers config of a randomly initialised encoder of `architecture` ("bert", "modernbert", "deberta-v2").

    `special_ids` has pad_token_id, and for ModernBERT cls_token_id and sep_token_id (its
    config names them). A ModernBERT asked for more than its 8,192 positions is a UserError.
    """
    from transformers import DebertaV2Config, ModernBertConfig

    shape = SIZE_PRESETS[size]
    if architecture == "bert":
        config = BertConfig(vocab_size=vocab_size, pad_token_id=special_ids["pad_token_id"],
                            max_position_embeddings=max(SCRATCH_POSITIONS["bert"], max_length), **shape, **extra)
    elif architecture == "modernbert":
        if max_length > SCRATCH_POSITIONS["modernbert"]:
            raise UserError(f"--max_length {max_length} is beyond ModernBERT's {SCRATCH_POSITIONS['modernbert']} "
                            "positions; give --max_length 8192 or less")
        config = ModernBertConfig(
            vocab_size=vocab_size, hidden_size=shape["hidden_size"], num_hidden_layers=shape["num_hidden_layers"],
            num_attention_heads=shape["num_attention_heads"], intermediate_size=shape["intermediate_size"],
            max_position_embeddings=SCRATCH_POSITIONS["modernbert"], pad_token_id=special_ids["pad_token_id"],
            cls_token_id=special_ids["cls_token_id"], sep_token_id=special_ids["sep_token_id"],
            bos_token_id=special_ids["cls_token_id"], eos_token_id=special_ids["sep_token_id"],
            # torch.compile of the reference code is for GPUs; a CPU run would compile for minutes
            reference_compile=False, **extra,
        )
    elif architecture == "deberta-v2":
        # DeBERTa-v3's shape: relative positions only, no token types, shared attention keys
        config = DebertaV2Config(
            vocab_size=vocab_size, pad_token_id=special_ids["pad_token_id"], **shape,
            max_position_embeddings=SCRATCH_POSITIONS["deberta-v2"], relative_attention=True, position_buckets=256,
            norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
            position_biased_input=False, max_relative_positions=-1, type_vocab_size=0, **extra,
        )
    else:
        raise UserError(f"--architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    set_dropout(config, dropout)
    return config


def build_scratch_model(size: str, vocab_size: int, pad_token_id: int, max_length: int,
                        label_names: list[str], problem_type: str, dropout: float | None = None,
                        architecture: str = "bert", tokenizer=None):
    """A randomly initialised classifier of a named size preset and `architecture` (BERT by default).

    `tokenizer` gives ModernBERT its [CLS]/[SEP] ids (BERT and DeBERTa-v2 need only `pad_token_id`).
    """
    special_ids = {"pad_token_id": pad_token_id,
                   "cls_token_id": getattr(tokenizer, "cls_token_id", None), "sep_token_id": getattr(tokenizer, "sep_token_id", None)}
    model_config = scratch_model_config(architecture, size, vocab_size, special_ids, max_length, dropout,
                                        **label_config(label_names, problem_type))
    if architecture == "bert":
        return BertForSequenceClassification(model_config)
    return AutoModelForSequenceClassification.from_config(model_config)


def load_pretrained_model(name_or_path: str, label_names: list[str], problem_type: str,
                          dropout: float | None = None, trust_remote_code: bool = False):
    """A pretrained encoder with a new classification head sized for our labels."""
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code,
                                            **label_config(label_names, problem_type))
        set_dropout(config, dropout)
        # A checkpoint that already has a head of another size gets a fresh one instead of a crash.
        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as err:
        hint = (
            "it is not a local directory, and with HF_HUB_OFFLINE=1 or no network it cannot be downloaded"
            if not os.path.isdir(name_or_path)
            else "the directory does not hold a transformers model (config.json + weights)"
        )
        raise UserError(f"cannot load model {name_or_path!r}: {hint}. Details: {err}") from None


def load_run_tokenizer(config, accelerator, vocabulary_texts: Callable[[], list[str]],
                       model_max_length: int):
    """The pretrained tokenizer, or (--from_scratch) a vocabulary trained on `vocabulary_texts()`.

    Shared by classification and masked-LM. `vocabulary_texts` is called only when a vocabulary is
    built (on the main process, once per run): MeCab + WordPiece, or Unigram (--vocabulary unigram).
    """
    from jbert.tokenization import load_tokenizer, train_japanese_wordpiece
    from jbert.tokenization.unigram import train_japanese_unigram

    if not config.from_scratch:
        with accelerator.main_process_first():
            tokenizer = load_tokenizer(config.tokenizer_name or config.model_name_or_path, mecab_dic=config.mecab_dic,
                                       trust_remote_code=config.trust_remote_code)
            check_pretrained_length(config, tokenizer, config.max_length)
            return tokenizer
    vocabulary = getattr(config, "vocabulary", "mecab-wordpiece")
    architecture = getattr(config, "architecture", "bert")
    if architecture == "modernbert":
        model_max_length = max(model_max_length, SCRATCH_POSITIONS["modernbert"])
    # Trained once by the main process into the checkpoint folder, so every rank and every resume
    # of this run uses the very same vocabulary.
    vocab_dir = config.checkpoint_dir / "tokenizer"
    with accelerator.main_process_first():
        # Published whole (temporary directory, then rename): a run killed between vocab.txt and the
        # tokenizer's other files left a directory that every later run, resumes included, failed to
        # load. tokenizer_config.json is written last, so a directory left that way is rebuilt.
        if accelerator.is_main_process and not (vocab_dir / "tokenizer_config.json").is_file():
            texts = vocabulary_texts()
            logger.info("training a %d-token %s vocabulary on %d texts", config.vocab_size, vocabulary, len(texts))
            with atomic_directory(vocab_dir, overwrite=True) as work_dir:
                if vocabulary == "unigram":
                    # ModernBERT and DeBERTa-v3 take no token types: the tokenizer does not hand them on
                    inputs = ("input_ids", "token_type_ids", "attention_mask") if architecture == "bert" \
                        else ("input_ids", "attention_mask")
                    train_japanese_unigram(texts, config.vocab_size, work_dir, model_max_length=model_max_length,
                                           model_input_names=inputs)
                else:
                    train_japanese_wordpiece(texts, config.vocab_size, work_dir,
                                             mecab_dic=config.mecab_dic or "unidic_lite",
                                             model_max_length=model_max_length)
        return load_tokenizer(str(vocab_dir), mecab_dic=config.mecab_dic if vocabulary != "unigram" else None)
