"""How many tokens a model's position table holds: the bound on --max_length at training and export time.

`max_position_embeddings` is the answer for most encoders. RoBERTa-style models (RoBERTa,
XLM-RoBERTa, CamemBERT ...) number positions from `pad_token_id + 1`, so 514 rows hold 512 tokens:
a --max_length of 514 would pass a naive check and fail with an index error inside the model.
"""

from __future__ import annotations

from typing import Optional

# Model types whose position ids start after the padding index (transformers' create_position_ids_from_input_ids).
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "ibert",
                        "roberta-prelayernorm", "luke")


def position_limit(config) -> Optional[int]:
    """The longest sequence the model's positions allow, or None when its config names no limit.

    DeBERTa-v2/v3 without absolute positions (`position_biased_input` false) has none: its relative
    attention has no table to run out of.
    """
    if getattr(config, "model_type", None) == "deberta-v2" and not getattr(config, "position_biased_input", True):
        return None
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "model_type", None) in PADDING_OFFSET_TYPES:
        positions -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def pretrained_position_limit(name_or_path: str, trust_remote_code: bool = False) -> Optional[int]:
    """`position_limit` of a checkpoint's config; None when the config cannot be read here (loading it later says why)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError):
        return None
    return position_limit(config)


def max_length_problem(max_length: int, limit: Optional[int], model: str, flag: str = "--max_length") -> Optional[str]:
    """The message for a max_length beyond the model's positions, or None when it fits."""
    if limit is None or max_length <= limit:
        return None
    return (f"{flag} {max_length} exceeds the {limit} positions of {model} (its config.json, max_position_embeddings); "
            f"use {flag} {limit} or less")


def check_pretrained_length(config, tokenizer, max_length: int) -> None:
    """UserError before any data is tokenized when --max_length exceeds what --model_name_or_path takes.

    The model's position table bounds --max_length. A tokenizer may state less than its model takes
    (ModernBERT-ja's 8,192 positions): its `model_max_length` is then raised to the positions when
    --max_length needs it. Where the model's config cannot be read here, the tokenizer's
    model_max_length (when it states one) is the bound. Called once, where the run's tokenizer is
    loaded (jbert.train.modeling.load_run_tokenizer), for every task.
    """
    import logging

    from jbert.core.errors import UserError
    from jbert.tokenization.tokenizer_dir import known_length_limit

    if not config.model_name_or_path:
        return
    positions = pretrained_position_limit(config.model_name_or_path, config.trust_remote_code)
    problem = max_length_problem(max_length, positions, config.model_name_or_path)
    if problem:
        raise UserError(problem)
    tokenizer_limit = known_length_limit(getattr(tokenizer, "model_max_length", None))
    if tokenizer_limit and max_length > tokenizer_limit:
        if positions is None:
            raise UserError(f"--max_length {max_length} exceeds the model's maximum of {tokenizer_limit} tokens")
        logging.getLogger("jbert").info("tokenizer model_max_length %d raised to %d, the positions of %s",
                                        tokenizer_limit, positions, config.model_name_or_path)
        tokenizer.model_max_length = positions
