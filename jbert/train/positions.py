"""How many tokens a model's position table holds: the bound on --max_length at training and export time.

`max_position_embeddings` is the answer for most encoders. RoBERTa-style models (RoBERTa,
XLM-RoBERTa, CamemBERT ...) number positions from `pad_token_id + 1`, so 514 rows hold 512 tokens:
a --max_length of 514 would pass a naive check and fail with an index error inside the model.
"""

from __future__ import annotations

from typing import Optional

# Model types whose position ids start after the padding index (transformers' create_position_ids_from_input_ids).
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "ibert", "roberta-prelayernorm")


def position_limit(config) -> Optional[int]:
    """The longest sequence the model's positions allow, or None when its config names no limit."""
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

    Two limits: the tokenizer's model_max_length (when it states one) and the model's position
    table, which a tokenizer trained or saved without model_max_length does not state.
    """
    from jbert.core.errors import UserError
    from jbert.tokenization.tokenizer_dir import known_length_limit

    if not config.model_name_or_path:
        return
    model_limit = known_length_limit(getattr(tokenizer, "model_max_length", None))
    if model_limit and max_length > model_limit:
        raise UserError(f"--max_length {max_length} exceeds the model's maximum of {model_limit} tokens")
    limit = pretrained_position_limit(config.model_name_or_path, config.trust_remote_code)
    problem = max_length_problem(max_length, limit, config.model_name_or_path)
    if problem:
        raise UserError(problem)
