"""The routes that speak text-embeddings-inference (TEI) and the Hugging Face Inference API: bodies and answers.

    POST /predict  TEI's body: {"inputs": "text" | ["text", "pair"] | [["text"], ["text", "pair"], ...],
                   "truncate": bool?, "truncation_direction": "Right" | "Left"?, "raw_scores": bool?}
                   -> for one input a list of {"label", "score"} (every label, best first); for a batch,
                   one such list per input
    POST /         the Inference API's body, as huggingface_hub.InferenceClient(url).text_classification
                   sends it: {"inputs": "text" | ["text", ...], "parameters": {"top_k": int?,
                   "function_to_apply": "softmax" | "sigmoid" | "none"?}} -> one list per input, always
                   nested ([[...]] for one text); a pair model takes {"text": ..., "text_pair": ...}

Statuses as TEI documents them: 400 body not JSON, 413 too many inputs or too large a body, 422
a body outside the schema or a text that cannot be tokenized (too long with truncate false), 424
the model failed, 429 the queue is full (Retry-After), 503 draining. "truncation_direction" picks
the side a long text is cut on per request ("Left" keeps its end, "Right" its beginning); left out,
the model's own side applies (the one its tokenizer was saved with, so what it saw in training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jbert.core.postprocessing import sigmoid, softmax
from jbert.serve.http.request import (ClientError, ServeLimits, body_fields, checked_text, is_text_pair, json_type,
                                      parse_body_json)

TEI_FIELDS = ("inputs", "truncate", "truncation_direction", "raw_scores")
API_FIELDS = ("inputs", "parameters")
API_PARAMETERS = ("top_k", "function_to_apply")
FUNCTIONS = ("softmax", "sigmoid", "none")
DIRECTIONS = {"right": "right", "Right": "right", "left": "left", "Left": "left"}


class ModelOutputError(Exception):
    """The model gave scores that are not numbers (NaN/inf): a backend failure (424), not a client error."""


@dataclass
class LabelScoresRequest:
    """A validated TEI or Inference API body."""

    texts: list[str]
    text_pairs: list[str] | None
    single: bool  # one input: TEI answers one list, not a list of lists
    truncate: bool = True
    direction: str | None = None  # "left"/"right"; None: the model's own truncation side
    function: str | None = None  # None: the model's own (softmax, sigmoid for multi-label, none for regression)
    top_k: int | None = None


def _flag(payload: dict, name: str, default: bool) -> bool:
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ClientError(422, "validation", f'"{name}" must be true or false, got {json_type(value)}')
    return value


def _batch_size_ok(count: int, limits: ServeLimits) -> None:
    if count > limits.max_client_batch_size:
        raise ClientError(413, "validation", f'"inputs" has {count} items; at most {limits.max_client_batch_size} per '
                                             "request: split it into several requests")


def parse_tei_body(body: bytes, is_pair: bool, limits: ServeLimits) -> LabelScoresRequest:
    """Validate a TEI /predict body for this model; ClientError with TEI's status and what to fix.

    "truncation_direction" ("Left"/"Right", TEI's spelling; lower case too) becomes `direction`
    ("left"/"right"); left out or null, `direction` is None: the model's own side.
    """
    payload = body_fields(parse_body_json(body), TEI_FIELDS, '{"inputs": "テキスト"}')
    inputs = payload["inputs"]
    if isinstance(inputs, str):
        sequences, single = [[inputs]], True
    elif isinstance(inputs, list) and inputs and all(isinstance(item, str) for item in inputs):
        if len(inputs) > 2:
            raise ClientError(422, "validation", '"inputs" as a list of strings is one input: a text or a pair [text, '
                                                 'text_pair]; for a batch send [["text 1"], ["text 2"], ...]')
        sequences, single = [inputs], True
    elif isinstance(inputs, list) and inputs and all(isinstance(item, list) for item in inputs):
        sequences, single = inputs, False
    else:
        raise ClientError(422, "validation", '"inputs" must be a string, a pair ["text", "text_pair"] or a batch '
                                             f'[["text"], ...] of non-empty lists, got {json_type(inputs)}')
    _batch_size_ok(len(sequences), limits)
    width = 2 if is_pair else 1
    texts, pairs = [], [] if is_pair else None
    for index, sequence in enumerate(sequences):
        where = "inputs" if single else f"inputs[{index}]"
        if len(sequence) != width or not all(isinstance(part, str) for part in sequence):
            wanted = "a pair [text, text_pair]" if is_pair else 'one text (["text"] in a batch)'
            raise ClientError(422, "validation", f"{where}: this model classifies "
                                                 f"{'sentence pairs' if is_pair else 'single texts'}: send {wanted}")
        texts.append(checked_text(sequence[0], f"{where}[0]" if is_pair or not single else where, limits))
        if is_pair:
            pairs.append(checked_text(sequence[1], f"{where}[1]", limits))
    direction = payload.get("truncation_direction")
    if direction is not None and (not isinstance(direction, str) or direction not in DIRECTIONS):
        raise ClientError(422, "validation", '"truncation_direction" must be "Left" or "Right" (or left out for the '
                                             f"model's own side), got {direction!r}")
    raw_scores = _flag(payload, "raw_scores", False)
    return LabelScoresRequest(texts, pairs, single, _flag(payload, "truncate", True),
                              None if direction is None else DIRECTIONS[direction], "none" if raw_scores else None)


def parse_inference_api_body(body: bytes, is_pair: bool, limits: ServeLimits) -> LabelScoresRequest:
    """Validate an Inference API body (what InferenceClient.text_classification sends); ClientError if not."""
    example = '{"inputs": "テキスト", "parameters": {"top_k": 2}}'
    payload = body_fields(parse_body_json(body), API_FIELDS, example)
    inputs = payload["inputs"]
    one = (lambda item: isinstance(item, dict)) if is_pair else (lambda item: isinstance(item, str))
    single = one(inputs)
    items = [inputs] if single else inputs
    if not isinstance(items, list) or not items:
        wanted = '{"text": ..., "text_pair": ...} or a non-empty list of them' if is_pair else \
            "a string or a non-empty list of strings"
        raise ClientError(422, "validation", f'"inputs" must be {wanted}, got {json_type(inputs)}')
    _batch_size_ok(len(items), limits)
    texts, pairs = [], [] if is_pair else None
    for index, item in enumerate(items):
        where = "inputs" if single else f"inputs[{index}]"
        if is_pair:
            if not (isinstance(item, dict) and set(item) == {"text", "text_pair"} and is_text_pair(list(item.values()))):
                raise ClientError(422, "validation", f'{where}: this model classifies sentence pairs: send '
                                                     '{"text": "...", "text_pair": "..."}')
            texts.append(checked_text(item["text"], f"{where}.text", limits))
            pairs.append(checked_text(item["text_pair"], f"{where}.text_pair", limits))
        elif not isinstance(item, str):
            raise ClientError(422, "validation", f"{where} must be a string, got {json_type(item)}")
        else:
            texts.append(checked_text(item, where, limits))
    parameters = payload.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise ClientError(422, "validation", f'"parameters" must be an object, got {json_type(parameters)}')
    unknown = sorted(set(parameters) - set(API_PARAMETERS))
    if unknown:
        raise ClientError(422, "validation", f"unknown parameters {unknown}; accepted: {list(API_PARAMETERS)}")
    top_k = parameters.get("top_k")
    if isinstance(top_k, float) and top_k.is_integer():
        top_k = int(top_k)  # JSON has one number type: 2.0 is the integer 2
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ClientError(422, "validation", f'"parameters.top_k" must be a positive integer, got {top_k!r}')
    function = parameters.get("function_to_apply")
    if function is not None and function not in FUNCTIONS:
        raise ClientError(422, "validation", f'"parameters.function_to_apply" must be one of {list(FUNCTIONS)}, '
                                             f"got {function!r}")
    return LabelScoresRequest(texts, pairs, single, function=function, top_k=top_k)


def truncation_side(model: Any) -> str:
    """The side the model's tokenizer cuts long texts on ("right" unless its tokenizer config says "left")."""
    tokenizer = getattr(model, "tokenizer", None)
    side = getattr(tokenizer, "truncation_side", None) or getattr(getattr(tokenizer, "tokenizer", None),
                                                                  "truncation_side", None)
    return side if side in ("left", "right") else "right"


def label_scores_format(model: Any, request: LabelScoresRequest):
    """The batcher formatter for these routes: rows of logits -> per input, [{label, score}] best first."""
    labels = list(model.info().get("labels") or [])

    def format_rows(logits: np.ndarray, encodings: list) -> list[list[dict]]:
        values = {None: model.scores_from_logits, "softmax": softmax, "sigmoid": sigmoid,
                  "none": lambda x: x}[request.function](np.asarray(logits, dtype=np.float64))
        if not np.all(np.isfinite(values)):
            raise ModelOutputError("the model returned scores that are not finite numbers")
        answers = []
        for row in values:
            order = np.argsort(-row, kind="stable")[: request.top_k]
            answers.append([{"label": labels[i] if i < len(labels) else f"LABEL_{i}", "score": float(row[i])}
                            for i in order])
        return answers

    return format_rows


def tei_request_schema(text: dict, limits: ServeLimits, is_pair: bool, side: str) -> dict:
    """JSON Schema of the TEI /predict body as `parse_tei_body` accepts it; `text`: the schema of one text."""
    sequence = {"type": "array", "items": text, "minItems": 2 if is_pair else 1, "maxItems": 2 if is_pair else 1}
    batch = {"type": "array", "items": sequence, "minItems": 1, "maxItems": limits.max_client_batch_size,
             "description": "A batch: one list of label scores per input, in order."}
    single = [sequence] if is_pair else [text, sequence]
    example = ["この商品はとても良いです。", "また買いたい。"] if is_pair else "この商品はとても良いです。"
    nullable_flag = {"type": ["boolean", "null"]}
    return {
        "type": "object", "required": ["inputs"], "additionalProperties": False,
        "examples": [{"inputs": example}, {"inputs": [example if is_pair else [example]], "raw_scores": True}],
        "properties": {
            "inputs": {"anyOf": [*single, batch], "description": (
                "One input (answered with one list of label scores) or a batch of them. " + (
                    "This model classifies sentence pairs: an input is [text, text_pair]." if is_pair else
                    'This model classifies single texts: "text", ["text"], or a batch [["text"], ...].'))},
            "truncate": {**nullable_flag, "default": True,
                         "description": "Cut texts longer than the model's max_length tokens (default); false: 422."},
            "truncation_direction": {"anyOf": [{"enum": sorted(DIRECTIONS)}, {"type": "null"}], "default": side.title(),
                                     "description": ("Where a text over max_length tokens is cut: Left keeps its "
                                                     "end, Right its beginning. Default: this model's own side "
                                                     f"({side.title()}), the one it saw in training.")},
            "raw_scores": {**nullable_flag, "default": False, "description": "Logits instead of probabilities."},
        },
    }


def inference_api_request_schema(text: dict, limits: ServeLimits, is_pair: bool) -> dict:
    """JSON Schema of the Inference API body (POST /) as `parse_inference_api_body` accepts it."""
    one = {"type": "object", "required": ["text", "text_pair"], "additionalProperties": False,
           "properties": {"text": text, "text_pair": text}} if is_pair else text
    many = {"type": "array", "items": one, "minItems": 1, "maxItems": limits.max_client_batch_size}
    parameters = {"type": "object", "additionalProperties": False, "properties": {
        "top_k": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                  "description": "Only the top_k labels per input (default: every label)."},
        "function_to_apply": {"anyOf": [{"enum": list(FUNCTIONS)}, {"type": "null"}],
                              "description": "softmax, sigmoid or none (logits); default: the model's own."},
    }}
    return {
        "type": "object", "required": ["inputs"], "additionalProperties": False,
        "examples": [{"inputs": {"text": "良い", "text_pair": "悪い"} if is_pair else "この商品はとても良いです。",
                      "parameters": {"top_k": 2}}],
        "properties": {"inputs": {"anyOf": [one, many]}, "parameters": {"anyOf": [parameters, {"type": "null"}]}},
    }
