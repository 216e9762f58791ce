"""Reading and validating a /predict request: body size, JSON, fields, limits (no FastAPI routes here).

A client's mistake becomes a `ClientError` with the HTTP status and a message saying what to fix.
The statuses follow the OpenAPI schema (`jbert.serve.http.schema`): a body that is not JSON is
400; a JSON body outside the schema (wrong types, unknown fields, empty or too many inputs, a too
long or blank text) is 422; 413 is kept for what a schema cannot state: the body's size in bytes
(and, in the route, a text over the model's max_length tokens with "truncate": false).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from jbert.core.errors import UserError

PREDICT_FIELDS = ("inputs", "top_k", "truncate")


@dataclass
class ServeLimits:
    """What one request may ask for (beyond the body size: 413; beyond the others: 422)."""

    max_client_batch_size: int = 64  # inputs per request
    max_body_bytes: int = 2 * 1024 * 1024  # request body size
    max_top_k: int | None = None  # None: as many as the model has labels
    max_text_chars: int = 100_000  # characters per text (or text_pair), before clean-up

    def validate(self) -> None:
        """Raise UserError for limits that make no sense."""
        problems = []
        if self.max_client_batch_size < 1:
            problems.append(f"max_client_batch_size must be at least 1, got {self.max_client_batch_size}")
        if self.max_body_bytes < 64:
            problems.append(f"max_body_bytes must be at least 64, got {self.max_body_bytes}")
        if self.max_text_chars < 1:
            problems.append(f"max_text_chars must be at least 1, got {self.max_text_chars}")
        if problems:
            raise UserError("invalid request limits: " + "; ".join(problems))

    def __post_init__(self):
        # Checked where they are made, once: the app takes its limits as valid.
        self.validate()


class ClientError(Exception):
    """A client's mistake (or a refusal such as 503), answered with `status` and a JSON error body."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def error_response(status: int, error_type: str, message: str, headers: dict | None = None) -> JSONResponse:
    """The JSON error body every non-2xx answer carries: {"error": ..., "error_type": ...}."""
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refusing (413) more than `max_body_bytes` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ClientError(400, "malformed_request", "Content-Length is not a number") from None
        if declared_bytes > max_body_bytes:
            raise ClientError(413, "payload_too_large", f"body of {declared_bytes} bytes exceeds the limit of {max_body_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:  # chunked uploads have no Content-Length to check up front
            raise ClientError(413, "payload_too_large", f"body exceeds the limit of {max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class PredictRequest:
    """A validated /predict body."""

    texts: list[str]
    text_pairs: list[str] | None
    top_k: int | None
    truncate: bool
    single: bool  # "inputs" was one string (or one pair): answer with one object, not a list


def parse_predict_body(body: bytes, is_pair: bool, num_labels: int, limits: ServeLimits) -> PredictRequest:
    """Validate a /predict body; raise ClientError with the status and a message saying what to fix."""
    if not body.strip():
        raise ClientError(400, "malformed_json", 'empty body; send JSON like {"inputs": ["テキスト"]}')
    try:
        # Decode explicitly: json.loads(bytes) would guess UTF-16/32 from the first bytes.
        payload = json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ClientError(400, "malformed_json", "body is not valid UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: thousands of nested brackets
        raise ClientError(400, "malformed_json", f"body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ClientError(422, "validation", f'body must be a JSON object like {{"inputs": [...]}}, got {_json_type(payload)}')
    unknown = sorted(set(payload) - set(PREDICT_FIELDS))
    if unknown:
        raise ClientError(422, "validation", f"unknown fields {unknown}; accepted: {list(PREDICT_FIELDS)}")
    if "inputs" not in payload:
        raise ClientError(422, "validation", '"inputs" is required: a string, a list of strings, or a list of [text, text_pair]')

    top_k = payload.get("top_k")
    if top_k is not None:
        # JSON has one number type: 2.0 is the integer 2 (as JSON Schema counts it), 2.5 is not.
        if isinstance(top_k, float) and top_k.is_integer():
            top_k = int(top_k)
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise ClientError(422, "validation", f'"top_k" must be a positive integer or null, got {_json_type(top_k)}')
        if top_k < 1:
            raise ClientError(422, "validation", f'"top_k" must be at least 1, got {top_k}')
        top_k = min(top_k, limits.max_top_k or num_labels, num_labels)
    truncate = payload.get("truncate", True)
    if truncate is None:
        truncate = True
    if not isinstance(truncate, bool):
        raise ClientError(422, "validation", f'"truncate" must be true or false, got {_json_type(truncate)}')

    inputs = payload["inputs"]
    single = isinstance(inputs, str) or (is_pair and _is_pair(inputs))
    items = [inputs] if single else inputs
    if not isinstance(items, list):
        raise ClientError(422, "validation", f'"inputs" must be a string or a list, got {_json_type(inputs)}')
    if not items:
        raise ClientError(422, "validation", '"inputs" is empty; send at least one text')
    if len(items) > limits.max_client_batch_size:
        raise ClientError(
            422, "validation",
            f'"inputs" has {len(items)} items; at most {limits.max_client_batch_size} per request: split it into several requests',
        )
    texts, pairs = [], [] if is_pair else None
    for index, item in enumerate(items):
        if is_pair:
            if not _is_pair(item):
                raise ClientError(
                    422, "validation",
                    f"inputs[{index}]: this model classifies sentence pairs; send [text, text_pair] (two strings), got {_json_type(item)}",
                )
            texts.append(_checked_text(item[0], f"inputs[{index}][0]", limits))
            pairs.append(_checked_text(item[1], f"inputs[{index}][1]", limits))
        else:
            if not isinstance(item, str):
                hint = " (this model classifies single texts, not pairs)" if _is_pair(item) else ""
                raise ClientError(422, "validation", f"inputs[{index}] must be a string, got {_json_type(item)}{hint}")
            texts.append(_checked_text(item, f"inputs[{index}]", limits))
    return PredictRequest(texts, pairs, top_k, truncate, single)


def _checked_text(text: str, where: str, limits: ServeLimits) -> str:
    """`text` if it is within the length limit and is real Unicode text; ClientError (422) otherwise."""
    if len(text) > limits.max_text_chars:
        raise ClientError(
            422, "validation", f"{where} has {len(text)} characters; at most {limits.max_text_chars} per text"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        # JSON's "\ud800" escapes decode to lone surrogates, which are not text: the tokenizer
        # (MeCab) cannot encode them and would fail as a server error.
        raise ClientError(
            422, "validation",
            f"{where} holds an unpaired UTF-16 surrogate ({text[err.start]!r} at character {err.start}); send valid Unicode text",
        ) from None
    return text


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
