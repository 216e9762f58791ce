"""Model construction: a pretrained encoder with a fresh classification head, or a BERT from scratch;
and the run's tokenizer (the checkpoint's, or a WordPiece vocabulary trained for --from_scratch)."""

from __future__ import annotations

import logging
import os
from typing import Callable

from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from jbert.core.artifacts import atomic_directory
from jbert.core.errors import UserError

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


def _dropout_overrides(dropout: float | None) -> dict:
    if dropout is None:
        return {}
    return {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout, "classifier_dropout": dropout}


def build_scratch_model(size: str, vocab_size: int, pad_token_id: int, max_length: int,
                        label_names: list[str], problem_type: str, dropout: float | None = None):
    """A randomly initialised BERT classifier of a named size preset."""
    config = BertConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        max_position_embeddings=max(512, max_length),
        **SIZE_PRESETS[size],
        **label_config(label_names, problem_type),
        **_dropout_overrides(dropout),
    )
    return BertForSequenceClassification(config)


def load_pretrained_model(name_or_path: str, label_names: list[str], problem_type: str,
                          dropout: float | None = None, trust_remote_code: bool = False):
    """A pretrained encoder with a new classification head sized for our labels."""
    overrides = {**label_config(label_names, problem_type), **_dropout_overrides(dropout)}
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **overrides)
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
    """The pretrained tokenizer, or (--from_scratch) a WordPiece vocabulary trained on `vocabulary_texts()`.

    Shared by classification and masked-LM. `vocabulary_texts` is called only when a vocabulary is
    built (on the main process, once per run).
    """
    from jbert.tokenization import load_tokenizer, train_japanese_wordpiece

    if not config.from_scratch:
        with accelerator.main_process_first():
            return load_tokenizer(config.tokenizer_name or config.model_name_or_path, mecab_dic=config.mecab_dic,
                                  trust_remote_code=config.trust_remote_code)
    # Trained once by the main process into the checkpoint folder, so every rank and every resume
    # of this run uses the very same vocabulary.
    vocab_dir = config.checkpoint_dir / "tokenizer"
    with accelerator.main_process_first():
        # Published whole (temporary directory, then rename): a run killed between vocab.txt and the
        # tokenizer's other files left a directory that every later run, resumes included, failed to
        # load. tokenizer_config.json is written last, so a directory left that way is rebuilt.
        if accelerator.is_main_process and not (vocab_dir / "tokenizer_config.json").is_file():
            texts = vocabulary_texts()
            logger.info("training a %d-token WordPiece vocabulary on %d texts", config.vocab_size, len(texts))
            with atomic_directory(vocab_dir, overwrite=True) as work_dir:
                train_japanese_wordpiece(texts, config.vocab_size, work_dir, mecab_dic=config.mecab_dic or "unidic_lite",
                                         model_max_length=model_max_length)
        return load_tokenizer(str(vocab_dir), mecab_dic=config.mecab_dic)
